#!/usr/bin/env python3
"""The nemesis (scripts/loadtest --chaos nemesis): Redis goes back in time both ways it does in
the cloud, at random moments of a sale, while consume-order is killed once.

It owns the Redis the functions talk to. They connect to --front, a TCP proxy to whichever Redis
is the primary, as Memorystore's primary endpoint moves on a failover. Two Redis servers take
turns: the primary, and a replica that replicates through --link, a second proxy this program
can freeze (the replica then lags; its data stops at the moment of the freeze).

From the opening, at random moments (the seed is in the log):
  promote  the link freezes, the primary keeps selling for a random 1-3 s and crashes (SIGKILL);
           the lagging replica is promoted (REPLICAOF NO ONE) and the front moves to it, dropping
           every client connection. The old primary comes back empty as the new replica.
  restore  a snapshot of the primary (BGSAVE), the sale goes on for a random 1-3 s, the primary
           crashes and comes back from that snapshot, as after a restore from a backup.
  consumer consume-order is killed (SIGKILL) and started again 4 s later.
  restore-kill  a restore whose lost writes are only those of a consume-order killed just
           before the crash (started again once Redis is back): no live process's mark tells,
           only the marks the books saved for the one gone.

Each step is written to --out as one JSON line (what, when it started, what was lost, when the
shop had its Redis back). Bounded: every wait has a deadline, and the program ends with --until.
"""
import argparse, asyncio, json, os, random, shutil, signal, subprocess, time

ap = argparse.ArgumentParser()
ap.add_argument("--front", type=int, required=True, help="the port the functions use")
ap.add_argument("--link", type=int, required=True, help="the replication link's port")
ap.add_argument("--redis", action="append", required=True, help="PORT:DIR of each Redis (two)")
ap.add_argument("--opens-at-file", required=True, help="holds the opening (epoch ms) once seeded")
ap.add_argument("--plan", default="promote,restore-kill,restore,promote")
ap.add_argument("--first-after", type=float, default=3, help="seconds after the opening")
ap.add_argument("--spacing", type=float, nargs=2, default=(4, 7), help="seconds between steps")
ap.add_argument("--consumer-pidfile", required=True)
ap.add_argument("--consumer", required=True, help="consume-order's command line (its env is ours)")
ap.add_argument("--consumer-port", type=int, required=True)
ap.add_argument("--consumer-log", required=True)
ap.add_argument("--procs", required=True, help="the run's process list, for the CPU split")
ap.add_argument("--out", required=True)
ap.add_argument("--done", required=True, help="touched when the plan has run")
ap.add_argument("--until", type=float, default=600, help="seconds this program lives at most")
ap.add_argument("--seed", type=int, default=None)
a = ap.parse_args()

seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
rng = random.Random(seed)
redis = [dict(port=int(p), dir=d) for p, d in (r.split(":", 1) for r in a.redis)]
assert len(redis) == 2, "two Redis servers"
state = {"primary": 0}  # index into `redis`; the other one is the replica
front_conns: set = set()
link_open = asyncio.Event()
link_open.set()


def now_ms():
    return int(time.time() * 1000)


def record(**step):
    with open(a.out, "a") as f:
        f.write(json.dumps(step) + "\n")
    print("nemesis:", json.dumps(step), flush=True)


async def pipe(reader, writer, gate=None):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def splice(client_r, client_w, port, conns, gate=None):
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_w.close()
        return
    pair = (client_w, up_w)
    conns.add(pair)
    try:
        await asyncio.gather(pipe(client_r, up_w, gate), pipe(up_r, client_w, gate))
    finally:
        conns.discard(pair)


async def front(reader, writer):
    await splice(reader, writer, redis[state["primary"]]["port"], front_conns)


link_conns: set = set()


async def link(reader, writer):
    # The replica's connection to the primary: frozen, nothing passes either way.
    await splice(reader, writer, redis[state["primary"]]["port"], link_conns, link_open)


def drop(conns):
    for pair in list(conns):
        for w in pair:
            w.close()
    conns.clear()


def cli(port, *args, timeout=5):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout).stdout.strip()


def pid_of(r):
    with open(os.path.join(r["dir"], "redis.pid")) as f:
        return int(f.read().strip())


async def crash(r):
    pid = pid_of(r)
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)


async def start(r, *extra):
    subprocess.run(["redis-server", "--port", str(r["port"]), "--bind", "127.0.0.1", "--dir", r["dir"],
                    "--daemonize", "yes", "--pidfile", os.path.join(r["dir"], "redis.pid"),
                    "--logfile", os.path.join(r["dir"], "redis.log"), *extra], check=True)
    for _ in range(100):
        if cli(r["port"], "PING") == "PONG" and os.path.exists(os.path.join(r["dir"], "redis.pid")):
            break
        await asyncio.sleep(0.1)
    with open(a.procs, "a") as f:
        f.write(f"redis=pid:{pid_of(r)}\n")


