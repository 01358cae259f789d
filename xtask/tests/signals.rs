//! `cargo xtask run` under signals: the real xtask binary runs a shell script
//! the way it runs `snapshot` (the hidden `exec` task), and gets a SIGTERM
//! from another process, or a Ctrl-C typed on a real terminal (`script`
//! gives it a pty).
use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// Reads the child's stdout up to the line the script prints once its trap is set.
fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the script ended before it was ready");
    }
    out
}

#[test]
fn sigterm_goes_on_to_the_command_and_its_status_comes_back() {
    let script = "trap 'exit 5' TERM; echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; exit 9";
    let mut xtask = Command::new(XTASK).args(["exec", "--", "sh", "-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let _out = wait_ready(&mut xtask);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(xtask.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let status = xtask.wait().unwrap();
    // Killed by the signal itself, xtask would have no code; 5 is the script's.
    assert_eq!(status.code(), Some(5), "{status}");
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_command_once_and_xtask_waits() {
    // Counts the SIGINTs it gets; exits 10 + count half a second after the first.
    let script = "n=0; trap 'n=$((n+1))' INT; echo ready; \
                  while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.5; exit $((10 + n))";
    // The script goes through the environment: `script` runs the command with
    // `$SHELL -c`. `exec` replaces that shell by xtask: dash (SHELL unset, as
    // under CI) would otherwise wait for xtask and die of the same Ctrl-C (130).
    let inner = format!("exec '{XTASK}' exec -- sh -c \"$SIGNAL_SCRIPT\"");
    let mut term = Command::new("script")
        .args(["--quiet", "--return", "--command", &inner, "/dev/null"])
        .env("SIGNAL_SCRIPT", script)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (package bsdutils)");
    let mut out = wait_ready(&mut term);
    // ^C typed on the terminal: the line discipline sends SIGINT to the foreground group.
    term.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = term.wait().unwrap();
    assert_eq!(status.code(), Some(11), "one Ctrl-C, the script's own status through xtask ({status}): {rest}");
}
