//! Attribution against ground truth: small C programs (tests/truth/truth.c)
//! build process trees, write pages and measure the pages really copied from
//! their own /proc/self/pagemap; `snapshot trace` must charge each copy to the
//! fork the program names, within the slack of trace.rs.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use common::*;
use serde_json::Value;

/// Pages a program copies after a fork besides its region: stack, libc data.
const SLACK: u64 = 64;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/truth/truth.c");

/// The truth program, compiled once per test run into a private directory.
fn truth_program() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, bin) = BUILT.get_or_init(|| {
        let dir = temp_dir();
        let bin = path(&dir, "truth");
        let out = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(&bin)
            .args([SOURCE, "-lpthread"])
            .output()
            .expect("running cc (install gcc)");
        assert!(out.status.success(), "cc {SOURCE}: {}", String::from_utf8_lossy(&out.stderr));
        (dir, bin)
    });
    bin
}

struct Run {
    report: Value,
    truth: Vec<Value>,
}

fn trace_case(case: &str, pages: u32) -> Run {
    let dir = temp_dir();
    let (report, truth) = (path(&dir, "report.json"), path(&dir, "truth.jsonl"));
    std::fs::write(&truth, "").unwrap();
    let out = Command::new(SNAPSHOT)
        .args(["trace", "--json"])
        .arg(&report)
        .arg("--")
        .arg(truth_program())
        .arg(case)
        .arg(&truth)
        .arg(pages.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "tracing case {case} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&truth).unwrap();
    let truth = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    Run { report: json(&report), truth }
}

impl Run {
    /// The newest fork from parent to child (pids are reused).
    fn fork(&self, parent: &Value, child: &Value) -> &Value {
        self.report["forks"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|f| &f["parent"] == parent && &f["child"] == child)
            .unwrap_or_else(|| panic!("no fork {parent}->{child} in {:#}", self.report))
    }

    fn process(&self, pid: &Value) -> &Value {
        self.report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["pid"] == pid)
            .unwrap_or_else(|| panic!("no process {pid} in {:#}", self.report))
    }

    /// Every figure the program measured, against the report.
    fn check(&self) {
        assert!(!self.truth.is_empty(), "the program measured nothing");
        for t in &self.truth {
            if let Some(side) = t["side"].as_str() {
                let fork = self.fork(&t["parent"], &t["child"]);
                let traced = fork[format!("{side}_copies")].as_u64().unwrap();
                let truth = t["copied"].as_u64().unwrap();
                assert!(close(traced, truth), "{side} copies of fork {t}: traced {traced}\n{:#}", self.report);
            } else if let Some(reason) = t["end_reason"].as_str() {
                let fork = self.fork(&t["parent"], &t["child"]);
                assert_eq!(fork["end_reason"], reason, "fork {t}\n{:#}", self.report);
            } else if let Some(truth) = t["file_copies"].as_u64() {
                let p = self.process(&t["pid"]);
                let traced = p["file_copies"].as_u64().unwrap();
                assert!(close(traced, truth), "file copies in process {t}: traced {traced}\n{p:#}");
                let cow = p["cow_copies"].as_u64().unwrap();
                assert!(cow < SLACK, "file copies counted as COW copies too: {p:#}");
            } else if let Some(truth) = t["huge_copied"].as_u64() {
                let p = self.process(&t["pid"]);
                let traced = p["copies_by_size"]["2097152"].as_u64().unwrap_or(0);
                assert_eq!(traced, truth, "2 MiB copies in process {t}\n{p:#}");
            } else {
                let traced = self.process(&t["pid"])["cow_copies"].as_u64().unwrap();
                let truth = t["copied"].as_u64().unwrap();
                assert!(close(traced, truth), "copies in process {t}: traced {traced}\n{:#}", self.report);
            }
        }
    }

    fn truth_copies(&self) -> u64 {
        self.truth.iter().filter_map(|t| t["copied"].as_u64().or(t["file_copies"].as_u64())).sum()
    }
}

