"""scripts/rehearse's checks: environments, clap's required variables, HTTP probes, trace lines
in the logs, the SIGTERM drain under load, and the results table. Standard library only.

Each subcommand appends its verdicts to the results file (tab-separated: subject, check,
PASS/FAIL/INFO, detail) that `table` prints at the end.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

RESULTS: Path | None = None


def record(subject: str, check: str, verdict: str, detail: str) -> None:
    detail = " ".join(detail.split())
    line = f"{subject}\t{check}\t{verdict}\t{detail}\n"
    if RESULTS:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(line)
    print(f"  {verdict:4} {subject}: {check}: {detail}", file=sys.stderr)


# --- HTTP ------------------------------------------------------------------------------------


def get(port: int, path: str, headers: dict | None = None, timeout: float = 2.0, method: str = "GET",
        body: bytes | None = None) -> tuple[int | None, bytes, str]:
    """(status or None, body, error) of one request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Connection": "close", **(headers or {})}
        conn.request(method, path, body=body, headers=h)
        res = conn.getresponse()
        return res.status, res.read(), ""
    except Exception as e:  # noqa: BLE001 - every failure is an answer here
        return None, b"", f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def signal_pid(pid: int, sig: int) -> None:
    """Signals a process of the rehearsal's (root's when we are not: through sudo)."""
    if pid <= 1:
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.kill(pid, sig)
    except PermissionError:
        import subprocess
        subprocess.run(["sudo", "kill", f"-{int(sig)}", str(pid)], check=True)


PROBES: dict[str, dict] = {}


def probe_paths(name: str) -> tuple[str, str]:
    """(startup, liveness) probe paths Terraform gives the service NAME (or NAME-foreign)."""
    svc = PROBES.get(name) or PROBES.get(name.removesuffix("-foreign")) or {}
    start = (svc.get("startup_probe") or {}).get("path") or "/readyz"
    live = (svc.get("liveness_probe") or {}).get("path") or "/healthz"
    return start, live


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# --- Environment -----------------------------------------------------------------------------


def cmd_envfile(a) -> int:
    """Writes the NUL-separated environment of one instance: the image's ENV, then what
    Terraform gives (markers replaced by the local engines' values), then what Cloud Run sets."""
    tf = json.loads(Path(a.tf).read_text())
    kind, name = a.target.split(":", 1)
    entry = tf["jobs" if kind == "job" else "services"][name]
    image_env = dict(e.split("=", 1) for e in json.loads(a.image_env))
    subs = json.loads(Path(a.subs).read_text())
    env = dict(image_env)
    for var, e in entry["env"].items():
        v = e["value"]
        if "__CLOUDSQL_HOST__:5432" in v:
            v = v.replace("__CLOUDSQL_HOST__:5432", f"127.0.0.1:{subs['pg_port']}")
        v = (v.replace("__CLOUDSQL_HOST__", "127.0.0.1")
             .replace("__REDIS_PORT__", str(subs["redis_port"]))
             .replace("__REDIS_AUTH__", subs["redis_auth"])
             .replace("__REDIS_CA_PEM__", subs["redis_ca"])
             .replace("__CLOUDSQL_CA_PEM__", subs["pg_ca"]))
        env[var] = v
    for kv in a.set or []:
        k, v = kv.split("=", 1)
        env[k] = v
    with open(a.out, "wb") as f:
        for k, v in env.items():
            f.write(f"{k}={v}".encode() + b"\0")
    return 0


