#!/usr/bin/env python3
"""bpfcost: what each of the tracer's eBPF programs costs, from the kernel's own accounting
(`BPF_ENABLE_STATS` for the run, as `kernel.bpf_stats_enabled` does; bpftool's run_cnt and run_time_ns),
beside empty programs on the same tracepoints (bench/empty_tracepoints.py: the dispatch floor).
Conditions interleaved, the first rotating each round: none, empty, snapshot.
  rewrite  bench/forkrewrite.c (named cowbench), counters read around exactly its fork + rewrite
           (FORKREWRITE_STEPS=1): ns per run, runs and ns per COW copy, per program; rewrite wall time.
  redis    redis-server with KEYS keys, redis-benchmark SET -P 16 over SAVES BGSAVEs back to back,
           `snapshot trace --pid REDIS`: runs and ns per SET, per program (every process of the
           machine counts: the probes are machine-wide); SET/s.
Needs root, cc, bpftool, redis-server, redis-benchmark."""
import json, os, subprocess
import harness as h
from empty_tracepoints import COPY_PATH as TRACEPOINTS, enable_stats
from bench_overhead import add_ratios, load_args, over_saves, populate

PAGES = h.pick(4096, 262144)
KEYS = h.pick(20_000, 1_000_000)
SAVES = h.pick(1, 3)  # BGSAVEs back to back per redis run
HERE = os.path.dirname(os.path.abspath(__file__))
# snapshot's programs, by the name shown here. The kernel keeps 15 bytes of a name, bpftool shows the
# whole one from the program's BTF; a kernel without BTF tracepoints (or SNAPSHOT_ATTACH=raw) runs the
# NAME_raw twins, which count under the same row.
SHOWN = {"page_fault_user": "page_fault_user", "page_fault_kernel": "page_fault_kernel",
         "mm_page_alloc": "mm_page_alloc", "tlb_flush": "tlb_flush", "rss_stat": "rss_stat",
         "sched_process_fork": "sched_process_fork", "sched_process_exit": "sched_process_exit/exec",
         "sched_process_exec": "sched_process_exit/exec"}
PROGRAMS = {k: row for name, row in SHOWN.items() for n in (name, name + "_raw") for k in (n, n[:15])}
CONDS = ["none", "empty", "snapshot"]


