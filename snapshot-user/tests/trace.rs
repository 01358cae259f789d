//! The tracer against ground truth: real forks, real kernel, real BPF.
//! `snapshot workload` measures the pages really copied from
//! /proc/self/pagemap; `snapshot trace` must agree within 1% plus the few
//! dozen stack and libc pages any program copies after a fork.
mod common;

use common::*;
use serde_json::Value;

/// Pages a program really copies after fork besides the region: stack, libc data.
const SLACK: u64 = 64;

struct Run {
    report: Value,
    truth: Value,
}

fn trace_workload(args: &[&str]) -> Run {
    trace_workload_with(&[], args)
}

/// `snapshot trace` with extra environment variables.
fn trace_workload_with(env: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = temp_dir();
    let (report, truth) = (path(&dir, "report.json"), path(&dir, "truth.json"));
    let mut cmd = vec!["trace", "--json", report.to_str().unwrap(), "--", SNAPSHOT, "workload"];
    cmd.extend_from_slice(args);
    cmd.extend_from_slice(&["--truth", truth.to_str().unwrap()]);
    let out = std::process::Command::new(SNAPSHOT).args(&cmd).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "snapshot {cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Run { report: json(&report), truth: json(&truth) }
}

impl Run {
    fn fork(&self, child: u64) -> &Value {
        self.report["forks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["child"] == child)
            .unwrap_or_else(|| panic!("no fork with child {child} in {:#}", self.report))
    }

    fn process(&self, pid: u64) -> &Value {
        self.report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("no process {pid} in {:#}", self.report))
    }

    /// Per fork: (traced parent copies, true parent copies, traced child copies, true child copies).
    fn compare(&self) -> Vec<(u64, u64, u64, u64)> {
        self.truth["forks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let f = self.fork(t["child"].as_u64().unwrap());
                let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"));
                (n(f, "parent_copies"), n(t, "parent_copied"), n(f, "child_copies"), n(t, "child_copied"))
            })
            .collect()
    }

    fn page_size(&self) -> u64 {
        self.truth["page_size"].as_u64().unwrap()
    }
}

/// The tracer counts what really happened: at least the truth, and no more
/// than 1% over it plus the program's own stack and libc copies.
fn close(traced: u64, truth: u64) -> bool {
    traced >= truth && traced <= truth + truth / 100 + SLACK
}

fn check_parent_writes(run: &Run) {
    for (traced, truth, child_traced, child_truth) in run.compare() {
        assert!(truth > 0, "the workload copied nothing: {}", run.truth);
        assert!(close(traced, truth), "parent copies: traced {traced}, truth {truth}\n{:#}", run.report);
        assert!(close(child_traced, child_truth), "child copies: traced {child_traced}, truth {child_truth}");
    }
}

fn check_bytes(run: &Run) {
    let parent = run.process(run.truth["pid"].as_u64().unwrap());
    let page = run.page_size();
    let copies_of_page = parent["copies_by_size"][page.to_string()].as_u64().unwrap_or(0);
    let truth: u64 = run.truth["forks"].as_array().unwrap().iter().map(|f| f["parent_copied"].as_u64().unwrap()).sum();
    assert!(close(copies_of_page, truth), "copies of {page}-byte pages: {copies_of_page}, truth {truth}\n{parent:#}");
    let bytes = parent["cow_bytes"].as_u64().unwrap();
    assert!(bytes >= truth * page && bytes <= (truth + truth / 100) * page + SLACK * 4096, "cow_bytes {bytes}");
}

#[test]
fn private_anonymous_4k_pages() {
    if !privileged("private_anonymous_4k_pages") {
        return;
    }
    let run = trace_workload(&["--memory", "private", "--pages", "4000"]);
    check_parent_writes(&run);
    check_bytes(&run);
}

/// After the child exited, the parent's writes reuse its pages: the workload
/// pins itself to one CPU so no other CPU's page batch holds a page (see
/// `pin_to_this_cpu` in workload.rs), and the truth is exactly 0. The tracer
/// charges nothing to the ended fork and counts for the process what the
/// truth saw (nothing), plus the program's own stack and libc copies.
fn check_reused_after_exit(run: &Run) {
    let parent = run.process(run.truth["pid"].as_u64().unwrap());
    for (traced, truth, _, _) in run.compare() {
        assert_eq!(truth, 0, "ground truth: {}", run.truth);
        assert!(traced < SLACK, "fork charged {traced} copies though the child had exited");
    }
    let copies = parent["cow_copies"].as_u64().unwrap();
    assert!(close(copies, 0), "process copies {copies}, truth 0\n{parent:#}");
    // The 4000 write faults are there, as reuses, not copies.
    assert!(parent["wp_reuse"].as_u64().unwrap() >= 4000, "{parent:#}");
}

#[test]
fn child_exited_before_the_writes_copies_nothing() {
    if !privileged("child_exited_before_the_writes_copies_nothing") {
        return;
    }
    let run = trace_workload(&["--memory", "private", "--pages", "4000", "--scenario", "child-exits-first"]);
    check_reused_after_exit(&run);
}

#[test]
fn map_shared_copies_nothing() {
    if !privileged("map_shared_copies_nothing") {
        return;
    }
    let run = trace_workload(&["--memory", "shared", "--pages", "4000"]);
    for (traced, truth, _, _) in run.compare() {
        assert_eq!(truth, 0, "ground truth: {}", run.truth);
        assert!(traced < SLACK, "{traced} copies counted in a MAP_SHARED region");
    }
}

