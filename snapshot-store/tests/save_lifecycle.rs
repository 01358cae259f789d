//! The life of a background save, with the child held still (stopped) where a test needs it
//! to be alive: fsync order, writes made meanwhile, FLUSHALL, killed children, the parent's
//! death, the save policy's clock, the retry after a failure, and the figures INFO reports,
//! each checked against the child's own /proc files or the server's log.

mod common;
use common::{
    Reply, Server, Started, encode, private_dirty, proc_state, signal, temp_files, tempdir, tool,
};
use std::time::Duration;

/// DEBUG POPULATE with 200-byte values: ~50 MB for 200k keys, a save that takes many steps
/// of `step_until`.
fn populate(s: &Server, n: u64) {
    assert_eq!(
        s.cli(&["debug", "populate", &n.to_string(), "key", "200"]),
        "OK"
    );
}

/// BGSAVE with a child that stops itself before it writes anything (`rdb-child-starts-stopped`):
/// a stop sent from here after the BGSAVE would race the save, which a stall of this thread
/// lets finish first. Returns the stopped child's pid (from an INFO pipelined behind the
/// BGSAVE: the child cannot end before it is sent SIGCONT).
fn bgsave_stopped(s: &Server) -> i32 {
    assert_eq!(
        s.cli(&["config", "set", "rdb-child-starts-stopped", "yes"]),
        "OK"
    );
    let mut c = s.connect();
    let mut b = Vec::new();
    encode(&[b"BGSAVE"], &mut b);
    encode(&[b"INFO", b"persistence"], &mut b);
    c.send_raw(&b);
    assert_eq!(c.read(), Reply::Simple("Background saving started".into()));
    let Reply::Bulk(Some(info)) = c.read() else {
        panic!("INFO")
    };
    let info = String::from_utf8(info).unwrap();
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("rdb_saves_pid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rdb_saves_pid");
    // Later saves of the test run freely.
    assert_eq!(
        s.cli(&["config", "set", "rdb-child-starts-stopped", "no"]),
        "OK"
    );
    s.wait_until("the child to stop", 30, || proc_state(pid) == Some('T'));
    assert!(
        temp_files(&s.dir).is_empty(),
        "the child wrote before it stopped"
    );
    assert_eq!(s.info_field("persistence", "rdb_bgsave_in_progress"), "1");
    pid
}

/// Lets a stopped child run a little, until `done` holds (checked while it is stopped).
fn step_until(s: &Server, pid: i32, what: &str, mut done: impl FnMut() -> bool) {
    s.wait_until(what, 60, || {
        signal(pid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(2));
        signal(pid, libc::SIGSTOP);
        while proc_state(pid) != Some('T') {
            std::thread::sleep(Duration::from_millis(1));
        }
        done()
    });
}

