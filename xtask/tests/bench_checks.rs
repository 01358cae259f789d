//! The benchmark bodies refuse a run that measured nothing: a tracer that
//! attached but counted no copies, a page size the dataset never got, and
//! bpfcost counts every program the tracer loaded, whatever way it attached.
//! Each test runs the bodies' own Python functions on the records a real run
//! produces (trace.json forks, bpftrace's `@[pid]: n` lines, bpftool names).
use std::process::Command;

const BENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench");

/// Runs `code` with bench/ importable; (exit status ok, stderr).
fn py(code: &str) -> (bool, String) {
    let script = format!("import sys, json, os, tempfile\nsys.path.insert(0, {BENCH:?})\n{code}\n");
    // Its `mkdtemp` dirs go into one removed afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("python3").args(["-c", &script]).env("BENCH_QUICK", "0").env("TMPDIR", tmp.path()).output().expect("python3");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bpfcost_counts_the_raw_tracepoint_twins_and_unknown_programs() {
    // The kernel keeps 15 bytes of a name (mm_page_alloc_raw is "mm_page_alloc_r"); bpftool shows the
    // whole name from the program's BTF when it has one (sched_process_fork).
    let (ok, err) = py(r#"
import bench_bpfcost as b
got = {n: b.label(n) for n in ["mm_page_alloc", "mm_page_alloc_r", "tlb_flush_raw", "rss_stat_raw",
                               "page_fault_user", "page_fault_kern", "sched_process_f", "sched_process_e",
                               "some_new_prog", "empty_tlb_flush", "empty_nothing",
                               "sched_process_fork", "page_fault_kernel", "mm_page_alloc_raw", "sched_process_exec_raw"]}
want = {"mm_page_alloc": "mm_page_alloc", "mm_page_alloc_r": "mm_page_alloc", "tlb_flush_raw": "tlb_flush",
        "rss_stat_raw": "rss_stat", "page_fault_user": "page_fault_user", "page_fault_kern": "page_fault_kernel",
        "sched_process_f": "sched_process_fork", "sched_process_e": "sched_process_exit/exec",
        "some_new_prog": "some_new_prog", "empty_tlb_flush": "empty tlb_flush", "empty_nothing": None,
        "sched_process_fork": "sched_process_fork", "page_fault_kernel": "page_fault_kernel",
        "mm_page_alloc_raw": "mm_page_alloc", "sched_process_exec_raw": "sched_process_exit/exec"}
assert got == want, got
rows = b.delta({1: 0}, {}, {1: ("mm_page_alloc", 9, 9), 2: ("mm_page_alloc_r", 10, 500), 3: ("tlb_flush_raw", 4, 40)})
assert rows == {"mm_page_alloc": (10, 500), "tlb_flush": (4, 40)}, rows
"#);
    assert!(ok, "{err}");
}

#[test]
fn a_tracer_that_counted_too_few_copies_fails_the_round() {
    let (ok, err) = py(r#"
import harness as h
work = tempfile.mkdtemp()
forks = [{"parent": 100, "child": 101, "parent_copies": 4096, "child_copies": 0},
         {"parent": 200, "child": 201, "parent_copies": 3000, "child_copies": 0},
         {"parent": 300, "child": 301, "parent_copies": 10, "child_copies": 0}]
json.dump({"forks": forks}, open(os.path.join(work, "trace.json"), "w"))
assert h.copies_seen("snapshot-comm", "", work, [100, 200, 999]) == {100: 4096, 200: 3000, 999: 0}
h.check_seen("snapshot-comm", {100: 4096}, 4096)
for seen in [{100: 4096, 200: 3000}, {}, {999: 0}]:
    try:
        h.check_seen("snapshot-all", seen, 4096)
    except RuntimeError as e:
        assert "did not measure" in str(e), e
    else:
        raise AssertionError(f"{seen} passed")
out = "Attaching 2 probes...\nATTACHED\n\n@[100]: 4100\n@[7]: 3\n"
assert h.copies_seen("bpftrace-wp", out, work, [100, 200]) == {100: 4100, 200: 0}
"#);
    assert!(ok, "{err}");
}

#[test]
fn a_row_whose_dataset_got_another_page_size_is_refused() {
    let (ok, err) = py(r#"
import bench_pages as p
p.check_pages("thp", {"pages_observed": "thp"})
for got in ["4k", None]:
    try:
        p.check_pages("thp", {"pages_observed": got})
    except RuntimeError as e:
        assert "would measure something else" in str(e), e
    else:
        raise AssertionError(f"{got} passed as thp")
"#);
    assert!(ok, "{err}");
}

#[test]
fn the_overhead_redis_round_needs_every_fork_traced() {
    let (ok, err) = py(r#"
import bench_overhead as o
work = tempfile.mkdtemp()
json.dump({"forks": [{"parent": 5, "child": 6, "parent_copies": 1, "child_copies": 0}] * 3},
          open(os.path.join(work, "trace.json"), "w"))
o.check_saves_seen("snapshot-pid", "", work, 5, 3)
for cond, out, pid in [("snapshot-pid", "", 5), ("snapshot-all", "", 9), ("bpftrace-wp", "ATTACHED\n", 5)]:
    try:
        o.check_saves_seen(cond, out, work, pid, 4 if cond == "snapshot-pid" else 1)
    except RuntimeError:
        pass
    else:
        raise AssertionError(f"{cond} passed")
o.check_saves_seen("bpftrace-wp", "@[5]: 12\n", work, 5, 1)
"#);
    assert!(ok, "{err}");
}

#[test]
fn a_store_run_whose_sets_were_not_stored_fails() {
    // A real redis-server: empty, it fails the check; with the keys a run would leave, it passes.
    let (ok, err) = py(r#"
import harness as h, bench_store as b
s = h.Server("redis")
try:
    try:
        b.check_stored(s, 1000)
    except RuntimeError as e:
        assert "not stored" in str(e), e
    else:
        raise AssertionError("an empty server passed")
    s.cli("DEBUG", "POPULATE", 600)
    b.check_stored(s, 1000)
finally:
    s.stop()
"#);
    assert!(ok, "{err}");
}

#[test]
fn the_redis_load_is_measured_over_whole_saves_and_a_failed_save_fails_the_run() {
    // A real redis-server and redis-benchmark: the window holds exactly the saves asked for and the SETs
    // the server executed in it, over a dataset that does not grow; a save that fails (its directory
    // gone) is refused, not measured.
    let (ok, err) = py(r#"
import shutil, harness as h, bench_overhead as o
s = h.Server("redis")
try:
    o.populate(s, 20000)
    saves0 = int(s.info("persistence")["rdb_saves"])
    sets0 = o.set_calls(s)
    sets, secs, marks = o.over_saves(s, 2, 20000, mark=lambda: o.set_calls(s))
    assert int(s.info("persistence")["rdb_saves"]) - saves0 == 2, s.info("persistence")
    assert sets > 0 and secs > 0, (sets, secs)
    # The load overwrote the populated keys: the dataset every run saves did not grow.
    assert s.cli("DBSIZE") == "20000", s.cli("DBSIZE")
    # The window opened once the load ran (10000 SETs in), and closed after it.
    assert marks[0] >= sets0 + 10000 and marks[1] - marks[0] >= sets * 0.5, (marks, sets, sets0)
    shutil.rmtree(s.dir)
    try:
        o.over_saves(s, 1, 20000)
    except RuntimeError as e:
        assert "failed" in str(e), e
    else:
        raise AssertionError("a failed BGSAVE was measured")
finally:
    s.stop()
m = {"samples": {"a": [], "b": []}}
o.add_ratios(m, {"b": 90.0, "none": 100.0, "a": 120.0})
o.add_ratios(m, {"none": 50.0, "a": 50.0, "b": 40.0})
assert m["samples"] == {"a": [1.2, 1.0], "b": [0.9, 0.8]}, m
"#);
    assert!(ok, "{err}");
}

#[test]
fn the_redis_window_times_the_saves_not_the_marks_around_them() {
    // bpfcost's mark() runs bpftool (slow, on the same cores): the SET/s window must not contain it, and
    // the counters it reads must enclose the window. The mark sleeps, so a window holding it is longer
    // than the span between the end of the first mark and the start of the last.
    let (ok, err) = py(r#"
import time, harness as h, bench_overhead as o
s = h.Server("redis")
try:
    o.populate(s, 2000)
    def mark():
        a = time.monotonic()
        time.sleep(0.5)
        return a, time.monotonic()
    sets, secs, ((a0, b0), (a1, b1)) = o.over_saves(s, 1, 2000, mark=mark)
    assert secs <= a1 - b0, (secs, a1 - b0)
finally:
    s.stop()
"#);
    assert!(ok, "{err}");
}

#[test]
fn a_redis_window_without_sets_fails_the_run() {
    // The load connected, then the server executed no SET during the saves (writes paused): a run
    // that measured no SET must not become 0 SET/s, or a division by it, in a ratio.
    let (ok, err) = py(r#"
import harness as h, bench_overhead as o
s = h.Server("redis")
try:
    o.populate(s, 2000)
    marks = iter([lambda: s.cli("CLIENT", "PAUSE", 60000, "WRITE"), lambda: s.cli("CLIENT", "UNPAUSE")])
    try:
        o.over_saves(s, 1, 2000, mark=lambda: next(marks)())
    except RuntimeError as e:
        assert "no SET" in str(e), e
    else:
        raise AssertionError("a window without SETs was measured")
finally:
    s.stop()
"#);
    assert!(ok, "{err}");
}

#[test]
fn populating_a_server_that_is_gone_is_a_clear_error() {
    // redis-cli --pipe exits at once (nothing listens): the writes into it hit a closed pipe.
    let (ok, err) = py(r#"
import harness as h, bench_overhead as o
s = h.Server("redis")
s.stop()
try:
    o.populate(s, 20000)
except RuntimeError as e:
    assert "populating 20000 keys failed" in str(e), e
else:
    raise AssertionError("populating a stopped server passed")
"#);
    assert!(ok, "{err}");
}

#[test]
fn a_redis_load_that_never_sets_fails_instead_of_waiting_forever() {
    // Writes paused before the load starts: redis-benchmark -l keeps running, the server executes no
    // SET; the wait for the load to start must end with an error (it looped forever before).
    let (ok, err) = py(r#"
import harness as h, bench_overhead as o
s = h.Server("redis")
try:
    o.populate(s, 2000)
    s.cli("CLIENT", "PAUSE", 600000, "WRITE")
    try:
        o.over_saves(s, 1, 2000, start_s=1)
    except RuntimeError as e:
        assert "did not start" in str(e), e
    else:
        raise AssertionError("a load without SETs was measured")
finally:
    s.stop()
"#);
    assert!(ok, "{err}");
}
