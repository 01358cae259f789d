//! snapshot-store: a small Redis-compatible (RESP2) key-value store whose snapshots are taken
//! the way Redis takes them — fork() and copy-on-write — so the cost of that can be observed.
//!
//! # Architecture
//! - One thread owns the dataset and runs a single-threaded event loop ([`server`], mio/epoll,
//!   like Redis's `ae`). No locks guard the data because no other thread touches it.
//! - That same thread forks for BGSAVE ([`persist`]). The child therefore never needs a lock
//!   another thread could have held at the fork instant, and runs no async runtime: it walks
//!   its copy-on-write view of the table, writes `temp-<pid>.rdb` ([`snapfile`], in the RDB format
//!   of Redis: [`rdb`]) with an fdatasync every 32 MB, fsyncs,
//!   renames it over the snapshot, fsyncs the directory, reports its COW size (Private_Dirty)
//!   over a pipe and `_exit`s. The parent keeps serving and reaps it with `waitpid(WNOHANG)`.
//! - The dataset (records and hash table) lives in an mmap arena ([`arena`]) whose page size is
//!   chosen by `--pages`, and the table ([`table`]) resizes while a child lives only past 5 keys
//!   per bucket, since a resize writes every record's page and so copies the whole dataset.
//! - Latency histograms ([`latency`]) are kept apart for "child alive" and "no child".
//! - Other ways to get the one-instant view ([`method`]): `--cow-strategy redirect` (new versions of
//!   shared records go to memory mapped after the fork) and the forkless save (the loop copies
//!   records to a writer thread, a record about to change is copied first).
//!
//! Modules: [`resp`] framing/replies, [`commands`] semantics, [`info`] INFO text, [`glob`] MATCH.

pub mod arena;
pub mod commands;
pub mod glob;
pub mod info;
pub mod latency;
pub mod method;
pub mod persist;
pub mod rdb;
pub mod resp;
pub mod server;
pub mod snapfile;
pub mod table;

use anyhow::{Context, Result};
pub use arena::PagesMode;
use std::net::ToSocketAddrs;
use std::path::PathBuf;

/// Options of the store server (`snapshot serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP port to listen on (0 picks a free port; the log line "Ready to accept connections" names it).
    #[arg(long, default_value_t = 6390)]
    pub port: u16,
    /// Address to listen on (e.g. 127.0.0.1, 0.0.0.0, ::1).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Directory holding the snapshot file and the temp files of saves in progress; must exist,
    /// and is refused if world-writable (unless sticky and owned by this user, like /tmp for root;
    /// there a snapshot that is a link or another user's file is not loaded).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Password clients must give with AUTH before any other command (none by default).
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Save policy, as Redis's `save`: pairs "SECONDS CHANGES"; a background save starts when
    /// at least CHANGES writes happened and SECONDS passed since the last save. "" disables.
    #[arg(long, default_value = "3600 1 300 100 60 10000")]
    pub save: String,
    /// Page size backing the dataset's memory: 4k (plain pages), thp (transparent huge pages)
    /// or hugetlb (reserved huge pages, see /proc/sys/vm/nr_hugepages). INFO memory reports the
    /// page size really in use.
    #[arg(long, value_enum, default_value = "4k")]
    pub pages: PagesMode,
    /// Let the hash table resize while a snapshot child lives (Redis does not): a resize
    /// rewrites every record's link, so the snapshot copies the whole dataset. For measuring that.
    #[arg(long)]
    pub resize_during_snapshot: bool,
    /// File name of the snapshot inside --dir (a name, not a path); it is loaded at start if present.
    #[arg(long, default_value = "dump.rdb", value_parser = parse_dbfilename)]
    pub dbfilename: String,
    /// As Redis's `rdbcompression`: yes LZF-compresses strings longer than 20 bytes in the
    /// snapshot (smaller file, slower save), no writes them as they are.
    #[arg(long, default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub rdbcompression: bool,
    /// As Redis's `stop-writes-on-bgsave-error`: yes refuses writes (and PING) with a MISCONF
    /// error while the last background save failed and a save policy is set, so a client
    /// learns that what it writes is not being persisted.
    #[arg(long, default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub stop_writes_on_bgsave_error: bool,
    /// Hard limit, in bytes, on the replies waiting to be sent to one normal client (like the
    /// hard limit of Redis's `client-output-buffer-limit normal`, but set by default): a client
    /// that asks for more than it reads is disconnected past it, so it can't grow the server's
    /// memory without bound. 0 disables the limit.
    #[arg(long, default_value_t = DEFAULT_OUTPUT_LIMIT)]
    pub client_output_buffer_limit: u64,
    /// Who may run DEBUG (it can fill the memory): no one, everyone, or clients connected
    /// from a loopback address (the default, like Redis's `enable-debug-command local`).
    #[arg(long, value_enum, default_value = "local")]
    pub enable_debug_command: DebugMode,
    /// How BGSAVE and the save policy snapshot: fork (a child process, copy-on-write by the
    /// kernel) or forkless (a thread of the store, copy-before-write by the store). BGSAVE FORK
    /// and BGSAVE FORKLESS choose per save; CONFIG SET default-bgsave-method changes it.
    #[arg(long, value_enum, default_value = "fork")]
    pub default_bgsave_method: method::Method,
    /// What a write does to a record a fork child still shares: inplace (write it where it
    /// is; the kernel copies its 4 KiB page) or redirect (write a new version into memory
    /// allocated after the fork and point the index at it; only the index link is written).
    #[arg(long, value_enum, default_value = "inplace")]
    pub cow_strategy: table::CowStrategy,
}

