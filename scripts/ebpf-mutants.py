#!/usr/bin/env python3
"""Breaks the eBPF programs on purpose, one small change at a time, and runs
the ground-truth tests that must catch each change (cargo-mutants cannot
build the eBPF target). Run as root from the repository root, with bpf-linker
on PATH (cargo xtask build puts it in target/tools/bin). Every change is
reverted, also when a step fails. Prints one line per mutant: caught or MISSED."""
import os
import signal
import subprocess
import sys

# (file, text to replace, replacement, tests that must fail, what it breaks)
MUTANTS = [
    ("snapshot-ebpf/src/alloc.rs", "if gfp & user != user || gfp & page_cache != 0 {", "if gfp & user != user {",
     ["page_cache_allocations_after_reused_faults", "io_uring_worker_page_cache"],
     "alloc: page-cache gfp filter removed"),
    ("snapshot-ebpf/src/alloc.rs", "        if done {", "        if false && done {",
     ["page_cache_allocations_after_reused_faults", "io_uring_worker_page_cache"],
     "alloc: a mark outlives its fault (fault count not checked)"),
    ("snapshot-ebpf/src/alloc.rs", "    if split {", "    if false && split {",
     ["thp_split_beside_a_hugetlb_page"], "alloc: a THP split's flush stays counted as a hugetlb copy"),
    ("snapshot-ebpf/src/alloc.rs", "let zero = gfp & (1u64 << cfg!(gfp_zero)) != 0;", "let zero = false;",
     ["zero_page_fills_are_not_copies", "pages_dropped_then_written"],
     "alloc: __GFP_ZERO ignored, zero fills counted as copies"),
    ("snapshot-ebpf/src/fault.rs", "        (*pending).kind = kind;\n",
     "        (*pending).kind = kind;\n"
     "        if kind == WRITE_PROTECT && crate::kernel::maps_hugetlb(crate::kernel::current_task_btf()) {"
     " crate::maps::record_copy(stats, crate::kernel::cfg!(huge_order)); (*pending).flushed = 1; }\n",
     ["hugetlb_"], "hugetlb: every write fault counted as a copy (no reuse check)"),
    ("snapshot-ebpf/src/tlb.rs", "    if !maps_hugetlb(task) {", "    if true {",
     ["hugetlb_"], "tlb: hugetlb copies never seen (the hugetlb test always fails)"),
    ("snapshot-ebpf/src/tlb.rs",
     "    if reason != cfg!(tlb_local_mm_shootdown) && reason != cfg!(tlb_remote_send_ipi) {",
     "    if reason != cfg!(tlb_local_mm_shootdown) {",
     ["hugetlb_copies_beside_a_faulting_thread"], "tlb: a copy flushed first by another thread's IPI missed"),
    ("snapshot-ebpf/src/tlb.rs", "        if finished_faults_of(task) != (*pending).faults {", "        if false {",
     ["hugetlb_"], "tlb: a flush after its fault is over taken for that fault's copy"),
    ("snapshot-ebpf/src/rss.rs", "        if member != file && member != shmem {", "        if true {",
     ["private_file_mapping", "file_pages_written_after_a_read", "memfd_pages_written_after_a_read"],
     "rss: copies of page-cache pages left as COW copies charged to the fork"),
    ("snapshot-ebpf/src/fault.rs", "        PF_WRITE => NOT_PRESENT,", "",
     ["written_unmapped_are_file_copies"], "fault: not-present writes not watched (file copies missed)"),
    ("snapshot-ebpf/src/fault.rs", "            if (*pending).anon != 0 && (*pending).swap == 0 {", "            if true {",
     ["shared_memfd_pages_written_unmapped"],
     "settle: every not-present write that allocates taken for a file copy"),
    ("snapshot-ebpf/src/fork.rs", "    if c.mm == p.mm {", "    if false {",
     ["posix_spawn_is_not_a_fork", "vfork_child", "clone_vm_child"], "fork: vfork/posix_spawn children recorded as forks"),
    ("snapshot-ebpf/src/fork.rs", "    if c.tgid == p.tgid || p.mm == 0 {", "    if p.mm == 0 {",
     ["a_thread_writing_during_the_fork"], "fork: new threads treated as forks"),
    ("snapshot-ebpf/src/exec.rs", "    leave(stats, end_reason::PARENT_EXEC, end_reason::CHILD_EXEC);", "",
     ["children_that_exec"], "exec: exec no longer ends a fork's sharing"),
    ("snapshot-ebpf/src/maps.rs", "        end_fork(id, f, parent_reason);", "",
     ["a_parent_exit_ends_its_forks"], "exit: a parent's exit leaves its forks live"),
    ("snapshot-ebpf/src/maps.rs", "            unsafe { add(&raw mut (*u).holders, 1) };", "",
     ["orphaned_grandchild"], "fork: grandchildren do not hold the fork above"),
    ("snapshot-ebpf/src/maps.rs", "            (*p).target = fallback_target(p);", "            (*p).target = 0;",
     ["a_sibling_that_exits", "children_that_exec"], "exit: a parent's copies not handed back to its previous live fork"),
    ("snapshot-ebpf/src/maps.rs", "        (*pstats).target = id;", "",
     ["a_child_that_forks_charges_its_new_fork", "sixty_four_live_children"], "fork: the newest fork does not take the copies"),
    ("snapshot-ebpf/src/maps.rs", "    if cfg!(trace_all) == 0 || tgid == 0 || current_exiting() {", "    if true {",
     ["all_traces_a_process_already_running"], "--all creates no entries, traces nothing"),
    ("snapshot-user/src/trace.rs", "    if let Some(name) = &args.comm {", "    if let Some(name) = args.comm.as_ref().filter(|_| false) {",
     ["comm_traces_a_process_already_running"], "--comm skips processes already running"),
]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test(filters):
    cmd = ["flock", "/work/.locks/kernel", "cargo", "test", "--release", "-p", "snapshot-user", "--no-fail-fast",
           "--test", "truth", "--test", "trace", "--", *filters]
    return run(cmd)


def stop(signum, _frame):
    # SIGTERM/SIGHUP end the run through main's `finally`, which puts the source back.
    raise SystemExit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    only = sys.argv[1:]
    missed = 0
    for path, old, new, filters, what in MUTANTS:
        if only and not any(o in what for o in only):
            continue
        text = open(path).read()
        if text.count(old) != 1:
            print(f"STALE   {what}: the text to mutate is not in {path} exactly once")
            missed += 1
            continue
        try:
            open(path, "w").write(text.replace(old, new))
            os.utime("snapshot-user/build.rs")  # the eBPF object is rebuilt by this build script
            build = run(["cargo", "test", "--release", "-p", "snapshot-user", "--test", "truth", "--no-run"])
            if build.returncode != 0:
                print(f"caught  {what} (does not build)")
                continue
            result = test(filters)
            failed = [l for l in result.stdout.splitlines() if l.endswith("FAILED") and l.startswith("test ")]
            if result.returncode != 0 and failed:
                print(f"caught  {what}: {', '.join(l.split()[1] for l in failed)}")
            else:
                print(f"MISSED  {what}")
                missed += 1
        finally:
            open(path, "w").write(text)
            os.utime("snapshot-user/build.rs")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
