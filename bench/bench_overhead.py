#!/usr/bin/env python3
"""overhead: what tracing costs, untraced vs `snapshot trace` vs bpftrace's write-fault one-liner,
conditions interleaved (the first rotating each round). Three workloads:
  rewrite  bench/forkrewrite.c (named cowbench): fork, the parent rewrites PAGES pages (one COW copy
           each), timed inside; tracers: --comm cowbench, --all, bpftrace.
  dd       `dd if=/dev/zero of=/dev/null bs=1 count=N` (N syscalls pairs), nobody traces it, while
           `snapshot trace --pid` (or bpftrace) watches an idle process.
  redis    a real redis-server with KEYS keys of 512 B; redis-benchmark SET -P 16 while BGSAVEs run
           back to back; traced --pid REDIS, --all, bpftrace, or untraced.
Needs root, cc, bpftrace, redis-server, redis-benchmark."""
import json, os, subprocess, threading, time
import harness as h

PAGES = h.pick(4096, 262144)
REPS = h.pick(1, 2)
DD = h.pick(100_000, 5 * 1024 * 1024)  # the count=5M
KEYS = h.pick(20_000, 1_000_000)
SETS = h.pick(20_000, 400_000)
HERE = os.path.dirname(os.path.abspath(__file__))


def rewrite(work, m):
    conds = ["none", "snapshot-comm", "snapshot-all", "bpftrace-wp"]
    binary = os.path.join(work, "cowbench")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "forkrewrite.c")], check=True)
    for r in range(h.ROUNDS):
        for cond in h.rotated(conds, r):
            t = h.start_tracer(cond, work, comm="cowbench")
            pids = []
            for _ in range(REPS):
                pid, out = cowbench(binary)
                pids.append(pid)
                fork_us, rewrite_us, window_us = map(float, out.split())
                m["rewrite"]["samples"][cond].append(rewrite_us * 1000 / PAGES)
                m["window"]["samples"][cond].append(window_us / 1000)
            if t:
                # Every rewrite is PAGES copies by the forking parent: a tracer that saw fewer measured less.
                h.check_seen(cond, h.copies_seen(cond, t.stop(), work, pids), PAGES)
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


def bgsave_loop(server, stop, saves):
    """BGSAVE again as soon as the last one ended, until stopped."""
    while not stop.is_set():
        started = "started" in server.cli("BGSAVE", check=False)
        server.wait_save()
        # A save that failed (or never started) is not one: counted apart, and the round fails.
        saves.append(started and server.info("persistence").get("rdb_last_bgsave_status") == "ok")


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
    conds = ["none", "snapshot-pid", "snapshot-all", "bpftrace-wp"]
    server = h.Server("redis")
    try:
        server.cli("DEBUG", "POPULATE", KEYS, "key", 512)
        for r in range(h.ROUNDS):
            for cond in h.rotated(conds, r):
                t = h.start_tracer(cond, work, pid=server.p.pid)
                stop, saves = threading.Event(), []
                loop = threading.Thread(target=bgsave_loop, args=(server, stop, saves))
                loop.start()
                res = h.redis_benchmark(server.port, "-t", "set", "-P", 16, "-c", 20, "-r", KEYS, "-d", 512, "-n", SETS)
                stop.set()
                loop.join()
                if not saves or not all(saves):
                    raise RuntimeError(f"{cond}: {saves.count(False)} of {len(saves)} BGSAVEs failed: see {server.dir}/log")
                if t:
                    check_saves_seen(cond, t.stop(), work, server.p.pid, len(saves))
                rps = res["SET"][0]
                m["redis"]["samples"][cond].append(rps)
                m["saves"]["samples"][cond].append(len(saves))
                h.log(f"overhead redis round {r + 1} {cond}: {rps:.0f} SET/s, {len(saves)} BGSAVEs")
    finally:
        server.stop()


def body():
    work = h.private_dir("overhead")
    m = {
        "rewrite": h.metric("rewrite_ns_per_copy", "fork + rewrite microbenchmark: the parent's rewrite, per COW copy",
                            "ns", "lower", "none", ["none", "snapshot-comm", "snapshot-all", "bpftrace-wp"]),
        "window": h.metric("window_ms", "fork + rewrite window (fork until the child is reaped)", "ms", "lower", "none",
                           ["none", "snapshot-comm", "snapshot-all", "bpftrace-wp"]),
        "dd": h.metric("dd_s", "untraced dd (syscall-heavy) while another pid is traced", "s", "lower", "none",
                       ["none", "snapshot-pid", "bpftrace-wp"]),
        "redis": h.metric("redis_set_per_s", "redis-server SET throughput during back-to-back BGSAVEs", "SET/s",
                          "higher", "none", ["none", "snapshot-pid", "snapshot-all", "bpftrace-wp"]),
        "saves": h.metric("redis_bgsaves", "BGSAVEs completed during one redis-benchmark run", "saves", "higher", None,
                          ["none", "snapshot-pid", "snapshot-all", "bpftrace-wp"]),
    }
    try:
        rewrite(work, m)
        dd(work, m)
        redis(work, m)
    finally:
        subprocess.run(["rm", "-rf", work])
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    bt = subprocess.run(["bpftrace", "--version"], capture_output=True, text=True).stdout.strip()
    h.emit("overhead", METHOD.format(pages=PAGES, reps=REPS, dd=DD, keys=KEYS, sets=SETS),
           [f"forkrewrite {PAGES}  # bench/forkrewrite.c, {REPS} per tracer session",
            f"dd if=/dev/zero of=/dev/null bs=1 count={DD}",
            f"redis-server --save '' ; DEBUG POPULATE {KEYS} key 512 ; BGSAVE back to back ; "
            f"redis-benchmark -t set -P 16 -c 20 -r {KEYS} -d 512 -n {SETS} --csv",
            "snapshot trace --comm cowbench | --pid PID | --all --json FILE",
            "bpftrace -e '" + h.BPFTRACE_WP.split(" BEGIN")[0] + "'"],
           list(m.values()), [f"redis-server {ver}", bt])


METHOD = """Conditions: `none` (untraced), `snapshot-comm` / `snapshot-pid` (`snapshot trace --comm cowbench` or
`--pid`: only the measured processes), `snapshot-all` (`snapshot trace --all`), `bpftrace-wp` (bpftrace's one-liner
counting write-protect faults per pid). Each tracer is started and waited for until attached (its startup is not
timed), then the workload runs, then the tracer gets SIGINT. Conditions are interleaved, the first rotating each
round. Rewrite: `bench/forkrewrite.c` maps {pages} private 4 KiB pages, populates, forks, and the parent writes one
byte per page while the child waits (each write is one COW copy), timed inside with CLOCK_MONOTONIC; {reps} runs per
tracer session. dd: `dd bs=1 count={dd}` (about 2 syscalls per byte) is not traced; the tracer watches an idle
`sleep` (or, for bpftrace, every process). Redis: one redis-server 7 with {keys} keys of 512 B (DEBUG POPULATE);
`redis-benchmark -t set -P 16 -c 20 -r {keys} -d 512 -n {sets}` while a thread sends BGSAVE again as soon as the
last one ended; the tracer watches the server (--pid, which includes its save children) or every process."""

if __name__ == "__main__":
    h.main(body)
