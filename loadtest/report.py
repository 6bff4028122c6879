#!/usr/bin/env python3
"""Turns one scripts/loadtest run (k6 summary, Rust driver summary, CPU/availability samples,
drain and audit results) into a markdown report with verdicts. Exit status 1 when a verdict
or a k6 threshold failed: that is what makes the `ci` profile a quality gate."""
import argparse, datetime as dt, json, os, sys

ap = argparse.ArgumentParser()
for name in ["out-dir", "report", "profile", "driver", "build", "stages"]:
    ap.add_argument(f"--{name}", required=True)
for name in ["capacity", "opens-at-ms", "start-ms", "cooldown-at-ms", "k6-end-ms", "run-end-ms",
             "k6-rc", "driver-rc", "driver-start-ms", "driver-end-ms", "hold", "cores", "rust-fans"]:
    ap.add_argument(f"--{name}", type=int, required=True)
ap.add_argument("--chaos", default="none")
# "off": run without the provider's ledger (PAYMENTS_LEDGER_URL empty), money not reconciled.
ap.add_argument("--money", default="on")
a = ap.parse_args()
D = a.out_dir


def load(name):
    try:
        return json.load(open(os.path.join(D, name)))
    except (OSError, ValueError):
        return None


k6 = load("k6-summary.json")
watch = load("watch.json") or {"samples": []}
drain, audit = load("drain.json"), load("audit.json")
driver, audit_driver, drain_driver = load("driver.json"), load("audit-driver.json"), load("drain-driver.json")
room = load("room.json")
ran_room = a.driver == "room"
ap_room_rate = int(os.environ.get("ROOM_RATE", "0"))
ran_k6 = a.driver in ("k6", "both")
ran_rust = a.driver in ("rust", "both")
M = (k6 or {}).get("metrics", {})


def metric(name):
    return M.get(name) or {}


def money_ok(audit):
    """The money audit of `ops audit --json` (ADR 53): present and clean (or switched off)."""
    if a.money == "off":
        return True
    m = (audit or {}).get("money")
    return bool(m) and m.get("ok", False) and m["kept_cents"] == m["confirmed_cents"]

def money_line(audit):
    if a.money == "off":
        return "money not reconciled: run without the provider's ledger (PAYMENTS_LEDGER_URL empty)"
    m = (audit or {}).get("money")
    if not m:
        return "money not reconciled: no list of the provider's charges"
    line = (f"{m['charges']:,} charges at the provider: {m['kept']:,} kept ({m['kept_cents'] / 100:,.2f} EUR) "
            f"for {m['confirmed_orders']:,} confirmed orders ({m['confirmed_cents'] / 100:,.2f} EUR), "
            f"{m['refunded']:,} refunded, {m['owed']:,} owed, {m['in_flight']:,} in flight")
    return line if m.get("ok") else line + "; " + "; ".join(m["violations"][:3])

def count(name):
    return int(metric(name).get("count", 0))


