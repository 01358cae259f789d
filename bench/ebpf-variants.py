#!/usr/bin/env python3
"""bench/ebpf-variants.py OUTDIR: builds the snapshot binary of this checkout and, for finding where a copy's
time goes, variants with one part of the copy path cut out, each into OUTDIR/NAME. Not for use: the cuts break
the counts on purpose. Compare them with `bench/bpf-cost.py OUTDIR/*` (BENCHMARKS.md §1.1).
Run from the repository root with bpf-linker on PATH (`cargo xtask build` puts it in target/tools/bin). Every
edit is reverted, also when a build fails."""
import os
import shutil
import signal
import subprocess
import sys

# (name, file, text to replace, replacement, what is cut)
VARIANTS = [
    ("fault-no-counters", "snapshot-ebpf/src/fault.rs",
     "    unsafe { add(&raw mut (*stats).faults, 1) };", "",
     "page_fault_user: the two per-process counter adds (faults, wp_faults)"),
    ("alloc-no-fork-charge", "snapshot-ebpf/src/maps.rs",
     "    let target = target(stats);\n    if charge_fork(target, bytes, 1) {",
     "    let target = target(stats);\n    if bytes != 0 {\n        return target;\n    }\n    if charge_fork(target, bytes, 1) {",
     "mm_page_alloc: the charge to the fork (FORKS lookup, two adds)"),
    ("alloc-mark-only", "snapshot-ebpf/src/alloc.rs",
     "    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;\n    let Some(stats) = PROCS.get_ptr_mut(tgid)",
     "    if order < 64 {\n        unsafe { (*pending).copied = order as u32 + 1 };\n        return;\n    }\n"
     "    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;\n    let Some(stats) = PROCS.get_ptr_mut(tgid)",
     "mm_page_alloc: everything after the mark is found (the process lookup, its count, the fork charge)"),
]
# The wp_faults add goes with the faults add in the first variant.
EXTRA = {"fault-no-counters": ("        unsafe { add(&raw mut (*stats).wp_faults, 1) };", "")}


def build(out, name):
    result = subprocess.run(["cargo", "xtask", "build"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"ebpf-variants: {name} does not build:\n{result.stderr[-3000:]}")
    shutil.copy2("target/release/snapshot", os.path.join(out, name))
    print(f"built {os.path.join(out, name)}", flush=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/ebpf-variants.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # SIGTERM and SIGHUP go through the `finally` too (a cut source left in the
    # checkout would build a tracer that miscounts); subprocess.run kills the build.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _: sys.exit(f"ebpf-variants: stopped by signal {n}"))
    build(out, "this")
    for name, path, old, new, what in VARIANTS:
        text = open(path).read()
        edits = [(old, new)] + ([EXTRA[name]] if name in EXTRA else [])
        cut = text
        for o, n in edits:
            if cut.count(o) != 1:
                sys.exit(f"ebpf-variants: {name}: the text to cut is not in {path} exactly once")
            cut = cut.replace(o, n)
        try:
            with open(path, "w") as f:
                f.write(cut)
            build(out, name)
            print(f"  cut: {what}")
        finally:
            with open(path, "w") as f:
                f.write(text)
    build(out, "this")  # leaves the checkout's build as it was


if __name__ == "__main__":
    main()
