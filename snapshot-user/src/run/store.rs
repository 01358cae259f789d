//! The server under test: our store started as a child process, or an
//! existing RESP server found by its listening socket.
//!
//! The store runs as its own process (`snapshot serve` via current_exe), not
//! inside this one: `snapshot run` has threads, and a process that forks for
//! snapshots must not have threads that could hold a lock at the fork.
use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, ToSocketAddrs},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::args::Method;

pub struct Target {
    pub addr: SocketAddr,
    pub pid: u32,
    /// What it is, for the report: "snapshot serve" or the process name.
    pub name: String,
    /// The store this run started: stopped when the target is dropped.
    _server: Option<Server>,
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM by pid: the store exits cleanly (its snapshot child, if any, with it).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Starts `snapshot serve` on a free port in a private temp dir, with no
/// save policy of its own: `snapshot run` decides when to snapshot.
pub fn start(pages: snapshot_store::PagesMode, method: Method, resize_during_snapshot: bool) -> Result<Target> {
    let dir = tempfile::Builder::new().prefix("snapshot-run-").tempdir().context("creating a private temp dir")?;
    let exe = std::env::current_exe().context("finding the snapshot binary")?;
    let mut command = Command::new(exe);
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    // The store is stopped with this run even when the run is killed (SIGKILL, OOM killer).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    // A group of its own: Ctrl-C at the terminal is for the run, which stops
    // the store once it has its figures; the store dying first failed the run.
    command.process_group(0);
    let mut child = command
        .args(["serve", "--port", "0", "--bind", "127.0.0.1", "--save", "", "--pages", pages.name(), "--dir"])
        .arg(dir.path())
        .args(resize_during_snapshot.then_some("--resize-during-snapshot"))
        .args(method_args(method))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `snapshot serve`")?;
    let stderr = child.stderr.take().context("store's stderr")?;
    let pid = child.id();
    let server = Server { child, _dir: dir };
    let port = ready_port(stderr)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = format!("snapshot serve --pages {} (method {})", pages.name(), method.name());
    Ok(Target { addr, pid, name, _server: Some(server) })
}

/// The store's options for a method: its plain BGSAVE then uses it.
fn method_args(method: Method) -> [&'static str; 4] {
    match method {
        Method::Fork => ["--cow-strategy", "inplace", "--default-bgsave-method", "fork"],
        Method::Redirect => ["--cow-strategy", "redirect", "--default-bgsave-method", "fork"],
        Method::Forkless => ["--cow-strategy", "inplace", "--default-bgsave-method", "forkless"],
    }
}

/// Reads the store's log until "Ready to accept connections tcp port N";
/// then keeps draining it (a full pipe would block the store).
fn ready_port(stderr: std::process::ChildStderr) -> Result<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.split("tcp port ").nth(1) {
                let port = rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
                sent = tx.send(Ok(port)).is_ok();
            } else if !sent {
                log.push(line);
            }
        }
        if !sent {
            let _ = tx.send(Err(log.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(Some(port))) => Ok(port),
        Ok(Ok(None)) => bail!("`snapshot serve` announced no port"),
        Ok(Err(log)) => bail!("`snapshot serve` exited before it was ready:\n{log}"),
        Err(_) => bail!("`snapshot serve` was not ready within 30 s"),
    }
}

/// An existing server: its address, and its pid from `--pid` or from the
/// socket listening on that address.
pub fn connect(addr: &str, pid: Option<u32>) -> Result<Target> {
    let addr = addr
        .to_socket_addrs()
        .with_context(|| format!("--connect {addr}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--connect {addr}: no address"))?;
    let pid = match pid {
        Some(pid) => pid,
        None => listener_pid(addr)?,
    };
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .with_context(|| format!("pid {pid}: no such process"))?;
    Ok(Target { addr, pid, name: crate::run::escape(&stat.comm), _server: None })
}

/// The process holding the socket that listens on `addr`: the inode from
/// /proc/net/tcp{,6}, then the process with that inode among its fds.
fn listener_pid(addr: SocketAddr) -> Result<u32> {
    let mut entries = procfs::net::tcp().context("reading /proc/net/tcp")?;
    entries.extend(procfs::net::tcp6().unwrap_or_default());
    let inode = entries
        .iter()
        .filter(|e| e.state == procfs::net::TcpState::Listen && e.local_address.port() == addr.port())
        .find(|e| e.local_address.ip() == addr.ip() || e.local_address.ip().is_unspecified())
        .map(|e| e.inode)
        .with_context(|| format!("nothing listens on {addr} (give the server's pid with --pid)"))?;
    for proc in procfs::process::all_processes().context("listing /proc")?.flatten() {
        let Ok(fds) = proc.fd() else { continue };
        let holds = fds.flatten().any(|fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode));
        if holds {
            return Ok(proc.pid as u32);
        }
    }
    bail!("no process holds the socket listening on {addr} (give the server's pid with --pid)")
}