def cmd_tfcheck(a) -> int:
    """Verdicts on Terraform's environment: every variable fillable, and every variable the
    binary requires (clap's usage line) present."""
    tf = json.loads(Path(a.tf).read_text())
    ok = True
    for err in tf.get("errors", []):
        record("terraform", "environment evaluated", "FAIL", err)
        ok = False
    for spec in a.binary:
        # spec: kind:name:helpfile[:helpfile...] (one help text per binary/subcommand)
        kind, name, *helps = spec.split(":")
        entry = tf["jobs" if kind == "job" else "services"].get(name)
        subject = name if kind == "service" else f"{name} (job)"
        if entry is None:
            record(subject, "Terraform environment", "FAIL", f"no {kind} {name} in terraform/")
            ok = False
            continue
        env = entry["env"]
        if entry["unfillable"]:
            record(subject, "Terraform env: every value fillable", "FAIL",
                   "; ".join(f"{k} = {v}" for k, v in entry["unfillable"].items()))
            ok = False
        else:
            subst = sorted({k for k, e in env.items() if e["substituted"]})
            record(subject, "Terraform env: every value fillable", "PASS",
                   f"{len(env)} variables; local values for {', '.join(subst) or 'none'}")
        missing, reads = [], set()
        for h in helps:
            text = Path(h).read_text(errors="replace")
            if "Usage:" not in text:
                missing.append(f"(no clap help from the image: {text.strip()[:120]!r})")
                continue
            opts, required = parse_help(text)
            reads |= {e for e in opts.values() if e}
            for group in required:
                envs = [opts.get(o) for o in group]
                if not any(e and e in env for e in envs):
                    missing.append("|".join(e or f"--{o} (no env)" for e, o in zip(envs, group)))
        unread = sorted(set(env) - reads - {"RUST_LOG", "GOOGLE_CLOUD_PROJECT"})
        if missing:
            record(subject, "required variables (clap) given by Terraform", "FAIL", "missing: " + ", ".join(missing))
            ok = False
        else:
            record(subject, "required variables (clap) given by Terraform", "PASS",
                   "all given" + (f"; given but not read by this binary: {', '.join(unread)}" if unread else ""))
    return 0 if ok else 1


def parse_help(text: str) -> tuple[dict[str, str | None], list[list[str]]]:
    """clap's help: {long option: env var} and the required options (groups: one of) from the
    usage line."""
    opts: dict[str, str | None] = {}
    current = None
    for line in text.split("error: the following required arguments")[0].splitlines():
        m = re.match(r"\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", line)
        if m:
            current = m.group(1)
            opts.setdefault(current, None)
        if current:
            e = re.search(r"\[env: ([A-Z0-9_]+)", line)
            if e and opts[current] is None:
                opts[current] = e.group(1)
    usage = ""
    for line in text.splitlines():
        if line.startswith("Usage:"):
            usage = line
            break
    required: list[list[str]] = []
    # <--a <A>|--b <B>> groups first, then the plain ones.
    for g in re.findall(r"<((?:--[a-z0-9-]+(?: <[A-Z_]+>)?\|?)+)>", usage):
        required.append(re.findall(r"--([a-z0-9-]+)", g))
    rest = re.sub(r"<((?:--[a-z0-9-]+(?: <[A-Z_]+>)?\|?)+)>", "", usage)
    rest = re.sub(r"\[[^\]]*\]", "", rest)
    for o in re.findall(r"--([a-z0-9-]+)", rest):
        required.append([o])
    # clap's error for the bare command lists every required argument, conditional ones too.
    m = re.search(r"required arguments were not provided:\n((?:[ \t]+\S.*\n?)+)", text)
    if m:
        for line in m.group(1).splitlines():
            group = re.findall(r"--([a-z0-9-]+)", line)
            if group and group not in required:
                required.append(group)
    return opts, required


# --- Startup during an outage, readiness ------------------------------------------------------