def wipe(r):
    for name in ("appendonlydir", "dump.rdb"):
        path = os.path.join(r["dir"], name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))


async def replica_synced(r, deadline_s=30):
    end = time.time() + deadline_s
    while time.time() < end:
        info = cli(r["port"], "INFO", "replication")
        if "master_link_status:up" in info and "master_sync_in_progress:0" in info:
            return True
        await asyncio.sleep(0.2)
    return False


async def promote():
    """The replica lags, the primary crashes, the replica is promoted."""
    old, new = state["primary"], 1 - state["primary"]
    if not await replica_synced(redis[new]):
        record(step="promote", skipped="the replica never caught up")
        return
    link_open.clear()
    frozen = now_ms()
    await asyncio.sleep(rng.uniform(1, 3))
    down = now_ms()
    await crash(redis[old])
    cli(redis[new]["port"], "REPLICAOF", "NO", "ONE")
    state["primary"] = new
    drop(front_conns)
    drop(link_conns)
    link_open.set()
    up = now_ms()
    record(step="promote", snapshot_ms=frozen, down_ms=down, up_ms=up, lost_s=(down - frozen) / 1000,
           primary=redis[new]["port"])
    # The old primary's machine comes back empty, as the new replica.
    wipe(redis[old])
    await start(redis[old], "--replicaof", "127.0.0.1", str(a.link), "--appendonly", "no", "--save", "")


async def restore(kill=False):
    """The primary crashes and comes back from a snapshot taken a few seconds before; with
    `kill`, consume-order is killed just before the crash and started only after Redis is back,
    so the writes lost are those of a process gone (only the marks the books saved tell)."""
    r = redis[state["primary"]]
    cli(r["port"], "BGSAVE")
    for _ in range(200):
        await asyncio.sleep(0.05)
        info = cli(r["port"], "INFO", "persistence")
        if "rdb_bgsave_in_progress:0" in info:
            break
    if "rdb_last_bgsave_status:ok" not in info or "rdb_bgsave_in_progress:0" not in info:
        record(step="restore", skipped="the snapshot (BGSAVE) did not complete")
        return
    snap = os.path.join(os.path.dirname(a.out), f"snapshot-{now_ms()}.rdb")
    shutil.copy(os.path.join(r["dir"], "dump.rdb"), snap)
    taken = now_ms()
    await asyncio.sleep(rng.uniform(1.5, 3))
    if kill:
        kill_consumer()
        killed_ms = now_ms()
    down = now_ms()
    await crash(r)
    wipe(r)
    shutil.copy(snap, os.path.join(r["dir"], "dump.rdb"))
    await start(r, "--appendonly", "no", "--save", "")
    drop(front_conns)
    drop(link_conns)
    up = now_ms()
    record(step="restore-kill" if kill else "restore", snapshot_ms=taken, down_ms=down, up_ms=up,
           lost_s=(down - taken) / 1000, primary=r["port"])
    if kill:
        await asyncio.sleep(max(0, 4 - (now_ms() - killed_ms) / 1000))
        await consumer(killed=True)


def kill_consumer():
    with open(a.consumer_pidfile) as f:
        pid = int(f.read().strip())
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def consumer(killed=False):
    """consume-order is killed and started again 4 s later."""
    down = now_ms()
    if not killed:
        kill_consumer()
    await asyncio.sleep(4)
    env = dict(os.environ, PORT=str(a.consumer_port))
    with open(a.consumer_log, "ab") as log:
        p = subprocess.Popen(a.consumer.split(), env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    with open(a.consumer_pidfile, "w") as f:
        f.write(f"{p.pid}\n")
    with open(a.procs, "a") as f:
        f.write(f"consume-order=pid:{p.pid}\n")
    for _ in range(300):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", a.consumer_port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    record(step="consumer", down_ms=down, up_ms=now_ms())


async def plan():
    steps = {"promote": promote, "restore": restore, "consumer": consumer,
             "restore-kill": lambda: restore(kill=True)}
    while not os.path.exists(a.opens_at_file):
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)
    with open(a.opens_at_file) as f:
        opens_at_ms = int(f.read().strip())
    at = opens_at_ms / 1000 + a.first_after + rng.uniform(0, 2)
    record(step="plan", seed=seed, plan=a.plan)
    for name in a.plan.split(","):
        await asyncio.sleep(max(0, at - time.time()))
        await steps[name]()
        at = time.time() + rng.uniform(*a.spacing)
    open(a.done, "w").close()


async def main():
    front_srv = await asyncio.start_server(front, "127.0.0.1", a.front)
    link_srv = await asyncio.start_server(link, "127.0.0.1", a.link)
    async with front_srv, link_srv:
        try:
            await asyncio.wait_for(plan(), a.until)
        except Exception as e:  # the run's verdicts still come; the report says the plan broke
            record(step="error", error=repr(e))
            open(a.done, "w").close()
        # The proxies serve until the run stops this program.
        await asyncio.sleep(max(0, a.until - (time.time() - START)))


START = time.time()
asyncio.run(main())