#[test]
fn file_then_directory_are_fsynced_around_the_rename() {
    let dir = tempdir();
    // Uncompressed: DEBUG POPULATE's padded values would shrink below one fsync step.
    let s = Server::start(dir.path(), &["--save", "", "--rdbcompression", "no"]);
    // ~90 MB: more than two incremental fsync steps of 32 MB.
    assert_eq!(s.cli(&["debug", "populate", "300000", "key", "300"]), "OK");
    let trace = dir.path().join("strace.out");
    let err = std::fs::File::create(dir.path().join("strace.err")).unwrap();
    let mut strace = std::process::Command::new(tool("strace"))
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg("-o")
        .arg(&trace)
        .args(["-p", &s.pid.to_string()])
        .stderr(err.try_clone().unwrap())
        .spawn()
        .expect("strace");
    // strace is attached once the traced server shows a tracer.
    s.wait_until("strace to attach", 30, || {
        std::fs::read_to_string(format!("/proc/{}/status", s.pid))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
    });
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    signal(strace.id() as i32, libc::SIGINT);
    strace.wait().unwrap();
    let text = std::fs::read_to_string(&trace).unwrap();
    let dest = s.snapshot_path().canonicalize().unwrap();
    let dir_path = dest.parent().unwrap().to_string_lossy().into_owned();
    let dest = dest.to_string_lossy().into_owned();
    // The child's calls, in order: syncs of the temp file, the rename, a sync of the directory.
    let calls: Vec<&str> = text.lines().filter(|l| l.contains("= 0")).collect();
    let rename = calls
        .iter()
        .position(|l| l.contains("rename") && l.contains(&format!("\"{dest}\"")))
        .unwrap_or_else(|| panic!("no rename to {dest}:\n{text}"));
    let syncs_before = calls[..rename]
        .iter()
        .filter(|l| l.contains("sync(") && l.contains("/temp-"))
        .count();
    assert!(
        syncs_before >= 3,
        "two incremental fdatasyncs and a final fsync of the temp file before the rename:\n{text}"
    );
    assert!(
        calls[..rename]
            .iter()
            .rev()
            .find(|l| l.contains("sync("))
            .is_some_and(|l| l.contains("fsync(") && l.contains("/temp-")),
        "the last sync before the rename is a full fsync of the temp file:\n{text}"
    );
    assert!(
        calls[rename..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains(&format!("<{dir_path}>"))),
        "the directory is fsynced after the rename:\n{text}"
    );
}

#[test]
fn writes_made_during_a_save_still_count_as_unsaved() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    populate(&s, 200_000);
    assert_eq!(s.cli(&["set", "before", "1"]), "OK");
    let pid = bgsave_stopped(&s);
    for i in 0..5 {
        assert_eq!(s.cli(&["set", &format!("during{i}"), "x"]), "OK");
    }
    assert_eq!(s.info_u64("persistence", "rdb_changes_since_last_save"), 6);
    signal(pid, libc::SIGCONT);
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    assert_eq!(
        s.info_u64("persistence", "rdb_changes_since_last_save"),
        5,
        "the snapshot holds the write before the fork, not the five after it"
    );
}

#[test]
fn debug_populate_does_not_resize_while_a_child_lives() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    populate(&s, 200_000);
    let buckets = s.info_u64("memory", "dataset_table_buckets");
    assert_eq!(buckets, 262_144);
    let pid = bgsave_stopped(&s);
    // 300k keys: past the usual bound (one per bucket), under the forced one (5 per bucket,
    // tested in table.rs), so DEBUG POPULATE's reserve must not resize either.
    populate(&s, 300_000);
    assert_eq!(s.info_u64("memory", "dataset_table_buckets"), buckets);
    assert_eq!(s.info_u64("memory", "dataset_table_grow_at"), buckets * 5);
    signal(pid, libc::SIGCONT);
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    // The deferred growth happens once the child is gone.
    assert_eq!(s.info_u64("memory", "dataset_table_buckets"), 524_288);
}

#[test]
fn flushall_during_a_save_stops_it_and_the_empty_dataset_is_saved() {
    let dir = tempdir();
    let mut s = Server::start(dir.path(), &["--save", "3600 1"]);
    populate(&s, 200_000);
    let pid = bgsave_stopped(&s);
    assert_eq!(s.cli(&["flushall"]), "OK");
    assert_eq!(s.cli(&["dbsize"]), "(integer) 0");
    assert_eq!(s.info_field("persistence", "rdb_bgsave_in_progress"), "0");
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    // The killed child is reaped by the loop, not waited for.
    s.wait_until("the killed child to be reaped", 30, || {
        proc_state(pid).is_none()
    });
    assert!(temp_files(&s.dir).is_empty(), "{:?}", temp_files(&s.dir));
    assert_eq!(s.cli(&["set", "after", "1"]), "OK");
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    s.kill9();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["dbsize"]), "(integer) 1");
}