def cmd_outage(a) -> int:
    """Polls each instance for the whole outage: alive, /healthz, /readyz."""
    inst = [i.split(":") for i in a.instance]  # name:port:pid
    seen = {n: {"ready": [], "healthz": [], "died": None, "listening": None} for n, _, _ in inst}
    start = time.monotonic()
    end = start + a.secs
    while time.monotonic() < end:
        for n, port, pid in inst:
            s = seen[n]
            if s["died"] is not None:
                continue
            if not alive(int(pid)):
                s["died"] = time.monotonic() - start
                continue
            ready_path, live_path = probe_paths(n)
            r, _, _ = get(int(port), ready_path, timeout=1.5)
            h, _, _ = get(int(port), live_path, timeout=1.5)
            s["ready"].append(r)
            s["healthz"].append(h)
            if h == 200 and s["listening"] is None:
                s["listening"] = time.monotonic() - start
        time.sleep(1)
    ok = True
    for n, port, pid in inst:
        s = seen[n]
        codes = sorted({str(c) for c in s["ready"]})
        if s["died"] is not None:
            verdict, detail = "FAIL", f"exited {s['died']:.0f} s into the {a.secs} s outage (see its log)"
        elif 200 in s["ready"]:
            verdict, detail = "FAIL", f"/readyz answered 200 while Redis and the database were down ({', '.join(codes)})"
        elif 503 not in s["ready"]:
            verdict, detail = "FAIL", f"/readyz never answered 503 (answers: {', '.join(codes) or 'none'})"
        elif s["listening"] is None or s["listening"] > 15:
            verdict, detail = "FAIL", "not listening (/healthz 200) within 15 s of its start"
        else:
            verdict = "PASS"
            detail = (f"alive {a.secs} s; /readyz 503 throughout, /healthz 200 from {s['listening']:.0f} s")
        ok &= verdict == "PASS"
        record(n, f"engines down {a.secs} s at start: retries, not ready, never exits", verdict, detail)
    return 0 if ok else 1


def cmd_ready(a) -> int:
    """Waits until each instance's /readyz answers 200 (bounded)."""
    inst = [i.split(":") for i in a.instance]
    start = time.monotonic()
    pending = {n: (int(p), int(pid)) for n, p, pid in inst}
    got: dict[str, float] = {}
    last: dict[str, str] = {}
    while pending and time.monotonic() - start < a.timeout:
        for n, (port, pid) in list(pending.items()):
            if not alive(pid):
                last[n] = "exited"
                del pending[n]
                continue
            r, body, err = get(port, probe_paths(n)[0], timeout=1.5)
            last[n] = str(r or err)
            if r == 200:
                got[n] = time.monotonic() - start
                del pending[n]
        time.sleep(0.25)
    ok = True
    for n, _, _ in inst:
        if n in got:
            record(n, a.check, "PASS", f"/readyz 200 {got[n]:.1f} s {a.since}")
        else:
            record(n, a.check, "FAIL", f"no /readyz 200 within {a.timeout} s {a.since} (last: {last.get(n)})")
            ok = False
    return 0 if ok else 1


def cmd_refused(a) -> int:
    """An instance facing a Redis whose certificate another CA signed: never ready, and its
    log names the TLS failure."""
    n, port, pid = a.instance.split(":")
    deadline = time.monotonic() + a.secs
    codes = set()
    while time.monotonic() < deadline and alive(int(pid)):
        r, _, _ = get(int(port), probe_paths(n)[0], timeout=1.5)
        codes.add(r)
        time.sleep(0.5)
    log = Path(a.log).read_text(errors="replace")
    tls = re.search(r"(invalid peer certificate[^\"]*|UnknownIssuer|certificate verify failed[^\"]*|"
                    r"BadSignature|NotValidForName[^\"]*)", log, re.I)
    exited = not alive(int(pid))
    if 200 in codes:
        verdict, detail = "FAIL", "became ready against a server certificate from another CA"
    elif not tls:
        errs = re.findall(r'"error":"([^"]{0,160})', log)
        verdict, detail = "FAIL", ("not ready, but its log names no Redis certificate error"
                                   + (f" (last error: {errs[-1]})" if errs else ""))
    else:
        verdict = "PASS"
        detail = (f"never ready ({a.secs} s), logs: {tls.group(1)[:120]}"
                  + ("; NOTE the process exited instead of retrying" if exited else ""))
    record(n, "Redis TLS: certificate from another CA refused", verdict, detail)
    return 0 if verdict == "PASS" else 1


