//! Starts a command held just before exec, so it can be traced from its very
//! first instruction. std's `Command` can't do this: its spawn waits for the
//! exec, which would wait for us.
use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, Pid, fork},
};

/// A forked child waiting at the gate.
pub struct Held {
    pub pid: u32,
    gate: std::io::PipeWriter,
    exec_error: std::io::PipeReader,
    program: String,
}

pub fn hold(program: &str, args: &[String]) -> Result<Held> {
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| CString::new(a).with_context(|| format!("argument {a:?} contains a NUL byte")))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // Both pipes are close-on-exec: a successful exec closes `error_write`.
    let (gate_read, gate_write) = std::io::pipe().context("creating a pipe")?;
    let (error_read, error_write) = std::io::pipe().context("creating a pipe")?;
    // SAFETY: the child calls only async-signal-safe functions before exec.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            libc::close(gate_write.as_raw_fd());
            let mut byte = 0u8;
            // Returns when the parent opens the gate or dies.
            libc::read(gate_read.as_raw_fd(), (&raw mut byte).cast(), 1);
            libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(error_write.as_raw_fd(), (&raw const errno).cast(), 4);
            libc::_exit(127);
        },
        ForkResult::Parent { child } => Ok(Held {
            pid: child.as_raw() as u32,
            gate: gate_write,
            exec_error: error_read,
            program: program.to_string(),
        }),
    }
}

impl Held {
    /// Lets the child exec; fails with the reason when it could not.
    pub fn release(mut self) -> Result<Pid> {
        self.gate.write_all(b"g").context("starting the command")?;
        drop(self.gate);
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.exec_error.read(&mut errno[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("waiting for exec"),
            }
        }
        let pid = Pid::from_raw(self.pid as i32);
        if got == 4 {
            let error = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            let _ = waitpid(pid, None);
            bail!("cannot run {}: {error}", self.program);
        }
        Ok(pid)
    }
}

/// Waits for the child; its exit status as a shell reports it.
pub fn wait(pid: Pid) -> Result<u8> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as u8),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}
