#!/usr/bin/env python3
"""predict: the live report's predicted copied bytes per snapshot against the tracer's measured bytes, with
uniform and zipf keys (`snapshot run --dist`), the two alternating each round."""
import subprocess
import harness as h

KEYS = h.pick(20_000, 500_000)
DURATION = h.pick(3, 10)
EVERY = h.pick("0.5", "2")
DISTS = ["uniform", "zipf"]


def body():
    def metric(id, title, unit, better):
        return h.metric(id, title, unit, better, None, DISTS)
    m = {
        "err": metric("prediction_error_pct", "prediction error with the snapshot's real write count: "
                      "(predicted − measured) / measured", "%", "lower"),
        "start": metric("prediction_at_start_error_pct", "prediction error as shown at the snapshot's first sample",
                        "%", "lower"),
        "measured": metric("copied_mib", "measured copied bytes per snapshot (tracer)", "MiB", "lower"),
        "predicted": metric("predicted_mib", "predicted copied bytes per snapshot", "MiB", "lower"),
    }
    work = h.private_dir("predict")
    skipped = {d: 0 for d in DISTS}
    try:
        for r in range(h.ROUNDS):
            for dist in h.rotated(DISTS, r):
                runs = h.snapshot_run(work, ["--dist", dist, "--keys", KEYS, "--duration", DURATION,
                                             "--every", EVERY, "--warmup", "1"])
                for s in runs[0][1]:
                    if s["copied_bytes"] == 0:
                        # No relative error exists; the block says how many were left out.
                        skipped[dist] += 1
                        continue
                    m["err"]["samples"][dist].append(100 * (s["predicted_bytes"] - s["copied_bytes"]) / s["copied_bytes"])
                    m["start"]["samples"][dist].append(
                        100 * (s["predicted_at_start_bytes"] - s["copied_bytes"]) / s["copied_bytes"])
                    m["measured"]["samples"][dist].append(s["copied_bytes"] / 2**20)
                    m["predicted"]["samples"][dist].append(s["predicted_bytes"] / 2**20)
                h.log(f"predict round {r + 1} {dist}: {len(runs[0][1])} snapshots")
    finally:
        subprocess.run(["rm", "-rf", work])
    h.emit("predict", METHOD.format(keys=KEYS, d=DURATION, every=EVERY),
           [f"snapshot run --no-tui --json F --dist uniform|zipf --keys {KEYS} --duration {DURATION} "
            f"--every {EVERY} --warmup 1"],
           list(m.values()),
           [f"snapshots that copied nothing (no relative error, left out): "
            + ", ".join(f"{d} {n}" for d, n in skipped.items())])


METHOD = """`snapshot run`'s workload (the store, {keys} keys × 512 B, SET at 10 000 ops/s on one connection, a
BGSAVE {every} s after the previous one ended, for {d} s), with uniform keys and with Zipf keys (s = 0.99, hot
ranks scattered). Measured: the tracer's bytes copied by the store and its child during each fork. Predicted: the
model of `snapshot-user/src/run/predict.rs` with the snapshot's real write count (`predicted_bytes`), and what the
screen showed at the snapshot's first sample, when the duration is still an estimate (`predicted_at_start_bytes`).
One sample per snapshot."""

if __name__ == "__main__":
    h.main(body)
