//! `snapshot run` end to end: the store (or a real redis-server) under load,
//! snapshotted, traced; its JSON Lines checked against a second, independent
//! tracer and against the snapshot child's smaps Private_Dirty; the live
//! screen driven in a real terminal (tmux).
mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// Kills the process by pid when dropped, even when the test fails.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn of_type<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| v["type"] == kind).collect()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Waits for the first line of the JSON Lines file (the setting) and returns it.
fn setting(path: &Path, run: &mut Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(first) = complete_lines(&text).next()
        {
            return serde_json::from_str(first).expect("setting line");
        }
        assert!(run.try_wait().unwrap().is_none(), "snapshot run exited before its first line");
        assert!(Instant::now() < deadline, "no setting line within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_lines_agree_with_an_independent_tracer_and_private_dirty() {
    // Not beside the tests that load 2 M keys: its snapshots are timed on a 2-core machine.
    let Some(_machine) = privileged_machine("json_lines_agree_with_an_independent_tracer_and_private_dirty") else {
        return;
    };
    let dir = temp_dir();
    let html = path(&dir, "report.html");
    let (mut command, json) =
        snapshot_run(&dir, &["--keys", "20000", "--rate", "4000", "--every", "1", "--warmup", "4", "--duration", "8"]);
    let mut run = Reap(command.arg("--html").arg(&html).spawn().unwrap());
    let setting = setting(&json, &mut run.0);
    let pid = u(&setting, "pid").to_string();
    // A second tracer, loaded on its own, on the same store: its per-fork
    // counts must be the run's, exactly. It ends when the store exits.
    let trace_json = path(&dir, "trace.json");
    let mut trace = Reap(start_tracer_with(
        Command::new(SNAPSHOT).args(["trace", "--pid", &pid, "--json"]).arg(&trace_json).stdout(Stdio::null()),
    ));
    // It attaches while the run warms up, but on a loaded machine loading its
    // programs can outlast the warmup: forks the store made before it said it
    // was tracing (snapshots 1..=early) are not its to count.
    let early = total_forks(setting["addr"].as_str().expect("addr in the setting"));
    assert!(run.0.wait().unwrap().success(), "snapshot run failed");
    assert!(trace.0.wait().unwrap().success(), "snapshot trace failed");
    let all = lines(&json);
    let intervals = of_type(&all, "interval");
    let snapshots = of_type(&all, "snapshot");
    let end = of_type(&all, "end");
    assert!(intervals.len() >= 4, "{} intervals", intervals.len());
    assert!(snapshots.len() >= 2, "{} snapshots in {all:#?}", snapshots.len());
    assert_eq!(end.len(), 1);
    let traced = common::json(&trace_json);
    let forks = traced["forks"].as_array().unwrap();
    let compared = snapshots.iter().filter(|s| u(s, "index") > early).count();
    assert!(compared > 0, "no snapshot after the second tracer attached ({early} before): {all:#?}");
    for s in &snapshots {
        if u(s, "index") > early {
            let child = u(s, "child_pid");
            let fork = forks.iter().find(|f| u(f, "child") == child).unwrap_or_else(|| panic!("fork {child} not traced"));
            let theirs = u(fork, "parent_bytes") + u(fork, "child_bytes");
            // Two tracers see the same events, but a copy the parent makes at the very instant the child exits
            // on the other CPU races with the fork's end: each tracer's programs run in their own order, so one
            // may charge it to the fork and the other find the fork ended (an unattributed copy). Seen: 1 page.
            let boundary = 2 * 4096;
            assert!(u(s, "copied_bytes").abs_diff(theirs) <= boundary, "snapshot {s}\nvs {fork}");
        }
        assert!(u(s, "copies") > 0 && u(s, "writes") > 0, "a snapshot under load copied nothing: {s}");
        // Private_Dirty also holds the child's own new pages, and is read a moment before it exits.
        let dirty = u(s, "private_dirty_bytes");
        let copied = u(s, "copied_bytes");
        assert!(copied.abs_diff(dirty) <= dirty / 20 + (1 << 20), "tracer {copied} vs Private_Dirty {dirty}: {s}");
        assert!(u(s, "fork_usec") > 0, "{s}");
    }
    // The intervals add up to the end's totals.
    let copies: f64 = intervals.iter().map(|i| i["copies_per_s"].as_f64().unwrap() * i["interval_s"].as_f64().unwrap()).sum();
    let last_total = u(intervals.last().unwrap(), "cow_copies_total");
    assert!((copies - last_total as f64).abs() < 2.0, "intervals {copies} vs total {last_total}");
    let end = end[0];
    assert_eq!(u(end, "server_copies") + u(end, "children_copies"), last_total);
    assert_eq!(u(end, "tracer_lost"), 0);
    html_charts_are_drawn(&html, &dir);
}

/// The forks a store has made (INFO total_forks), asked with redis-cli.
fn total_forks(addr: &str) -> u64 {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = Command::new("redis-cli").args(["-h", host, "-p", port, "INFO", "stats"]).output().expect("redis-cli");
    let info = String::from_utf8_lossy(&out.stdout);
    let value = info.lines().find_map(|l| l.strip_prefix("total_forks:"));
    value.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no total_forks in INFO from {addr}:\n{info}"))
}

/// Opens the HTML report in headless Chromium and counts the pixels of the
/// charts' two colours in the screenshot: lines and bars, not an empty page.
fn html_charts_are_drawn(html: &Path, dir: &tempfile::TempDir) {
    let page = std::fs::read_to_string(html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "three inline charts");
    assert!(!page.contains("src=") && !page.contains("<link"), "the report loads nothing from elsewhere");
    let (pixels, channels) = screenshot(html, dir, "1000,1400");
    let pixels = pixels.chunks(channels);
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 30);
    let (mut red, mut blue) = (0, 0);
    for p in pixels {
        red += usize::from(near(p, [214, 39, 40]));
        blue += usize::from(near(p, [31, 119, 180]));
    }
    // Two 3-px lines across a 900-px chart and the bars: thousands of pixels each.
    assert!(red > 2000 && blue > 2000, "charts not drawn: {red} red, {blue} blue pixels of {}", html.display());
}

