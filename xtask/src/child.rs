//! Runs a command to its end: signals sent to xtask go on to it, and its exit
//! status becomes xtask's, so Ctrl-C or `kill` never leave it orphaned.
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context, Result};
use nix::{sys::signal::Signal, unistd::Pid};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM},
    iterator::{SignalsInfo, exfiltrator::WithOrigin},
    low_level::siginfo::Cause,
};

/// Spawns `cmd`, forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to it while it
/// runs, and returns its status as a shell would (128+N when killed by signal N).
///
/// A Ctrl-C typed at the terminal already reaches the command, which is in the
/// same foreground process group: that one (sent by the kernel) is not sent
/// again, so the command sees one Ctrl-C, not two (sudo does the same).
pub fn run(cmd: &mut Command) -> Result<ExitCode> {
    // Registered before the spawn, so no signal falls between the two.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]).context("signal handlers")?;
    let handle = signals.handle();
    let mut child = cmd.spawn().with_context(|| format!("running {:?}", cmd.get_program()))?;
    let pid = Pid::from_raw(child.id() as i32);
    let forwarder = std::thread::spawn(move || {
        for origin in signals.forever() {
            if origin.cause == Cause::Kernel {
                continue;
            }
            if let Ok(signal) = Signal::try_from(origin.signal) {
                // The child may have just exited: then there is nobody to tell.
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let status = child.wait().context("waiting for the command")?;
    handle.close();
    let _ = forwarder.join();
    Ok(ExitCode::from(shell_status(status)))
}

/// The exit status a shell reports: the code, or 128+N for signal N.
pub fn shell_status(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn statuses_read_as_a_shell_reads_them() {
        assert_eq!(shell_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(shell_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(shell_status(ExitStatus::from_raw(libc_sigterm())), 143);
    }

    fn libc_sigterm() -> i32 {
        Signal::SIGTERM as i32
    }
}
