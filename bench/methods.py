#!/usr/bin/env python3
"""bench/methods.py: the snapshot methods side by side on one dataset and one write load.

Variants: redis (redis-server, fork), inplace (the store, fork, --cow-strategy inplace),
redirect (fork, --cow-strategy redirect), forkless (BGSAVE FORKLESS). Each variant has its own
server, loaded once with KEYS keys named like redis-benchmark's -r (key:%012d) of VALUE_SIZE
bytes. Then ROUNDS rounds, the variant order rotating each round; per round and variant:
  1. baseline: redis-benchmark -t set -d VALUE_SIZE -r KEYS -n N -c 50 --csv, no save running;
  2. BGSAVE (FORK/FORKLESS) and at once the same redis-benchmark; until the save ends, every
     50 ms: Pss of the server + its child (smaps_rollup; Pss splits shared pages, so the sum is
     the memory really used) and the child's Private_Dirty (what the kernel copied).
Prints one line per measurement and, at the end, medians with min-max per variant:
  stall_us   parent's stall: latest_fork_usec (fork), forkless_last_setup_usec (forkless)
  save_s     BGSAVE until rdb_bgsave_in_progress:0 (polled every 10 ms)
  extra_mb   peak (Pss parent + Pss child) minus the server's Pss just before BGSAVE
  copied_mb  fork: peak child Private_Dirty; forkless: bytes copied before a write
  set_rps, set_p99_ms during the save; base_rps, base_p99_ms without one
Environment: KEYS (500000), VALUE_SIZE (512), N (300000), ROUNDS (5), STORE
(target/release/snapshot-store), PORT0 (7710: ports PORT0..PORT0+3).
Needs redis-server, redis-benchmark (apt-get install redis-server redis-tools).
"""
import os, shutil, subprocess, sys, tempfile, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storebench import Conn, info, resp

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = int(os.environ.get("KEYS", 500000))
SIZE = int(os.environ.get("VALUE_SIZE", 512))
N = int(os.environ.get("N", 300000))
ROUNDS = int(os.environ.get("ROUNDS", 5))
STORE = os.environ.get("STORE", os.path.join(HERE, "..", "target", "release", "snapshot-store"))
PORT0 = int(os.environ.get("PORT0", 7710))
VARIANTS = ["redis", "inplace", "redirect", "forkless"]

def start(variant, port, d):
    if variant == "redis":
        cmd = ["redis-server", "--port", str(port), "--save", "", "--dir", d, "--appendonly", "no"]
    else:
        strategy = "redirect" if variant == "redirect" else "inplace"
        cmd = [STORE, "--port", str(port), "--save", "", "--dir", d, "--cow-strategy", strategy]
    p = subprocess.Popen(cmd, stdout=open(os.path.join(d, "log"), "w"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            c = Conn(port)
            c.cmd("PING")
            return p, c
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{variant} did not start")

def load(c):
    v = b"x" * SIZE
    batch = []
    for i in range(KEYS):
        batch.append(resp([b"SET", b"key:%012d" % i, v]))
        if len(batch) == 1000 or i == KEYS - 1:
            c.s.sendall(b"".join(batch))
            for _ in batch:
                c.read()
            batch = []

def rollup(pid, field):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for l in f:
                if l.startswith(field + ":"):
                    return int(l.split()[1]) * 1024
    except OSError:
        pass
    return 0

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []

def bench(port):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-d", str(SIZE),
                          "-r", str(KEYS), "-n", str(N), "-c", "50", "--csv"],
                         capture_output=True, text=True).stdout
    row = [x.strip('"') for x in out.strip().splitlines()[-1].split(",")]
    return float(row[1]), float(row[6])  # rps, p99_latency_ms

def snapshot_run(variant, p, c, port):
    before = rollup(p.pid, "Pss")
    res = {}
    t = threading.Thread(target=lambda: res.update(r=bench(port)))
    t0 = time.monotonic()
    c.cmd("BGSAVE", "FORKLESS" if variant == "forkless" else "FORK") if variant != "redis" else c.cmd("BGSAVE")
    t.start()
    peak_extra = peak_dirty = 0
    next_sample = 0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            kids = children(p.pid)
            total = rollup(p.pid, "Pss") + sum(rollup(k, "Pss") for k in kids)
            peak_extra = max(peak_extra, total - before)
            peak_dirty = max([peak_dirty] + [rollup(k, "Private_Dirty") for k in kids])
            next_sample = now + 0.05
        if info(c, "persistence")["rdb_bgsave_in_progress"] == "0":
            break
        time.sleep(0.01)
    save_s = time.monotonic() - t0
    t.join()
    pers, stats = info(c, "persistence"), info(c, "stats")
    assert pers["rdb_last_bgsave_status"] == "ok", pers
    if variant == "forkless":
        stall = int(pers["forkless_last_setup_usec"])
        copied = int(pers["forkless_copied_before_write_bytes"])
    else:
        stall = int(stats["latest_fork_usec"])
        copied = peak_dirty
    rps, p99 = res["r"]
    return dict(stall_us=stall, save_s=save_s, extra_mb=peak_extra / 2**20,
                copied_mb=copied / 2**20, set_rps=rps, set_p99_ms=p99)

def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2

def main():
    for tool in ["redis-server", "redis-benchmark"]:
        if not shutil.which(tool):
            sys.exit(f"methods.py: {tool} not found (apt-get install redis-server redis-tools)")
    print(f"# KEYS={KEYS} VALUE_SIZE={SIZE} N={N} ROUNDS={ROUNDS} STORE={STORE}")
    servers = {}
    try:
        for i, v in enumerate(VARIANTS):
            d = tempfile.mkdtemp(prefix=f"methods-{v}.", dir="/tmp")
            p, c = start(v, PORT0 + i, d)
            servers[v] = (p, c, PORT0 + i, d)
            load(c)
            print(f"# {v}: pid {p.pid}, {KEYS} keys loaded, Pss {rollup(p.pid, 'Pss') / 2**20:.0f} MB", flush=True)
        results = {v: [] for v in VARIANTS}
        for r in range(ROUNDS):
            order = VARIANTS[r % 4:] + VARIANTS[:r % 4]
            for v in order:
                p, c, port, _ = servers[v]
                base_rps, base_p99 = bench(port)
                m = snapshot_run(v, p, c, port)
                m.update(base_rps=base_rps, base_p99_ms=base_p99)
                results[v].append(m)
                print(f"round {r} {v}: " + " ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in m.items()), flush=True)
        print("\n| variant | " + " | ".join(results["redis"][0].keys()) + " |")
        print("|---" * (1 + len(results["redis"][0])) + "|")
        for v in VARIANTS:
            cells = []
            for k in results[v][0]:
                xs = [m[k] for m in results[v]]
                fmt = (lambda x: f"{x:.0f}") if k in ("stall_us", "set_rps", "base_rps") else (lambda x: f"{x:.2f}")
                cells.append(f"{fmt(median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})")
            print(f"| {v} | " + " | ".join(cells) + " |")
    finally:
        for p, _, _, d in servers.values():
            p.kill()
            p.wait()
            shutil.rmtree(d, ignore_errors=True)

main()
