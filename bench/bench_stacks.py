#!/usr/bin/env python3
"""stacks: what `snapshot trace --stacks` costs per copy on the pure-COW rewrite, beside the same tracer
without it and beside no tracer. Conditions interleaved, the first rotating each round. Needs root, cc."""
import os, subprocess
import harness as h

PAGES = h.pick(4096, 131072)
REPS = h.pick(1, 2)
HERE = os.path.dirname(os.path.abspath(__file__))
CONDS = ["none", "trace", "trace --stacks"]


def argv(cond, work, binary):
    """The command of one run: cowbench alone, or run by `snapshot trace` (its report to /dev/null)."""
    if cond == "none":
        return [binary, str(PAGES)]
    extra = ["--stacks", "--folded", os.path.join(work, "folded")] if cond == "trace --stacks" else []
    return [h.SNAP, "trace", *extra, "-o", os.devnull, "--", binary, str(PAGES)]


def body():
    work = h.private_dir("stacks")
    conds = CONDS
    m = h.metric("rewrite_ns_per_copy", "the parent's rewrite, per COW copy", "ns", "lower", "trace", conds)
    window = h.metric("window_ms", "fork + rewrite window (fork until the child is reaped)", "ms", "lower", "trace", conds)
    try:
        binary = os.path.join(work, "cowbench")
        subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "forkrewrite.c")], check=True)
        for r in range(h.ROUNDS):
            for cond in h.rotated(conds, r):
                for _ in range(REPS):
                    out = subprocess.run(argv(cond, work, binary), capture_output=True, text=True,
                                         stdin=subprocess.DEVNULL)
                    if out.returncode != 0:
                        raise RuntimeError(f"{cond}: exited with {out.returncode}: {out.stderr[-2000:]}")
                    fork_us, rewrite_us, window_us = map(float, out.stdout.split())
                    m["samples"][cond].append(rewrite_us * 1000 / PAGES)
                    window["samples"][cond].append(window_us / 1000)
                if cond == "trace --stacks" and os.path.getsize(os.path.join(work, "folded")) == 0:
                    raise RuntimeError("--stacks wrote no folded stack: the condition did not record stacks")
                h.log(f"stacks round {r + 1} {cond}: {m['samples'][cond][-1]:.0f} ns/copy")
    finally:
        subprocess.run(["rm", "-rf", work])
    h.emit("stacks", METHOD.format(pages=PAGES, reps=REPS),
           [f"forkrewrite {PAGES}  # bench/forkrewrite.c, named cowbench",
            f"snapshot trace -o /dev/null -- cowbench {PAGES}",
            f"snapshot trace --stacks --folded F -o /dev/null -- cowbench {PAGES}"],
           [m, window])


METHOD = """`bench/forkrewrite.c` (named `cowbench`) maps {pages} private 4 KiB pages, populates them, forks, and the
parent writes one byte per page while the child waits: each write is one COW copy, and the rewrite is timed inside
with CLOCK_MONOTONIC, so the tracer's start and end are outside the figure. Conditions: `none` (untraced), `trace`
(`snapshot trace -o /dev/null -- cowbench`), `trace --stacks` (the same with `--stacks --folded F`: each copy's user
stack and address recorded and resolved). One tracer per run, {reps} runs per condition and round, conditions
interleaved with the first rotating each round. The ratio column compares with `trace`: what `--stacks` adds
on top of the tracer. `--stacks` is a diagnosis mode; issue 17 asks for its cost to be stated, it sets no target."""

if __name__ == "__main__":
    h.main(body)
