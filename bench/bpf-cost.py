#!/usr/bin/env python3
"""bench/bpf-cost.py [--rounds N] [--pages N] BIN...: what each snapshot build's eBPF programs run per COW
copy, above the floor, from the kernel's own accounting. For comparing builds (variants of the eBPF side).

Each round runs every BIN once (the first rotating): `BIN trace --comm cowbench`, then bench/forkrewrite.c
(named cowbench) maps PAGES private 4 KiB pages, populates them, forks, and the parent rewrites every page
(PAGES COW copies). Program run time is read with `bpftool prog show --json` just before the fork and just
after the rewrite, so only the copies are counted. BPF stats are on while the script runs (BPF_ENABLE_STATS:
off again however it ends).

The floor is measured in the same stretch, not in another run: bench/empty_tracepoints.py keeps a `return 0`
program on each of the copy path's tracepoints for the whole run, so each traced program's time minus the empty
program on its tracepoint is its body's own time, with the stats' clock reads and the machine's speed of that
moment taken out. Prints one line per run and the medians per BIN: ns per copy of each body ("page_fault_user"
and so on), their sum ("body"), the floor's sum ("floor"), and the rewrite's wall time per copy ("wall", which
includes every program's full cost). With --wall, no accounting: the conditions are `none` (untraced), `empty` (the `return 0` programs alone) and
each BIN, interleaved, each run --reps times per round; it prints the rewrite's wall time per copy and what each
condition adds to it over `none` (difference of medians, and the median of the per-round differences).

With --hugetlb, the workload also maps one 2 MiB hugetlb page beside the 4 KiB pages it rewrites (the path a
process with hugetlb pages takes; vm.nr_hugepages is raised to 2 if lower, and restored). Needs root, gcc and
bpftool."""
import argparse, contextlib, json, os, signal, statistics, subprocess, sys, tempfile, time

from empty_tracepoints import enable_stats

HERE = os.path.dirname(os.path.abspath(__file__))
TRACEPOINTS = ("page_fault_user", "mm_page_alloc", "tlb_flush", "rss_stat")
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


def programs():
    return {p["id"]: p for p in json.loads(subprocess.check_output(["bpftool", "prog", "show", "--json"]))}


def run_time(before, after, pid):
    return after[pid].get("run_time_ns", 0) - before.get(pid, {}).get("run_time_ns", 0)


def wait_for(path, text, proc):
    while text not in open(path).read():
        if proc.poll() is not None:
            sys.exit(f"bpf-cost: {proc.args[0]} ended before {text!r}: {open(path).read()}")
        time.sleep(0.05)


