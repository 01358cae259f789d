#!/usr/bin/env python3
"""bench/bpf-cost.py [--rounds N] [--pages N] [--hugetlb] BIN...: what each snapshot build's eBPF programs run
per COW copy, above the floor, from the kernel's own accounting. For comparing builds (variants of the eBPF
side; bench/ebpf-variants.py builds some, bench/rewrite-cost.sh compares builds in wall time).

Each round runs every BIN once (the first rotating): `BIN trace --comm cowbench`, then bench/forkrewrite.c
(named cowbench) maps PAGES private 4 KiB pages, populates them, forks, and the parent rewrites every page
(PAGES COW copies). Program run time is read with bpftool just before the fork and just after the rewrite, so
only the copies are counted (bench/bench_bpfcost.py's readings). BPF stats are on while the script runs
(BPF_ENABLE_STATS: off again however it ends).

The floor is measured in the same stretch, not in another run: bench/empty_tracepoints.py keeps a `return 0`
program on each of the copy path's tracepoints for the whole run, so each traced program's time minus the empty
program on its tracepoint is its body's own time, with the stats' clock reads and the machine's speed of that
moment taken out. Prints one line per run and the medians per BIN: ns per copy of each body ("page_fault_user"
and so on), their sum ("body"), the floor's sum ("floor"), and the rewrite's wall time per copy ("wall", which
includes every program's full cost).

With --hugetlb, the workload also maps one 2 MiB hugetlb page beside the 4 KiB pages it rewrites (the path a
process with hugetlb pages takes; vm.nr_hugepages is raised to 2 if lower, and restored). Needs root, gcc and
bpftool."""
import argparse, contextlib, os, statistics, subprocess, sys, tempfile

import harness as h
from bench_bpfcost import delta, programs
from empty_tracepoints import COPY_PATH as TRACEPOINTS, enable_stats

HERE = os.path.dirname(os.path.abspath(__file__))
HUGEPAGES = "/proc/sys/vm/nr_hugepages"


@contextlib.contextmanager
def hugepages_at_least(wanted):
    """vm.nr_hugepages raised to `wanted` if lower, restored on the way out."""
    old = int(open(HUGEPAGES).read())
    if old < wanted:
        with open(HUGEPAGES, "w") as f:
            f.write(str(wanted))
    try:
        yield
    finally:
        if old < wanted:
            with open(HUGEPAGES, "w") as f:
                f.write(str(old))


def one_run(binary, workload, pages, empty_ids, work):
    """ns per copy of each body above its floor, the floor, and the rewrite's wall time, under `binary`."""
    ignore = set(programs()) - empty_ids
    tracer = h.Tracer([binary, "trace", "--comm", "cowbench"], "snapshot: tracing", work)
    steps = None
    try:
        steps = h.spawn(workload, env={"FORKREWRITE_STEPS": "1"}, text=True,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if steps.stdout.readline().strip() != "populated":
            raise RuntimeError("forkrewrite did not populate")
        start = programs()
        steps.stdin.write("go\n"); steps.stdin.flush()
        if steps.stdout.readline().strip() != "rewritten":
            raise RuntimeError("forkrewrite did not rewrite")
        end = programs()
        steps.stdin.write("go\n"); steps.stdin.flush()
        _, rewrite_us, _ = steps.stdout.read().split()
        if steps.wait() != 0:
            raise RuntimeError("forkrewrite failed")
    finally:
        if steps and steps.poll() is None:
            steps.kill()  # and its child, which ends when the pipe to it closes
            steps.wait()
        tracer.stop()
    ns = {row: time / pages for row, (_, time) in delta(ignore, start, end).items()}
    row = {tp: ns.get(tp, 0) - ns.get(f"empty {tp}", 0) for tp in TRACEPOINTS}
    row["body"] = sum(row.values())
    row["floor"] = sum(ns.get(f"empty {tp}", 0) for tp in TRACEPOINTS)
    row["wall"] = float(rewrite_us) * 1e3 / pages
    return row


def accounted(opts, workload, work):
    """Every BIN's rows, beside the empty programs, with the kernel's run-time accounting on."""
    before = set(programs())
    empty_dir = os.path.join(work, "empty")  # its own tracer.out/err beside the tracers'
    os.mkdir(empty_dir)
    empty = h.Tracer([sys.executable, os.path.join(HERE, "empty_tracepoints.py"), *TRACEPOINTS], "ATTACHED", empty_dir)
    # Accounting on while this fd is open: off again however the run ends (even
    # SIGKILL), unlike the kernel.bpf_stats_enabled sysctl.
    stats = enable_stats()
    try:
        empty_ids = set(programs()) - before
        rows = {b: [] for b in opts.binaries}
        for rnd in range(opts.rounds):
            for binary in h.rotated(opts.binaries, rnd):
                rows[binary].append(one_run(binary, workload, opts.pages, empty_ids, work))
                print(binary, rnd + 1, " ".join(f"{k}={v:.0f}" for k, v in sorted(rows[binary][-1].items())), flush=True)
        return rows
    finally:
        os.close(stats)
        empty.stop()


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--pages", type=int, default=131072)
    args.add_argument("--hugetlb", action="store_true", help="map one 2 MiB hugetlb page beside the rewritten pages")
    args.add_argument("binaries", nargs="+", metavar="BIN")
    opts = args.parse_args()

    def body():
        with tempfile.TemporaryDirectory(prefix="bench-bpf-cost.") as work:
            run(opts, work)

    # SIGTERM and SIGHUP end the run through the `finally`s (nr_hugepages restored, the directory removed),
    # and h.main stops any tracer or empty programs still running.
    h.main(body)


def run(opts, work):
    cowbench = os.path.join(work, "cowbench")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", cowbench, os.path.join(HERE, "forkrewrite.c")], check=True)
    workload = [cowbench, str(opts.pages)] + (["hugetlb"] if opts.hugetlb else [])
    with hugepages_at_least(2 if opts.hugetlb else 0):
        rows = accounted(opts, workload, work)
    print(f"medians of {opts.rounds} rounds, ns per copy (bodies above the floor; floor; wall):")
    for binary, runs in rows.items():
        print(binary, " ".join(f"{k}={statistics.median(r[k] for r in runs):.0f}" for k in sorted(runs[0])))


if __name__ == "__main__":
    main()
