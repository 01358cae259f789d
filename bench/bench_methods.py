#!/usr/bin/env python3
"""methods: the store's snapshot methods and redis-server at a fixed SET rate, uniform and zipf keys, measured
by `snapshot run` (tracer + smaps). Per round and distribution: `snapshot run --method` with the three methods
in a rotating order, and `snapshot run --connect` against redis-server before or after them (alternating).
Needs root (the tracer), redis-server."""
import subprocess
import harness as h

KEYS = h.pick(20_000, 300_000)
RATE = 5000
EVERY = h.pick("0.5", "1")
WARMUP = h.pick("1", "2")
DURATION = h.pick(2, 6)
# redis-server's saves take longer: more time for about as many of them.
REDIS_DURATION = h.pick(3, 9)
METHODS = ["fork", "redirect", "forkless"]
VARIANTS = METHODS + ["redis-server"]
DISTS = ["uniform", "zipf"]


def common(dist, duration):
    return ["--keys", KEYS, "--value-size", 512, "--rate", RATE, "--dist", dist, "--every", EVERY,
            "--warmup", WARMUP, "--duration", duration]


def without(setting):
    """SET/s and write p99 (ms) of the run outside its snapshots."""
    end = setting.get("end")
    if end is None:
        raise RuntimeError(f"{setting}: the run wrote no end record")
    snaps_s = setting["snaps_s"]
    outside_s = end["duration_s"] - snaps_s
    outside_w = end["writes"] - setting["snaps_w"]
    if end["tracer_lost"]:
        raise RuntimeError(f"{setting}: the tracer lost {end['tracer_lost']} records: its counts are incomplete")
    if outside_s <= 0:
        raise RuntimeError(f"{setting}: no time without a snapshot to compare with")
    return outside_w / outside_s, end["latency_no_child"]["p99_us"] / 1e3


def record(m, dist, variant, setting, snaps):
    if not snaps:
        raise RuntimeError(f"{dist} {variant}: no snapshot finished in the run")
    setting["snaps_s"] = sum(s["duration_s"] for s in snaps)
    setting["snaps_w"] = sum(s["writes"] for s in snaps)
    rps0, p990 = without(setting)
    for s in snaps:
        for key, x in [("stall", s["fork_usec"]), ("save", s["duration_s"]), ("copied", s["copied_bytes"] / 2**20),
                       ("extra", s["extra_memory_peak_bytes"] / 2**20), ("rps", s["writes_per_s"] / rps0),
                       ("p99", s["latency"]["child_alive"]["p99_us"] / 1e3 / p990)]:
            m[dist][key]["samples"][variant].append(x)
    h.log(f"methods {dist} {variant}: {len(snaps)} snapshots, save {snaps[-1]['duration_s']:.2f} s, "
          f"copied {snaps[-1]['copied_bytes'] / 2**20:.1f} MiB, without: {rps0:.0f} SET/s, p99 {p990:.2f} ms")


def redis_run(work, m, dist):
    server = h.Server("redis")
    try:
        runs = h.snapshot_run(work, [*common(dist, REDIS_DURATION), "--connect", f"127.0.0.1:{server.port}",
                                     "--pid", server.p.pid])
    finally:
        server.stop()
    if len(runs) != 1:
        raise RuntimeError(f"snapshot run --connect reported {len(runs)} workloads")
    record(m, dist, "redis-server", *runs[0])


def store_run(work, m, dist, order):
    runs = h.snapshot_run(work, [*common(dist, DURATION), "--method", ",".join(order)])
    if len(runs) != len(order):
        raise RuntimeError(f"snapshot run reported {len(runs)} methods, asked {order}")
    for method, (setting, snaps) in zip(order, runs):
        if setting.get("method") != method:
            raise RuntimeError(f"asked {method}, the run reported {setting.get('method')}")
        record(m, dist, method, setting, snaps)


def metrics(dist):
    def metric(id, title, unit, better, baseline="redis-server"):
        return h.metric(f"{id}_{dist}", f"{dist}: {title}", unit, better, baseline, VARIANTS)
    return {
        "stall": metric("stall_us", "parent's stall at the start (fork, or forkless set-up)", "µs", "lower"),
        "save": metric("save_s", "snapshot duration", "s", "lower"),
        "copied": metric("copied_mib", "copied bytes (tracer; forkless: none by the kernel)", "MiB", "lower"),
        "extra": metric("extra_mib", "peak extra memory (Pss of server + child above before the save)", "MiB", "lower"),
        "rps": metric("set_during_vs_without", "SET/s during the save / SET/s without one", "ratio", "higher", None),
        "p99": metric("p99_during_vs_without", "write p99 during the save / p99 without one", "ratio", "lower", None),
    }


def body():
    m = {d: metrics(d) for d in DISTS}
    work = h.private_dir("methods")
    try:
        for r in range(h.ROUNDS):
            for dist in DISTS:
                if r % 2 == 0:
                    redis_run(work, m, dist)
                store_run(work, m, dist, h.rotated(METHODS, r))
                if r % 2 == 1:
                    redis_run(work, m, dist)
    finally:
        subprocess.run(["rm", "-rf", work])
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    args = f"--keys {KEYS} --value-size 512 --rate {RATE} --dist uniform|zipf --every {EVERY} --warmup {WARMUP}"
    h.emit("methods", METHOD.format(keys=KEYS, rate=RATE, every=EVERY, d=DURATION, rd=REDIS_DURATION),
           [f"snapshot run --no-tui --json F {args} --duration {DURATION} --method fork,redirect,forkless (order rotating)",
            f"redis-server --save '' ; snapshot run --no-tui --json F {args} --duration {REDIS_DURATION} "
            "--connect 127.0.0.1:PORT --pid PID"],
           [x for d in DISTS for x in m[d].values()], [f"redis-server {ver}"])


METHOD = """Issue 10's comparison at a fixed write rate: {keys} keys × 512 B, {rate} SET/s paced (uniform, then zipf
keys), a BGSAVE {every} s after the last one ended. `snapshot run --method fork,redirect,forkless` starts a fresh
store per method in turn (fork = `--cow-strategy inplace`, redirect = `--cow-strategy redirect`, forkless = `BGSAVE
FORKLESS`), loads it and drives it for {d} s; `snapshot run --connect` does the same to a fresh redis-server for
{rd} s (its saves are longer). The method order rotates each round; redis-server runs before the store in even
rounds, after it in odd ones. Each sample is one snapshot: stall (INFO `latest_fork_usec`, forkless: its set-up),
duration, copied bytes (the tracer: pages the kernel copied for the fork, parent + child; forkless has no child
and copies nothing by the kernel), peak extra memory (Pss of server + child above the server's just before the
save, every 100 ms), and SET/s and write p99 while the save ran, each divided by the same run's figure outside
its saves. The dataset is smaller than issue 10's 2 M keys to keep the run within minutes; redirect's index share
is a larger part of its copies at this size (the bucket array's pages are copied whatever the save's length)."""

if __name__ == "__main__":
    h.main(body)