def programs():
    """id → (name, run_cnt, run_time_ns) of every loaded program."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("name", ""), p.get("run_cnt", 0), p.get("run_time_ns", 0)) for p in json.loads(out)}


def label(name):
    """The row of a program loaded by this run's tracer, or None for anyone else's."""
    if name.startswith("empty_"):
        tp = next((t for t in TRACEPOINTS if t.startswith(name[6:])), None)
        return f"empty {tp}" if tp else None
    # A program of the tracer's not named above still counts, under its own name: none goes unaccounted.
    return PROGRAMS.get(name, name)


def delta(ignore, before, after):
    """label → (runs, ns) between two readings, for programs loaded after `ignore` was read."""
    rows = {}
    for pid, (name, cnt, ns) in after.items():
        row = label(name)
        if pid in ignore or row is None:
            continue
        _, cnt0, ns0 = before.get(pid, (name, 0, 0))
        runs, time = rows.get(row, (0, 0))
        rows[row] = (runs + cnt - cnt0, time + ns - ns0)
    return rows


def start(cond, work, pid=None):
    if cond == "empty":
        return h.start_tracer("empty", work)
    if cond == "snapshot":
        return h.start_tracer("snapshot-pid" if pid else "snapshot-comm", work, pid=pid, comm="cowbench")
    return None


def record(m, cond, rows, per, prefix):
    """Adds one reading: ns per run and runs and ns per unit (`per` copies or SETs) of each program."""
    total = 0
    for row, (runs, ns) in sorted(rows.items()):
        if runs == 0:
            continue
        total += ns
        if prefix == "copy":
            m["ns_per_run"]["samples"].setdefault(row, []).append(ns / runs)
        m[f"runs_per_{prefix}"]["samples"].setdefault(row, []).append(runs / per)
        m[f"ns_per_{prefix}"]["samples"].setdefault(row, []).append(ns / per)
    m[f"total_ns_per_{prefix}"]["samples"][cond].append(total / per)


def line(p, want):
    got = p.stdout.readline().strip()
    if got != want:
        raise RuntimeError(f"forkrewrite printed {got!r}, expected {want!r}: {p.stderr.read()}")


def rewrite_once(binary, ignore):
    """Runs forkrewrite; returns (rewrite µs, per-program deltas over its fork + rewrite)."""
    p = subprocess.Popen([binary, str(PAGES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "FORKREWRITE_STEPS": "1"})
    try:
        line(p, "populated")
        before = programs()
        p.stdin.write("\n"); p.stdin.flush()
        line(p, "rewritten")
        after = programs()
        p.stdin.write("\n"); p.stdin.flush()
        _, rewrite_us, _ = map(float, p.stdout.readline().split())
    finally:
        p.stdin.close()
        p.wait()
    return rewrite_us, delta(ignore, before, after)


def rewrite(work, m):
    binary = os.path.join(work, "cowbench")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "forkrewrite.c")], check=True)
    for r in range(h.ROUNDS):
        for cond in h.rotated(CONDS, r):
            ignore = programs()
            t = start(cond, work)
            try:
                us, rows = rewrite_once(binary, ignore)
            finally:
                if t:
                    t.stop()
            m["rewrite"]["samples"][cond].append(us * 1000 / PAGES)
            if cond != "none":
                record(m, cond, rows, PAGES, "copy")
            h.log(f"bpfcost rewrite round {r + 1} {cond}: {us * 1000 / PAGES:.0f} ns/copy")


def redis(work, m):
    server = h.Server("redis")
    try:
        populate(server, KEYS)
        for r in range(h.ROUNDS):
            rps = {}
            for cond in h.rotated(CONDS, r):
                ignore = programs()
                t = start(cond, work, pid=server.p.pid)
                try:
                    sets, secs, (before, after) = over_saves(server, SAVES, KEYS, mark=programs)
                finally:
                    if t:
                        t.stop()
                rps[cond] = sets / secs
                m["redis"]["samples"][cond].append(rps[cond])
                if cond != "none":
                    record(m, cond, delta(ignore, before, after), sets, "set")
                h.log(f"bpfcost redis round {r + 1} {cond}: {rps[cond]:.0f} SET/s over {SAVES} BGSAVEs ({secs:.1f} s)")
            add_ratios(m["redis_ratio"], rps)
    finally:
        server.stop()


def metrics():
    per = lambda id, title, unit: h.metric(id, title, unit, "lower", None, [])
    return {
        "rewrite": h.metric("rewrite_ns_per_copy", "fork + rewrite: the parent's rewrite, per COW copy (wall time)",
                            "ns", "lower", "none", CONDS),
        "total_ns_per_copy": h.metric("program_ns_per_copy", "program time per COW copy (fork + rewrite), all programs",
                                      "ns", "lower", None, CONDS[1:]),
        "ns_per_run": per("ns_per_run", "ns per run of each program (fork + rewrite)", "ns"),
        "runs_per_copy": per("runs_per_copy", "runs per COW copy of each program (fork + rewrite)", "runs"),
        "ns_per_copy": per("ns_per_copy", "program time per COW copy of each program (fork + rewrite)", "ns"),
        "redis": h.metric("redis_set_per_s", f"redis-server SET throughput over {SAVES} back-to-back BGSAVEs", "SET/s",
                          "higher", "none", CONDS),
        "redis_ratio": h.metric("redis_set_ratio", "redis-server SET/s / untraced of the same round", "×",
                                "higher", None, CONDS[1:]),
        "total_ns_per_set": h.metric("program_ns_per_set", "program time per SET, all programs (machine-wide)",
                                     "ns", "lower", None, CONDS[1:]),
        "runs_per_set": per("runs_per_set", "runs per SET of each program (machine-wide, redis-benchmark included)",
                            "runs"),
        "ns_per_set": per("ns_per_set", "program time per SET of each program (machine-wide)", "ns"),
    }


def body():
    work = h.private_dir("bpfcost")
    m = metrics()
    stats = enable_stats()
    try:
        rewrite(work, m)
        redis(work, m)
    finally:
        os.close(stats)
        subprocess.run(["rm", "-rf", work])
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    h.emit("bpfcost", METHOD.format(pages=PAGES, keys=KEYS, saves=SAVES, tps=", ".join(TRACEPOINTS)),
           ["bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME)  # for the run, as kernel.bpf_stats_enabled=1 does",
            f"FORKREWRITE_STEPS=1 forkrewrite {PAGES}  # bench/forkrewrite.c; bpftool prog show --json after populate and after the rewrite",
            f"python3 bench/empty_tracepoints.py {' '.join(TRACEPOINTS)}",
            "snapshot trace --comm cowbench | --pid REDIS --json FILE",
            f"redis-server --save '' ; SET key:%012d (512 B) for 0 … {KEYS - 1} | redis-cli --pipe ; "
            f"redis-benchmark {' '.join(map(str, load_args(KEYS)))} -l -q &  # measured over {SAVES} BGSAVEs back to back"],
           list(m.values()), [f"redis-server {ver}"])


METHOD = """Per-program cost from the kernel's own accounting, switched on for the whole run
(`BPF_ENABLE_STATS`, what `kernel.bpf_stats_enabled=1` does, ended with the run; it adds two clock reads to every
program run, in every condition), and `bpftool prog show --json` read
before and after each measured stretch; only the programs the condition's tracer loaded are counted. Conditions,
interleaved with the first rotating each round: `none`; `empty`, a `return 0` raw-tracepoint program on each of
{tps} (`bench/empty_tracepoints.py`; the kernel dispatches raw and BTF tracepoint programs alike, so this is
the floor any program there pays, and its ns per run is the accounting's own floor); `snapshot`, `snapshot trace
--comm cowbench` (rewrite) or `--pid REDIS` (redis). Rewrite: `bench/forkrewrite.c` maps {pages} private 4 KiB pages
and populates them, then (read counters) forks and the parent writes one byte per page while the child waits
({pages} COW copies), (read counters) and ends; runs per copy count every run of the machine in that stretch. Redis:
one redis-server 7 with {keys} keys of 512 B named as redis-benchmark names them (as in `bench:overhead`);
`redis-benchmark -t set -P 16 -c 20 -r {keys} -d 512` runs without
end, and counters and the server's SET count (INFO commandstats) are read at the start of the first and the end of
the last of {saves} BGSAVEs back to back (as in `bench:overhead`); per SET counts every run of the machine (the server,
its save children, redis-benchmark, the kernel's network path). The ratio table divides each run's SET/s by the
untraced run of the same round."""

if __name__ == "__main__":
    h.main(body)