#[test]
fn connect_drives_redis_server_and_agrees_with_rdb_last_cow_size() {
    if !privileged("connect_drives_redis_server_and_agrees_with_rdb_last_cow_size") {
        return;
    }
    let dir = temp_dir();
    let (server, out, port) = redis_server(&dir);
    std::thread::spawn(move || for _ in out.lines() {});
    let connect = format!("127.0.0.1:{port}");
    let (mut command, json) = snapshot_run(
        &dir,
        &["--connect", &connect, "--keys", "50000", "--rate", "5000", "--every", "1", "--warmup", "1", "--duration", "4"],
    );
    let status = command.status().unwrap();
    assert!(status.success());
    let all = lines(&json);
    // The pid came from the listening socket.
    assert_eq!(u(&all[0], "pid"), server.0.id() as u64, "{}", all[0]);
    let snapshots = of_type(&all, "snapshot");
    assert!(!snapshots.is_empty(), "no snapshot of redis-server: {all:#?}");
    for s in snapshots {
        let copied = u(s, "copied_bytes");
        let redis = u(s, "private_dirty_bytes");
        assert!(copied > 0, "{s}");
        assert!(copied.abs_diff(redis) <= redis / 20 + (1 << 20), "tracer {copied} vs rdb_last_cow_size {redis}: {s}");
    }
}