def cmd_healthz(a) -> int:
    n, port = a.name, int(a.port)
    live = probe_paths(n)[1]
    r, body, err = get(port, live)
    ok = r == 200
    record(n, f"{live} (liveness probe) on $PORT ({port}, not 8080)", "PASS" if ok else "FAIL",
           f"{r} {body[:40].decode(errors='replace')!r}" if r else err)
    return 0 if ok else 1


# --- Trace field in the logs -------------------------------------------------------------------


def cmd_trace(a) -> int:
    """One request that logs (see scripts/rehearse for which), carrying a trace header; its line
    must name projects/<GOOGLE_CLOUD_PROJECT>/traces/<id>."""
    trace = secrets.token_hex(16)
    span = secrets.token_hex(8)
    if a.header == "traceparent":
        headers = {"traceparent": f"00-{trace}-{span}-01"}
    else:
        headers = {"X-Cloud-Trace-Context": f"{trace}/{int(span, 16)};o=1"}
    port = int(a.port)
    status = None
    if a.kind == "availability-order":
        # Redis stands still for this one request (SIGSTOP), longer than REDIS_TIMEOUT_MS.
        os.kill(int(a.freeze_pid), signal.SIGSTOP)
        try:
            status, _, err = get(port, f"/v1/orders/{uuid.uuid4()}", headers=headers, timeout=5)
        finally:
            os.kill(int(a.freeze_pid), signal.SIGCONT)
    elif a.kind == "buy-decline":
        order = reserve(port, f"trace-{trace[:8]}@example.at")
        if order is None:
            record(a.name, "trace field in the logs", "FAIL", "could not reserve an order to pay")
            return 1
        status, _, err = get(port, f"/v1/orders/{order}/payment", method="POST",
                             body=b'{"payment_token":"tok_decline"}',
                             headers={**headers, "Content-Type": "application/json",
                                      "Idempotency-Key": str(uuid.uuid4()), **XFF()}, timeout=5)
    elif a.kind == "push-garbage":
        status, _, err = get(port, "/pubsub/orders", method="POST", body=b"not an envelope",
                             headers={**headers, "Content-Type": "application/json"}, timeout=5)
    want = f"projects/{a.project}/traces/{trace}"
    deadline = time.monotonic() + 5
    found, other = None, None
    while time.monotonic() < deadline and not found:
        for line in Path(a.log).read_text(errors="replace").splitlines():
            if trace not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                other = line[:160]
                continue
            got = entry.get("logging.googleapis.com/trace")
            if got == want:
                found = entry
                break
            other = f"trace field {got!r}"
        time.sleep(0.2)
    if found:
        record(a.name, f"trace field in the logs ({a.header})", "PASS",
               f"{want} on \"{found.get('message', '')}\" (answer {status})")
        return 0
    record(a.name, f"trace field in the logs ({a.header})", "FAIL",
           f"no line with {want} (answer {status}; {other or 'no line carries the trace id'})")
    return 1


def XFF() -> dict:
    """A client address as the load balancer reports it (TRUSTED_PROXY_HOPS = 2): a fresh one
    per call, so the per-IP limits never bind."""
    ip = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    return {"X-Forwarded-For": f"{ip}, 35.191.0.1"}


def reserve(port: int, email: str) -> str | None:
    body = json.dumps({"ticket_type": a_ticket_type(), "quantity": 1, "email": email}).encode()
    r, data, _ = get(port, f"/v1/events/{EVENT}/orders", method="POST", body=body,
                     headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4()), **XFF()},
                     timeout=5)
    if r == 202:
        return json.loads(data)["order_id"]
    return None


EVENT = os.environ.get("REHEARSE_EVENT", "frequency-2027")


def a_ticket_type() -> str:
    return random.choice(["vip-3-day", "vip-camping"])


# --- SIGTERM under load --------------------------------------------------------------------------