/// 256 MB: a few replies of the largest values the store is likely to hold, far below RAM.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 256 * 1024 * 1024;

/// Redis's `enable-debug-command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DebugMode {
    No,
    Yes,
    Local,
}

impl DebugMode {
    pub fn name(self) -> &'static str {
        match self {
            DebugMode::No => "no",
            DebugMode::Yes => "yes",
            DebugMode::Local => "local",
        }
    }
    pub fn allows(self, local_client: bool) -> bool {
        self == DebugMode::Yes || (self == DebugMode::Local && local_client)
    }
}

/// Like Redis: the snapshot's name is a file name; where it goes is --dir's business.
fn parse_dbfilename(s: &str) -> Result<String, String> {
    if s.contains('/') || s.is_empty() || s == "." || s == ".." {
        return Err(
            "dbfilename can't be a path, just a filename (use --dir for the directory)".into(),
        );
    }
    Ok(s.to_string())
}

/// Refuses a directory where another user could plant files under the names a save uses
/// (world-writable, unless the sticky bit stops others from replacing what we own and we own
/// the directory itself).
fn check_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).with_context(|| format!("--dir {}", dir.display()))?;
    if !m.is_dir() {
        anyhow::bail!("--dir {}: not a directory", dir.display());
    }
    let world_writable = m.mode() & 0o002 != 0;
    let sticky = m.mode() & 0o1000 != 0;
    // SAFETY: geteuid has no failure mode.
    let ours = m.uid() == unsafe { libc::geteuid() };
    if world_writable && !(sticky && ours) {
        anyhow::bail!(
            "--dir {}: refusing a world-writable directory{}: other users could plant files or \
             links under the names the snapshot is written to; use a directory only you can write",
            dir.display(),
            if sticky {
                " owned by another user"
            } else {
                " without the sticky bit"
            }
        );
    }
    Ok(())
}

/// Redis's boolean config values.
pub fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("{s:?}: expected yes or no")),
    }
}

/// Extra lines for INFO persistence (the COW tracer adds its figures when attached).
pub trait InfoSource: Send {
    /// Appends complete lines, each `name:value\r\n`.
    fn info_lines(&self, out: &mut String);
}

/// Redis-style log line on stderr: `<pid>:M <unix time> * <message>`.
pub fn log(msg: &str) {
    use std::io::Write;
    let t = table::now_ms();
    // Ignored on failure (a log on a full or failed disk), as Redis does: eprintln! would panic.
    let _ = writeln!(
        std::io::stderr(),
        "{}:M {}.{:03} * {msg}",
        std::process::id(),
        t / 1000,
        t % 1000
    );
}