#[test]
fn a_killed_child_leaves_no_temp_file_and_the_old_snapshot() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["set", "old", "1"]), "OK");
    assert_eq!(s.cli(&["save"]), "OK");
    let old = std::fs::read(s.snapshot_path()).unwrap();
    populate(&s, 200_000);
    let pid = bgsave_stopped(&s);
    step_until(&s, pid, "the child's temp file", || {
        !temp_files(&s.dir).is_empty()
    });
    signal(pid, libc::SIGKILL);
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "err");
    assert!(temp_files(&s.dir).is_empty(), "{:?}", temp_files(&s.dir));
    assert_eq!(std::fs::read(s.snapshot_path()).unwrap(), old);
    assert!(
        s.log_text().contains("killed by signal 9"),
        "{}",
        s.log_text()
    );
}

#[test]
fn the_child_dies_with_the_server() {
    let dir = tempdir();
    let mut s = Server::start(dir.path(), &["--save", ""]);
    populate(&s, 200_000);
    let pid = bgsave_stopped(&s);
    // Past its set-up (the temp file comes after the prctl) before the server goes.
    step_until(&s, pid, "the child's temp file", || {
        !temp_files(&s.dir).is_empty()
    });
    s.kill9();
    // PR_SET_PDEATHSIG: the stopped orphan gets SIGKILL (else it would stay stopped, then
    // finish and rename an old dataset over whatever a restarted server saved meanwhile).
    let gone = (0..1200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        matches!(proc_state(pid), None | Some('Z'))
    });
    if !gone {
        signal(pid, libc::SIGKILL);
    }
    assert!(gone, "the save child outlived its server");
}

#[test]
fn the_save_policy_waits_its_seconds() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "2 1"]);
    // The policy counts whole Unix seconds from here (Redis's `lastsave`).
    let start = s.info_u64("persistence", "rdb_last_save_time");
    assert_eq!(s.cli(&["set", "k", "v"]), "OK");
    s.wait_until("the policy's save", 30, || {
        s.log_text().contains("saving (save policy)")
    });
    s.wait_no_child();
    let log = s.log_lines();
    let at = |what: &str| {
        log.iter()
            .find(|(_, m)| m.contains(what))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {what:?} in the log"))
    };
    let waited = at("saving (save policy)") - at("Ready to accept connections");
    // "More than 2 seconds" in whole seconds: 3 seconds past the start's, 2 s at the least.
    let second = at("saving (save policy)") / 1000;
    assert!(
        second >= start + 3 && waited >= 1900,
        "saved in second {second} ({waited} ms after the start), the start's was {start}"
    );
}

#[test]
fn a_failed_save_is_retried_after_5_seconds() {
    let dir = tempdir();
    let s = match Server::try_start(dir.path(), &["--save", "1 1"], Some(64 * 1024)) {
        Started::Up(s) => s,
        Started::Exited { log, .. } => panic!("{log}"),
    };
    populate(&s, 5000);
    assert_eq!(s.cli(&["set", "dirty", "1"]), "OK");
    s.wait_until("two save attempts", 60, || {
        s.log_text().matches("Background saving started").count() >= 2
    });
    let starts: Vec<u64> = s
        .log_lines()
        .into_iter()
        .filter(|(_, m)| m.contains("Background saving started"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "err");
    // The 5 s run from the first attempt's start, the log lines come after each fork.
    let gap = starts[1] - starts[0];
    assert!(gap >= 4900, "retried {gap} ms after a failure");
}

#[test]
fn expired_records_are_not_loaded() {
    let dir = tempdir();
    let mut s = Server::start(dir.path(), &["--save", ""]);
    // Many: the active expiry cycle needs seconds to clear them, so DBSIZE right after the
    // start shows whether the loader let them in.
    let mut c = s.connect();
    let mut b = Vec::new();
    let n = 200_000;
    for i in 0..n {
        encode(
            &[b"SET", format!("t{i}").as_bytes(), b"v", b"PX", b"1500"],
            &mut b,
        );
    }
    c.send_raw(&b);
    for _ in 0..n {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    assert_eq!(s.cli(&["set", "stays", "1"]), "OK");
    assert_eq!(s.cli(&["save"]), "OK");
    s.kill9();
    std::thread::sleep(Duration::from_millis(1600));
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["dbsize"]), "(integer) 1");
    assert_eq!(
        s.cli(&["info", "keyspace"]).lines().last().unwrap_or(""),
        "db0:keys=1,expires=0,avg_ttl=0"
    );
}