class Load:
    def __init__(self, kind: str, port: int, key: str, project: str):
        self.kind, self.port, self.key, self.project = kind, port, key, project
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stats = {"connected": 0, "answered": 0, "lost": 0, "refused": 0}
        # Lost: the request was sent (all of it in the socket) before SIGTERM, and no whole answer
        # came: Cloud Run had routed it, it must be answered. Closed: a connection the server
        # closed before the request was sent, i.e. after SIGTERM (a new one while the listener
        # closed, or one idle when the drain began): Cloud Run sends no new requests to an
        # instance it stops, so these are counted, not failed.
        self.lost: list[str] = []
        self.lost_before = 0
        self.lost_after = 0
        self.statuses: dict[int, int] = {}
        self.slowest = 0.0
        self.after_term = {"connected": 0, "answered": 0}
        self.term_at: float | None = None

    def one(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int | None, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        t0 = time.monotonic()
        try:
            try:
                conn.connect()
            except OSError:
                with self.lock:
                    self.stats["refused"] += 1
                return None, b""
            with self.lock:
                self.stats["connected"] += 1
                connected_after = self.term_at is not None
                if connected_after:
                    self.after_term["connected"] += 1
            sent_before = False
            try:
                conn.request(method, path, body=body, headers={"Connection": "close", **headers})
                sent_before = self.term_at is None
                res = conn.getresponse()
                data = res.read()
                if res.getheader("Content-Length") and len(data) != int(res.getheader("Content-Length")):
                    raise http.client.IncompleteRead(data)
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.stats["lost"] += 1
                    if sent_before:
                        self.lost_before += 1
                    else:
                        self.lost_after += 1
                    when = ("sent before SIGTERM" if sent_before else
                            "connected after SIGTERM" if connected_after else "connected before, sent after SIGTERM")
                    self.lost.append(f"{method} {path.split('?')[0]} ({when}): {type(e).__name__}: {e}"[:180])
                return None, b""
            with self.lock:
                self.stats["answered"] += 1
                if self.term_at is not None:
                    self.after_term["answered"] += 1
                self.statuses[res.status] = self.statuses.get(res.status, 0) + 1
                self.slowest = max(self.slowest, time.monotonic() - t0)
            return res.status, data
        finally:
            conn.close()

    def worker(self, n: int):
        rnd = random.Random(n)
        while not self.stop.is_set():
            if self.kind == "check-availability":
                if rnd.random() < 0.7:
                    self.one("GET", f"/v1/events/{EVENT}/availability", None, {})
                else:
                    self.one("GET", f"/v1/orders/{uuid.uuid4()}", None, {})
            elif self.kind == "buy":
                body = json.dumps({"ticket_type": a_ticket_type(), "quantity": 1,
                                   "email": f"drain-{uuid.uuid4().hex[:12]}@example.at"}).encode()
                s, data = self.one("POST", f"/v1/events/{EVENT}/orders", body,
                                   {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4()), **XFF()})
                if s == 202 and rnd.random() < 0.6:
                    order = json.loads(data)["order_id"]
                    # A payment waits up to PAY_CONFIRM_WAIT_MS for its outcome: long in flight.
                    self.one("POST", f"/v1/orders/{order}/payment", b'{"payment_token":"tok_approve"}',
                             {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4()), **XFF()})
            elif self.kind == "consume-order":
                self.one("POST", "/pubsub/orders", self.push_body(), {"Content-Type": "application/json"})

    def push_body(self) -> bytes:
        order = {
            "order_id": str(uuid.uuid4()), "event": EVENT, "ticket_type": a_ticket_type(), "quantity": 1,
            "email": f"drain-{uuid.uuid4().hex[:12]}@example.at", "amount_cents": 0,
            "payment_ref": f"pay_{uuid.uuid4().hex}", "paid_at": datetime.now(timezone.utc).isoformat(),
        }
        data = json.dumps({"orders": [order]}).encode()
        sig = base64.b64encode(hmac.new(self.key.encode(), data, hashlib.sha256).digest()).decode()
        return json.dumps({
            "message": {"data": base64.b64encode(data).decode(), "messageId": str(random.getrandbits(60)),
                        "attributes": {"signature": sig}},
            "subscription": f"projects/{self.project}/subscriptions/orders-push",
        }).encode()