/// A redis-server on a port that was free when probed, and its stdout.
/// Another process may take the port before redis-server binds it (it then
/// exits saying so): then the next free port is tried.
fn redis_server(dir: &tempfile::TempDir) -> (Reap, BufReader<std::process::ChildStdout>, String) {
    for _ in 0..20 {
        let port = free_port().to_string();
        let mut server = Reap(
            Command::new("redis-server")
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdout(Stdio::piped())
                .spawn()
                .expect("redis-server not found: apt-get install redis-server"),
        );
        let mut out = BufReader::new(server.0.stdout.take().unwrap());
        let mut said = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                assert!(said.contains("Address already in use"), "redis-server exited:\n{said}");
                break;
            }
            if line.contains("Ready to accept connections") {
                return (server, out, port);
            }
            said.push_str(&line);
        }
    }
    panic!("redis-server found no free port in 20 tries");
}

fn tmux(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("tmux").arg("-S").arg(socket).args(args).output().expect("tmux not found: apt-get install tmux")
}

/// The number after "t " on the live screen's first status line.
fn shown_time(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains("writes/s") && l.contains("copies/s"))?;
    line.split("t ").nth(1)?.split('s').next()?.trim().parse().ok()
}

#[test]
fn live_screen_refreshes_in_a_terminal_and_quits_on_q() {
    if !privileged("live_screen_refreshes_in_a_terminal_and_quits_on_q") {
        return;
    }
    let dir = temp_dir();
    let socket = path(&dir, "tmux.sock");
    let _server = KillTmux(socket.clone());
    let command = format!("{SNAPSHOT} run --keys 20000 --rate 2000 --every 2 --warmup 1; sleep 30");
    let started = tmux(&socket, &["new-session", "-d", "-s", "run", "-x", "160", "-y", "45", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let capture = || String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "run"]).stdout).into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, first_t) = loop {
        let screen = capture();
        if let Some(t) = shown_time(&screen) {
            break (screen, t);
        }
        assert!(Instant::now() < deadline, "no live screen within 60 s:\n{screen}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // A later time on the screen: a fixed wait could capture it before the
    // next draw on a loaded machine, or half drawn.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let screen = capture();
        // The chart's title is drawn below the time: the whole screen is there.
        if shown_time(&screen).is_some_and(|t| t > first_t) && screen.contains("copies/s against writes/s") {
            break screen;
        }
        assert!(Instant::now() < deadline, "no refreshed screen with its chart within 60 s:\n{first}\n---\n{screen}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(second.contains("SNAPSHOT child") || second.contains("no snapshot running"), "no snapshot status:\n{second}");
    tmux(&socket, &["send-keys", "-t", "run", "q"]);
    // After q the run restores the terminal and the shell's `sleep` remains.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = capture();
        if !screen.contains("copies/s against writes/s") {
            break;
        }
        assert!(Instant::now() < deadline, "q did not quit:\n{screen}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ends the test's own tmux server (and the run in it), even when the test fails.
struct KillTmux(std::path::PathBuf);

impl Drop for KillTmux {
    fn drop(&mut self) {
        tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn pages_compares_4k_and_hugetlb_and_gives_the_huge_pages_back() {
    let Some(_machine) = privileged_machine("pages_compares_4k_and_hugetlb_and_gives_the_huge_pages_back") else {
        return;
    };
    let before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
    let dir = temp_dir();
    let (mut command, json) =
        snapshot_run(&dir, &["--keys", "20000", "--rate", "3000", "--every", "1", "--warmup", "1", "--duration", "3"]);
    let status = command.args(["--pages", "4k,hugetlb"]).status().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap(), before, "huge pages not given back");
    let all = lines(&json);
    let settings = of_type(&all, "setting");
    assert_eq!(settings.iter().map(|s| s["pages_observed"].as_str().unwrap()).collect::<Vec<_>>(), ["4k", "hugetlb"]);
    let comparison = of_type(&all, "comparison");
    let rows = comparison[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let (small, huge) = (&rows[0], &rows[1]);
    assert!(u(small, "snapshots") > 0 && u(huge, "snapshots") > 0, "{rows:?}");
    // The same writes copy 2 MiB at a time on hugetlb: many times the bytes of 4 KiB pages.
    assert!(
        u(huge, "copied_bytes_per_snapshot") > 4 * u(small, "copied_bytes_per_snapshot"),
        "hugetlb {huge} vs 4k {small}"
    );
    // The snapshots of the hugetlb run copied 2 MiB pages.
    let huge_snapshots: Vec<&Value> = all
        .iter()
        .skip_while(|v| v["type"] != "setting" || v["pages_observed"] != "hugetlb")
        .filter(|v| v["type"] == "snapshot")
        .collect();
    assert!(huge_snapshots.iter().any(|s| s["copies_by_size"]["2097152"].as_u64().unwrap_or(0) > 0), "{huge_snapshots:?}");
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn methods_run_in_turn_and_redirect_and_forkless_copy_less_than_fork() {
    let Some(_machine) = privileged_machine("methods_run_in_turn_and_redirect_and_forkless_copy_less_than_fork") else {
        return;
    };
    let dir = temp_dir();
    // 100 MB, so each save lasts long enough for a few thousand SETs to land in it.
    let (mut command, json) =
        snapshot_run(&dir, &["--keys", "200000", "--rate", "5000", "--every", "1", "--warmup", "1", "--duration", "5"]);
    let status = command.args(["--method", "fork,redirect,forkless"]).status().unwrap();
    assert!(status.success());
    let all = lines(&json);
    let methods: Vec<&str> = of_type(&all, "setting").iter().map(|s| s["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["fork", "redirect", "forkless"]);
    let rows = of_type(&all, "comparison")[0]["rows"].as_array().unwrap().clone();
    assert_eq!(rows.iter().map(|r| r["method"].as_str().unwrap()).collect::<Vec<_>>(), methods, "{rows:?}");
    for r in &rows {
        assert!(u(r, "snapshots") > 0 && u(r, "stall_us") > 0 && r["duration_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["writes_per_s_during"].as_f64().unwrap() > 0.0 && r["writes_per_s_without"].as_f64().unwrap() > 0.0);
        assert!(r["extra_memory_bytes"].is_u64() && r["write_p99_child_us"].is_u64(), "{r}");
    }
    // Each method's snapshots, in run order (the settings split the stream).
    let mut per_method: Vec<Vec<&Value>> = Vec::new();
    for v in &all {
        match v["type"].as_str() {
            Some("setting") => per_method.push(Vec::new()),
            Some("snapshot") => per_method.last_mut().unwrap().push(v),
            _ => {}
        }
    }
    let (fork, redirect, forkless) = (&per_method[0], &per_method[1], &per_method[2]);
    // The tracer's copies agree with the child's own Private_Dirty (which also holds its own buffers).
    for s in fork.iter().chain(redirect.iter()) {
        let (copied, dirty) = (u(s, "copied_bytes"), u(s, "private_dirty_bytes"));
        assert!(u(s, "writes") > 0, "no SET during the save: {s}");
        assert!(copied.abs_diff(dirty) <= dirty / 20 + (1 << 20), "tracer {copied} vs Private_Dirty {dirty}: {s}");
    }
    let of = |ss: &[&Value], f: &str| median(ss.iter().map(|s| u(s, f)).collect());
    // Redirect writes new versions to fresh memory: only index pages and the loop's heap are copied.
    let (f, r) = (of(fork, "copied_bytes"), of(redirect, "copied_bytes"));
    assert!(2 * r < f, "tracer: redirect copied {r} per save, fork {f}");
    let (f, r) = (of(fork, "private_dirty_bytes"), of(redirect, "private_dirty_bytes"));
    assert!(r < f, "Private_Dirty: redirect {r} per save, fork {f}");
    // Forkless has no child and shares no page: the kernel copies nothing; the store copied old versions itself.
    for s in forkless.iter() {
        assert_eq!(u(s, "child_pid"), 0, "{s}");
        assert!(u(s, "writes") > 0, "no SET during the save: {s}");
        assert!(u(s, "copied_bytes") <= 64 << 10, "forkless: the kernel copied {s}");
        assert!(s["copied_before_write_bytes"].is_u64(), "{s}");
    }
    // The table's rows are its method's snapshots: counted, summed, medians.
    for (r, ss) in rows.iter().zip(&per_method) {
        assert_eq!(u(r, "snapshots"), ss.len() as u64, "{r}");
        assert_eq!(u(r, "copied_bytes"), ss.iter().map(|s| u(s, "copied_bytes")).sum::<u64>(), "{r}");
        assert_eq!(u(r, "copied_bytes_per_snapshot"), of(ss, "copied_bytes"), "{r}");
        assert_eq!(u(r, "stall_us"), of(ss, "fork_usec"), "{r}");
        assert_eq!(u(r, "extra_memory_bytes"), of(ss, "extra_memory_peak_bytes"), "{r}");
    }
}

#[test]
fn bad_input_gets_one_clear_line_and_starts_nothing() {
    let dir = temp_dir();
    let json = path(&dir, "never.jsonl");
    let json_arg = json.display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--read-ratio", "2"], "--read-ratio must be between 0 and 1"),
        (&["--keys", "0"], "--keys must be at least 1"),
        (&["--pages", "4k,hugetlb"], "needs --duration"),
        (&["--connect", "127.0.0.1:1", "--resize-during-snapshot"], "not with --connect"),
        (&["--rate=-5", "--json", &json_arg], "--rate must be 0 or more"),
    ];
    for (args, want) in cases {
        let out = Command::new(SNAPSHOT).arg("run").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!json.exists(), "a refused run created its output");
}

#[test]
fn times_take_units_and_bad_ones_are_refused_not_panics() {
    // 5s is accepted: the run then stops at the next check (--keys 0), which
    // proves the time parsed.
    let out = Command::new(SNAPSHOT).args(["run", "--duration", "5s", "--every", "500ms", "--keys", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keys must be at least 1"), "{err}");
    for (option, bad) in [("--warmup", "inf"), ("--interval", "1e300"), ("--every", "nan"), ("--duration", "-5")] {
        let out = Command::new(SNAPSHOT).args(["run", &format!("{option}={bad}")]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {bad}: {err}");
        assert!(err.contains("expected a positive time such as 10 (seconds), 1.5s, 500ms or 2m"), "{option} {bad}: {err}");
    }
}

#[test]
fn connect_to_nothing_says_so() {
    if !privileged("connect_to_nothing_says_so") {
        return;
    }
    let port = free_port().to_string();
    let out = Command::new(SNAPSHOT).args(["run", "--connect", &format!("127.0.0.1:{port}")]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("nothing listens on 127.0.0.1:{port}")), "{err}");
}

fn nr_hugepages() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse().unwrap()
}

/// The pids of `pid`'s children (its main thread's: `run` starts the store from it).
fn children(pid: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

#[test]
fn sigterm_while_loading_gives_the_huge_pages_back_and_stops_the_store() {
    let Some(_machine) = privileged_machine("sigterm_while_loading_gives_the_huge_pages_back_and_stops_the_store") else {
        return;
    };
    let before = nr_hugepages();
    // Puts the pool back even when the test fails (after the store is gone: it is dropped later).
    let _pool = Restore::set("/proc/sys/vm/nr_hugepages", &before.to_string());
    let (mut run, store) = hugetlb_run_with_its_store();
    let pid = run.0.id();
    let _store = KillPid(store);
    assert!(nr_hugepages() > before, "no huge pages reserved");
    // The signal comes once the load has begun (a fixed wait could end before the tracer's
    // attach on a loaded machine, or after the load); 2 M keys take seconds to load.
    let mut err = load_began(&mut run);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = run.0.wait().unwrap();
    std::io::Read::read_to_string(run.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(nr_hugepages(), before, "huge pages not given back (status {status}, stderr {err})");
    assert!(!Path::new(&format!("/proc/{store}")).exists(), "the store (pid {store}) outlived the run");
    assert!(!status.success(), "a run stopped while loading succeeded");
    assert!(err.contains("stopped while loading the dataset ("), "no reason given: {err}");
}

/// Reads the run's stderr up to its "loading ... keys" line (the load has begun); returns it.
/// Byte by byte: a buffered reader would keep what follows the line from the caller.
fn load_began(run: &mut Reap) -> String {
    let stderr = run.0.stderr.as_mut().expect("stderr piped");
    let mut err = Vec::new();
    while !err.ends_with(b"snapshot: loading 2000000 keys into the store\n") {
        let mut byte = [0u8];
        let n = std::io::Read::read(stderr, &mut byte).unwrap();
        assert!(n > 0, "the run ended before its load began: {}", String::from_utf8_lossy(&err));
        err.push(byte[0]);
    }
    String::from_utf8_lossy(&err).into_owned()
}

/// Starts a 2 M-key hugetlb run (seconds of loading) and waits for the store it starts
/// (its stderr piped, for `load_began`).
fn hugetlb_run_with_its_store() -> (Reap, u32) {
    let run = Command::new(SNAPSHOT)
        .args(["run", "--pages", "hugetlb", "--keys", "2000000", "--no-tui", "--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Reap(run);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(&store) = children(run.0.id()).first() {
            return (run, store);
        }
        assert!(run.0.try_wait().unwrap().is_none(), "snapshot run exited before starting the store");
        assert!(Instant::now() < deadline, "no store within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a process the test did not start but must not leave behind (a store the run orphaned).
struct KillPid(u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // Only that store: the pid may have been reused once it was gone.
        let is_store = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(13).any(|w| w == b"snapshot-run-"))
        };
        if !is_store(self.0) {
            return;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
        // Wait until its huge pages are free, so the pool can shrink (a zombie's cmdline is empty).
        while is_store(self.0) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sigkill_of_the_run_stops_the_store() {
    let Some(_machine) = privileged_machine("sigkill_of_the_run_stops_the_store") else {
        return;
    };
    // A killed run cannot give the huge pages back itself (the README says so): the test does.
    let _pool = Restore::set("/proc/sys/vm/nr_hugepages", &nr_hugepages().to_string());
    let (mut run, store) = hugetlb_run_with_its_store();
    let store_guard = KillPid(store);
    load_began(&mut run);
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    // The store gets SIGTERM from the kernel when its parent dies; it exits on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let alive = loop {
        let alive = std::fs::read(format!("/proc/{store}/cmdline")).is_ok_and(|c| !c.is_empty());
        if !alive || Instant::now() > deadline {
            break alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(store_guard);
    assert!(!alive, "the store (pid {store}) outlived a killed run");
}

#[test]
fn ctrl_c_on_the_live_screen_while_loading_stops_the_run() {
    let Some(_machine) = privileged_machine("ctrl_c_on_the_live_screen_while_loading_stops_the_run") else {
        return;
    };
    let dir = temp_dir();
    let socket = path(&dir, "tmux.sock");
    let _server = KillTmux(socket.clone());
    // 2 M keys take seconds to load; the screen is in raw mode then, so Ctrl-C is a key, not SIGINT.
    let command = format!("{SNAPSHOT} run --keys 2000000 --duration 60; echo EXITED $?; sleep 30");
    let started = tmux(&socket, &["new-session", "-d", "-s", "run", "-x", "160", "-y", "45", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let capture = || String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "run"]).stdout).into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !capture().contains("loading ") {
        assert!(Instant::now() < deadline, "no loading bar within 60 s:\n{}", capture());
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux(&socket, &["send-keys", "-t", "run", "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let screen = loop {
        let screen = capture();
        if screen.contains("EXITED") {
            break screen;
        }
        assert!(Instant::now() < deadline, "Ctrl-C did not stop the run:\n{screen}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stopped before the load finished: a key on the live screen ends it as q does (0), and says so.
    assert!(screen.contains("stopped while loading the dataset"), "{screen}");
    assert!(screen.contains("EXITED 0") && !screen.contains("failed"), "{screen}");
}

/// Ctrl-C as the last method starts: the comparison keeps the methods that
/// ran, and has no row of zeros (no copies, no stall) for the one stopped
/// before any snapshot ended.
#[test]
fn ctrl_c_before_a_methods_first_snapshot_leaves_it_out_of_the_comparison() {
    let Some(_machine) = privileged_machine("ctrl_c_before_a_methods_first_snapshot_leaves_it_out_of_the_comparison")
    else {
        return;
    };
    let dir = temp_dir();
    // No snapshot before an hour of load, so neither method has one. The first
    // ends at --duration, not stopped: its row stays. The second would end
    // at --duration too, 20 s after its setting line: the signal must come
    // before that (a 1 s duration lost this race to a stalled test thread).
    let (mut command, json) = snapshot_run(&dir, &["--keys", "50000", "--rate", "2000", "--warmup", "3600", "--duration", "20"]);
    let mut run = Reap(command.args(["--method", "fork,redirect"]).stderr(Stdio::null()).spawn().unwrap());
    settings(&json, &mut run.0, 2);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    // Interrupted: 128 + SIGINT, as a shell reports it, after the report.
    assert_eq!(run.0.wait().unwrap().code(), Some(130));
    let all = lines(&json);
    assert!(of_type(&all, "snapshot").is_empty(), "a snapshot within the warmup: {all:?}");
    assert_eq!(of_type(&all, "end").len(), 2, "each method's end line: {all:?}");
    // One row left: no comparison, as for a single method.
    assert!(of_type(&all, "comparison").is_empty(), "{:?}", of_type(&all, "comparison"));
}

/// Ctrl-C while the dataset loads is a stop, not a failure: 128 + SIGINT, a
/// note rather than an error, and the store is gone.
#[test]
fn ctrl_c_while_loading_stops_the_run_without_an_error() {
    let Some(_machine) = privileged_machine("ctrl_c_while_loading_stops_the_run_without_an_error") else {
        return;
    };
    // Far more keys than load before the signal: it comes as soon as the store exists.
    let run = Command::new(SNAPSHOT)
        .args(["run", "--keys", "2000000", "--duration", "2", "--no-tui"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Reap(run);
    let store = loop {
        if let Some(pid) = children(run.0.id()).first() {
            break *pid;
        }
        assert!(run.0.try_wait().unwrap().is_none(), "the run ended before starting its store");
        std::thread::sleep(Duration::from_millis(5));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(run.0.wait().unwrap().code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped while loading the dataset"), "no reason given: {stderr}");
    assert!(!stderr.contains("failed") && !stderr.to_lowercase().contains("error"), "{stderr}");
    assert!(!Path::new(&format!("/proc/{store}")).exists(), "the store {store} was left running");
}

/// Ctrl-C at a terminal signals the whole foreground group: the run stops
/// as for a SIGINT of its own (its store is not stopped under it).
#[test]
fn ctrl_c_to_the_runs_process_group_stops_it_as_the_run_alone() {
    let Some(_machine) = privileged_machine("ctrl_c_to_the_runs_process_group_stops_it_as_the_run_alone") else {
        return;
    };
    let dir = temp_dir();
    let (mut command, json) =
        snapshot_run(&dir, &["--keys", "20000", "--rate", "2000", "--every", "1", "--warmup", "1", "--duration", "60"]);
    command.stderr(Stdio::piped());
    // A group of its own, as a shell's job: the signal goes to it and what it started.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let run = command.spawn().unwrap();
    let mut run = Reap(run);
    // Its first snapshot has ended: there is a row to show.
    while !std::fs::read_to_string(&json).is_ok_and(|t| t.contains("\"type\":\"snapshot\"")) {
        assert!(run.0.try_wait().unwrap().is_none(), "the run ended before its first snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    let group = nix::unistd::Pid::from_raw(-(run.0.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(run.0.wait().unwrap().code(), Some(130), "{stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    assert_eq!(of_type(&lines(&json), "end").len(), 1, "the run's end line: {stderr}");
}

/// The second method's store dies under it: the run shows the first one's
/// row, says which method failed, and does not exit 0.
#[test]
fn a_method_that_fails_shows_the_methods_before_it_and_fails() {
    let Some(_machine) = privileged_machine("a_method_that_fails_shows_the_methods_before_it_and_fails") else {
        return;
    };
    let dir = temp_dir();
    let (mut command, json) =
        // The store is killed right after the second setting line; a 20 s
        // duration leaves a stalled test thread time (with 3 s, the run could
        // have reaped the store first and the pid been reused).
        snapshot_run(&dir, &["--keys", "50000", "--rate", "2000", "--every", "1", "--warmup", "1", "--duration", "20"]);
    command.args(["--method", "fork,redirect"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut run = Reap(command.spawn().unwrap());
    let second = settings(&json, &mut run.0, 2)[1].clone();
    let store = u(&second, "pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(store), nix::sys::signal::Signal::SIGKILL).unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).expect("reading the run's output");
            text
        })
    };
    let stdout = read(Box::new(run.0.stdout.take().unwrap()));
    let stderr = read(Box::new(run.0.stderr.take().unwrap()));
    let status = run.0.wait().unwrap();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the redirect method under 4k pages failed; the comparison shows the runs before it"),
        "{stderr}"
    );
    let all = lines(&json);
    let comparison = of_type(&all, "comparison");
    assert_eq!(comparison.len(), 1, "{all:?}");
    let rows = comparison[0]["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["method"].as_str().unwrap()).collect::<Vec<_>>(), ["fork"], "{rows:?}");
    assert!(u(&rows[0], "snapshots") > 0, "{rows:?}");
    assert!(stdout.lines().any(|l| l.split_whitespace().any(|w| w == "fork")) && stdout.contains("METHOD"), "{stdout}");
}

/// `--stacks`: every interval names who copies. The store's own functions
/// head its code paths, and whenever no copy happened between two samples
/// (no snapshot child shares pages), the mappings' bytes are the total.
#[test]
fn stacks_name_the_stores_code_paths_and_mappings_live() {
    let Some(_machine) = privileged_machine("stacks_name_the_stores_code_paths_and_mappings_live") else {
        return;
    };
    let dir = temp_dir();
    let (mut command, json) =
        snapshot_run(&dir, &["--keys", "20000", "--rate", "4000", "--every", "2", "--warmup", "1", "--duration", "7"]);
    let out = command.args(["--interval", "500ms", "--stacks"]).stdout(Stdio::piped()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "snapshot run failed: {}", String::from_utf8_lossy(&out.stderr));
    let all = lines(&json);
    let intervals = of_type(&all, "interval");
    assert!(of_type(&all, "snapshot").len() >= 2, "{all:#?}");
    assert!(intervals.iter().all(|i| i["stacks"].is_object()), "an interval without stacks");
    let mapped = |i: &Value| -> u64 { i["stacks"]["top_mappings"].as_array().unwrap().iter().map(|m| u(m, "bytes")).sum() };
    let quiet: Vec<_> = intervals
        .windows(2)
        .filter(|w| u(w[0], "cow_bytes_total") > 0 && u(w[0], "cow_bytes_total") == u(w[1], "cow_bytes_total"))
        .map(|w| w[0])
        .collect();
    assert!(quiet.len() >= 2, "no two samples without copies between them: {intervals:#?}");
    for i in &quiet {
        assert_eq!(mapped(i), u(i, "cow_bytes_total"), "{:#}", i["stacks"]);
    }
    let last = &intervals.last().unwrap()["stacks"];
    let server = last["top_paths"].as_array().unwrap().iter().find(|p| p["process"] == "server");
    let server = server.unwrap_or_else(|| panic!("no server path in {last:#}"));
    let frames: Vec<&str> = server["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(frames.iter().any(|f| f.contains("snapshot_store::")), "the store's functions in {frames:?}");
    assert!(stdout.contains("by mapping: [heap]") || stdout.contains("by mapping: [anon "), "{stdout}");
}