#[test]
fn private_file_mapping() {
    if !privileged("private_file_mapping") {
        return;
    }
    // The pages are read (mapped from the page cache) before the fork: the
    // first writes copy them out of the page cache, fork or not. They are
    // file copies, charged to no fork.
    let run = trace_workload(&["--memory", "file", "--pages", "4000"]);
    let parent = run.process(run.truth["pid"].as_u64().unwrap());
    for (traced, truth, _, _) in run.compare() {
        assert!(truth >= 4000, "ground truth: {}", run.truth);
        assert!(traced < SLACK, "fork charged {traced} copies of page-cache pages\n{:#}", run.report);
        let files = parent["file_copies"].as_u64().unwrap();
        assert!(close(files, truth), "file copies: traced {files}, truth {truth}\n{parent:#}");
    }
}

#[test]
fn thp_region_is_split_and_copied_in_base_pages() {
    if !privileged("thp_region_is_split_and_copied_in_base_pages") {
        return;
    }
    let _lock = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = thp_for_madvise();
    let run = trace_workload(&["--memory", "thp", "--pages", "4096"]);
    assert!(run.truth["thp_bytes"].as_u64().unwrap() > 0, "region not THP-backed: {}", run.truth);
    check_parent_writes(&run);
    check_bytes(&run);
}

/// A process that maps a hugetlb page: each THP split flushes inside the
/// write fault like a hugetlb copy, then copies 4 KiB, which takes it back.
#[test]
fn thp_split_beside_a_hugetlb_page_is_no_hugetlb_copy() {
    if !privileged("thp_split_beside_a_hugetlb_page_is_no_hugetlb_copy") {
        return;
    }
    let _lock = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = thp_for_madvise();
    // The hugetlb page is never written after the fork: one is enough.
    let _pages = reserve_hugepages(1);
    let run = trace_workload(&["--memory", "thp-hugetlb", "--pages", "4096"]);
    assert!(run.truth["thp_bytes"].as_u64().unwrap() > 0, "region not THP-backed: {}", run.truth);
    let parent = run.process(run.truth["pid"].as_u64().unwrap());
    assert_eq!(parent["copies_by_size"]["2097152"].as_u64().unwrap_or(0), 0, "{parent:#}");
    check_parent_writes(&run);
    check_bytes(&run);
}

#[test]
fn hugetlb_pages_are_copied_whole() {
    if !privileged("hugetlb_pages_are_copied_whole") {
        return;
    }
    let _lock = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    // 8 for the region, 8 for the parent's copies while the child shares.
    let _restore = reserve_hugepages(16);
    let run = trace_workload(&["--memory", "hugetlb", "--pages", "4"]);
    assert_eq!(run.page_size(), 2 << 20);
    let huge = 4 * (2u64 << 20);
    for t in run.truth["forks"].as_array().unwrap() {
        assert_eq!(t["parent_copied"], 4, "ground truth: {}", run.truth);
        // The fork also holds the program's own 4 KiB stack and libc copies.
        let bytes = run.fork(t["child"].as_u64().unwrap())["parent_bytes"].as_u64().unwrap();
        assert!(bytes >= huge && bytes < huge + SLACK * 4096, "fork parent_bytes {bytes}\n{:#}", run.report);
    }
    let parent = run.process(run.truth["pid"].as_u64().unwrap());
    assert_eq!(parent["copies_by_size"]["2097152"].as_u64(), Some(4), "{parent:#}");
    let bytes = parent["cow_bytes"].as_u64().unwrap();
    assert!(bytes >= huge && bytes < huge + SLACK * 4096, "cow_bytes {bytes}");
}

#[test]
fn two_forks_each_get_their_own_copies() {
    if !privileged("two_forks_each_get_their_own_copies") {
        return;
    }
    let run = trace_workload(&["--memory", "private", "--pages", "3000", "--forks", "2"]);
    assert_eq!(run.compare().len(), 2);
    check_parent_writes(&run);
}

#[test]
fn copies_in_the_child_are_the_childs() {
    if !privileged("copies_in_the_child_are_the_childs") {
        return;
    }
    let run = trace_workload(&["--memory", "private", "--pages", "4000", "--scenario", "child-writes"]);
    for (traced, truth, child_traced, child_truth) in run.compare() {
        assert_eq!(truth, 0);
        assert!(traced < SLACK, "parent charged {traced}");
        assert!(child_truth == 4000 && close(child_traced, child_truth), "child: traced {child_traced}, truth {child_truth}");
    }
}

#[test]
fn copies_the_kernel_makes_for_read_are_counted() {
    if !privileged("copies_the_kernel_makes_for_read_are_counted") {
        return;
    }
    // read(2) writes each shared page from kernel mode (copy_to_user).
    let run = trace_workload(&["--memory", "private", "--pages", "4000", "--writer", "read"]);
    check_parent_writes(&run);
}

#[test]
fn page_cache_allocations_after_reused_faults_are_not_copies() {
    if !privileged("page_cache_allocations_after_reused_faults_are_not_copies") {
        return;
    }
    // Each reused write fault is followed by a write() that allocates a
    // page-cache page on tmpfs: that page is not the fault's copy.
    let run = trace_workload(&["--scenario", "child-exits-first", "--pages", "4000", "--file-writes", "/dev/shm"]);
    check_reused_after_exit(&run);
}

#[test]
fn raw_tracepoint_fallback_counts_the_same() {
    if !privileged("raw_tracepoint_fallback_counts_the_same") {
        return;
    }
    // The path for kernels without BTF tracepoints, forced here.
    let run = trace_workload_with(&[("SNAPSHOT_ATTACH", "raw")], &["--memory", "private", "--pages", "4000"]);
    assert_eq!(run.report["tracing_path"], "raw_tracepoint");
    check_parent_writes(&run);
    check_bytes(&run);
}