def one_run(binary, workload, pages, empty_ids, tmp):
    before_ids = set(programs())
    err_path = os.path.join(tmp, "tracer.err")
    with open(err_path, "w") as err:
        tracer = subprocess.Popen([binary, "trace", "--comm", "cowbench"], stdout=subprocess.DEVNULL, stderr=err)
    work = None
    try:
        wait_for(err_path, "snapshot: tracing", tracer)
        work = subprocess.Popen(workload, env={"FORKREWRITE_STEPS": "1"}, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if work.stdout.readline().strip() != "populated":
            sys.exit("bpf-cost: forkrewrite did not populate")
        start = programs()
        work.stdin.write("go\n"); work.stdin.flush()
        if work.stdout.readline().strip() != "rewritten":
            sys.exit("bpf-cost: forkrewrite did not rewrite")
        end = programs()
        work.stdin.write("go\n"); work.stdin.flush()
        fork_us, rewrite_us, _ = work.stdout.read().split()
        if work.wait() != 0:
            sys.exit("bpf-cost: forkrewrite failed")
    finally:
        if work and work.poll() is None:
            work.kill()  # and its child, which ends when the pipe to it closes
            work.wait()
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
    body, floor = {}, {}
    for pid, prog in end.items():
        name = prog.get("name", "")
        if pid in empty_ids:
            floor[next(t for t in TRACEPOINTS if t.startswith(name[len("empty_"):]))] = run_time(start, end, pid) / pages
        elif pid not in before_ids and name.removesuffix("_raw") in TRACEPOINTS:
            body[name.removesuffix("_raw")] = run_time(start, end, pid) / pages
    row = {name: ns - floor[name] for name, ns in body.items()}
    row["body"] = sum(row.values())
    row["floor"] = sum(floor.values())
    row["wall"] = float(rewrite_us) * 1e3 / pages
    return row


def wall_run(cond, workload, pages, reps, tmp):
    """Rewrite wall times per copy (ns) under `cond`: none, empty or a binary."""
    holder, err_path = None, os.path.join(tmp, "tracer.err")
    if cond == "empty":
        holder = subprocess.Popen([sys.executable, os.path.join(HERE, "empty_tracepoints.py"), *TRACEPOINTS],
                                  stdout=subprocess.PIPE, text=True)
        if holder.stdout.readline().strip() != "ATTACHED":
            sys.exit("bpf-cost: the empty programs did not attach")
    elif cond != "none":
        with open(err_path, "w") as err:
            holder = subprocess.Popen([cond, "trace", "--comm", "cowbench"], stdout=subprocess.DEVNULL, stderr=err)
        wait_for(err_path, "snapshot: tracing", holder)
    try:
        times = []
        for _ in range(reps):
            out = subprocess.run(workload, check=True, capture_output=True, text=True).stdout.split()
            times.append(float(out[1]) * 1e3 / pages)
        return times
    finally:
        if holder:
            holder.send_signal(signal.SIGINT)
            holder.wait()


def wall(opts, workload, tmp):
    conds = ["none", "empty", *opts.binaries]
    runs = {c: [] for c in conds}
    for rnd in range(opts.rounds):
        for i in range(len(conds)):
            cond = conds[(i + rnd) % len(conds)]
            runs[cond].append(wall_run(cond, workload, opts.pages, opts.reps, tmp))
            print(cond, rnd + 1, " ".join(f"{t:.0f}" for t in runs[cond][-1]), flush=True)
    none = statistics.median(t for r in runs["none"] for t in r)
    print(f"rewrite wall time per copy, {opts.rounds} rounds x {opts.reps} runs (ns):")
    for cond in conds:
        med = statistics.median(t for r in runs[cond] for t in r)
        paired = sorted(statistics.mean(r) - statistics.mean(n) for r, n in zip(runs[cond], runs["none"]))
        print(f"{cond} median {med:.0f} added {med - none:.0f} (per-round differences: median "
              f"{statistics.median(paired):.0f}, {paired[0]:.0f}…{paired[-1]:.0f})")


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--pages", type=int, default=131072)
    args.add_argument("--wall", action="store_true", help="wall time only, against none and empty (no accounting)")
    args.add_argument("--reps", type=int, default=3, help="--wall: runs per condition per round")
    args.add_argument("--hugetlb", action="store_true", help="map one 2 MiB hugetlb page beside the rewritten pages")
    args.add_argument("binaries", nargs="+", metavar="BIN")
    opts = args.parse_args()
    # SIGTERM and SIGHUP end the run through the `finally`s too: nr_hugepages
    # restored, the tracer and the empty programs stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _: sys.exit(f"bpf-cost: stopped by signal {n}"))
    with tempfile.TemporaryDirectory(prefix="bpf-cost.") as tmp, hugepages_at_least(2 if opts.hugetlb else 0):
        cowbench = os.path.join(tmp, "cowbench")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", cowbench, os.path.join(HERE, "forkrewrite.c")], check=True)
        workload = [cowbench, str(opts.pages)] + (["hugetlb"] if opts.hugetlb else [])
        if opts.wall:
            wall(opts, workload, tmp)
            return
        rows = accounted(opts, workload, tmp)
    print(f"medians of {opts.rounds} rounds, ns per copy (bodies above the floor; floor; wall):")
    for binary, runs in rows.items():
        keys = sorted(runs[0])
        print(binary, " ".join(f"{k}={statistics.median(r[k] for r in runs):.0f}" for k in keys))


def accounted(opts, workload, tmp):
    """Every BIN's rows, beside the empty programs, with the kernel's run-time accounting on."""
    before = set(programs())
    empty = subprocess.Popen([sys.executable, os.path.join(HERE, "empty_tracepoints.py"), *TRACEPOINTS],
                             stdout=subprocess.PIPE, text=True)
    # Accounting on while this fd is open: off again however the run ends (even
    # SIGKILL), unlike the kernel.bpf_stats_enabled sysctl.
    stats = enable_stats()
    try:
        if empty.stdout.readline().strip() != "ATTACHED":
            sys.exit("bpf-cost: the empty programs did not attach")
        empty_ids = {pid for pid, p in programs().items() if pid not in before and p.get("name", "").startswith("empty_")}
        rows = {b: [] for b in opts.binaries}
        for rnd in range(opts.rounds):
            for i in range(len(opts.binaries)):
                binary = opts.binaries[(i + rnd) % len(opts.binaries)]
                row = one_run(binary, workload, opts.pages, empty_ids, tmp)
                rows[binary].append(row)
                print(binary, rnd + 1, " ".join(f"{k}={v:.0f}" for k, v in sorted(row.items())), flush=True)
        return rows
    finally:
        os.close(stats)
        empty.send_signal(signal.SIGINT)
        empty.wait()


if __name__ == "__main__":
    main()
