#!/usr/bin/env python3
"""bench/methods-rate.py: the snapshot methods at a fixed SET rate, uniform and zipf keys,
measured by `snapshot run` (tracer + smaps) in one run per distribution, with redis-server on the
same load for comparison. Run as root (the tracer), under the kernel lock on a shared machine:

    flock /work/.locks/kernel python3 bench/methods-rate.py

Per distribution (DISTS, default "uniform zipf"):
  1. `snapshot run --method fork,redirect,forkless`: three stores started in turn, each loaded with
     the same KEYS x VALUE_SIZE dataset, driven at RATE SET/s, a BGSAVE EVERY s after the last
     ended, for DURATION s each;
  2. redis-server (port PORT, --save "") driven by `snapshot run --connect` the same way.
Per variant, over its snapshots (at least MIN_SNAPSHOTS, else the script fails), median and
min-max of: stall_us (fork() or forkless set-up), save_s, copied_mb (tracer: pages the kernel
copied, parent + child), extra_mb (peak Pss of server + child above the server's before the save),
sets_during (SET/s while the save ran; the load is paced, so this is RATE unless the server falls
behind), p99_during_ms, and, per variant, sets_without and p99_without_ms (the rest of the run).
Then each issue-10 target is checked on the medians: met / NOT met.

Output: a readable table per distribution, then one line `RESULT <json>` with every number
(medians, min, max, targets) for a harness to parse. Environment: KEYS (500000), VALUE_SIZE (512),
RATE (5000), EVERY (1), WARMUP (3), DURATION (40), REDIS_DURATION (2 x DURATION), MIN_SNAPSHOTS (5,
a warning below it), DISTS, PORT (7610),
SNAPSHOT (target/release/snapshot). Needs redis-server (apt-get install redis-server).
"""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = os.environ.get
KEYS, SIZE = int(ENV("KEYS", 500000)), int(ENV("VALUE_SIZE", 512))
RATE, EVERY, WARMUP = float(ENV("RATE", 5000)), float(ENV("EVERY", 1)), float(ENV("WARMUP", 3))
DURATION, MIN_SNAPSHOTS = float(ENV("DURATION", 40)), int(ENV("MIN_SNAPSHOTS", 5))
# redis-server's saves take longer: more time for as many of them.
REDIS_DURATION = float(ENV("REDIS_DURATION", 2 * DURATION))
DISTS, PORT = ENV("DISTS", "uniform zipf").split(), int(ENV("PORT", 7610))
SNAPSHOT = ENV("SNAPSHOT", os.path.join(HERE, "..", "target", "release", "snapshot"))
METHODS = ["fork", "redirect", "forkless"]


def run(extra, json_path, duration=DURATION):
    cmd = [SNAPSHOT, "run", "--keys", str(KEYS), "--value-size", str(SIZE), "--rate", str(RATE),
           "--every", str(EVERY), "--warmup", str(WARMUP), "--duration", str(duration),
           "--no-tui", "--json", json_path] + extra
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(json_path) as f:
        return [json.loads(line) for line in f]


def split(lines):
    """[(setting, snapshots, end)] per workload in the stream."""
    parts = []
    for v in lines:
        if v["type"] == "setting":
            parts.append((v, [], None))
        elif v["type"] == "snapshot":
            parts[-1][1].append(v)
        elif v["type"] == "end":
            parts[-1] = (parts[-1][0], parts[-1][1], v)
    return parts


