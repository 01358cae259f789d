#!/usr/bin/env python3
"""snapshot: the cost of one snapshot per method against redis-server, same dataset, same write load.
Variants: redis (redis-server, BGSAVE), inplace (`snapshot serve --cow-strategy inplace`, BGSAVE FORK),
redirect (--cow-strategy redirect, BGSAVE FORK), forkless (BGSAVE FORKLESS); one server each, loaded once;
the variant order rotates each round. Needs redis-server, redis-benchmark."""
import os, threading, time
import harness as h
from storebench import Conn, resp

KEYS = h.pick(20_000, 1_000_000)
SIZE = 512
N = h.pick(20_000, 200_000)
VARIANTS = ["redis", "inplace", "redirect", "forkless"]


def load(server):
    c = Conn(server.port)
    v = b"x" * SIZE
    for start in range(0, KEYS, 1000):
        batch = [resp([b"SET", b"key:%012d" % i, v]) for i in range(start, min(start + 1000, KEYS))]
        c.s.sendall(b"".join(batch))
        for _ in batch:
            c.read()


def rollup(pid, field):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
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
    res = h.redis_benchmark(port, "-t", "set", "-d", SIZE, "-r", KEYS, "-n", N, "-c", 50)
    return res["SET"]


def one_save(variant, s):
    """Sends BGSAVE and at once the SET load; samples Pss (parent + child) every 50 ms until the save ends."""
    before = rollup(s.p.pid, "Pss")
    res = {}
    def load():
        t = time.monotonic()
        res.update(r=bench(s.port), load_s=time.monotonic() - t)
    load_thread = threading.Thread(target=load)
    t0 = time.monotonic()
    s.cli(*{"redis": ["BGSAVE"], "forkless": ["BGSAVE", "FORKLESS"]}.get(variant, ["BGSAVE", "FORK"]))
    load_thread.start()
    peak_extra = peak_dirty = 0
    while s.info("persistence").get("rdb_bgsave_in_progress") != "0":
        kids = children(s.p.pid)
        peak_extra = max(peak_extra, rollup(s.p.pid, "Pss") + sum(rollup(k, "Pss") for k in kids) - before)
        peak_dirty = max([peak_dirty] + [rollup(k, "Private_Dirty") for k in kids])
        time.sleep(0.05)
    save_s = time.monotonic() - t0
    load_thread.join()
    pers, stats = s.info("persistence"), s.info("stats")
    if pers.get("rdb_last_bgsave_status") != "ok":
        raise RuntimeError(f"{variant}: BGSAVE failed: {pers}")
    if variant == "forkless":
        stall, copied = int(pers["forkless_last_setup_usec"]), int(pers["forkless_copied_before_write_bytes"])
    else:
        stall, copied = int(stats["latest_fork_usec"]), peak_dirty
    return stall, save_s, peak_extra / 2**20, copied / 2**20, res["r"], min(1.0, save_s / res["load_s"])


def body():
    def metric(id, title, unit, better, baseline="redis"):
        return h.metric(id, title, unit, better, baseline, VARIANTS)
    m = {
        "stall": metric("stall_us", "parent's stall at the start (fork, or forkless set-up)", "µs", "lower"),
        "save": metric("save_s", "snapshot duration (BGSAVE until done)", "s", "lower"),
        "extra": metric("extra_mb", "peak extra memory (Pss of server + child above the pre-snapshot Pss)", "MiB", "lower"),
        "copied": metric("copied_mb", "copied bytes (fork: child's peak Private_Dirty; forkless: old versions copied)", "MiB", "lower"),
        "rps": metric("set_rps_during", "SET/s during the snapshot", "SET/s", "higher"),
        "p99": metric("set_p99_ms_during", "SET p99 during the snapshot", "ms", "lower"),
        "overlap": metric("load_in_save", "share of the write load's run that the snapshot lasted (the \"during\" "
                          "figures cover the whole load: below 1, they are diluted by writes after the save)", "ratio",
                          "higher", None),
        "rps_ratio": metric("set_during_vs_base", "SET/s during the snapshot / SET/s just before without one", "ratio", "higher", None),
        "p99_ratio": metric("p99_during_vs_base", "SET p99 during the snapshot / p99 just before without one", "ratio", "lower", None),
    }
    servers = {}
    try:
        for v in VARIANTS:
            servers[v] = h.Server("redis") if v == "redis" else h.Server(
                "snapshot", ["--cow-strategy", "redirect" if v == "redirect" else "inplace"])
            load(servers[v])
            h.log(f"snapshot: {v} loaded {KEYS} keys, Pss {rollup(servers[v].p.pid, 'Pss') / 2**20:.0f} MiB")
        for r in range(h.ROUNDS):
            for v in h.rotated(VARIANTS, r):
                s = servers[v]
                base_rps, base_p99 = bench(s.port)
                stall, save_s, extra, copied, (rps, p99), overlap = one_save(v, s)
                for k, x in [("stall", stall), ("save", save_s), ("extra", extra), ("copied", copied), ("rps", rps),
                             ("p99", p99), ("overlap", overlap), ("rps_ratio", rps / base_rps), ("p99_ratio", p99 / base_p99)]:
                    m[k]["samples"][v].append(x)
                h.log(f"snapshot round {r + 1} {v}: stall {stall} µs, save {save_s:.2f} s, extra {extra:.1f} MiB, "
                      f"copied {copied:.1f} MiB, SET/s {rps:.0f} (base {base_rps:.0f})")
    finally:
        for s in servers.values():
            s.stop()
    h.emit("snapshot", METHOD.format(keys=KEYS, n=N),
           [f"load: SET key:%012d (0 … {KEYS - 1}) of {SIZE} B, pipelined",
            f"redis-benchmark -t set -d {SIZE} -r {KEYS} -n {N} -c 50 --csv   # baseline, then again at the BGSAVE",
            "BGSAVE (redis-server) | BGSAVE FORK (snapshot serve --cow-strategy inplace|redirect) | BGSAVE FORKLESS"],
           list(m.values()))


METHOD = """Four servers, each loaded once with the same {keys} keys `key:%012d` × 512 B: redis-server (`--save ''`,
BGSAVE), `snapshot serve --cow-strategy inplace` (BGSAVE FORK), `--cow-strategy redirect` (BGSAVE FORK), and
BGSAVE FORKLESS. Per round and variant: the write load without a save (the baseline), then BGSAVE and at once the
same load (`redis-benchmark -t set -d 512 -r {keys} -n {n} -c 50`: uniform keys, full speed, no fixed rate); every
50 ms until the save ends, the Pss of the server plus its child (smaps_rollup; Pss splits shared pages, so the sum
is the memory really used) and the child's Private_Dirty. Stall: INFO `latest_fork_usec` (fork) or
`forkless_last_setup_usec`. The "during" figures cover the load's whole run, which may outlast the save: the
share of the load the save lasted is its own table, and where it is below 1 the "during" ratios understate the
save's effect (section 9 measures SET/s and p99 inside the saves only)."""

if __name__ == "__main__":
    h.main(body)
