//! The `snapshot` command line: selection modes, exit statuses, the budget
//! gate, the JSON schema, and clear one-line errors without privilege.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

use common::*;

#[test]
fn check_reports_the_tracepoint_path() {
    if !privileged("check_reports_the_tracepoint_path") {
        return;
    }
    let out = snapshot(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("tracing path: BTF tracepoints") || text.contains("tracing path: raw tracepoints"), "{text}");
    for probe in ["page_fault_user", "mm_page_alloc", "sched_process_fork", "sched_process_exec", "sched_process_exit"] {
        assert!(text.contains(&format!("probe {probe}")), "{probe} missing:\n{text}");
    }
}

/// Runs `snapshot ARGS` as user nobody (a copy of it that nobody can reach).
fn as_nobody(args: &[&str]) -> std::process::Output {
    let (_dir, copy) = snapshot_for_nobody();
    Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&copy)
        .args(args)
        .output()
        .expect("runuser")
}

#[test]
fn without_privilege_commands_fail_with_one_line() {
    if !privileged("without_privilege_commands_fail_with_one_line") {
        return;
    }
    for args in [&["check"][..], &["trace", "--all", "--duration", "1"], &["trace", "--", "true"]] {
        let out = as_nobody(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
        assert!(lines[0].contains("CAP_BPF") && lines[0].contains("CAP_PERFMON"), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("os error"), "{args:?}: {err}");
    }
}

#[test]
fn the_commands_exit_status_is_snapshots() {
    if !privileged("the_commands_exit_status_is_snapshots") {
        return;
    }
    let out = snapshot(&["trace", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("out\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
    // As a shell reports them: 127 not found, 126 not executable, 128+N killed by signal N.
    let missing = snapshot(&["trace", "--", "/nonexistent/program"]);
    assert_eq!(missing.status.code(), Some(127));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cannot run /nonexistent/program: No such file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let dir = temp_dir();
    let plain = path(&dir, "not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let denied = snapshot(&["trace", "--", plain.to_str().unwrap()]);
    assert_eq!(denied.status.code(), Some(126), "{}", String::from_utf8_lossy(&denied.stderr));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"));
    let killed = snapshot(&["trace", "--", "sh", "-c", "kill -USR1 $$"]);
    assert_eq!(killed.status.code(), Some(128 + libc::SIGUSR1));
}

#[test]
fn budget_fails_a_costly_run_with_its_own_status() {
    if !privileged("budget_fails_a_costly_run_with_its_own_status") {
        return;
    }
    let work = [SNAPSHOT, "workload", "--pages", "2000", "--no-pagemap", "--truth", "/dev/null"];
    let mut over = vec!["trace", "--budget", "1MiB", "--"];
    over.extend_from_slice(&work);
    let out = snapshot(&over);
    assert_eq!(out.status.code(), Some(99), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("COW budget exceeded") && err.contains("1.0 MiB"), "{err}");
    let mut under = vec!["trace", "--budget", "1GiB", "--"];
    under.extend_from_slice(&work);
    assert_eq!(snapshot(&under).status.code(), Some(0));
    let bad = snapshot(&["trace", "--budget", "lots", "--", "true"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a size"));
}

#[test]
fn json_report_has_the_documented_fields() {
    if !privileged("json_report_has_the_documented_fields") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let out = snapshot(&["trace", "--json", report.to_str().unwrap(), "--", SNAPSHOT, "workload", "--pages", "100", "--truth", "/dev/null"]);
    assert!(out.status.success());
    let report = json(&report);
    let procs = report["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 2, "parent and child: {report:#}");
    for p in procs {
        for key in ["pid", "ppid", "comm", "cow_copies", "cow_bytes", "wp_reuse", "faults"] {
            assert!(p.get(key).is_some(), "process lacks {key}: {p}");
        }
    }
    assert_eq!(report["schema_version"], 1);
    let path = report["tracing_path"].as_str().expect("tracing_path");
    assert!(["btf_tracepoint", "raw_tracepoint"].contains(&path), "{path}");
    assert!(report["tracing_path_text"].as_str().is_some_and(|t| t.contains("tracepoints")), "{report:#}");
    let forks = report["forks"].as_array().expect("forks");
    assert_eq!(forks.len(), 1);
    for key in ["parent", "child", "start_ns", "end_ns", "parent_copies", "child_copies"] {
        assert!(forks[0].get(key).is_some(), "fork lacks {key}: {}", forks[0]);
    }
    // Found by pid, not by place: processes are listed by pid, and the
    // child's is below the parent's when the pids (pid_max is 32768 here,
    // and another test forks 40000) wrapped between the two.
    let by_pid = |pid: &serde_json::Value| procs.iter().find(|p| p["pid"] == *pid).unwrap_or_else(|| panic!("no process {pid}: {report:#}"));
    let (parent, child) = (by_pid(&forks[0]["parent"]), by_pid(&forks[0]["child"]));
    assert_ne!(parent["pid"], child["pid"]);
    assert_eq!(child["ppid"], parent["pid"]);
    assert!(forks[0]["end_ns"].as_u64().unwrap() > forks[0]["start_ns"].as_u64().unwrap());
}

#[test]
fn comm_selects_processes_that_exec_later() {
    if !privileged("comm_selects_processes_that_exec_later") {
        return;
    }
    let dir = temp_dir();
    let (report, truth, link) = (path(&dir, "r.json"), path(&dir, "t.json"), path(&dir, "cowprobe"));
    std::os::unix::fs::symlink(SNAPSHOT, &link).unwrap();
    let tracer = start_tracer(&["--comm", "cowprobe", "--duration", "4", "--json", report.to_str().unwrap()]);
    let status = Command::new(&link).args(["workload", "--pages", "1000", "--truth", truth.to_str().unwrap()]).status().unwrap();
    assert!(status.success());
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (report, truth) = (json(&report), json(&truth));
    let fork = &report["forks"][0];
    assert_eq!(fork["child"], truth["forks"][0]["child"], "{report:#}");
    let copies = fork["parent_copies"].as_u64().unwrap();
    assert!((1000..1000 + 64).contains(&copies), "parent copies {copies}");
}

/// A shell that waits for EOF on its stdin, then execs a workload writing `pages`.
fn waiting_workload(pages: u32) -> std::process::Child {
    let script = format!("read line; exec \"$0\" workload --pages {pages} --truth /dev/null");
    Command::new("sh").args(["-c", &script, SNAPSHOT]).stdin(Stdio::piped()).spawn().unwrap()
}

#[test]
fn pid_traces_a_running_process_until_it_exits() {
    if !privileged("pid_traces_a_running_process_until_it_exits") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // A shell that waits, then forks a child that writes: traced from its pid.
    let mut shell = waiting_workload(1500);
    let pid = shell.id().to_string();
    let tracer = start_tracer(&["--pid", &pid, "--json", report.to_str().unwrap()]);
    drop(shell.stdin.take()); // EOF: the shell goes on
    assert!(shell.wait().unwrap().success());
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&report);
    let parent = report["processes"].as_array().unwrap().iter().find(|p| p["pid"].to_string() == pid).unwrap();
    assert_eq!(parent["comm"], "snapshot", "exec renamed it: {parent}");
    let copies = report["forks"][0]["parent_copies"].as_u64().unwrap();
    assert!((1500..1500 + 64).contains(&copies), "{report:#}");
}

#[test]
fn many_short_lived_processes_do_not_fill_the_maps() {
    if !privileged("many_short_lived_processes_do_not_fill_the_maps") {
        return;
    }
    // More processes than the kernel's process table holds (32768): each
    // exit must free its entry, or the later ones would be lost.
    const CHILDREN: usize = 40_000;
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let script = format!("i=0; while [ $i -lt {CHILDREN} ]; do ( : ); i=$((i+1)); done");
    let out = snapshot(&["trace", "--interval", "2", "--json", report.to_str().unwrap(), "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&report);
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), CHILDREN + 1, "every process reported once");
    assert!(procs.iter().all(|p| p["exited"] == true));
    assert_eq!(report["forks"].as_array().unwrap().len(), CHILDREN);
    for (key, value) in report["health"].as_object().unwrap() {
        if key != "unattributed_copies" {
            assert_eq!(value, 0, "health.{key}: {:#}", report["health"]);
        }
    }
    // --interval printed progress lines on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().any(|l| l.contains("copies") && l.contains("live procs")), "{err}");
}

/// Ends a trace without a command as Ctrl-C would, and waits for its report.
fn stop(tracer: std::process::Child) -> std::process::Output {
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    finish(tracer)
}

/// The output of a child, with stderr read to the end.
fn finish(child: std::process::Child) -> std::process::Output {
    child.wait_with_output().expect("waiting for snapshot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A FIFO in a fresh private directory (kept alive by the returned guard).
fn fifo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = temp_dir();
    let fifo = path(&dir, "go");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo {}", fifo.display());
    (dir, fifo)
}

#[test]
fn report_leaves_the_commands_stdout_alone() {
    if !privileged("report_leaves_the_commands_stdout_alone") {
        return;
    }
    // Bytes a report could never produce, a NUL included, and no final newline. The command
    // ends only once the test has seen an interval line (it reads a FIFO the test opens): a fixed
    // sleep lost that race whenever the tracer's start took most of it on a loaded machine.
    let (_dir, go) = fifo();
    let first = "printf 'first\\n\\000binary\\377\\n'";
    // `timeout`: without an interval line the test fails at the end instead of hanging.
    let script = format!("{first}; timeout 120 cat {} >/dev/null; printf last", go.display());
    let expected = b"first\n\0binary\xff\nlast";
    // Without SUDO_UID (a test run through sudo): the command stays root and reaches the FIFO.
    let mut child = Command::new(SNAPSHOT)
        .args(["trace", "--interval", "500ms", "--", "sh", "-c", &script])
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running snapshot");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut err = String::new();
    while !err.contains("live procs") {
        let mut line = Vec::new();
        let n = stderr.read_until(b'\n', &mut line).unwrap();
        assert!(n > 0, "snapshot ended before an interval line:\n{err}");
        err.push_str(&text(&line));
    }
    // Opening and closing the FIFO's write end ends the command's `cat`.
    drop(std::fs::OpenOptions::new().write(true).open(&go).unwrap());
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stderr, &mut rest).unwrap();
    err.push_str(&text(&rest));
    let out = finish(child);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, expected, "stdout: {:?}", text(&out.stdout));
    assert!(err.contains("COW_COPIES") && err.contains("\ntotal: "), "report not on stderr:\n{err}");
    // -o FILE: the report goes there; stderr keeps only notes.
    let dir = temp_dir();
    let file = path(&dir, "report.txt");
    let script = format!("{first}; printf last");
    let out = snapshot(&["trace", "-o", file.to_str().unwrap(), "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, expected);
    let report = std::fs::read_to_string(&file).unwrap();
    assert!(report.contains("COW_COPIES") && report.contains("\ntotal: "), "{report}");
    assert!(!text(&out.stderr).contains("COW_COPIES"), "{}", text(&out.stderr));
}

#[test]
fn no_subcommand_prints_help_and_usage_shows_the_separator() {
    let bare = snapshot(&[]);
    assert_eq!(bare.status.code(), Some(2));
    let help = text(&bare.stderr);
    assert!(help.contains("Usage: snapshot <COMMAND>") && help.contains("trace"), "{help}");
    let stray = snapshot(&["trace", "ls", "-l"]);
    assert_eq!(stray.status.code(), Some(2));
    let err = text(&stray.stderr);
    assert!(err.contains("snapshot trace [OPTIONS] -- CMD [ARGS]..."), "{err}");
    assert!(err.contains("hint: put `--` before the command to trace: snapshot trace -- ls"), "{err}");
    // The hint is for a command word given to trace, not for an unknown option or another subcommand.
    for args in [&["trace", "--all", "--no-such-option"][..], &["check", "ls"]] {
        let out = snapshot(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!text(&out.stderr).contains("hint:"), "{args:?}: {}", text(&out.stderr));
    }
    let help = snapshot(&["trace", "--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(help.contains("the report goes to stderr") && help.contains("-o, --output"), "{help}");
}

#[test]
fn table_and_json_in_one_place_are_refused_before_the_command_runs() {
    let dir = temp_dir();
    let marker = path(&dir, "ran");
    let touch = format!("touch {}", marker.display());
    for place in ["-".to_string(), path(&dir, "r").display().to_string()] {
        let out = snapshot(&["trace", "-o", &place, "--json", &place, "--", "sh", "-c", &touch]);
        assert_eq!(out.status.code(), Some(1), "{place}");
        assert_eq!(text(&out.stderr), format!("snapshot: -o/--output and --json both name {place}: give them different places\n"));
        assert!(!marker.exists(), "the command ran");
    }
}

#[test]
fn bad_durations_are_refused_with_the_accepted_forms() {
    for bad in [&["--duration", "inf"][..], &["--duration", "nan"], &["--interval", "0"], &["--duration=-5"], &["-i", "1e300"]] {
        let mut args = vec!["trace", "--all"];
        args.extend_from_slice(bad);
        let out = snapshot(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = text(&out.stderr);
        assert!(err.contains("expected a positive time such as 10 (seconds), 1.5s, 500ms or 2m"), "{bad:?}: {err}");
    }
}

/// CapEff of every thread of `pid`.
fn cap_eff(pid: u32) -> Vec<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|t| {
            let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
            u64::from_str_radix(&hex, 16).unwrap()
        })
        .collect()
}

/// Traces `sh -c 'id -u; cat'` with `env` and `args`: returns the command's
/// uid and snapshot's CapEff per thread while it traced.
fn identity_and_caps(env: &[(&str, &str)], args: &[&str]) -> (String, Vec<u64>) {
    let mut command = Command::new(SNAPSHOT);
    command.arg("trace").args(args).args(["--", "sh", "-c", "id -u; cat >/dev/null"]);
    command.env_remove("SUDO_UID").env_remove("SUDO_GID").envs(env.iter().copied());
    let mut tracer = start_tracer_with(command.stdin(Stdio::piped()).stdout(Stdio::piped()));
    let caps = cap_eff(tracer.id());
    drop(tracer.stdin.take());
    let out = finish(tracer);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout).trim().to_string(), caps)
}

#[test]
fn capabilities_are_dropped_and_the_command_runs_as_the_invoker() {
    if !privileged("capabilities_are_dropped_and_the_command_runs_as_the_invoker") {
        return;
    }
    const CAP_KILL: u64 = 1 << 5;
    let sudo = [("SUDO_UID", "65534"), ("SUDO_GID", "65534")];
    // As root, not through sudo: the command runs as root, snapshot keeps nothing.
    assert_eq!(identity_and_caps(&[], &[]), ("0".to_string(), vec![0]));
    // Through sudo: the invoking user runs it; CAP_KILL stays to pass signals on.
    assert_eq!(identity_and_caps(&sudo, &[]), ("65534".to_string(), vec![CAP_KILL]));
    // SUDO_UID alone (no SUDO_GID) still drops to that user, never keeps root.
    assert_eq!(identity_and_caps(&sudo[..1], &[]), ("65534".to_string(), vec![CAP_KILL]));
    // -u: like strace; root only when asked.
    assert_eq!(identity_and_caps(&sudo, &["-u", "root"]), ("0".to_string(), vec![0]));
    assert_eq!(identity_and_caps(&[], &["-u", "nobody"]), ("65534".to_string(), vec![CAP_KILL]));
    let unknown = snapshot(&["trace", "-u", "no-such-user-here", "--", "true"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(text(&unknown.stderr), "snapshot: -u no-such-user-here: no such user\n");
    // --all: still counts (the maps are read without any capability).
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let tracer = start_tracer(&["--all", "--json", report.to_str().unwrap()]);
    assert_eq!(cap_eff(tracer.id()), vec![0]);
    let _ = snapshot(&["workload", "--pages", "300", "--truth", "/dev/null"]);
    let out = stop(tracer);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let copies: u64 = json(&report)["processes"].as_array().unwrap().iter().map(|p| p["cow_copies"].as_u64().unwrap()).sum();
    assert!(copies >= 300, "{copies}");
}

#[test]
fn serve_trace_keeps_no_capability() {
    if !privileged("serve_trace_keeps_no_capability") {
        return;
    }
    let dir = temp_dir();
    let mut server = Command::new(SNAPSHOT)
        .args(["serve", "--trace", "--port", "0", "--save", "", "--dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("tcp port") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited before it was ready");
    }
    let caps = cap_eff(server.id());
    let _ = server.kill();
    let _ = server.wait();
    assert!(caps.iter().all(|&c| c == 0), "CapEff per thread: {caps:x?}");
}

#[test]
fn process_names_cannot_drive_the_terminal() {
    if !privileged("process_names_cannot_drive_the_terminal") {
        return;
    }
    // The kernel names a process after the file it executes: any user can pick it.
    let dir = temp_dir();
    let evil = path(&dir, "\x1b[2J\x1b[31mEVIL\r");
    std::os::unix::fs::symlink(SNAPSHOT, &evil).unwrap();
    let out = snapshot(&["trace", "--", evil.to_str().unwrap(), "workload", "--pages", "10", "--truth", "/dev/null"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stderr.contains(&0x1b) && !out.stderr.contains(&b'\r'), "raw escape printed: {:?}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("\\x1b[2J\\x1b[31mEVIL\\x0d"), "{err}");
}

#[test]
fn the_command_gets_default_signal_handling() {
    if !privileged("the_command_gets_default_signal_handling") {
        return;
    }
    // `yes | head -1`: yes must die of SIGPIPE, not print "Broken pipe".
    let mut tracer = start_tracer(&["--", "yes"]);
    let mut first = String::new();
    BufReader::new(tracer.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, "y\n");
    let out = finish(tracer);
    assert_eq!(out.status.code(), Some(128 + libc::SIGPIPE), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Broken pipe"), "{}", text(&out.stderr));
    // And an empty signal mask: SIGTERM from outside snapshot reaches it.
    let out = snapshot(&["trace", "--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    let status = text(&out.stdout);
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).unwrap();
    assert_eq!(u64::from_str_radix(ignored, 16).unwrap() & (1 << (libc::SIGPIPE - 1)), 0, "{status}");
}

/// Sends `signal` to snapshot alone; the command and the programs go with it.
fn signal_tracer(signal: i32, command: &[&str]) -> (std::process::Output, serde_json::Value, Vec<u32>) {
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let mut args = vec!["--json", report.to_str().unwrap(), "--"];
    args.extend_from_slice(command);
    let tracer = start_tracer(&args);
    let ids = link_ids(tracer.id());
    assert!(ids.len() >= 5, "links held: {ids:?}");
    assert!(ids.iter().all(|&id| attached(id)));
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, signal) }, 0);
    let out = finish(tracer);
    let report = if signal == libc::SIGKILL { serde_json::Value::Null } else { json(&report) };
    (out, report, ids)
}

#[test]
fn sigterm_and_sighup_are_passed_on_and_the_report_written() {
    if !privileged("sigterm_and_sighup_are_passed_on_and_the_report_written") {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        let (out, report, ids) = signal_tracer(signal, &["sleep", "1000"]);
        assert_eq!(out.status.code(), Some(128 + signal), "{signal}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("\ntotal: "), "{}", text(&out.stderr));
        let sleep = &report["processes"][0];
        assert_eq!((&sleep["comm"], &sleep["exited"]), (&"sleep".into(), &true.into()), "{report:#}");
        assert!(ids.iter().all(|&id| !attached(id)), "programs left attached: {ids:?}");
    }
    // Without a command, SIGTERM ends tracing with the report and status 0.
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let tracer = start_tracer(&["--all", "--json", report.to_str().unwrap()]);
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) }, 0);
    let out = finish(tracer);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\ntotal: "), "{}", text(&out.stderr));
    assert_eq!(json(&report)["schema_version"], 1);
}

#[test]
fn sigkill_leaves_no_program_attached() {
    if !privileged("sigkill_leaves_no_program_attached") {
        return;
    }
    let (out, _, ids) = signal_tracer(libc::SIGKILL, &["sleep", "5"]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert!(ids.iter().all(|&id| !attached(id)), "programs left attached: {ids:?}");
}

/// Whether `signal` is pending for the whole of process `pid`.
fn pending(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("ShdPnd:")).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << (signal - 1)) != 0
}

#[test]
fn a_second_interrupt_ends_tracing_of_a_command_that_ignores_it() {
    if !privileged("a_second_interrupt_ends_tracing_of_a_command_that_ignores_it") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // exec keeps the ignored SIGINT: the command is sleep itself. It is left
    // running, so it must not hold our pipes (or the test's inherited fds) open.
    let script = "trap '' INT; exec sleep 1000 >/dev/null 2>&1";
    let tracer = start_tracer(&["--json", report.to_str().unwrap(), "--", "sh", "-c", script]);
    let pid = tracer.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let command: u32 = children.split_whitespace().next().expect("the command").parse().unwrap();
    // Until sh has run `trap` and exec'd, SIGINT would still end it.
    while !std::fs::read_to_string(format!("/proc/{command}/stat")).unwrap().contains("(sleep)") {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    // Two SIGINTs pending at once would merge into one: wait until snapshot took the first.
    while pending(pid, libc::SIGINT) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = finish(tracer);
    let alive = std::path::Path::new(&format!("/proc/{command}")).exists();
    // SAFETY: as above. The command was left running by design: end it.
    unsafe { libc::kill(command as i32, libc::SIGKILL) };
    let err = text(&out.stderr);
    assert!(err.contains(&format!("interrupted twice: tracing stopped; pid {command} goes on")), "{err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(alive, "the command goes on untraced");
    assert_eq!(json(&report)["processes"][0]["pid"], command);
}

#[test]
fn json_destinations_are_checked_before_tracing() {
    if !privileged("json_destinations_are_checked_before_tracing") {
        return;
    }
    let dir = temp_dir();
    let marker = path(&dir, "ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];
    let missing = path(&dir, "no/such/dir/r.json");
    for (bad, why) in [(missing.to_str().unwrap(), "No such file"), (dir.path().to_str().unwrap(), "Is a directory")] {
        let mut args = vec!["trace", "--json", bad];
        args.extend_from_slice(&touch);
        let out = snapshot(&args);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = text(&out.stderr);
        assert!(err.starts_with("snapshot: --json: cannot write ") && err.contains(why), "{err}");
        assert!(!marker.exists(), "the command ran despite a bad --json {bad}");
    }
    // A full device: the error, and a failure status.
    let full = snapshot(&["trace", "--json", "/dev/full", "--", "true"]);
    assert_eq!(full.status.code(), Some(1));
    assert!(text(&full.stderr).contains("writing /dev/full: No space left on device"), "{}", text(&full.stderr));
    // `-`: stdout.
    let out = snapshot(&["trace", "--json", "-", "--", "true"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["processes"][0]["comm"], "true");
}

#[test]
fn a_closed_stdout_is_an_error_not_a_panic() {
    if !privileged("a_closed_stdout_is_an_error_not_a_panic") {
        return;
    }
    let out = with_stdout_closed(&["--", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("snapshot: writing stdout: Broken pipe") && !err.contains("panicked"), "{err}");
    assert!(err.contains("\ntotal: "), "the table still reaches stderr: {err}");
    // A failing command keeps its status even so.
    let out = with_stdout_closed(&["--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

/// `snapshot trace --json - ARGS` with a stdout whose reader is gone before it starts (closing
/// it after the spawn raced the report: a stalled test let the JSON into the pipe first).
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(SNAPSHOT)
        .args(["trace", "--json", "-"])
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("running snapshot")
}

#[test]
fn duration_ends_the_command_and_keeps_its_status() {
    if !privileged("duration_ends_the_command_and_keeps_its_status") {
        return;
    }
    let out = snapshot(&["trace", "--duration", "300ms", "--", "sleep", "1000"]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--duration reached: sending SIGTERM") && err.contains("\ntotal: "), "{err}");
    // A command that ends first keeps its own status.
    let out = snapshot(&["trace", "--duration", "2m", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
}

/// Waits for a child that must end by itself; a hang is the failure.
fn ends_by_itself(mut child: std::process::Child, what: &str) -> std::process::Output {
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return finish(child);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("{what}: snapshot did not end: {}", text(&finish(child).stderr));
}

#[test]
fn pid_of_a_thread_traces_its_process_and_a_zombie_ends() {
    if !privileged("pid_of_a_thread_traces_its_process_and_a_zombie_ends") {
        return;
    }
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap().to_string();
    let out = snapshot(&["trace", "--pid", &tid, "--duration", "200ms"]);
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
    let err = text(&out.stderr);
    let me = std::process::id();
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("tracing pid {me} (the process of thread {tid})")), "{err}");
    assert!(err.contains(&format!("\n {me} ")), "the process is in the report: {err}");
    // A zombie: exited, not yet reaped.
    let mut zombie = Command::new("true").spawn().unwrap();
    let stat = format!("/proc/{}/stat", zombie.id());
    while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
        std::thread::yield_now();
    }
    let tracer = Command::new(SNAPSHOT).args(["trace", "--pid", &zombie.id().to_string()]).stderr(Stdio::piped()).spawn().unwrap();
    let out = ends_by_itself(tracer, "--pid of a zombie");
    zombie.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_in_a_user_namespace_shows_the_table_and_fails_once() {
    let out = Command::new("unshare").args(["-Ur", SNAPSHOT, "check"]).output().expect("unshare (util-linux)");
    let (table, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{table}{err}");
    assert!(table.contains("kernel BTF") && table.contains("user namespace") && table.contains("load programs"), "{table}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("snapshot: cannot trace here: "), "{err}");
    assert_eq!(err.matches("failed to create map").count(), 1, "duplicated: {err}");
}

#[test]
fn all_reports_the_parents_of_processes_that_ran_before() {
    if !privileged("all_reports_the_parents_of_processes_that_ran_before") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // Started before tracing, works and exits during it.
    let mut early = waiting_workload(200);
    let tracer = start_tracer(&["--all", "--json", report.to_str().unwrap()]);
    drop(early.stdin.take());
    assert!(early.wait().unwrap().success());
    assert!(stop(tracer).status.success());
    let report = json(&report);
    let me = report["processes"].as_array().unwrap().iter().find(|p| p["pid"] == early.id()).expect("the early process");
    assert_eq!(me["exited"], true, "{me}");
    assert_eq!(me["ppid"], std::process::id(), "{me}");
}

/// Every key of the JSON report, as `parent.key` paths.
fn keys(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, &format!("{prefix}{k}."), out);
            }
        }
        serde_json::Value::Array(items) => items.iter().take(1).for_each(|v| keys(v, prefix, out)),
        _ => {}
    }
}

#[test]
fn every_json_field_is_documented_in_the_readme() {
    if !privileged("every_json_field_is_documented_in_the_readme") {
        return;
    }
    let out = snapshot(&["trace", "--json", "-", "--", SNAPSHOT, "workload", "--pages", "10", "--truth", "/dev/null"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut found = Vec::new();
    keys(&report, "", &mut found);
    for key in found.iter().filter(|k| !k.chars().all(|c| c.is_ascii_digit())) {
        assert!(readme.contains(&format!("| `{key}` |")), "README documents no field `{key}`");
    }
    for reason in ["child_exit", "child_exec", "parent_exit", "parent_exec", "live"] {
        assert!(readme.contains(&format!("`{reason}`")), "README lacks end_reason {reason}");
    }
}

/// A sticky world-writable directory like /tmp, a file root cares about in a private one, and
/// `fs.protected_symlinks` off (as on hosts without it, so root follows another user's links).
struct Planting {
    _links: Restore,
    shared: tempfile::TempDir,
    private: tempfile::TempDir,
    victim: std::path::PathBuf,
}

impl Planting {
    fn new() -> Planting {
        use std::os::unix::fs::PermissionsExt as _;
        let _links = Restore::set("/proc/sys/fs/protected_symlinks", "0");
        let shared = temp_dir();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let private = temp_dir();
        let victim = path(&private, "victim");
        std::fs::write(&victim, "precious\n").unwrap();
        Planting { _links, shared, private, victim }
    }
}

#[test]
fn demo_follows_no_link_planted_in_tmpdir() {
    if !privileged("demo_follows_no_link_planted_in_tmpdir") {
        return;
    }
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Planting { _links, shared, private: _private, victim } = Planting::new();
    // The attacker (nobody) plants links under every name the next pids would give.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap();
    for pid in last + 1..last + 3000 {
        let link = shared.path().join(format!("snapshot-demo-{pid}.json"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    }
    let out = Command::new(SNAPSHOT).arg("demo").env("TMPDIR", shared.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("ground truth (pagemap frames)") && shown.contains("\ntotal: "), "{shown}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "root wrote through a planted link");
    // Only the planted links are left: demo cleaned up its private directory.
    assert_eq!(std::fs::read_dir(shared.path()).unwrap().count(), 2999);
}

#[test]
fn report_files_are_not_written_through_links_planted_in_shared_dirs() {
    if !privileged("report_files_are_not_written_through_links_planted_in_shared_dirs") {
        return;
    }
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Planting { _links, shared, private, victim } = Planting::new();
    let planted = shared.path().join("report.json");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    let out = snapshot(&["trace", "--json", planted.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refusing to write through"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "root wrote through a planted link");
    // Our own link, and a new file, are fine.
    let mine = shared.path().join("mine.json");
    std::os::unix::fs::symlink(path(&private, "target.json"), &mine).unwrap();
    let fresh = shared.path().join("fresh.json");
    for dest in [&mine, &fresh] {
        let out = snapshot(&["trace", "--json", dest.to_str().unwrap(), "--", "true"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(json(&path(&private, "target.json"))["schema_version"].is_number());
    assert!(json(&fresh)["schema_version"].is_number());
}