#[test]
fn progress_and_cow_figures_match_the_childs_proc_files() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    populate(&s, 200_000);
    let pid = bgsave_stopped(&s);
    step_until(&s, pid, "a progress report", || {
        s.info_u64("persistence", "current_save_keys_processed") > 0
    });
    let info = s.cli(&["info", "persistence"]);
    let field = |name: &str| -> String {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} in {info}"))
            .trim()
            .to_string()
    };
    let processed: u64 = field("current_save_keys_processed").parse().unwrap();
    let total: u64 = field("current_save_keys_total").parse().unwrap();
    assert_eq!(total, 200_000);
    assert!(processed > 0 && processed < total, "{processed}");
    assert_eq!(
        field("current_fork_perc"),
        format!("{:.2}", processed as f64 * 100.0 / total as f64)
    );
    // A sample the child took earlier: no more than what it holds privately now, and not 0.
    let cow: u64 = field("current_cow_size").parse().unwrap();
    let now = private_dirty(pid);
    assert!(
        cow > 0 && cow <= now,
        "current_cow_size {cow}, child's Private_Dirty {now}"
    );

    // Overwrite every record in place: each page of the dataset is copied, so the child's
    // Private_Dirty (read from its smaps) grows by about the dataset's size.
    let mut c = s.connect();
    let mut b = Vec::new();
    for i in 0..200_000u32 {
        encode(
            &[b"SET", format!("key:{i}").as_bytes(), &[b'n'; 200]],
            &mut b,
        );
    }
    c.send_raw(&b);
    for _ in 0..200_000 {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    let copied = private_dirty(pid);
    assert!(copied > now + 40_000_000, "copied {copied} (was {now})");
    signal(pid, libc::SIGCONT);
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    // The final report is the child's Private_Dirty at its end: what we read, plus at most
    // the few pages it dirtied itself since (its write buffer, stack).
    let last = s.info_u64("persistence", "rdb_last_cow_size");
    assert!(
        last >= copied && last <= copied + 8 * 1024 * 1024,
        "rdb_last_cow_size {last}, child's Private_Dirty before its end {copied}"
    );
}

#[test]
fn latency_percentiles_separate_fast_and_slow_calls() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let mut c = s.connect();
    // Three tiers of GET: 1000 of 1 byte, 20 of 1 MiB, 4 of 32 MiB (copying the reply is
    // the cost), so p50, p99 and p99.9 fall in different tiers.
    let mut b = Vec::new();
    encode(&[b"SET", b"tiny", b"x"], &mut b);
    encode(&[b"SET", b"mid", &vec![b'm'; 1 << 20]], &mut b);
    encode(&[b"SET", b"huge", &vec![b'h'; 32 << 20]], &mut b);
    c.send_raw(&b);
    for _ in 0..3 {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    for (key, n) in [("tiny", 1000), ("mid", 20), ("huge", 4)] {
        for _ in 0..n {
            assert!(matches!(c.cmd(&["get", key]), Reply::Bulk(Some(_))));
        }
    }
    let text = s.cli(&["info", "latencystats"]);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("latency_percentiles_usec_get:"))
        .unwrap_or_else(|| panic!("{text}"));
    let v = |k: &str| -> f64 {
        line.split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    assert_eq!(v("calls"), 1024.0);
    assert!(
        v("p50") < v("p99") && v("p99") < v("p99.9"),
        "one value per tier: {line}"
    );
}
