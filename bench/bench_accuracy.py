#!/usr/bin/env python3
"""accuracy: the copies of `snapshot workload` cases as the ground truth (/proc/self/pagemap frame
changes), `snapshot trace` (the fork records) and a naive bpftrace one-liner (write-protect faults
of the same pids) count them; and a real redis-server's BGSAVE under a SET load, traced --pid,
against its own INFO rdb_last_cow_size. Needs root, bpftrace, redis-server, redis-benchmark."""
import json, os, subprocess
import harness as h

PAGES = h.pick(256, 4096)
KEYS = h.pick(20_000, 500_000)
SETS = h.pick(20_000, 200_000)
CASES = {
    "parent-writes": ["--scenario", "parent-writes"],
    "child-writes": ["--scenario", "child-writes"],
    "child-exits-first": ["--scenario", "child-exits-first"],
    "3 forks, parent writes": ["--scenario", "parent-writes", "--forks", "3"],
    "kernel writes (read(2))": ["--scenario", "parent-writes", "--writer", "read"],
    "syscalls between writes": ["--scenario", "parent-writes", "--file-writes", "/dev/shm"],
}


def workload_case(work, args):
    """(truth copies, tracer copies, pids) of one traced workload run."""
    truth_path, trace_path = os.path.join(work, "truth.json"), os.path.join(work, "trace.json")
    subprocess.run([h.SNAP, "trace", "--json", trace_path, "-o", os.path.join(work, "report.txt"), "--",
                    h.SNAP, "workload", "--pages", str(PAGES), *args, "--truth", truth_path],
                   check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    truth, trace = json.load(open(truth_path)), json.load(open(trace_path))
    kids = {f["child"] for f in truth["forks"]}
    true = sum(f["parent_copied"] + f["child_copied"] for f in truth["forks"])
    traced = sum(f["parent_copies"] + f["child_copies"] for f in trace["forks"]
                 if f["parent"] == truth["pid"] and f["child"] in kids)
    return true, traced, kids | {truth["pid"]}


def workloads(work, m):
    for r in range(h.ROUNDS):
        bt = h.start_tracer("bpftrace-wp", work)
        runs = []
        try:
            for case in h.rotated(list(CASES), r):
                runs.append((case, *workload_case(work, CASES[case])))
        finally:
            counts = h.bpftrace_counts(bt.stop())
        for case, true, traced, pids in runs:
            naive = sum(counts.get(p, 0) for p in pids)
            m["truth"]["samples"][case].append(true)
            m["tracer"]["samples"][case].append(traced)
            m["naive"]["samples"][case].append(naive)
            m["diff"]["samples"][case].append(traced - true)
            m["naive_diff"]["samples"][case].append(naive - true)
            h.log(f"accuracy round {r + 1} {case}: truth {true}, tracer {traced}, bpftrace wp faults {naive}")


def redis(work, m):
    server = h.Server("redis")
    try:
        server.cli("DEBUG", "POPULATE", KEYS, "key", 512)
        for r in range(h.ROUNDS):
            trace_path = os.path.join(work, "trace.json")
            t = h.start_tracer("snapshot-pid", work, pid=server.p.pid)
            load = h.spawn(["redis-benchmark", "-p", str(server.port), "-t", "set", "-r", str(KEYS), "-d", "512",
                                     "-n", str(SETS), "-c", "5", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server.cli("BGSAVE")
            server.wait_save()
            load.kill()
            load.wait()
            t.stop()
            cow = int(server.info("persistence")["rdb_last_cow_size"])
            trace = json.load(open(trace_path))
            forks = [f for f in trace["forks"] if f["parent"] == server.p.pid]
            traced = sum(f["parent_bytes"] + f["child_bytes"] for f in forks[-1:])
            m["redis"]["samples"]["rdb_last_cow_size"].append(cow / 2**20)
            m["redis"]["samples"]["snapshot trace --pid"].append(traced / 2**20)
            h.log(f"accuracy redis round {r + 1}: rdb_last_cow_size {cow}, tracer {traced}")
    finally:
        server.stop()


def body():
    work = h.private_dir("accuracy")
    cases = list(CASES)
    m = {
        "truth": h.metric("truth_copies", "ground truth: pages whose frame changed (pagemap)", "pages", "higher", None, cases),
        "tracer": h.metric("tracer_copies", "snapshot trace: copies charged to the workload's forks", "pages", "higher", None, cases),
        "naive": h.metric("bpftrace_wp_faults", "bpftrace one-liner: write-protect faults of the same pids", "faults", "higher", None, cases),
        "diff": h.metric("tracer_minus_truth", "snapshot trace − truth", "pages", "lower", None, cases),
        "naive_diff": h.metric("bpftrace_minus_truth", "bpftrace one-liner − truth", "pages", "lower", None, cases),
        "redis": h.metric("redis_cow_mib", "redis-server BGSAVE under SET load: its own rdb_last_cow_size vs the tracer "
                          "(the fork's parent_bytes + child_bytes)", "MiB", "lower", "rdb_last_cow_size",
                          ["rdb_last_cow_size", "snapshot trace --pid"]),
    }
    try:
        workloads(work, m)
        redis(work, m)
    finally:
        subprocess.run(["rm", "-rf", work])
    h.emit("accuracy", METHOD.format(pages=PAGES, keys=KEYS, sets=SETS),
           [f"snapshot trace --json T -- snapshot workload --pages {PAGES} CASE --truth TRUTH",
            "bpftrace -e '" + h.BPFTRACE_WP.split(" BEGIN")[0] + "'  # running through every case of a round",
            f"redis-server; DEBUG POPULATE {KEYS} key 512; snapshot trace --pid REDIS; "
            f"redis-benchmark -t set -r {KEYS} -d 512 -n {SETS} -c 5 during one BGSAVE"],
           list(m.values()))


METHOD = """Each case is `snapshot workload --pages {pages}` with the options in the condition's name
(`--scenario`, `--forks`, `--writer read`, `--file-writes /dev/shm`), run under `snapshot trace`; the workload
reads its own /proc/self/pagemap before and after its writes and counts the pages whose frame changed (the ground
truth). Tracer: the `parent_copies + child_copies` of the forks it recorded for those pids. Naive: bpftrace's
one-liner counting write-protect faults per pid, running through the whole round, summed over the same pids (it
counts faults, not copies: a fault on a page nobody shares any more reuses the page). Redis: redis-server with
{keys} keys of 512 B, one BGSAVE while `redis-benchmark -t set -r {keys} -d 512 -n {sets} -c 5` writes; redis'
`rdb_last_cow_size` (the child's Private_Dirty, sampled by Redis) against the tracer's bytes for that fork."""

if __name__ == "__main__":
    h.main(body)