def cmd_drain(a) -> int:
    """Bounded load (a worker per connection), SIGTERM to the process after a while, load kept
    up until it exits: every request that got a connection must get its whole answer, and the
    process must be gone within the grace period (its exit status is checked by the caller)."""
    load = Load(a.kind, int(a.port), a.key or "", a.project)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(a.concurrency)]
    for t in threads:
        t.start()
    time.sleep(a.warmup)
    before = dict(load.stats)
    pid = int(a.pid)
    load.term_at = time.monotonic()
    signal_pid(pid, signal.SIGTERM)
    exited_after = None
    while time.monotonic() - load.term_at < a.grace + 5:
        if not alive(pid):
            exited_after = time.monotonic() - load.term_at
            break
        time.sleep(0.02)
    time.sleep(0.3)
    load.stop.set()
    for t in threads:
        t.join(timeout=20)
    s = load.stats
    statuses = ", ".join(f"{k}x{v}" for k, v in sorted(load.statuses.items()))
    detail = (f"{s['connected']} connected ({before['answered']} answered before SIGTERM, "
              f"{load.after_term['connected']} connected after), {s['answered']} answered [{statuses}], "
              f"{load.lost_before} lost of those sent before SIGTERM, {load.lost_after} closed unanswered "
              f"with the request sent after it, slowest {load.slowest:.2f} s; ")
    if exited_after is None:
        detail += f"still running {a.grace + 5} s after SIGTERM"
    else:
        detail += f"exited {exited_after:.2f} s after SIGTERM"
    ok = load.lost_before == 0 and exited_after is not None and exited_after <= a.grace and before["answered"] > 0
    if load.lost:
        first = sorted(set(load.lost), key=lambda l: ("sent before SIGTERM" not in l, l))
        detail += "; lost: " + " | ".join(first[:3])
    if before["answered"] == 0:
        detail += "; no request was answered before SIGTERM (no load)"
    Path(a.out).write_text(json.dumps({"ok": ok, "detail": detail, "exited_after": exited_after}))
    return 0 if ok else 1


def cmd_probes(a) -> int:
    """Terraform's container port and probes against the image: the port the image EXPOSEs and
    PORT defaults to, probe paths the function serves."""
    tf = json.loads(Path(a.tf).read_text())
    svc = tf["services"][a.name]
    start, live = svc.get("startup_probe") or {}, svc.get("liveness_probe") or {}
    port = svc.get("container_port")
    problems = []
    if str(port) != a.image_port:
        problems.append(f"container_port {port} but the image EXPOSEs {a.image_port}")
    for kind, p in (("startup", start), ("liveness", live)):
        if not p:
            problems.append(f"no {kind} probe")
        elif str(p.get("port", port)) != str(port):
            problems.append(f"{kind} probe on port {p.get('port')}, not the container port {port}")
    if start and start.get("path") == live.get("path"):
        problems.append(f"startup and liveness probe the same path {start.get('path')} (a dependency outage would restart every instance)")
    budget = (start.get("period_seconds") or 0) * (start.get("failure_threshold") or 0)
    detail = (f"port {port}; startup {start.get('path')} every {start.get('period_seconds')} s x "
              f"{start.get('failure_threshold')} ({budget} s); liveness {live.get('path')}; "
              f"{svc.get('containers')} container(s)")
    record(a.name, "Terraform's port and probes fit the image", "FAIL" if problems else "PASS",
           "; ".join(problems) if problems else detail)
    return 1 if problems else 0