def stats(values):
    v = sorted(values)
    return {"median": v[len(v) // 2], "min": v[0], "max": v[-1]}


def measure(setting, snaps, end):
    if not snaps:
        sys.exit(f"{setting['server']}: no snapshot finished: raise DURATION")
    if len(snaps) < MIN_SNAPSHOTS:
        print(f"warning: {setting['server']}: {len(snaps)} snapshots, fewer than MIN_SNAPSHOTS={MIN_SNAPSHOTS}: "
              "raise DURATION", file=sys.stderr)
    outside_s = end["duration_s"] - sum(s["duration_s"] for s in snaps)
    outside_w = end["writes"] - sum(s["writes"] for s in snaps)
    return {
        "snapshots": len(snaps),
        "stall_us": stats([s["fork_usec"] for s in snaps]),
        "save_s": stats([s["duration_s"] for s in snaps]),
        "copied_mb": stats([s["copied_bytes"] / 1e6 for s in snaps]),
        "extra_mb": stats([s["extra_memory_peak_bytes"] / 1e6 for s in snaps]),
        "sets_during": stats([s["writes_per_s"] for s in snaps]),
        "p99_during_ms": stats([s["latency"]["child_alive"]["p99_us"] / 1e3 for s in snaps]),
        "sets_without": outside_w / outside_s if outside_s > 0 else 0.0,
        "p99_without_ms": end["latency_no_child"]["p99_us"] / 1e3,
        "tracer_lost": end["tracer_lost"],
    }


def redis(dist, tmp):
    d = tempfile.mkdtemp(prefix="redis-", dir=tmp)
    log = open(os.path.join(d, "log"), "w")
    server = subprocess.Popen(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", d], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.05)
        lines = run(["--dist", dist, "--connect", f"127.0.0.1:{PORT}", "--pid", str(server.pid)],
                    os.path.join(tmp, f"redis-{dist}.jsonl"), REDIS_DURATION)
        setting, snaps, end = split(lines)[0]
        return measure(setting, snaps, end)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()


def targets(r):
    m = lambda v, k: r[v][k]["median"]
    checks = [
        ("redirect extra <= 1/4 fork inplace", m("redirect", "extra_mb"), m("fork", "extra_mb") / 4),
        ("redirect extra <= 1/4 redis-server", m("redirect", "extra_mb"), m("redis", "extra_mb") / 4),
        ("redirect copied <= 1/4 fork inplace", m("redirect", "copied_mb"), m("fork", "copied_mb") / 4),
        ("forkless extra <= 1/10 redis-server", m("forkless", "extra_mb"), m("redis", "extra_mb") / 10),
        ("forkless stall <= 1 ms", m("forkless", "stall_us") / 1e3, 1.0),
        ("forkless save <= 2x fork", m("forkless", "save_s"), 2 * m("fork", "save_s")),
    ]
    for v in METHODS + ["redis"]:
        checks.append((f"{v} SET/s during >= 0.9x without", -m(v, "sets_during"), -0.9 * r[v]["sets_without"]))
        checks.append((f"{v} p99 during <= 1.1x without", m(v, "p99_during_ms"), 1.1 * r[v]["p99_without_ms"]))
    return [{"target": t, "value": abs(a), "limit": abs(b), "met": a <= b} for t, a, b in checks]


def show(dist, r, checks):
    print(f"\n{dist}: {KEYS} keys x {SIZE} B, {RATE:.0f} SET/s, BGSAVE every {EVERY} s, {DURATION} s per variant")
    cols = ["stall_us", "save_s", "copied_mb", "extra_mb", "sets_during", "p99_during_ms"]
    print("| variant | n | " + " | ".join(cols) + " | sets_without | p99_without_ms |")
    print("|---" * (len(cols) + 4) + "|")
    for v, x in r.items():
        cells = [f"{x[c]['median']:.4g} ({x[c]['min']:.4g}–{x[c]['max']:.4g})" for c in cols]
        print(f"| {v} | {x['snapshots']} | " + " | ".join(cells) + f" | {x['sets_without']:.0f} | {x['p99_without_ms']:.3g} |")
    for c in checks:
        print(f"  {'met    ' if c['met'] else 'NOT met'}  {c['target']}: {c['value']:.4g} vs {c['limit']:.4g}")


def main():
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    tmp = tempfile.mkdtemp(prefix="methods-rate-")
    result = {"keys": KEYS, "value_size": SIZE, "rate": RATE, "every_s": EVERY, "duration_s": DURATION, "dists": {}}
    try:
        for dist in DISTS:
            lines = run(["--dist", dist, "--method", ",".join(METHODS)], os.path.join(tmp, f"store-{dist}.jsonl"))
            r = {s["method"]: measure(s, snaps, end) for s, snaps, end in split(lines)}
            r["redis"] = redis(dist, tmp)
            checks = targets(r)
            show(dist, r, checks)
            result["dists"][dist] = {"variants": r, "targets": checks}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
