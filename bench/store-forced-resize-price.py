#!/usr/bin/env python3
"""The copied-bytes price of a forced resize during a save (issue 16 item 2; BENCHMARKS.md).

usage: python3 bench/store-forced-resize-price.py BEFORE AFTER [ROUNDS]
Per server: DEBUG POPULATE 70000 key 64 (table of 2^17 buckets, ~9 MB of small records that
exist at the fork) plus 3 values of 256 MB (so the child lives for seconds), BGSAVE, then
`redis-benchmark -t set -n 1000000 -r 100000000 -P 16` adds ~1 M new keys, past 5 per bucket
(655 k). A forced resize rewrites the link of every record, so every page of the pre-fork records
is copied: rdb_last_cow_size shows it (if the child still lives then: printed). Port 7312; private temp dirs; kills only its own servers.
"""
import os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storebench import Server, big_values, info, wait_no_child  # noqa: E402

def one(binary):
    s = Server(binary, 7312)
    try:
        s.c.cmd("DEBUG", "POPULATE", "70000", "key", "64")
        big_values(s.c, 3, 256 << 20)
        used = int(info(s.c, "memory")["used_memory"])
        s.c.cmd("BGSAVE")
        t = time.monotonic()
        out = subprocess.run(["redis-benchmark", "-p", "7312", "-t", "set", "-n", "1000000", "-r", "100000000",
                              "-P", "16", "-q"], capture_output=True, text=True).stdout
        rate = float(out.replace("\r", "\n").strip().splitlines()[-1].split(":")[1].split("requests")[0])
        alive = info(s.c, "persistence")["rdb_bgsave_in_progress"] == "1"
        mem = info(s.c, "memory")
        wait_no_child(s.c)
        cow = int(info(s.c, "persistence")["rdb_last_cow_size"])
        return used, rate, alive, mem.get("dataset_table_buckets"), mem.get("dataset_table_forced_resizes", "-"), cow
    finally:
        s.stop()

def main():
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cows = {"before": [], "after": []}
    rates = {"before": [], "after": []}
    for r in range(rounds):
        order = [("before", before), ("after", after)]
        if r % 2:
            order.reverse()
        for name, b in order:
            used, rate, alive, buckets, forced, cow = one(b)
            print(f"round {r} {name}: used_memory {used}, SET during save {rate:.0f}/s (child alive at the end: "
                  f"{alive}), buckets {buckets}, forced resizes {forced}, rdb_last_cow_size {cow}", flush=True)
            cows[name].append(cow)
            rates[name].append(rate)
    for k in ("before", "after"):
        print(f"median {k}: rdb_last_cow_size {statistics.median(cows[k]):.0f}, SET {statistics.median(rates[k]):.0f}/s")

main()