/// Like Redis at start: one descriptor per client, so raise the soft open-file limit to the
/// hard one. If that fails the server still runs, and says how many clients it can take.
fn raise_nofile_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 || l.rlim_cur >= l.rlim_max {
            return;
        }
        let soft = l.rlim_cur;
        l.rlim_cur = l.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
            log(&format!(
                "Open-file limit raised from {soft} to {} (one per client)",
                l.rlim_max
            ));
        } else {
            log(&format!(
                "Can't raise the open-file limit from {soft} ({}): about {} clients can connect",
                std::io::Error::last_os_error(),
                soft.saturating_sub(32)
            ));
        }
    }
}

/// Loads the snapshot (if any) and serves until SHUTDOWN or SIGTERM/SIGINT.
pub fn serve(args: ServeArgs, tracer: Option<Box<dyn InfoSource>>) -> Result<()> {
    let save_points = persist::parse_save(&args.save).context("--save")?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("--dir {}: the directory must exist", args.dir.display()))?;
    check_dir(&dir)?;
    for name in snapfile::remove_stale_temps(&dir)? {
        log(&format!("Removed {name}, left by a save that was killed"));
    }
    let mut table = table::Table::new(args.pages)?;
    table.strategy = args.cow_strategy;
    let dest = dir.join(&args.dbfilename);
    let t = std::time::Instant::now();
    if let Some(n) = snapfile::load(&dest, &mut table, table::now_ms())? {
        log(&format!(
            "DB loaded from {}: {n} records in {:.3} seconds",
            dest.display(),
            t.elapsed().as_secs_f64()
        ));
    }

    raise_nofile_limit();
    let addr = (args.bind.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("--bind {}", args.bind))?
        .next()
        .with_context(|| format!("--bind {}: no address", args.bind))?;
    let listener = mio::net::TcpListener::bind(addr)
        .with_context(|| format!("can't listen on {addr} (--bind/--port)"))?;
    let local = listener.local_addr().context("listener address")?;

    // Signals become bytes on a pipe that the event loop watches (any thread may take them).
    let (sig_r, sig_w) = std::os::unix::net::UnixStream::pair().context("signal pipe")?;
    sig_r.set_nonblocking(true).context("signal pipe")?;
    sig_w.set_nonblocking(true).context("signal pipe")?;
    let mut sig_ids = Vec::new();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let w = sig_w.try_clone().context("signal pipe")?;
        sig_ids.push(
            signal_hook::low_level::pipe::register(sig, w).context("installing signal handler")?,
        );
    }
    let signals = mio::net::UnixStream::from_std(sig_r);

    let poll = mio::Poll::new().context("epoll_create")?;
    let registry = poll.registry().try_clone().context("epoll registry")?;
    let mut persist = persist::Persist::new(dir, args.dbfilename.clone(), save_points);
    persist.rdbcompression = args.rdbcompression;
    persist.resize_during_snapshot = args.resize_during_snapshot;
    persist.default_method = args.default_bgsave_method;
    persist.stop_writes_on_bgsave_error = args.stop_writes_on_bgsave_error;
    let st = commands::State {
        table,
        mode: args.pages,
        persist,
        stats: commands::Stats::new(),
        latency: Default::default(),
        requirepass: args.requirepass.clone(),
        debug_mode: args.enable_debug_command,
        port: local.port(),
        bind: args.bind.clone(),
        tracer,
        registry,
        shutdown: false,
        connected_clients: 0,
        output_limit: args.client_output_buffer_limit,
        output_limit_disconnections: 0,
    };
    let mut server = server::Server::new(poll, listener, signals, st)?;
    log(&format!(
        "Ready to accept connections tcp port {} ({local})",
        local.port()
    ));
    let r = server.run();
    for id in sig_ids {
        signal_hook::low_level::unregister(id);
    }
    r
}
