#!/usr/bin/env python3
"""Samples a load run every --interval seconds (default 1) until --stop exists: CPU seconds per process (the split
between generator and system, per phase) and the availability the fans see (when it sold out).
Processes come from --procs lines `name=pid:N`, `name=pgid:N` (whole group) or `name=pgtree:N`
(a PostgreSQL postmaster and its children); the file may grow during the run."""
import argparse, json, os, subprocess, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--procs", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--stop", required=True)
ap.add_argument("--max-seconds", type=float, default=3600)
ap.add_argument("--ops", help="ops binary: also sample the books (confirming, sold) each second")
ap.add_argument("--event", default="frequency-2027")
ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
a = ap.parse_args()
TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        # fields after the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        return int(parts[1]), int(parts[2]), (int(parts[11]) + int(parts[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cpu_by_name():
    out = {}
    try:
        lines = open(a.procs).read().split()
    except OSError:
        return out
    table = None
    for line in lines:
        name, spec = line.split("=", 1)
        kind, pid = spec.split(":", 1)
        if not pid.isdigit():
            continue
        pid = int(pid)
        if kind == "pid":
            s = stat(pid)
            total = s[2] if s else None
        else:
            if table is None:
                table = {p: stat(p) for p in all_pids()}
                table = {p: s for p, s in table.items() if s}
            if kind == "pgid":
                total = sum(s[2] for s in table.values() if s[1] == pid)
            else:  # pgtree: the process and its direct children
                total = sum(s[2] for p, s in table.items() if p == pid or s[0] == pid)
        if total is not None:
            out[name] = round(total, 2)
    return out


samples = []
start = time.time()
while not os.path.exists(a.stop) and time.time() - start < a.max_seconds:
    t = time.time()
    sample = {"t_ms": int(t * 1000), "cpu": cpu_by_name()}
    try:
        with urllib.request.urlopen(a.url, timeout=1) as r:
            view = json.load(r)
        sample["available"] = {tt["id"]: tt["available"] for tt in view["ticket_types"]}
        sample["sale_open"] = view["sale_open"]
        sample["stale"] = view.get("stale", False)
    except Exception as e:  # the run goes on; a missed sample is recorded as such
        sample["error"] = str(e)[:120]
    if a.ops:
        try:
            p = subprocess.run([a.ops, "audit", "--event", a.event, "--json"], capture_output=True, text=True, timeout=3)
            books = json.loads(p.stdout)
            sample["confirming"] = sum(t["confirming"] for t in books["ticket_types"])
            sample["sold_db"] = sum((t["db"] or {}).get("sold", 0) for t in books["ticket_types"])
        except Exception as e:
            sample["books_error"] = str(e)[:120]
    samples.append(sample)
    time.sleep(max(0, a.interval - (time.time() - t)))
samples.append({"t_ms": int(time.time() * 1000), "cpu": cpu_by_name()})
json.dump({"samples": samples}, open(a.out, "w"))
