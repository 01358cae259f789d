#!/usr/bin/env python3
"""overhead: what tracing costs, untraced vs `snapshot trace` vs bpftrace's write-fault one-liner,
conditions interleaved (the first rotating each round). Three workloads:
  rewrite  bench/forkrewrite.c (named cowbench): fork, the parent rewrites PAGES pages (one COW copy
           each), timed inside; tracers: --comm cowbench, --all, bpftrace, and `empty` (return 0 on the
           copy path's tracepoints: the floor).
  dd       `dd if=/dev/zero of=/dev/null bs=1 count=N` (N syscalls pairs), nobody traces it, while
           `snapshot trace --pid` (or bpftrace) watches an idle process.
  redis    a real redis-server with KEYS keys of 512 B; redis-benchmark SET -P 16 measured over SAVES
           BGSAVEs back to back; traced --pid REDIS, --all, bpftrace, or untraced.
Needs root, cc, bpftrace, redis-server, redis-benchmark."""
import json, os, subprocess, time
import harness as h

PAGES = h.pick(4096, 262144)
REPS = h.pick(1, 2)
DD = h.pick(100_000, 5 * 1024 * 1024)  # the count=5M
KEYS = h.pick(20_000, 1_000_000)
SAVES = h.pick(1, 3)  # BGSAVEs back to back per redis run
HERE = os.path.dirname(os.path.abspath(__file__))


REWRITE_CONDS = ["none", "empty", "snapshot-comm", "snapshot-all", "bpftrace-wp"]
REDIS_CONDS = ["none", "empty", "snapshot-pid", "snapshot-all", "bpftrace-wp"]


def rewrite(work, m):
    conds = REWRITE_CONDS
    binary = os.path.join(work, "cowbench")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "forkrewrite.c")], check=True)
    for r in range(h.ROUNDS):
        for cond in h.rotated(conds, r):
            t = h.start_tracer(cond, work, comm="cowbench")
            pids = []
            try:
                for _ in range(REPS):
                    pid, out = cowbench(binary)
                    pids.append(pid)
                    fork_us, rewrite_us, window_us = map(float, out.split())
                    m["rewrite"]["samples"][cond].append(rewrite_us * 1000 / PAGES)
                    m["window"]["samples"][cond].append(window_us / 1000)
            finally:
                # Stopped before the next condition starts: no condition runs with another's programs.
                tracer_out = t.stop() if t else None
            if t and cond != "empty":
                # Every rewrite is PAGES copies by the forking parent: a tracer that saw fewer measured less.
                try:
                    h.check_seen(cond, h.copies_seen(cond, tracer_out, work, pids), PAGES)
                except RuntimeError as e:
                    raise RuntimeError(f"{e}; {t.diagnosis()}") from None
            h.log(f"overhead rewrite round {r + 1} {cond}: {m['rewrite']['samples'][cond][-1]:.0f} ns/copy")


def cowbench(binary):
    """(pid, stdout) of one forkrewrite run."""
    p = subprocess.Popen([binary, str(PAGES)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"forkrewrite exited with {p.returncode}: {err[-2000:]}")
    return p.pid, out


def dd(work, m):
    conds = ["none", "snapshot-pid", "bpftrace-wp"]
    idle = h.spawn(["sleep", "100000"])
    try:
        for r in range(h.ROUNDS):
            for cond in h.rotated(conds, r):
                t = h.start_tracer(cond, work, pid=idle.pid)
                t0 = time.monotonic()
                subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={DD}"],
                               check=True, stderr=subprocess.DEVNULL)
                m["dd"]["samples"][cond].append(time.monotonic() - t0)
                if t:
                    t.stop()
                h.log(f"overhead dd round {r + 1} {cond}: {m['dd']['samples'][cond][-1]:.2f} s")
    finally:
        idle.kill()
        idle.wait()