def cmd_logs(a) -> int:
    """Every line the function wrote is one JSON object with a severity (what Cloud Logging
    parses into a structured entry; anything else arrives as plain text)."""
    lines = [l for l in Path(a.log).read_text(errors="replace").splitlines() if l.strip()]
    bad = []
    for l in lines:
        try:
            e = json.loads(l)
            if not isinstance(e, dict) or "severity" not in e:
                bad.append(l)
        except ValueError:
            bad.append(l)
    ok = not bad and lines
    record(a.name, "logs: every line JSON with a severity", "PASS" if ok else "FAIL",
           f"{len(lines)} lines" + (f"; {len(bad)} not: {bad[0][:120]!r}" if bad else ""))
    return 0 if ok else 1


# --- The table -----------------------------------------------------------------------------------


def cmd_table(a) -> int:
    rows = [l.split("\t") for l in Path(a.results).read_text().splitlines() if l.strip()]
    order = ["terraform", "check-availability", "buy", "consume-order", "ops (job)"]
    rows.sort(key=lambda r: (order.index(r[0]) if r[0] in order else len(order), ))
    width = min(max((len(r[1]) for r in rows), default=10), 62)
    print()
    subject = None
    for r in rows:
        if r[0] != subject:
            subject = r[0]
            print(f"\n{subject}")
        check = r[1] if len(r[1]) <= width else r[1][:width - 1] + "…"
        print(f"  {r[2]:4}  {check:<{width}}  {r[3]}")
    fails = sum(1 for r in rows if r[2] == "FAIL")
    print(f"\n{len(rows)} checks, {fails} failed")
    return 1 if fails else 0


def cmd_record(a) -> int:
    record(a.subject, a.check, a.verdict, a.detail)
    return 0


def main() -> int:
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--results")
    ap.add_argument("--tf", help="tfenv.py's output: the probe paths Terraform configures")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("envfile"); p.add_argument("tf"); p.add_argument("target"); p.add_argument("out")
    p.add_argument("--image-env", required=True); p.add_argument("--subs", required=True); p.add_argument("--set", action="append")
    p = sub.add_parser("tfcheck"); p.add_argument("tf"); p.add_argument("--binary", action="append", default=[])
    p = sub.add_parser("outage"); p.add_argument("--secs", type=int, required=True); p.add_argument("instance", nargs="+")
    p = sub.add_parser("ready"); p.add_argument("--timeout", type=float, default=45); p.add_argument("--check", required=True)
    p.add_argument("--since", default="after the engines came up"); p.add_argument("instance", nargs="+")
    p = sub.add_parser("refused"); p.add_argument("--secs", type=int, default=10); p.add_argument("instance"); p.add_argument("log")
    p = sub.add_parser("healthz"); p.add_argument("name"); p.add_argument("port")
    p = sub.add_parser("trace"); p.add_argument("name"); p.add_argument("port"); p.add_argument("log")
    p.add_argument("--project", required=True); p.add_argument("--kind", required=True); p.add_argument("--header", default="traceparent")
    p.add_argument("--freeze-pid")
    p = sub.add_parser("drain"); p.add_argument("kind"); p.add_argument("port"); p.add_argument("pid"); p.add_argument("out")
    p.add_argument("--key"); p.add_argument("--project", default="")
    p.add_argument("--grace", type=float, default=10); p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p = sub.add_parser("table"); p.add_argument("results")
    p = sub.add_parser("probes"); p.add_argument("tf"); p.add_argument("name"); p.add_argument("image_port")
    p = sub.add_parser("logs"); p.add_argument("name"); p.add_argument("log")
    p = sub.add_parser("record"); p.add_argument("subject"); p.add_argument("check"); p.add_argument("verdict"); p.add_argument("detail")
    a = ap.parse_args()
    if a.results:
        RESULTS = Path(a.results)
    if a.tf and Path(a.tf).is_file():
        PROBES.update(json.loads(Path(a.tf).read_text()).get("services", {}))
    return globals()[f"cmd_{a.cmd}"](a)


if __name__ == "__main__":
    sys.exit(main())
