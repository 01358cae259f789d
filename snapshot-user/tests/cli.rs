//! The `snapshot` command line: selection modes, exit statuses, the budget
//! gate, the JSON schema, and clear one-line errors without privilege.
mod common;

use std::{
    io::{BufRead, BufReader},
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

/// Runs `snapshot ARGS` as user nobody.
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", SNAPSHOT])
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
    let missing = snapshot(&["trace", "--", "/nonexistent/program"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cannot run /nonexistent/program: No such file"), "{err}");
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
    let forks = report["forks"].as_array().expect("forks");
    assert_eq!(forks.len(), 1);
    for key in ["parent", "child", "start_ns", "end_ns", "parent_copies", "child_copies"] {
        assert!(forks[0].get(key).is_some(), "fork lacks {key}: {}", forks[0]);
    }
    assert_eq!(forks[0]["parent"], procs[0]["pid"]);
    assert_eq!(forks[0]["child"], procs[1]["pid"]);
    assert_eq!(procs[1]["ppid"], procs[0]["pid"]);
    assert!(forks[0]["end_ns"].as_u64().unwrap() > forks[0]["start_ns"].as_u64().unwrap());
}

/// Starts `snapshot trace ARGS` and returns once it says it is tracing.
fn start_tracer(args: &[&str]) -> std::process::Child {
    let mut tracer = Command::new(SNAPSHOT)
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapshot trace");
    let mut line = String::new();
    BufReader::new(tracer.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("snapshot: tracing"), "unexpected first line: {line}");
    tracer
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

#[test]
fn pid_traces_a_running_process_until_it_exits() {
    if !privileged("pid_traces_a_running_process_until_it_exits") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // A shell that waits, then forks a child that writes: traced from its pid.
    let mut shell = Command::new("sh")
        .args(["-c", "read line; exec \"$0\" workload --pages 1500 --truth /dev/null", SNAPSHOT])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
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
