#!/usr/bin/env python3
"""Waits until an event's books are quiet: nothing `confirming` (every paid order persisted and
its status written back), no hold left (unless --holds-may-remain), and Redis and the database
agree (`ops audit` clean, order by order), and with --money every charge at the provider kept or
refunded (none in flight, none owed). Writes how long that took. Bounded by --timeout, and with --stall S
also gives up once nothing more was persisted for S seconds (a backlog that still drains may take
its time: the emulator pushes a few dozen orders a second)."""
import argparse, json, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--ops", required=True)
ap.add_argument("--event", default="frequency-2027")
ap.add_argument("--out", required=True)
ap.add_argument("--timeout", type=float, default=180)
ap.add_argument("--stall", type=float, default=0)
ap.add_argument("--holds-may-remain", action="store_true")
ap.add_argument("--money", action="store_true")
a = ap.parse_args()

start = time.time()
last = None
least, moved = None, start  # the fewest tickets confirming seen so far, and when that fell
while time.time() - start < a.timeout:
    if a.stall and time.time() - moved > a.stall:
        print(f"nothing persisted for {a.stall:.0f} s")
        break
    p = subprocess.run([a.ops, "audit", "--event", a.event, "--json"], capture_output=True, text=True)
    try:
        last = json.loads(p.stdout)
    except ValueError:
        last = {"error": p.stderr.strip()[-300:]}
    tts = last.get("ticket_types", [])
    confirming = sum(t.get("confirming", 0) for t in tts)
    if least is None or confirming < least:
        least, moved = confirming, time.time()
    m = last.get("money") or {}
    settled = not a.money or (m.get("ok") and m.get("in_flight") == 0 and m.get("owed") == 0)
    if tts and last.get("ok") and last.get("quiet") and settled and all(
        (a.holds_may_remain or t["held"] == 0) and t["db"] and t["db"]["sold"] == t["sold"] for t in tts
    ):
        json.dump({"drained": True, "seconds": round(time.time() - start, 2), "audit": last}, open(a.out, "w"))
        print(f"drained in {time.time() - start:.1f} s")
        sys.exit(0)
    time.sleep(0.5)
json.dump({"drained": False, "seconds": round(time.time() - start, 2), "audit": last}, open(a.out, "w"))
print(f"NOT drained after {time.time() - start:.0f} s: {json.dumps(last)[:400]}")
sys.exit(1)
