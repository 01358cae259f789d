#!/usr/bin/env python3
"""Before/after figures for issue 16 items 2, 3 and 4 (see BENCHMARKS.md, section "Store: growth
during a save, FLUSHALL during a save, incremental fsync").

usage: python3 bench/store-resize-fsync.py BEFORE AFTER [ROUNDS]
BEFORE, AFTER: `snapshot` binaries (run as `BIN serve`) or `snapshot-store` binaries.
Uses ports 7310-7311 and private temp dirs under /tmp (a disk, so fsync costs what it costs);
kills only the servers it started. Needs redis-benchmark.

A. Growth during a save: 4 values of 250 MB (table of 16 buckets), BGSAVE, and at once
   `redis-benchmark -t set -n 300000 -r 100000000 -P 16`; the same benchmark without a save
   first. Reports requests/s, whether the child outlived the benchmark, rdb_last_cow_size
   (the copied-bytes price) and the bucket count the table had when the benchmark ended.
B. FLUSHALL during a save: 8 values of 128 MB, BGSAVE, FLUSHALL as soon as the child has
   written the whole temp file (it is then in its final fsync); the FLUSHALL round trip.
C. Save time alone: the same 1 GiB, BGSAVE until rdb_bgsave_in_progress:0 (polled every 10 ms),
   and its tail: from the temp file reaching 1 GiB (all written; polled every 5 ms) to the end
   (final fsync, rename, directory fsync, exit, reaping).
PARTS (environment, default "ABC") picks the parts to run.
Conditions alternate within each round (the first one rotating), medians over ROUNDS (3).
"""
import os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storebench import Server, bench_set, big_values, info, wait_no_child  # noqa: E402

def growth(binary, port):
    s = Server(binary, port)
    try:
        big_values(s.c, 4, 250 << 20)
        idle = bench_set(port)
        s.c.cmd("FLUSHALL")
        big_values(s.c, 4, 250 << 20)
        s.c.cmd("BGSAVE")
        during = bench_set(port)
        alive = info(s.c, "persistence")["rdb_bgsave_in_progress"] == "1"
        buckets = info(s.c, "memory").get("dataset_table_buckets", "?")
        wait_no_child(s.c)
        cow = int(info(s.c, "persistence")["rdb_last_cow_size"])
        return idle, during, alive, buckets, cow
    finally:
        s.stop()

def flushall_stall(binary, port):
    s = Server(binary, port)
    try:
        big_values(s.c, 8, 128 << 20)
        subprocess.run(["sync"])
        s.c.cmd("BGSAVE")
        pid = int(info(s.c, "persistence")["rdb_saves_pid"])
        temp = [os.path.join(s.dir, f"temp-{pid}.{ext}") for ext in ("snap", "rdb")]
        while not any(os.path.exists(t) and os.path.getsize(t) >= (1 << 30) for t in temp):
            time.sleep(0.005)
        t = time.monotonic()
        s.c.cmd("FLUSHALL")
        return time.monotonic() - t
    finally:
        s.stop()

def save_time(binary, port):
    s = Server(binary, port)
    try:
        big_values(s.c, 8, 128 << 20)
        subprocess.run(["sync"])
        time.sleep(1)
        t = time.monotonic()
        s.c.cmd("BGSAVE")
        pid = int(info(s.c, "persistence")["rdb_saves_pid"])
        temp = [os.path.join(s.dir, f"temp-{pid}.{ext}") for ext in ("snap", "rdb")]
        while not any(os.path.exists(f) and os.path.getsize(f) >= (1 << 30) for f in temp):
            time.sleep(0.005)
        written = time.monotonic()
        wait_no_child(s.c)
        end = time.monotonic()
        return end - t, end - written
    finally:
        s.stop()

def main():
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for b in (before, after):
        h = subprocess.run(["sha256sum", b], capture_output=True, text=True).stdout.split()[0]
        print(f"{b}: sha256 {h}")
    parts = os.environ.get("PARTS", "ABC")
    res = {k: {"before": [], "after": []} for k in ("idle", "during", "cow", "stall", "save", "tail")}
    for r in range(rounds):
        order = [("before", before), ("after", after)]
        if r % 2:
            order.reverse()
        for name, b in order if "A" in parts else []:
            idle, during, alive, buckets, cow = growth(b, 7310)
            print(f"round {r} {name}: SET idle {idle:.0f}/s, during save {during:.0f}/s "
                  f"(child alive at the end: {alive}, buckets {buckets}), rdb_last_cow_size {cow}", flush=True)
            res["idle"][name].append(idle); res["during"][name].append(during); res["cow"][name].append(cow)
        for name, b in order if "B" in parts else []:
            st = flushall_stall(b, 7311)
            print(f"round {r} {name}: FLUSHALL during the final fsync took {st*1000:.1f} ms", flush=True)
            res["stall"][name].append(st)
        for name, b in order if "C" in parts else []:
            sv, tail = save_time(b, 7311)
            print(f"round {r} {name}: BGSAVE of 1 GiB took {sv:.2f} s, {tail*1000:.0f} ms of it after the "
                  f"last byte was written", flush=True)
            res["save"][name].append(sv)
            res["tail"][name].append(tail)
    print("medians (before -> after, ratio after/before):")
    for k, v in res.items():
        if not v["before"]:
            continue
        b, a = statistics.median(v["before"]), statistics.median(v["after"])
        print(f"  {k}: {b:.4g} -> {a:.4g} (x{a / b if b else float('nan'):.3g})")

main()
