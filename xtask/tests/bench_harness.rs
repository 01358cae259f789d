//! The benchmark bodies' harness (bench/harness.py) never leaves a tracer
//! behind: a body that fails between starting a tracer and stopping it, or
//! that is killed outright, takes its tracers with it. The "tracer" here is
//! a real process that prints the ready line and sleeps, as a tracer waits.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

const BENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench");

/// Starts a body that starts a tracer, prints its pid, then does `then`.
/// Its temp dirs (`mkdtemp`) go into the returned dir, removed when dropped.
fn body(then: &str) -> (std::process::Child, u32, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let script = format!(
        "import sys, tempfile\nsys.path.insert(0, {BENCH:?})\nimport harness as h, time\n\
         def body():\n    t = h.Tracer(['sh', '-c', 'echo ready >&2; exec sleep 1000'], 'ready', tempfile.mkdtemp())\n    \
         print(t.p.pid, flush=True)\n    {then}\nh.main(body)\n"
    );
    let mut py = Command::new("python3")
        .args(["-c", &script])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(py.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let pid = line.trim().parse().unwrap_or_else(|_| panic!("no tracer pid: {line:?}"));
    (py, pid, tmp)
}

/// Gone, or a zombie waiting for its new parent.
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// Kills a tracer left behind. Only one still there: a pid already gone may
/// belong to another process by now (pid_max is 32768 here).
fn end(pid: u32, left: bool) {
    if !left {
        return;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
}

/// Polls until `pid` is gone (death signals are delivered asynchronously).
fn wait_gone(pid: u32) -> bool {
    for _ in 0..100 {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn a_body_that_fails_with_a_tracer_running_stops_it() {
    let (py, tracer, _tmp) = body("raise RuntimeError('the workload failed')");
    let out = py.wait_with_output().unwrap();
    let left = !wait_gone(tracer);
    end(tracer, left);
    assert!(!out.status.success());
    assert!(!left, "tracer {tracer} outlived the failed body: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_body_killed_outright_takes_its_tracer_with_it() {
    let (mut py, tracer, _tmp) = body("time.sleep(1000)");
    py.kill().unwrap();
    py.wait().unwrap();
    let left = !wait_gone(tracer);
    end(tracer, left);
    assert!(!left, "tracer {tracer} outlived the SIGKILLed body");
}

#[test]
fn a_body_sent_sigterm_stops_its_tracer() {
    let (py, tracer, _tmp) = body("time.sleep(1000)");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(py.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let out = py.wait_with_output().unwrap();
    let left = !wait_gone(tracer);
    end(tracer, left);
    assert_eq!(out.status.code(), Some(143));
    assert!(!left, "tracer {tracer} outlived the SIGTERMed body");
}

#[test]
fn a_body_that_ends_with_a_tracer_still_running_fails_and_stops_it() {
    // Its later conditions ran with that tracer's programs attached: the body's numbers are wrong.
    let (py, tracer, _tmp) = body("pass");
    let out = py.wait_with_output().unwrap();
    let left = !wait_gone(tracer);
    end(tracer, left);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("still running"), "a body that left its tracer running passed: {err}");
    assert!(!left, "tracer {tracer} outlived the body: {err}");
}

#[test]
fn a_condition_started_while_another_tracer_runs_fails() {
    // Stopping the first tracer later does not undo it: the condition was measured under its programs.
    let (py, tracer, _tmp) = body("h.start_tracer('none', tempfile.mkdtemp()); t.stop()");
    let out = py.wait_with_output().unwrap();
    let left = !wait_gone(tracer);
    end(tracer, left);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("still running"), "a condition ran beside another's tracer: {err}");
    assert!(!left, "tracer {tracer} outlived the body: {err}");
}

#[test]
fn a_tracer_that_echoes_its_ready_line_in_an_error_has_not_attached() {
    // bpftrace prints the failing program on stderr, and BPFTRACE_WP's program holds printf("ATTACHED"):
    // that echo must not pass for the ready line, or the condition is measured with no tracer at all.
    let script = format!(
        "import sys, tempfile\nsys.path.insert(0, {BENCH:?})\nimport harness as h\n\
         argv = ['sh', '-c', 'echo \"stdin:1: ERROR: tracepoint not found\" >&2; echo \"BEGIN {{ printf(\\\\\"ATTACHED\\\\n\\\\\"); }}\" >&2; sleep 0.3; exit 1']\n\
         try:\n    h.Tracer(argv, 'ATTACHED', tempfile.mkdtemp())\nexcept RuntimeError as e:\n    assert 'exited before attaching' in str(e), e\n\
         else:\n    raise AssertionError('an echoed program passed for attached')\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("python3").args(["-c", &script]).env("TMPDIR", tmp.path()).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bpftrace_ready_line_alone_is_not_attached() {
    // bpftrace runs BEGIN (printf "ATTACHED") before it attaches its tracepoint: the condition is ready only
    // once `bpftool perf show` lists that tracepoint for its pid. A tracer that prints the line and
    // attaches nothing must never pass for ready.
    let script = format!(
        "import sys, tempfile\nsys.path.insert(0, {BENCH:?})\nimport harness as h\n\
         argv = ['sh', '-c', 'echo ATTACHED; sleep 1; exit 1']\n\
         try:\n    h.Tracer(argv, 'ATTACHED', tempfile.mkdtemp(), h.bpftrace_attached)\nexcept RuntimeError as e:\n    assert 'exited before attaching' in str(e), e\n\
         else:\n    raise AssertionError('a ready line with no tracepoint attached passed for attached')\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("python3").args(["-c", &script]).env("TMPDIR", tmp.path()).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_tracer_that_ended_early_says_how() {
    // A condition that counted nothing fails with this: the tracer's exit, and whether it came before the stop.
    let script = format!(
        "import sys, tempfile, time\nsys.path.insert(0, {BENCH:?})\nimport harness as h\n\
         t = h.Tracer(['sh', '-c', 'echo oops >&2; echo ready; sleep 0.2; exit 3'], 'ready', tempfile.mkdtemp())\n\
         time.sleep(1)\nt.stop()\nd = t.diagnosis()\n\
         assert 'before it was stopped' in d and 'exit status 3' in d and 'oops' in d, d\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("python3").args(["-c", &script]).env("TMPDIR", tmp.path()).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