/// `snapshot trace SELECTION` started after the program, which waits at a
/// gate until the tracer is attached; ended with Ctrl-C once the program is done.
fn trace_running(selection: &[&str], name: &str) -> Run {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir();
    let (report, truth, gate) = (path(&dir, "report.json"), path(&dir, "truth.jsonl"), path(&dir, "gate"));
    std::fs::write(&truth, "").unwrap();
    // A copy under a name of its own, for --comm.
    let program = named(&dir, name, truth_program());
    let mut target = Command::new(&program)
        .args(["sibling_exit".as_ref(), truth.as_os_str(), "4096".as_ref()])
        .env("TRUTH_GATE", &gate)
        .spawn()
        .unwrap();
    let mut tracer = Command::new(SNAPSHOT)
        .args(["trace", "--json"])
        .arg(&report)
        .args(selection)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("snapshot: tracing") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "snapshot trace {selection:?} ended before tracing");
    }
    std::fs::write(&gate, "").unwrap();
    assert!(target.wait().unwrap().success(), "the program failed");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().unwrap().success(), "snapshot trace {selection:?} failed");
    let text = std::fs::read_to_string(&truth).unwrap();
    let truth = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    Run { report: json(&report), truth }
}

/// At least the truth, and no more than 1% over it plus the program's own
/// stack and libc copies.
fn close(traced: u64, truth: u64) -> bool {
    traced >= truth && traced <= truth + truth / 100 + SLACK
}

/// Runs one case and checks it; `copies` says whether the case must have
/// copied pages at all (so a program that copied nothing cannot pass).
fn case(name: &str, pages: u32, copies: bool) -> Option<Run> {
    if !privileged(name) {
        return None;
    }
    let run = trace_case(name, pages);
    assert_eq!(run.truth_copies() > 0, copies, "ground truth of {name}: {:?}", run.truth);
    run.check();
    Some(run)
}

#[test]
fn a_sibling_that_exits_leaves_the_copies_to_the_live_fork() {
    case("sibling_exit", 4096, true);
}

#[test]
fn a_parent_exit_ends_its_forks_at_once() {
    case("parent_exits_first", 16, false);
}

#[test]
fn children_that_exec_do_not_hide_the_live_fork() {
    case("exec_children", 4096, true);
}

#[test]
fn a_child_that_forks_charges_its_new_fork() {
    case("grandchild", 4096, true);
}

#[test]
fn an_orphaned_grandchild_keeps_the_fork_its_pages_came_from() {
    case("orphan_grandchild", 4096, true);
}

#[test]
fn a_vfork_child_is_charged_like_its_parent() {
    case("vfork_writes", 4096, true);
}

#[test]
fn a_clone_vm_child_is_charged_like_its_parent() {
    case("clone_vm_writes", 4096, true);
}

#[test]
fn zero_page_fills_are_not_copies() {
    if let Some(run) = case("zero_fills", 4096, false) {
        let parent = run.process(&run.truth[0]["parent"]);
        assert!(parent["zero_fills"].as_u64().unwrap() >= 4096, "{parent:#}");
    }
}

#[test]
fn huge_zero_page_fills_are_not_copies() {
    if !privileged("huge_zero_page_fills_are_not_copies") {
        return;
    }
    let _lock = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    let zero = "/sys/kernel/mm/transparent_hugepage/use_zero_page";
    let _mode = Restore::set(thp, "madvise");
    let _zero = Restore::set(zero, "1");
    case("thp_zero_fills", 0, false);
}

#[test]
fn read_into_shared_pages_copies() {
    case("read_into_shared", 4096, true);
}

#[test]
fn futex_wake_op_copies() {
    case("futex_wake_op", 4096, true);
}

#[test]
fn mremap_after_fork_keeps_the_sharing() {
    case("mremap_after_fork", 4096, true);
}

#[test]
fn pages_dropped_then_written_are_not_copies() {
    case("madv_dontneed", 4096, false);
}

#[test]
fn posix_spawn_is_not_a_fork() {
    if let Some(run) = case("posix_spawn", 4096, true) {
        let forks = run.report["forks"].as_array().unwrap();
        assert_eq!(forks.len(), 1, "only the holder's fork: {:#}", run.report);
    }
}

#[test]
fn sixty_four_live_children() {
    if let Some(run) = case("many_children", 4096, true) {
        assert_eq!(run.report["forks"].as_array().unwrap().len(), 64, "{:#}", run.report);
    }
}

