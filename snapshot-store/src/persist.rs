//! Persistence: BGSAVE by fork(), SAVE in place, the save policy, and the figures INFO shows.
//!
//! The event-loop thread forks. The child sees the dataset exactly as it was at the fork
//! instant (copy-on-write), writes it with [`snapfile::write`], and reports over a pipe: progress
//! and its COW size (sum of Private_Dirty of its own mappings: pages the parent has modified
//! since the fork and that the kernel had to copy, plus the child's own few), then `_exit`s.
//! The parent never blocks on it: the pipe is in the event loop, and `waitpid(pid, WNOHANG)`
//! reaps it (only that pid: the embedding program may have children of its own).

use crate::log;
use crate::method::{Method, forkless};
use crate::snapfile;
use crate::table::Table;
use anyhow::{Result, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Token of the child's report pipe in the event loop.
pub const CHILD_TOKEN: mio::Token = mio::Token(1);

const MSG_PROGRESS: u64 = 1;
const MSG_DONE: u64 = 2;
const MSG_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavePoint {
    pub secs: u64,
    pub changes: u64,
}

/// Parses Redis's `save` syntax: `"<secs> <changes> ..."` (`""` disables automatic saves).
pub fn parse_save(s: &str) -> Result<Vec<SavePoint>> {
    let nums: Vec<&str> = s.split_ascii_whitespace().collect();
    if !nums.len().is_multiple_of(2) {
        bail!("save policy {s:?}: expected pairs of \"<seconds> <changes>\"");
    }
    nums.chunks(2)
        .map(|p| {
            let n = |x: &str| {
                x.parse::<u64>()
                    .map_err(|_| anyhow::anyhow!("save policy {s:?}: {x:?} is not a number"))
            };
            Ok(SavePoint {
                secs: n(p[0])?,
                changes: n(p[1])?,
            })
        })
        .collect()
}

pub fn format_save(points: &[SavePoint]) -> String {
    points
        .iter()
        .map(|p| format!("{} {}", p.secs, p.changes))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Child {
    pid: libc::pid_t,
    pipe: OwnedFd,
    start: Instant,
    pending: Vec<u8>,
    done: bool,
    final_cow: u64,
}

pub struct Persist {
    pub dir: PathBuf,
    pub dbfilename: String,
    /// Redis's `rdbcompression`: LZF-compress long strings in the snapshot.
    pub rdbcompression: bool,
    /// Redis's `stop-writes-on-bgsave-error` (see [`Persist::writes_refused`]).
    pub stop_writes_on_bgsave_error: bool,
    pub save_points: Vec<SavePoint>,
    /// Writes since the last successful save (rdb_changes_since_last_save).
    pub dirty: u64,
    dirty_at_fork: u64,
    /// Unix seconds of the last successful save (LASTSAVE).
    pub lastsave: i64,
    pub last_bgsave_ok: bool,
    pub last_bgsave_time_sec: i64,
    last_try: Instant,
    pub last_cow: u64,
    pub current_cow: u64,
    pub current_cow_peak: u64,
    pub keys_processed: u64,
    pub keys_total: u64,
    pub latest_fork_usec: u64,
    pub total_forks: u64,
    /// Snapshots completed since start, SAVE and BGSAVE (Redis's `rdb_saves`).
    pub rdb_saves: u64,
    child: Option<Child>,
    /// Children killed by FLUSHALL/SHUTDOWN, not yet reaped (the loop reaps them, never waiting).
    killed: Vec<libc::pid_t>,
    /// Reused write buffer: SAVE uses it, and the fork child inherits it.
    buf: Vec<u8>,
    /// Let the table resize while a child lives (what Redis avoids): for measuring the cost.
    pub resize_during_snapshot: bool,
    /// Method of BGSAVE without an argument and of the save policy.
    pub default_method: Method,
    /// Redis's `rdb-key-save-delay`: microseconds the forkless writer waits per key (tests).
    pub key_save_delay_us: u64,
    /// The fork child stops itself (SIGSTOP) before it writes anything (tests: a save caught
    /// alive at its start, however fast it would have been).
    pub child_starts_stopped: bool,
    forkless: Option<forkless::Job>,
    /// Method of the last background save started (INFO rdb_last_bgsave_method).
    pub last_method: Option<Method>,
    /// Forkless costs: the event loop's time to start the save, and the bytes/keys copied
    /// early because a write came before the walk (last save, or the running one).
    pub forkless_setup_usec: u64,
    pub forkless_early_bytes: u64,
    pub forkless_early_keys: u64,
}

pub fn unix_now() -> i64 {
    crate::table::now_ms() / 1000
}

impl Persist {
    pub fn new(dir: PathBuf, dbfilename: String, save_points: Vec<SavePoint>) -> Persist {
        Persist {
            dir,
            dbfilename,
            rdbcompression: true,
            stop_writes_on_bgsave_error: true,
            save_points,
            dirty: 0,
            dirty_at_fork: 0,
            lastsave: unix_now(),
            last_bgsave_ok: true,
            last_bgsave_time_sec: -1,
            last_try: Instant::now(),
            last_cow: 0,
            current_cow: 0,
            current_cow_peak: 0,
            keys_processed: 0,
            keys_total: 0,
            latest_fork_usec: 0,
            total_forks: 0,
            rdb_saves: 0,
            child: None,
            killed: Vec::new(),
            buf: Vec::with_capacity(1 << 20),
            resize_during_snapshot: false,
            default_method: Method::Fork,
            key_save_delay_us: 0,
            child_starts_stopped: false,
            forkless: None,
            last_method: None,
            forkless_setup_usec: 0,
            forkless_early_bytes: 0,
            forkless_early_keys: 0,
        }
    }

    pub fn dest(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }
    /// A background save is running (a fork child or a forkless writer).
    pub fn child_alive(&self) -> bool {
        self.child.is_some() || self.forkless.is_some()
    }
    pub fn child_pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.pid)
    }
    pub fn current_save_secs(&self) -> i64 {
        let start = self.child.as_ref().map(|c| c.start);
        start
            .or(self.forkless.as_ref().map(|j| j.start))
            .map_or(-1, |s| s.elapsed().as_secs() as i64)
    }

    /// Redis's rule: writes are refused while the last save failed, if the user asked for that
    /// and a save policy is set (without one, no save is expected to succeed).
    pub fn writes_refused(&self) -> bool {
        self.stop_writes_on_bgsave_error && !self.save_points.is_empty() && !self.last_bgsave_ok
    }

    /// SAVE: synchronous, in this process.
    pub fn save(&mut self, table: &Table) -> Result<()> {
        let t = Instant::now();
        let dest = self.dest();
        let r = snapfile::write(
            table,
            &self.dir,
            &dest,
            &mut self.buf,
            self.rdbcompression,
            &mut |_| {},
        );
        // Like Redis: a failed SAVE answers with its error but leaves the status (and so the
        // MISCONF refusal) to background saves; a successful one clears it.
        let n = r?;
        self.last_bgsave_ok = true;
        self.rdb_saves += 1;
        self.dirty = 0;
        self.lastsave = unix_now();
        log(&format!(
            "DB saved on disk ({n} keys, {} ms)",
            t.elapsed().as_millis()
        ));
        Ok(())
    }

    /// BGSAVE with the default method. Err carries the reply text.
    pub fn bgsave(&mut self, table: &mut Table, registry: &mio::Registry) -> Result<(), String> {
        self.bgsave_with(self.default_method, table, registry)
    }

    /// BGSAVE FORK / BGSAVE FORKLESS.
    pub fn bgsave_with(
        &mut self,
        method: Method,
        table: &mut Table,
        registry: &mio::Registry,
    ) -> Result<(), String> {
        if self.child_alive() {
            return Err("ERR Background save already in progress".into());
        }
        self.last_try = Instant::now();
        self.last_method = Some(method);
        match method {
            Method::Fork => self.bgsave_fork(table, registry),
            Method::Forkless => self.bgsave_forkless(table),
        }
    }

    fn bgsave_forkless(&mut self, table: &mut Table) -> Result<(), String> {
        let cfg = forkless::Config {
            dir: &self.dir,
            dest: self.dest(),
            compress: self.rdbcompression,
            key_delay_us: self.key_save_delay_us,
        };
        let job = forkless::Job::start(table, cfg).inspect_err(|_| self.last_bgsave_ok = false)?;
        self.forkless_setup_usec = job.setup_usec;
        self.dirty_at_fork = self.dirty;
        self.keys_total = job.keys_total;
        self.keys_processed = 0;
        self.current_cow = 0;
        self.current_cow_peak = 0;
        log(&format!(
            "Background forkless saving started ({} keys, set-up took {} us)",
            job.keys_total, job.setup_usec
        ));
        self.forkless = Some(job);
        Ok(())
    }

    /// How long the event loop may sleep before [`Persist::forkless_step`] is due again.
    pub fn forkless_wait(&self) -> Option<Duration> {
        self.forkless.as_ref().map(|j| j.next_step_in())
    }

    /// Between events: advances a forkless save and, once its writer is done, records how it went.
    pub fn forkless_step(&mut self, table: &mut Table) {
        let Some(job) = self.forkless.as_mut() else {
            return;
        };
        let r = job.step(table);
        self.keys_processed = job.keys_done();
        let Some(r) = r else { return };
        let Some(job) = self.forkless.take() else {
            return;
        };
        self.last_bgsave_time_sec = job.start.elapsed().as_secs() as i64;
        self.forkless_early_bytes = job.early_bytes;
        self.forkless_early_keys = job.early_keys;
        self.last_cow = 0;
        self.last_bgsave_ok = r.is_ok();
        match r {
            Ok(n) => {
                self.lastsave = unix_now();
                self.dirty = self.dirty.saturating_sub(self.dirty_at_fork);
                log(&format!(
                    "Background forkless saving terminated with success ({n} keys in {} ms, {} \
                     keys / {} bytes copied before a write)",
                    job.start.elapsed().as_millis(),
                    job.early_keys,
                    job.early_bytes
                ));
            }
            Err(e) => log(&format!("Background forkless saving error: {e}")),
        }
    }

    /// FLUSHALL during a forkless save: the save finishes from the old table. Returns the
    /// table back when no forkless save runs.
    pub fn forkless_adopt(&mut self, old: Table) -> Option<Table> {
        match self.forkless.as_mut() {
            Some(job) => {
                job.adopt(old);
                None
            }
            None => Some(old),
        }
    }

    fn bgsave_fork(&mut self, table: &mut Table, registry: &mio::Registry) -> Result<(), String> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills two fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!(
                "ERR can't create pipe for the snapshot child: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: both fds were just created and are owned here.
        let (rfd, wfd) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Reserve the buffer now so the child does not have to grow it.
        self.buf.clear();
        self.buf.reserve(1 << 20);
        let dest = self.dest();
        let t0 = Instant::now();
        // SAFETY: fork from the thread that owns the data; the child only runs `child_main`
        // (no locks held by other threads are needed there) and then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(rfd);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(
                    table,
                    &self.dir,
                    &dest,
                    &mut self.buf,
                    self.rdbcompression,
                    wfd.as_raw_fd(),
                    (self.key_save_delay_us, self.child_starts_stopped),
                )
            }))
            .unwrap_or(3);
            // SAFETY: leave without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        // Taken before anything else can overwrite errno.
        let fork_err = std::io::Error::last_os_error();
        self.latest_fork_usec = t0.elapsed().as_micros() as u64;
        drop(wfd);
        if pid < 0 {
            let e = fork_err;
            self.last_bgsave_ok = false;
            log(&format!("Can't save in background: fork: {e}"));
            return Err(format!("ERR fork failed: {e}"));
        }
        // SAFETY: setting O_NONBLOCK on our own fd.
        unsafe {
            let fl = libc::fcntl(rfd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(rfd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let _ = registry.register(
            &mut mio::unix::SourceFd(&rfd.as_raw_fd()),
            CHILD_TOKEN,
            mio::Interest::READABLE,
        );
        self.total_forks += 1;
        self.dirty_at_fork = self.dirty;
        self.keys_total = table.len() as u64;
        self.keys_processed = 0;
        self.current_cow = 0;
        self.current_cow_peak = 0;
        table.fork_begin();
        if self.resize_during_snapshot {
            // For measuring what Redis avoids: the table may resize under the child.
            let _ = table.set_resize_blocked(false);
        }
        self.child = Some(Child {
            pid,
            pipe: rfd,
            start: Instant::now(),
            pending: Vec::new(),
            done: false,
            final_cow: 0,
        });
        log(&format!(
            "Background saving started by pid {pid} (fork took {} us)",
            self.latest_fork_usec
        ));
        Ok(())
    }

    /// Reads the child's reports; returns true once the pipe hit EOF (the child is exiting).
    pub fn read_child(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        let eof;
        let mut b = [0u8; 4096];
        loop {
            // SAFETY: reading into a stack buffer from our nonblocking pipe.
            let n = unsafe { libc::read(c.pipe.as_raw_fd(), b.as_mut_ptr() as *mut _, b.len()) };
            if n > 0 {
                c.pending.extend_from_slice(&b[..n as usize]);
            } else {
                eof = n == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock;
                break;
            }
        }
        let whole = c.pending.len() / MSG_LEN * MSG_LEN;
        for m in c.pending[..whole].chunks(MSG_LEN) {
            let w = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            self.current_cow = w(1);
            self.current_cow_peak = self.current_cow_peak.max(w(1));
            self.keys_processed = w(2);
            if w(0) == MSG_DONE {
                c.done = true;
                c.final_cow = w(1);
            }
        }
        c.pending.drain(..whole);
        eof
    }

    /// Reaps the child if it has exited; returns true if it did.
    pub fn try_reap(&mut self, table: &mut Table, registry: &mio::Registry) -> bool {
        let Some(c) = self.child.as_ref() else {
            return false;
        };
        let mut status = 0;
        // SAFETY: waiting only for our own child, without blocking.
        let r = unsafe { libc::waitpid(c.pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return false;
        }
        self.read_child();
        self.finish(status, r < 0, table, registry);
        true
    }

    fn finish(&mut self, status: i32, lost: bool, table: &mut Table, registry: &mio::Registry) {
        let Some(c) = self.child.take() else { return };
        let _ = registry.deregister(&mut mio::unix::SourceFd(&c.pipe.as_raw_fd()));
        let exited_ok = !lost && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let ok = exited_ok && c.done;
        self.last_bgsave_time_sec = c.start.elapsed().as_secs() as i64;
        self.last_bgsave_ok = ok;
        self.last_cow = if c.done {
            c.final_cow
        } else {
            self.current_cow
        };
        self.current_cow = 0;
        if ok {
            self.rdb_saves += 1;
            self.lastsave = unix_now();
            self.dirty = self.dirty.saturating_sub(self.dirty_at_fork);
            log(&format!(
                "Background saving terminated with success ({} keys, COW {} bytes)",
                self.keys_total, self.last_cow
            ));
        } else {
            let _ = std::fs::remove_file(snapfile::temp_path(&self.dir, c.pid as u32));
            let how = if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("exit status {}", libc::WEXITSTATUS(status))
            };
            log(&format!("Background saving error: child {} {how}", c.pid));
        }
        table.fork_end();
    }

    /// Kills a running child (FLUSHALL, SHUTDOWN) without waiting for it: a child stuck in a
    /// long fsync would otherwise stall the event loop. [`Persist::reap_killed`] reaps it later.
    /// Once SIGKILL is sent the child runs no more user code, so it can't rename its temp file.
    pub fn kill_child(&mut self, table: &mut Table, registry: &mio::Registry) {
        if let Some(job) = self.forkless.take() {
            job.abort(table);
            log("Background forkless saving stopped");
        }
        let Some(c) = self.child.take() else { return };
        // SAFETY: signalling our own child, not yet reaped (so the pid can't have been reused).
        unsafe { libc::kill(c.pid, libc::SIGKILL) };
        let _ = registry.deregister(&mut mio::unix::SourceFd(&c.pipe.as_raw_fd()));
        let _ = std::fs::remove_file(snapfile::temp_path(&self.dir, c.pid as u32));
        log(&format!("Background saving child {} killed", c.pid));
        self.current_cow = 0;
        self.killed.push(c.pid);
        table.fork_end();
    }

    /// Reaps killed children that have exited (called from the cron; never blocks).
    pub fn reap_killed(&mut self) {
        self.killed.retain(|&pid| {
            let mut status = 0;
            // SAFETY: non-blocking wait for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == 0 {
                return true;
            }
            // The child may have created its temp file after we removed it.
            let _ = std::fs::remove_file(snapfile::temp_path(&self.dir, pid as u32));
            false
        });
    }

    /// The save policy: is a background save due now?
    pub fn save_due(&self) -> bool {
        if self.child_alive() || self.dirty == 0 {
            return false;
        }
        // After a failure, wait a little before trying again (as Redis does).
        if !self.last_bgsave_ok && self.last_try.elapsed() < Duration::from_secs(5) {
            return false;
        }
        let age = (unix_now() - self.lastsave).max(0) as u64;
        self.save_points
            .iter()
            .any(|p| self.dirty >= p.changes && age > p.secs)
    }
}