def f(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


lines = []
out = lines.append
verdicts = []  # (name, ok, detail)

# ---- verdicts from the books ------------------------------------------------------------------
if ran_k6:
    tts = (audit or {}).get("ticket_types", [])
    capacity = sum(t["capacity"] for t in tts)
    redis_sold = sum(t["sold"] for t in tts)
    db = [t["db"] or {} for t in tts]
    db_sold = sum(d.get("sold", 0) for d in db)
    db_orders = sum(d.get("confirmed_orders", 0) + d.get("rejected_orders", 0) for d in db)
    db_rejected = sum(d.get("rejected_orders", 0) for d in db)
    oversold = [t["ticket_type"] for t in tts if (t["db"] or {}).get("sold", 0) > t["capacity"]]
    verdicts.append(("No oversell", bool(tts) and not oversold and all(
        t["available"] + t["held"] + t["confirming"] + t["sold"] == t["capacity"] for t in tts),
        f"database sold {db_sold:,} of {capacity:,}; Redis books balance per ticket type"))
    # Holds abandoned near the end expire after the last buyer left and return to stock: those
    # tickets are on sale again, not lost. Everything else must be sold.
    available = sum(t["available"] for t in tts)
    unheld = all(t["held"] == 0 and t["confirming"] == 0 for t in tts)
    abandoned = count("holds_abandoned")
    verdicts.append(("Sold out: sold == capacity (less holds abandoned after the last buyer)",
        bool(tts) and unheld and db_sold == redis_sold and db_sold + available == capacity
        and available <= abandoned,
        f"Redis sold {redis_sold:,}, database sold {db_sold:,}, capacity {capacity:,}; "
        f"{available:,} back on sale from expired holds ({abandoned:,} holds were abandoned)"))
    paid = count("orders_paid")
    # With Redis down or its data lost, a payment under way at that moment can be persisted
    # although its fan was answered an error: the charge went through, the relay finishes the
    # order, the fan sees it confirmed on the status page. There, every order a fan was told was
    # paid must be persisted, and nothing twice (no duplicates: the next verdict and the audit).
    told_all = db_orders >= paid if a.chaos in ("redis", "redis-empty", "rollback", "nemesis") else db_orders == paid
    verdicts.append(("Every paid order persisted exactly once", told_all and redis_sold == db_sold,
        f"fans were told 'paid' {paid:,} times; the database holds {db_orders:,} orders "
        f"({db_rejected:,} rejected); Redis sold == database sold: {redis_sold == db_sold}"))
    verdicts.append(("No duplicates", bool(audit) and audit.get("ok", False) and count("orders_confirmed") <= paid,
        "tickets sold == quantities of confirmed orders (audit); confirmations seen "
        f"{count('orders_confirmed'):,} ≤ paid {paid:,}"))
    try:
        told = len(open(os.path.join(D, "told-confirmed.txt")).read().split())
        in_books = int(open(os.path.join(D, "told-confirmed-in-books.txt")).read().strip())
    except (OSError, ValueError):
        told, in_books = None, None
    verdicts.append(("Every fan told 'confirmed' holds a confirmed order in the books",
        told is not None and told == in_books and told == count("orders_confirmed"),
        f"{told:,} fans read 'confirmed'; {in_books:,} of their orders are confirmed in the books"
        if told is not None else "not checked (no list of the fans told)"))
    compared = (audit or {}).get("orders_compared", 0)
    verdicts.append(("Every decided order reads its books' outcome in Redis", bool(audit and audit.get("ok")) and compared == db_orders,
        f"{compared:,} orders compared at the quiet point, {db_orders:,} decided"))
    verdicts.append(("Money exact: every charge kept once or refunded", money_ok(audit), money_line(audit)))
    if a.chaos == "nemesis":
        # Every rollback of the nemesis is to be repaired live: no rebuild, no pause (ADR 56).
        try:
            log = open(os.path.join(D, "consume-order.log")).read()
        except OSError:
            log = ""
        pauses = log.count("Pausing the event") + log.count("restoring it from the database")
        verdicts.append(("No event paused: every rollback repaired live", bool(log) and pauses == 0,
            f"{log.count('repaired the gate from the books')} repairs, {pauses} pauses to rebuild"))
    try:
        replayed_line = open(os.path.join(D, "dead-letters-replayed.txt")).read().strip().splitlines()[-1]
    except (OSError, IndexError):
        replayed_line = None
    verdicts.append(("No paid order needed a dead-letter replay", replayed_line is None,
        "none dead-lettered" if replayed_line is None else f"the queue did not drain on its own; `ops dead-letters --replay all`: {replayed_line}"))
    verdicts.append(("Invariant exact after drain", bool(drain and drain.get("drained")),
        f"drained in {drain['seconds']} s" if drain and drain.get("drained") else f"not drained: {json.dumps(drain)[:300]}"))
    # In the summary export a threshold maps to true when it failed.
    broken = [f"`{name}` {expr} (p95 {f(m.get('p(95)'))} ms)" if "duration" in name else f"`{name}` {expr}"
              for name, m in M.items() for expr, failed in (m.get("thresholds") or {}).items() if failed]
    verdicts.append(("k6 thresholds (error rate, p95 per step)", a.k6_rc == 0,
        "all held" if a.k6_rc == 0 else ("broken: " + "; ".join(broken) if broken else f"k6 exited {a.k6_rc}")))
if ran_rust:
    ok = bool(audit_driver and audit_driver.get("ok") and drain_driver and drain_driver.get("drained")) and a.driver_rc == 0
    ok = ok and money_ok(audit_driver)
    if driver and driver.get("confirm"):
        # Every paid order read back confirmed by its fan, none refused, none left waiting.
        ok = ok and driver["rejected"] == 0 and driver["unconfirmed"] == 0
    verdicts.append(("Rust driver run: invariant exact, every paid order persisted", ok,
        f"audit {'clean' if audit_driver and audit_driver.get('ok') else json.dumps(audit_driver)[:300]}; "
        f"all paid orders persisted: {bool(drain_driver and drain_driver.get('drained'))}; {money_line(audit_driver)}"))

if ran_room:
    # The waiting room's spike (ADR 59; loadtest/driver/src/room.rs).
    r = room or {}
    tts = (audit or {}).get("ticket_types", [])
    capacity = sum(t["capacity"] for t in tts)
    db_sold = sum((t["db"] or {}).get("sold", 0) for t in tts)
    verdicts.append(("No oversell", bool(tts) and db_sold <= capacity and all(
        t["available"] + t["held"] + t["confirming"] + t["sold"] == t["capacity"] for t in tts),
        f"database sold {db_sold:,} of {capacity:,}; Redis books balance per ticket type"))
    verdicts.append(("Invariant exact after drain", bool(drain and drain.get("drained")),
        f"drained in {drain['seconds']} s" if drain and drain.get("drained") else f"not drained: {json.dumps(drain)[:300]}"))
    verdicts.append(("Money exact: every charge kept once or refunded", money_ok(audit), money_line(audit)))
    j = r.get("join", {})
    verdicts.append((f"Join p99 under 50 ms ({r.get('fans', 0):,} fans arriving within {r.get('arrive_secs', 0):g} s)",
        bool(j) and j.get("p99_ms", 1e9) < 50 and j.get("codes", {}).get("200", 0) == r.get("fans"),
        f"p50 {f(j.get('p50_ms'), 1)} ms, p99 {f(j.get('p99_ms'), 1)} ms, max {f(j.get('max_ms'), 1)} ms; answers {j.get('codes')}"))
    per_sec = [c for _, c in r.get("reservations_per_second", [])]
    # One second's credit may be spent at once (room.lua), so a second can see the credit and
    # that second's rate: 2 × rate is the bound the room promises.
    bound = 2 * ap_room_rate
    verdicts.append(("The shop behind the room within its admission rate at every second",
        bool(per_sec) and ap_room_rate > 0 and max(per_sec) <= bound,
        f"fans reserving per second: max {max(per_sec) if per_sec else 0:,}, mean {sum(per_sec) / max(len(per_sec), 1):,.0f} "
        f"(rate {ap_room_rate:,}/s, at most {bound:,} in a second with the credit)"))
    told = r.get("told_sold_out", {})
    verdicts.append(("Every waiting fan told sold out within 2 s of the last ticket held",
        told.get("count", 0) > 0 and told.get("max_ms", 1e9) <= 2000 and r.get("waiting_without_answer", 1) == 0,
        f"{told.get('count', 0):,} fans told; after the last hold p50 {f(told.get('p50_ms'))} ms, p99 {f(told.get('p99_ms'))} ms, "
        f"max {f(told.get('max_ms'))} ms; {r.get('waiting_without_answer', 0):,} left without an answer"))
    verdicts.append(("Every admitted fan's journey completes",
        r.get("admitted", 0) > 0 and r.get("stuck", 1) == 0
        and r.get("admitted") == r.get("held", 0) + r.get("admitted_then_sold_out", 0) and r.get("paid") == r.get("held"),
        f"{r.get('admitted', 0):,} admitted: {r.get('held', 0):,} held and {r.get('paid', 0):,} paid, "
        f"{r.get('admitted_then_sold_out', 0):,} found it sold out, {r.get('stuck', 0):,} stuck {r.get('stuck_examples', [])}"))
    rho = r.get("rank_correlation")
    verdicts.append(("The pre-queue's order is fair (rank correlation of arrival and place near 0)",
        rho is not None and abs(rho) < 0.05,
        f"{r.get('early_fans', 0):,} fans joined before the opening; Spearman's rho {f(rho, 4)}"))

# ---- phases and CPU ---------------------------------------------------------------------------
samples = watch["samples"]
phases = [("before_open", a.start_ms, a.opens_at_ms), ("spike", a.opens_at_ms, a.cooldown_at_ms),
          ("cooldown", a.cooldown_at_ms, a.k6_end_ms)] if ran_k6 else []
if ran_rust:
    phases.append(("rust driver", a.driver_start_ms, a.driver_end_ms))
if ran_room and room:
    # Arrivals (joins into the pre-queue), then the sale behind the room until the driver ends.
    phases += [("joins before opening", room["arrive_at_ms"], a.opens_at_ms),
               ("sale behind the room", a.opens_at_ms, a.driver_end_ms)]


def at(t_ms):
    best = None
    for s in samples:
        if best is None or abs(s["t_ms"] - t_ms) < abs(best["t_ms"] - t_ms):
            best = s
    return best


def cpu_between(t0, t1):
    """CPU seconds each process used between t0 and t1 (ms), and the wall seconds: from the
    last sample at or before t0 to the first at or after t1."""
    before = [x["t_ms"] for x in samples if x["t_ms"] <= t0]
    after = [x["t_ms"] for x in samples if x["t_ms"] >= t1]
    lo = before[-1] if before else t0 - 600
    hi = after[0] if after else t1 + 600
    inside = [x for x in samples if lo <= x["t_ms"] <= hi]
    if len(inside) < 2:
        return {}, 0
    wall = (inside[-1]["t_ms"] - inside[0]["t_ms"]) / 1000
    used = {}
    for n in {n for x in inside for n in x["cpu"]}:
        seen = [x["cpu"][n] for x in inside if n in x["cpu"]]
        # A process that started inside the window started from zero.
        first = seen[0] if n in inside[0]["cpu"] else 0
        used[n] = max(seen[-1] - first, 0)
    return used, wall


sold_out_at = None
for s in samples:
    av = s.get("available")
    if av and s.get("sale_open") and s["t_ms"] >= a.opens_at_ms and all(v == 0 for v in av.values()):
        sold_out_at = s["t_ms"]
        break

# ---- the report ---------------------------------------------------------------------------
stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
all_ok = all(ok for _, ok, _ in verdicts)
out(f"# Load test — {a.profile} — {stamp}\n")
out(f"**Result: {'PASS' if all_ok else 'FAIL'}**\n")
out("## Configuration\n")
out(f"- Profile `{a.profile}`, driver `{a.driver}`, {a.build} build, {a.cores} cores shared by the generator, the three functions, Redis, PostgreSQL and the Pub/Sub emulator.")
if ran_k6:
    out(f"- k6 stages (total req/s, ramped linearly): `{a.stages}`; sale opens {(a.opens_at_ms - a.start_ms) / 1000:.0f} s into the run; cool-down is the last stage.")
out(f"- {a.capacity:,} tickets (VIP 3-Day, VIP Camping, Backstage Lounge); checkout hold {a.hold} s.")
if ran_rust:
    out(f"- Rust fan driver: {a.rust_fans} concurrent fans, closed loop, on a separate sale with stock it cannot exhaust.")
out("")
out("## Verdicts\n")
out("| check | verdict | detail |\n|---|---|---|")
for name, ok, detail in verdicts:
    out(f"| {name} | {'PASS' if ok else '**FAIL**'} | {detail} |")
out("")

if ran_room and room:
    out("## The waiting room\n")
    out(f"- {room['fans']:,} fans arrived evenly over {room['arrive_secs']:g} s from "
        f"{(room['arrive_at_ms'] - a.opens_at_ms) / 1000:+.1f} s of the opening; each joined at buy, then watched the "
        f"availability snapshot (read once per {room['edge_ms']} ms for all fans, as the CDN serves it), claimed its "
        f"admission token when its place came up, reserved one ticket with it and paid.")
    cl = room.get("claim", {})
    out(f"- Joins: p50 {f(room['join']['p50_ms'], 1)} ms, p95 {f(room['join']['p95_ms'], 1)} ms, p99 {f(room['join']['p99_ms'], 1)} ms; "
        f"claims of the token ({cl.get('count', 0):,}): p50 {f(cl.get('p50_ms'), 1)} ms, p99 {f(cl.get('p99_ms'), 1)} ms.")
    last = room.get("last_hold_at_ms")
    if last:
        out(f"- Last ticket held {(last - a.opens_at_ms) / 1000:.1f} s after the opening.")
    out("\nThe admission curve (the snapshot as the edge read it; reservations by the second they were sent):\n")
    out("| s after opening | room | admitted up to | joined | shopping | tickets available | fans reserving that second |")
    out("|---:|---|---:|---:|---:|---:|---:|")
    per = {t // 1000: c for t, c in room.get("reservations_per_second", [])}
    shown = set()
    for p in room.get("curve", []):
        sec = p["at_ms"] // 1000
        if sec in shown or p["at_ms"] < a.opens_at_ms - 5000:
            continue
        shown.add(sec)
        out(f"| {(p['at_ms'] - a.opens_at_ms) / 1000:.1f} | {p['status']} | {p['admitted_upto']:,} | {p['joined'] or 0:,} | "
            f"{p['shopping'] or 0:,} | {p['available']:,} | {per.get(sec, 0):,} |")
        if p.get("sold_out") and len(shown) > 3 and per.get(sec, 0) == 0:
            break
    out("")

if ran_k6 and k6:
    out("## Per phase (k6)\n")
    out("| phase | requests | req/s | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for name, t0, t1 in phases[:3]:
        reqs = metric(f"http_reqs{{phase:{name}}}")
        dur = metric(f"http_req_duration{{phase:{name}}}")
        secs = max((t1 - t0) / 1000, 0.001)
        out(f"| {name} | {f(reqs.get('count'))} | {f((reqs.get('count') or 0) / secs)} | {f(dur.get('med'), 1)} | {f(dur.get('p(95)'), 1)} | {f(dur.get('p(99)'), 1)} |")
    out("")
    out("## Per step (k6, whole run)\n")
    out("| step | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
    for step in ["availability", "reserve", "pay", "status"]:
        d = metric(f"http_req_duration{{step:{step}}}")
        out(f"| {step} | {f(d.get('med'), 1)} | {f(d.get('p(95)'), 1)} | {f(d.get('p(99)'), 1)} | {f(d.get('max'), 1)} |")
    for step in ["availability", "reserve"]:
        d = metric(f"http_req_duration{{step:{step},phase:spike}}")
        if d:
            out(f"| {step}, spike phase only | {f(d.get('med'), 1)} | {f(d.get('p(95)'), 1)} | {f(d.get('p(99)'), 1)} | {f(d.get('max'), 1)} |")
    out("")
    reqs = metric("http_reqs")
    dropped = count("dropped_iterations")
    out("## Outcomes (k6)\n")
    out(f"- Requests: {f(reqs.get('count'))} ({f(reqs.get('rate'))} req/s over the run); unexpected answers: {f(100 * metric('unexpected_errors').get('value', metric('unexpected_errors').get('rate', 0)), 2)} %.")
    out(f"- Buyers: reserved {count('fans_reserved'):,}, paid {count('orders_paid'):,}, confirmed {count('orders_confirmed'):,}, rejected {count('orders_rejected'):,}, "
        f"not confirmed within the poll window {count('orders_not_confirmed_in_time'):,}.")
    out(f"- Expected refusals: sold out / not enough {count('answers_sold_out'):,}, too early {count('answers_too_early'):,}, busy (429/503, retried) {count('answers_busy'):,}, "
        f"declined once {count('payments_declined'):,}, abandoned holds {count('holds_abandoned'):,}, hold expired before paying {count('holds_expired_before_pay'):,}.")
    ptc = metric("pay_to_confirmed")
    if ptc:
        out(f"- Paid → confirmed as the fan saw it (polling with backoff): p50 {f(ptc.get('med'))} ms, p95 {f(ptc.get('p(95)'))} ms.")
    out(f"- Dropped iterations (arrivals k6 could not start for lack of VUs or CPU): {dropped:,}.")
    if sold_out_at:
        out(f"- Sold out {(sold_out_at - a.opens_at_ms) / 1000:.1f} s after the sale opened (availability sampled once a second).")
    else:
        out("- Not sold out during the run.")
    if drain and drain.get("drained"):
        db_orders = sum((t["db"] or {}).get("confirmed_orders", 0) + (t["db"] or {}).get("rejected_orders", 0) for t in audit["ticket_types"])
        end = a.k6_end_ms + drain["seconds"] * 1000
        out(f"- Queue drained {drain['seconds']} s after k6 finished; {db_orders:,} orders persisted, "
            f"{db_orders / max((end - a.opens_at_ms) / 1000, 0.001):,.0f} orders/s on average from opening to drained.")
    out("")

def repair_after(up_ms, within_s=None):
    """Seconds from `up_ms` to consume-order's first repair of the gate from the books (ADR 56),
    if one came (within `within_s`)."""
    try:
        lines = open(os.path.join(D, "consume-order.log")).read().splitlines()
    except OSError:
        return None
    for line in lines:
        if "repaired the gate from the books" not in line:
            continue
        try:
            t = dt.datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp() * 1000
        except (ValueError, KeyError):
            continue
        if t >= up_ms:
            return (t - up_ms) / 1000 if within_s is None or t - up_ms <= within_s * 1000 else None
    return None

chaos_times = {}
try:
    chaos_times = {k: int(v) for k, v in (l.strip().split("=") for l in open(os.path.join(D, "chaos")) if "=" in l)}
except OSError:
    pass
if a.chaos != "none" and chaos_times:
    down, up = chaos_times["down_ms"], chaos_times["up_ms"]
    if a.chaos == "nemesis":
        out("## Chaos: the nemesis\n")
        out(f"- From {(down - a.opens_at_ms) / 1000:.1f} s after the opening to {(up - a.opens_at_ms) / 1000:.1f} s, in the steps below.")
    else:
        out(f"## Chaos: {a.chaos} killed mid-sale\n")
        out(f"- Killed {(down - a.opens_at_ms) / 1000:.1f} s after the opening, back {(up - down) / 1000:.1f} s later.")
    out(f"- What fans saw over the whole run: {count('answers_busy'):,} busy answers (503/429, retried after Retry-After), "
        f"{f(100 * metric('unexpected_errors').get('value', metric('unexpected_errors').get('rate', 0)), 2)} % unexpected answers "
        f"({int(metric('unexpected_errors').get('passes', 0)):,} of {int(metric('unexpected_errors').get('passes', 0) + metric('unexpected_errors').get('fails', 0)):,}).")
    before = [x for x in samples if x["t_ms"] < down and "confirming" in x][-5:]
    after = [x for x in samples if x["t_ms"] >= up]
    if a.chaos == "nemesis":
        steps = [json.loads(l) for l in open(os.path.join(D, "nemesis.jsonl")) if l.strip()]
        plan = next((x for x in steps if x["step"] == "plan"), {})
        out(f"- The nemesis' plan `{plan.get('plan')}`, seed {plan.get('seed')} (`NEMESIS_SEED` replays it):\n")
        persisted_at = []
        try:
            for line in open(os.path.join(D, "consume-order.log")):
                if '"order persisted"' in line or '"orders persisted"' in line:
                    try:
                        persisted_at.append(dt.datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp() * 1000)
                    except (ValueError, KeyError):
                        pass
        except OSError:
            pass
        out("| step | at (s after opening) | writes lost (s) | persists in them | Redis or consumer back after (s) | repaired from the books after Redis was back (s) |\n|---|---:|---:|---:|---:|---:|")
        what = {"promote": "lagging replica promoted", "restore": "snapshot restored", "consumer": "consume-order killed",
                "restore-kill": "snapshot restored, consume-order killed before"}
        for x in steps:
            if x["step"] == "error":
                out(f"| the plan broke | | | | {x['error']} |")
            if "down_ms" not in x:
                continue
            rolled = x["step"] in ("promote", "restore", "restore-kill")
            repaired = repair_after(x["up_ms"], within_s=15) if rolled else None
            lost = sum(x.get("snapshot_ms", 0) <= t <= x["down_ms"] for t in persisted_at) if rolled else None
            if repaired is not None:
                repair_cell = f"{repaired:.2f}"
            elif rolled and lost == 0:
                repair_cell = "none needed"
            else:
                repair_cell = "none within 15 s" if rolled else "—"
            out(f"| {what[x['step']]} | {(x.get('snapshot_ms', x['down_ms']) - a.opens_at_ms) / 1000:.1f} | "
                + (f"{x['lost_s']:.1f} | {lost}" if rolled else "— | —") + f" | {(x['up_ms'] - x['down_ms']) / 1000:.1f} | "
                + repair_cell + " |")
        out("")
        sweeps = 0
        try:
            sweeps = sum("a charge the books never heard of" in l for l in open(os.path.join(D, "consume-order.log")))
        except OSError:
            pass
        out(f"- Charges whose payment Redis forgot, owed back by consume-order's sweep: {sweeps}.")
    if a.chaos == "rollback":
        lost = (down - chaos_times.get("snapshot_ms", down)) / 1000
        repaired = repair_after(up)
        out(f"- Redis came back from a snapshot taken {lost:.1f} s before the crash: every write of those seconds lost. "
            + (f"consume-order found it gone back in time and repaired the event from the books {repaired:.1f} s after Redis was back."
               if repaired is not None else "No repair was logged (nothing of this process's was lost?)."))
    if a.chaos in ("redis", "redis-empty", "rollback"):
        stale = [x for x in samples if down <= x["t_ms"] and x.get("stale")]
        fresh = next((x for x in after if "available" in x and not x.get("stale")), None)
        out(f"- Availability kept answering from the last snapshot, marked stale, for {len(stale)} samples (one a second); "
            + (f"fresh again {(fresh['t_ms'] - up) / 1000:.1f} s after Redis was back." if fresh else "never fresh again during the run."))
    else:
        base = max(sorted(x["confirming"] for x in before)[len(before) // 2] if before else 0, 5)
        peak = max((x.get("confirming", 0) for x in samples if x["t_ms"] >= down), default=0)
        rec = next((x for x in after if x.get("confirming", base + 1) <= base), None)
        out(f"- Paid orders waiting (`confirming`): about {base} before, peak {peak:,}; "
            + (f"back to normal {(rec['t_ms'] - up) / 1000:.1f} s after the restart." if rec else "still above normal at the end of the run (see drain)."))
    out("- Nothing was lost or doubled: see the verdicts above (they are the same checks as without chaos).\n")

if ran_rust and driver:
    out("## System capacity (Rust fan driver, closed loop)\n")
    out(f"{driver['journeys']:,} journeys in {driver['seconds']:.1f} s: **{driver['journeys_per_s']:,.0f} journeys/s, {driver['rps']:,.0f} req/s** with {driver['fans']} fans.\n")
    out("| step | requests | req/s | p50 ms | p95 ms | p99 ms | answers |\n|---|---:|---:|---:|---:|---:|---|")
    for step in ["availability", "reserve", "pay", "status"]:
        s = driver["steps"][step]
        out(f"| {step} | {s['requests']:,} | {s['rps']:,.0f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | {s['statuses']} |")
    out("")
    if drain_driver and drain_driver.get("drained") and audit_driver:
        n = sum((t["db"] or {}).get("confirmed_orders", 0) for t in audit_driver["ticket_types"])
        secs = (a.driver_end_ms - a.driver_start_ms) / 1000 + drain_driver["seconds"]
        out(f"The consumer persisted all {n:,} paid orders {drain_driver['seconds']} s after the driver stopped: "
            f"**{n / secs:,.0f} orders/s** end to end through the Pub/Sub emulator's push (Postgres backend).\n")
    elif drain_driver:
        out(f"The driver's paid orders were not all persisted within {drain_driver['seconds']} s after it stopped.\n")
    if driver.get("confirm"):
        sold = "sold out and every order confirmed" if driver.get("until_sold_out") else "ran"
        out(f"Each fan polled its order every {driver['poll_ms']} ms until it was confirmed before its next journey; "
            f"the sale {sold} in **{driver['seconds']:.1f} s**: {driver['confirmed']:,} confirmed, "
            f"{driver['rejected']} rejected, {driver['unconfirmed']} not confirmed within a minute.\n")
        out("| wait | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
        for name, label in [("reserve_to_confirmed", "reserve sent → confirmed read"),
                            ("paid_to_confirmed", "payment answered → confirmed read")]:
            w = driver["waits"][name]
            out(f"| {label} | {w['p50_ms']:.0f} | {w['p95_ms']:.0f} | {w['p99_ms']:.0f} | {w['max_ms']:.0f} |")
        out("")
    try:
        metrics = open(os.path.join(D, "buy-metrics.txt")).read().splitlines()
    except OSError:
        metrics = []

    def counter(name, label=""):
        return sum(float(l.split()[-1]) for l in metrics if l.startswith(name) and label in l)

    if metrics:
        republished, relayed = counter("orders_redelivered_total"), counter("relay_orders_total")
        decided = counter("payment_answers_total", 'outcome="decided"')
        undecided = counter("payment_answers_total", 'outcome="confirming"')
        out(f"buy's relay republished {republished:.0f} orders and finished {relayed:.0f}; "
            f"payments answered with the order's outcome: {decided:.0f}, still confirming: {undecided:.0f}.\n")
    c, w = cpu_between(a.driver_start_ms, a.driver_end_ms)
    if driver.get("cpu_seconds") is not None:
        # Its own count: the sampler cannot read a process that has exited.
        c["fans-driver"] = driver["cpu_seconds"]
    if c and driver["journeys"]:
        j = driver["journeys"]
        out(f"CPU per journey during the driver's run ({w:.1f} s between CPU samples; ms of CPU per journey; a journey "
            "is availability, reserve, pay and the status reads until confirmed, plus publishing and persisting its order):\n")
        out("| process | ms per journey |\n|---|---:|")
        for n in sorted(c, key=lambda n: -c[n]):
            out(f"| {n} | {c[n] * 1000 / j:.3f} |")
        system = sum(v for n, v in c.items() if n != "fans-driver")
        out(f"| **all but the driver** | **{system * 1000 / j:.3f}** |")
        out(f"| everything | {sum(c.values()) * 1000 / j:.3f} |\n")
        if driver.get("confirmed"):
            out(f"PostgreSQL: {c.get('postgres', 0) * 1000 / driver['confirmed']:.3f} ms of CPU per confirmed order.\n")

out("## CPU per process (seconds of CPU per second of wall clock; 1.0 = one core)\n")
names = sorted({n for s in samples for n in s["cpu"]})
if phases and names:
    out("| process | " + " | ".join(p[0] for p in phases) + " |\n|---|" + "---:|" * len(phases))
    splits = [cpu_between(t0, t1) for _, t0, t1 in phases]
    for n in names:
        out(f"| {n} | " + " | ".join(f"{(c.get(n, 0) / w) if w else 0:.2f}" for c, w in splits) + " |")
    out("| **total** | " + " | ".join(f"{(sum(c.values()) / w) if w else 0:.2f}" for c, w in splits) + f" |\n")
    out(f"The machine has {a.cores} cores: a total near {a.cores}.0 means it was saturated.\n")

out("## What limited the run\n")
if ran_k6 and k6:
    spike = cpu_between(a.opens_at_ms, a.cooldown_at_ms)
    gen = spike[0].get("k6", 0) / spike[1] if spike[1] else 0
    tot = sum(spike[0].values()) / spike[1] if spike[1] else 0
    asked = max(int(s.split(":")[1]) for s in a.stages.split(","))
    got = (metric("http_reqs{phase:spike}").get("count") or 0) / max((a.cooldown_at_ms - a.opens_at_ms) / 1000, 0.001)
    iterations = count("iterations") + dropped
    if dropped > 0.01 * max(iterations, 1):
        who = "the generator" if gen >= 0.7 else "the machine (generator and system together)"
        out(f"- k6 was asked for up to {asked:,} req/s and delivered {got:,.0f} req/s on average during the spike "
            f"(the ramp included); it dropped {dropped:,} arrivals and used {gen:.2f} cores of {a.cores} "
            f"(everything together {tot:.2f}). The limit was **{who}**, not a refusal by the system: see the "
            "Rust driver's figures for the system's own capacity.")
    else:
        out(f"- k6 kept the requested rate (up to {asked:,} req/s) without dropping arrivals, using {gen:.2f} cores; "
            f"everything together used {tot:.2f} of {a.cores} cores.")
if ran_room and room:
    c, w = cpu_between(room["arrive_at_ms"], a.opens_at_ms)
    if w:
        top = sorted(((v / w, n) for n, v in c.items()), reverse=True)[:3]
        out(f"- While {room['fans']:,} fans joined, the busiest processes were " + ", ".join(f"{n} {v:.2f} cores" for v, n in top)
            + f", {sum(c.values()) / w:.2f} of {a.cores} cores in all"
            + (": the joins did not saturate the machine." if sum(c.values()) / w < 0.8 * a.cores else ": near saturation."))
if ran_rust and driver:
    c, w = cpu_between(a.driver_start_ms, a.driver_end_ms)
    if w:
        top = sorted(((v / w, n) for n, v in c.items()), reverse=True)[:3]
        out("- During the driver's run the busiest processes were " + ", ".join(f"{n} {v:.2f} cores" for v, n in top) + ".")
out("")
open(a.report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:4 + len(verdicts) + 6]))
print(f"report: {a.report}")
sys.exit(0 if all_ok else 1)