#[test]
fn a_thread_writing_during_the_fork() {
    if let Some(run) = case("thread_during_fork", 4096, true) {
        assert_eq!(run.report["forks"].as_array().unwrap().len(), 1, "threads are not forks: {:#}", run.report);
        // The faults that populated the region came before the thread: a
        // thread start must not reset the process's counters.
        let parent = run.process(&run.truth[0]["parent"]);
        assert!(parent["faults"].as_u64().unwrap() >= 2 * 4096, "{parent:#}");
    }
}

#[test]
fn forty_thousand_short_children() {
    if let Some(run) = case("short_children", 4096, true) {
        let forks = run.report["forks"].as_array().unwrap();
        assert_eq!(forks.len(), 40001, "every fork recorded");
        let h = &run.report["health"];
        assert_eq!(h["forks_table_full"], 0);
        assert_eq!(h["procs_table_full"], 0);
        assert_eq!(h["ring_full"], 0);
    }
}

#[test]
fn io_uring_inline_reads_into_shared_pages() {
    case("iouring_inline", 4096, true);
}

#[test]
fn io_uring_worker_reads_into_shared_pages() {
    case("iouring_async", 4096, true);
}

#[test]
fn io_uring_sqpoll_reads_into_shared_pages() {
    case("iouring_sqpoll", 4096, true);
}

#[test]
fn io_uring_worker_page_cache_writes_after_reused_pages_are_not_copies() {
    if let Some(run) = case("iouring_reuse", 4096, false) {
        let p = run.process(&run.truth[0]["pid"]);
        assert!(p["wp_faults"].as_u64().unwrap() >= 4096, "the reads faulted: {p:#}");
    }
}

/// Runs a hugetlb case with 16 more huge pages reserved, restored after.
fn hugetlb_case(name: &str) {
    if !privileged(name) {
        return;
    }
    let _lock = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let nr = "/proc/sys/vm/nr_hugepages";
    let old: u64 = std::fs::read_to_string(nr).unwrap().trim().parse().unwrap();
    let _restore = Restore::set(nr, &(old + 16).to_string());
    let run = trace_case(name, 0);
    run.check();
    for p in run.report["processes"].as_array().unwrap() {
        assert_eq!(p["vma_misses"], 0, "hugetlb write faults left unclassified: {p:#}");
    }
}

#[test]
fn hugetlb_parent_reuses_what_the_child_copied() {
    hugetlb_case("hugetlb_child_first");
}

#[test]
fn hugetlb_pages_mapped_after_the_fork_are_not_copied() {
    hugetlb_case("hugetlb_after_fork");
}

/// A flush in a syscall after a write fault that reused its huge page is not
/// that fault's copy (200 such flushes, beyond the slack).
#[test]
fn hugetlb_flushes_after_reused_faults_are_not_copies() {
    hugetlb_case("hugetlb_reuse_flush");
}

/// Hugetlb copies while another thread of the process takes write faults of
/// its own on the other CPU: that thread's shootdown IPIs can do a copy's
/// flush before the copying thread does (53 to 77 of 80 copies were seen in 20 rounds
/// when only TLB_LOCAL_MM_SHOOTDOWN counted).
#[test]
fn hugetlb_copies_beside_a_faulting_thread() {
    hugetlb_case("hugetlb_threads");
}

#[test]
fn comm_traces_a_process_already_running() {
    if !privileged("comm_traces_a_process_already_running") {
        return;
    }
    let name = format!("ct{}", std::process::id());
    let run = trace_running(&["--comm", &name], &name);
    assert!(run.truth_copies() > 0);
    run.check();
}

#[test]
fn all_traces_a_process_already_running() {
    if !privileged("all_traces_a_process_already_running") {
        return;
    }
    let run = trace_running(&["--all"], "truth-all");
    assert!(run.truth_copies() > 0);
    run.check();
}

#[test]
fn private_file_pages_written_after_a_read_are_file_copies() {
    case("file_present", 4096, true);
}

#[test]
fn private_file_pages_written_unmapped_are_file_copies() {
    case("file_not_present", 4096, true);
}

#[test]
fn memfd_pages_written_after_a_read_are_file_copies() {
    case("memfd_present", 4096, true);
}

#[test]
fn shared_memfd_pages_written_unmapped_are_not_copies() {
    case("memfd_shared", 4096, false);
}

#[test]
fn memfd_pages_written_unmapped_are_file_copies() {
    case("memfd_not_present", 4096, true);
}