def populate(server, keys):
    """KEYS keys of 512 B, named as `redis-benchmark -r KEYS` names its keys (key:%012d): the load only
    overwrites, so every run sees the same dataset (DEBUG POPULATE's key:N would let it grow to twice
    the size as the runs go, the later runs saving more)."""
    p = subprocess.Popen(["redis-cli", "-p", str(server.port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    value = b"x" * 512
    try:
        for start in range(0, keys, 10_000):
            p.stdin.write(b"".join(b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$512\r\n%s\r\n" % (i, value)
                                   for i in range(start, min(keys, start + 10_000))))
    except BrokenPipeError:
        pass  # redis-cli ended early: its output says why
    finally:
        out, _ = p.communicate()
    if p.returncode != 0 or b"errors: 0," not in out or server.cli("DBSIZE") != str(keys):
        raise RuntimeError(f"populating {keys} keys failed: {out.decode(errors='replace')[-2000:]}")


def set_calls(server):
    """SETs the server has executed so far (INFO commandstats)."""
    stat = server.info("commandstats").get("cmdstat_set", "calls=0")
    return int(dict(kv.split("=", 1) for kv in stat.split(","))["calls"])


def load_args(keys):
    return ["-t", "set", "-P", 16, "-c", 20, "-r", keys, "-d", 512]


def over_saves(server, saves, keys, mark=lambda: None, start_s=60.0):
    """Runs redis-benchmark's SET load without end and measures it over exactly `saves` BGSAVEs back to
    back, from the first one's start to the last one's end: every run covers whole saves, so none depends
    on which part of a save it overlapped. Returns (SETs executed, seconds, (mark() at start, at end))."""
    argv = ["redis-benchmark", "-p", str(server.port), *map(str, load_args(keys)), "-l", "-q"]
    load = h.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        first = set_calls(server)
        # Wait until the load runs (its clients connected and setting) before the window opens.
        deadline = time.monotonic() + start_s
        while set_calls(server) < first + 10_000:
            if load.poll() is not None:
                raise RuntimeError(f"redis-benchmark exited with {load.returncode}: {load.stderr.read()[-2000:]}")
            # A server that refuses every SET (paused, MISCONF, OOM) would otherwise keep the `-l` load running forever.
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SET load did not start in {start_s:.0f} s: the server executed "
                                   f"{set_calls(server) - first} SETs: see {server.dir}/log")
            time.sleep(0.01)
        # mark() (bpfcost: bpftool, slow, on the same cores) outside the timed window; its counters enclose it.
        m0 = mark()
        sets0, t0 = set_calls(server), time.monotonic()
        for i in range(saves):
            if "started" not in server.cli("BGSAVE", check=False):
                raise RuntimeError(f"BGSAVE {i + 1} of {saves} did not start: see {server.dir}/log")
            server.wait_save()
            if server.info("persistence").get("rdb_last_bgsave_status") != "ok":
                raise RuntimeError(f"BGSAVE {i + 1} of {saves} failed: see {server.dir}/log")
        sets1, t1, m1 = set_calls(server), time.monotonic(), mark()
        if load.poll() is not None:
            raise RuntimeError(f"redis-benchmark exited during the saves: {load.stderr.read()[-2000:]}")
        if sets1 <= sets0:
            # Nothing was measured: no SET/s (nor a ratio to it) stands for a run without load.
            raise RuntimeError(f"no SET executed during the {saves} BGSAVEs: see {server.dir}/log")
    finally:
        load.kill()
        load.wait()
    return sets1 - sets0, t1 - t0, (m0, m1)


def add_ratios(metric, round_values, base="none"):
    """Appends each condition's value of one round divided by the baseline's of the same round: rounds
    are interleaved, so a slow stretch of the shared machine weighs on both sides of a ratio."""
    for cond, x in round_values.items():
        if cond != base:
            metric["samples"][cond].append(x / round_values[base])


def check_saves_seen(cond, tracer_out, work, pid, saves):
    """The tracer recorded each of the server's forks (bpftrace, which counts faults only: it counted some)."""
    if cond == "bpftrace-wp":
        if not h.bpftrace_counts(tracer_out):
            raise RuntimeError("bpftrace-wp counted no write fault during the BGSAVEs")
        return
    with open(os.path.join(work, "trace.json")) as f:
        seen = sum(1 for f in json.load(f)["forks"] if f["parent"] == pid)
    if seen < saves:
        raise RuntimeError(f"{cond}: the tracer saw {seen} of the server's {saves} forks")


def redis(work, m):
    conds = REDIS_CONDS
    server = h.Server("redis")
    try:
        populate(server, KEYS)
        for r in range(h.ROUNDS):
            rps = {}
            for cond in h.rotated(conds, r):
                t = h.start_tracer(cond, work, pid=server.p.pid)
                try:
                    sets, secs, _ = over_saves(server, SAVES, KEYS)
                finally:
                    out = t.stop() if t else None
                if t and cond != "empty":
                    try:
                        check_saves_seen(cond, out, work, server.p.pid, SAVES)
                    except RuntimeError as e:
                        raise RuntimeError(f"{e}; {t.diagnosis()}") from None
                rps[cond] = sets / secs
                m["redis"]["samples"][cond].append(rps[cond])
                m["saves_s"]["samples"][cond].append(secs)
                h.log(f"overhead redis round {r + 1} {cond}: {rps[cond]:.0f} SET/s, {SAVES} BGSAVEs in {secs:.1f} s")
            add_ratios(m["redis_ratio"], rps)
    finally:
        server.stop()


def body():
    work = h.private_dir("overhead")
    m = {
        "rewrite": h.metric("rewrite_ns_per_copy", "fork + rewrite microbenchmark: the parent's rewrite, per COW copy",
                            "ns", "lower", "none", REWRITE_CONDS),
        "window": h.metric("window_ms", "fork + rewrite window (fork until the child is reaped)", "ms", "lower", "none",
                           REWRITE_CONDS),
        "dd": h.metric("dd_s", "untraced dd (syscall-heavy) while another pid is traced", "s", "lower", "none",
                       ["none", "snapshot-pid", "bpftrace-wp"]),
        "redis": h.metric("redis_set_per_s", f"redis-server SET throughput over {SAVES} back-to-back BGSAVEs", "SET/s",
                          "higher", "none", REDIS_CONDS),
        "redis_ratio": h.metric("redis_set_ratio", "redis-server SET/s traced (or `empty`) / untraced of the same round", "×",
                                "higher", None, REDIS_CONDS[1:]),
        "saves_s": h.metric("redis_saves_s", f"length of the {SAVES} back-to-back BGSAVEs (the measured window)", "s",
                            "lower", "none", REDIS_CONDS),
    }
    try:
        rewrite(work, m)
        dd(work, m)
        redis(work, m)
    finally:
        subprocess.run(["rm", "-rf", work])
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    bt = subprocess.run(["bpftrace", "--version"], capture_output=True, text=True).stdout.strip()
    h.emit("overhead", METHOD.format(pages=PAGES, reps=REPS, dd=DD, keys=KEYS, saves=SAVES, tps=", ".join(h.COPY_PATH)),
           [f"forkrewrite {PAGES}  # bench/forkrewrite.c, {REPS} per tracer session",
            f"dd if=/dev/zero of=/dev/null bs=1 count={DD}",
            f"redis-server --save '' ; SET key:%012d (512 B) for 0 … {KEYS - 1} | redis-cli --pipe ; "
            f"redis-benchmark {' '.join(map(str, load_args(KEYS)))} -l -q &  # measured over {SAVES} BGSAVEs back to back",
            f"python3 bench/empty_tracepoints.py {' '.join(h.COPY_PATH)}",
            "snapshot trace --comm cowbench | --pid PID | --all --json FILE",
            "bpftrace -e '" + h.BPFTRACE_WP.split(" BEGIN")[0] + "'"],
           list(m.values()), [f"redis-server {ver}", bt])


METHOD = """Conditions: `none` (untraced), `empty` (a `return 0` raw-tracepoint program on each of {tps}, the
tracepoints of snapshot's copy path, by `bench/empty_tracepoints.py`, without BPF stats: what any program there costs,
the floor), `snapshot-comm` / `snapshot-pid` (`snapshot trace --comm cowbench` or `--pid`: only the measured
processes), `snapshot-all` (`snapshot trace --all`), `bpftrace-wp` (bpftrace's one-liner counting write-protect
faults per pid). Each tracer is started and waited for until attached (its startup is not timed), then the workload
runs, then the tracer gets SIGINT. Conditions are interleaved, the first rotating each round. Rewrite:
`bench/forkrewrite.c` maps {pages} private 4 KiB pages, populates, forks, and the parent writes one byte per page
while the child waits (each write is one COW copy), timed inside with CLOCK_MONOTONIC; {reps} runs per tracer
session. dd: `dd bs=1 count={dd}` (about 2 syscalls per byte) is not traced; the tracer watches an idle `sleep` (or,
for bpftrace, every process). Redis: one redis-server 7 with {keys} keys of 512 B, named as redis-benchmark names them (so its SETs
overwrite and the dataset stays the same in every run); `redis-benchmark
-t set -P 16 -c 20 -r {keys} -d 512` runs without end; once it is setting, {saves} BGSAVEs run back to back and the
SETs the server executed in between (INFO commandstats) divided by the time from the first save's start to the last
one's end are the run's SET/s: each run spans whole saves, so no run depends on which part of a save it overlapped.
The tracer watches the server (--pid, which includes its save children) or every process. The ratio table divides
each traced run by the untraced run of the same round (its median is the median of those per-round ratios); the
Redis targets are judged on it, the shared machine's slow stretches weighing on both sides of each ratio."""

if __name__ == "__main__":
    h.main(body)
