//! Starts a command held just before exec, so it can be traced from its very
//! first instruction. std's `Command` can't do this: its spawn waits for the
//! exec, which would wait for us.
use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result};
use nix::{
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, Pid, fork},
};

use crate::privilege::Identity;

/// A forked child waiting at the gate.
pub struct Held {
    pub pid: u32,
    gate: std::io::PipeWriter,
    exec_error: std::io::PipeReader,
    program: String,
    identity: Option<Identity>,
}

/// What became of the command at the gate.
pub enum Started {
    Running(Pid),
    /// It could not be run: the status a shell would give (127 not found, 126
    /// not executable); the reason is already on stderr.
    Failed(u8),
}

/// Forks the command's process, held before exec. It gets default signal
/// handling and an empty signal mask (snapshot ignores SIGPIPE and blocks the
/// signals it forwards), and `identity`'s uid, gid and groups when given.
pub fn hold(program: &str, args: &[String], identity: Option<&Identity>) -> Result<Held> {
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| CString::new(a).with_context(|| format!("argument {a:?} contains a NUL byte")))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = identity.map(|id| id.groups.clone()).unwrap_or_default();
    // Both pipes are close-on-exec: a successful exec closes `error_write`.
    let (gate_read, gate_write) = std::io::pipe().context("creating a pipe")?;
    let (error_read, error_write) = std::io::pipe().context("creating a pipe")?;
    // SAFETY: the child calls only async-signal-safe functions before exec.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            libc::close(gate_write.as_raw_fd());
            let mut byte = 0u8;
            // Returns when the parent opens the gate or dies: then the
            // command must not run untraced.
            if libc::read(gate_read.as_raw_fd(), (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(126);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // Raw syscalls: this thread alone changes identity (glibc's
            // wrappers would signal threads that no longer exist here).
            if let Some(id) = identity {
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setresgid, id.gid, id.gid, id.gid) != 0
                    || libc::syscall(libc::SYS_setresuid, id.uid, id.uid, id.uid) != 0
                {
                    child_failed(error_write.as_raw_fd(), STAGE_IDENTITY);
                }
            }
            libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            child_failed(error_write.as_raw_fd(), STAGE_EXEC);
        },
        ForkResult::Parent { child } => Ok(Held {
            pid: child.as_raw() as u32,
            gate: gate_write,
            exec_error: error_read,
            program: program.to_string(),
            identity: identity.cloned(),
        }),
    }
}

const STAGE_IDENTITY: u8 = 1;
const STAGE_EXEC: u8 = 2;

/// Tells the parent errno and where it failed, then exits.
unsafe fn child_failed(fd: i32, stage: u8) -> ! {
    unsafe {
        let errno = *libc::__errno_location();
        let mut message = [0u8; 5];
        message[..4].copy_from_slice(&errno.to_ne_bytes());
        message[4] = stage;
        libc::write(fd, message.as_ptr().cast(), message.len());
        libc::_exit(126)
    }
}

impl Held {
    /// Lets the child exec; says why when it could not.
    pub fn release(mut self) -> Result<Started> {
        self.gate.write_all(b"g").context("starting the command")?;
        drop(self.gate);
        let mut message = [0u8; 5];
        let mut got = 0;
        while got < message.len() {
            match self.exec_error.read(&mut message[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("waiting for exec"),
            }
        }
        let pid = Pid::from_raw(self.pid as i32);
        if got < message.len() {
            return Ok(Started::Running(pid));
        }
        let _ = waitpid(pid, None);
        let errno = i32::from_ne_bytes([message[0], message[1], message[2], message[3]]);
        let error = std::io::Error::from_raw_os_error(errno);
        let program = crate::report::escape(&self.program);
        if message[4] == STAGE_IDENTITY {
            let id = self.identity.as_ref().map(|id| format!("uid {} gid {}", id.uid, id.gid)).unwrap_or_default();
            crate::output::note(&format!("cannot run {program} as {id}: {error}"));
            return Ok(Started::Failed(126));
        }
        crate::output::note(&format!("cannot run {program}: {error}"));
        // As a shell, env and timeout say it: 127 not found, 126 found but not runnable.
        Ok(Started::Failed(if errno == libc::ENOENT { 127 } else { 126 }))
    }
}

/// Waits for the child; its exit status as a shell reports it (128+N for signal N).
pub fn wait(pid: Pid) -> Result<u8> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128u8.wrapping_add(signal as u8)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}