/// Private_Dirty of this process, in bytes, the way Redis measures a child's COW, plus
/// Private_Hugetlb (hugetlbfs pages the child holds alone are counted there, not in Private_Dirty).
/// smaps_rollup holds the same sums as adding up every mapping in smaps, far cheaper to read.
pub fn private_dirty() -> u64 {
    let Ok(rollup) = procfs::process::Process::myself().and_then(|p| p.smaps_rollup()) else {
        return 0;
    };
    rollup
        .memory_map_rollup
        .iter()
        .flat_map(|m| {
            [
                m.extension.map.get("Private_Dirty"),
                m.extension.map.get("Private_Hugetlb"),
            ]
        })
        .flatten()
        .sum()
}

fn send(fd: RawFd, kind: u64, cow: u64, keys: u64) {
    let mut m = [0u8; MSG_LEN];
    m[0..8].copy_from_slice(&kind.to_le_bytes());
    m[8..16].copy_from_slice(&cow.to_le_bytes());
    m[16..24].copy_from_slice(&keys.to_le_bytes());
    // SAFETY: a 32-byte write to a pipe is atomic (< PIPE_BUF); failure only loses a report.
    unsafe { libc::write(fd, m.as_ptr() as *const _, MSG_LEN) };
}

/// Runs in the fork child. Returns the exit status.
fn child_main(
    table: &Table,
    dir: &std::path::Path,
    dest: &std::path::Path,
    buf: &mut Vec<u8>,
    compress: bool,
    fd: RawFd,
    (key_delay_us, start_stopped): (u64, bool),
) -> i32 {
    // SAFETY: plain syscalls in the child: default signal actions (the parent's handlers write
    // to the parent's pipe) and die with the parent (an orphan could rename an old snapshot
    // over a newer one written by a restarted server).
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            return 4;
        }
        // The child needs only stdio and its report pipe: dropping its copies of the listener and
        // client sockets keeps them from outliving the parent's use of them.
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
        if start_stopped {
            libc::raise(libc::SIGSTOP);
        }
    }
    let mut next_report = Instant::now();
    let mut next_cow = Instant::now();
    let mut cow = 0;
    let mut progress = |keys: u64| {
        // rdb-key-save-delay, applied per batch of 1024 keys (tests slow the save down with it).
        if key_delay_us > 0 {
            std::thread::sleep(Duration::from_micros(key_delay_us * 1024));
        }
        let now = Instant::now();
        if now < next_report {
            return;
        }
        next_report = now + Duration::from_millis(100);
        if now >= next_cow {
            // Reading smaps costs time: keep it to ~1% of the child's time, at most once a second.
            let t = Instant::now();
            cow = private_dirty();
            next_cow = Instant::now() + (t.elapsed() * 100).max(Duration::from_secs(1));
        }
        send(fd, MSG_PROGRESS, cow, keys);
    };
    match snapfile::write(table, dir, dest, buf, compress, &mut progress) {
        Ok(n) => {
            send(fd, MSG_DONE, private_dirty(), n);
            0
        }
        Err(e) => {
            let msg = format!("{}:C snapshot failed: {e:#}\n", std::process::id());
            // SAFETY: raw write to stderr: the std stderr lock may have been held at fork time.
            unsafe { libc::write(2, msg.as_ptr() as *const _, msg.len()) };
            1
        }
    }
}
