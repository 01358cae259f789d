//! Test harness: starts the real server binary on a free port in its own temp dir, drives it
//! with the real redis-cli / redis-benchmark and a small raw RESP client, and kills exactly the
//! pid it started when dropped (also when the test fails).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_snapshot-store");

/// Path of a Redis tool; a missing tool fails the test (never a silent pass).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found in PATH: these tests need the real Redis tools; install them with `apt-get install redis-tools`"
    );
}

pub struct Server {
    pub child: Option<Child>,
    pub pid: u32,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// How a start attempt ended.
pub enum Started {
    Up(Server),
    Exited { code: Option<i32>, log: String },
}

impl Server {
    /// Starts the server in `dir` with extra flags, waiting until it listens.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        match Self::try_start(dir, extra, None) {
            Started::Up(s) => s,
            Started::Exited { code, log } => panic!("server exited at start ({code:?}):\n{log}"),
        }
    }

    /// `fsize_limit`: RLIMIT_FSIZE for the server (and so its save child), with SIGXFSZ ignored,
    /// so writes past it fail with EFBIG like on a full disk.
    pub fn try_start(dir: &Path, extra: &[&str], fsize_limit: Option<u64>) -> Started {
        let limits: Vec<_> = fsize_limit
            .map(|l| (libc::RLIMIT_FSIZE, l))
            .into_iter()
            .collect();
        Self::try_start_limited(dir, extra, &limits)
    }

    /// Starts with resource limits (RLIMIT_FSIZE also ignores SIGXFSZ, so writes past it fail
    /// with EFBIG like on a full disk).
    pub fn try_start_limited(
        dir: &Path,
        extra: &[&str],
        limits: &[(libc::__rlimit_resource_t, u64)],
    ) -> Started {
        let limits = limits.to_vec();
        let log = dir.join(format!("server-{}.log", unique()));
        let logf = std::fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(BIN);
        cmd.args(["--port", "0", "--dir"]).arg(dir).args(extra);
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf);
        if !limits.is_empty() {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    for &(res, lim) in &limits {
                        let r = libc::rlimit {
                            rlim_cur: lim,
                            rlim_max: lim,
                        };
                        if libc::setrlimit(res, &r) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn server");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(i) = text.find("Ready to accept connections tcp port ") {
                let rest = &text[i + "Ready to accept connections tcp port ".len()..];
                let port: u16 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port in log");
                return Started::Up(Server {
                    child: Some(child),
                    pid,
                    port,
                    dir: dir.to_path_buf(),
                    log,
                });
            }
            if let Ok(Some(st)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Started::Exited {
                    code: st.code(),
                    log: text,
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start in time:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// redis-cli in its typed (--no-raw) output, e.g. `(integer) 1`, `"v"`, `(nil)`, `(error) ERR ..`.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(tool("redis-cli"))
            .args(["--no-raw", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    pub fn info_field(&self, section: &str, field: &str) -> String {
        let text = match self.connect().cmd(&["info", section]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            r => panic!("INFO replied {r:?}"),
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix(&format!("{field}:")) {
                return v.trim().to_string();
            }
        }
        panic!("no {field} in INFO {section}:\n{text}");
    }

    pub fn info_u64(&self, section: &str, field: &str) -> u64 {
        self.info_field(section, field).parse().expect("number")
    }

    pub fn wait_until(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_no_child(&self) {
        self.wait_until("the snapshot child to finish", 120, || {
            self.info_field("persistence", "rdb_bgsave_in_progress") == "0"
        });
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn connect(&self) -> Resp {
        connect(self.port)
    }

    /// SIGKILL: no save, no cleanup — a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal_and_wait(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: signalling the pid we started and still own (not yet reaped).
        unsafe { libc::kill(c.id() as i32, sig) };
        c.wait().expect("wait")
    }

    /// Waits for the server to exit by itself (SHUTDOWN).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A reply as the raw client sees it.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

pub struct Resp {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Resp {
    pub fn send_raw(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("write");
    }
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        let mut b = Vec::new();
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        encode(&a, &mut b);
        self.send_raw(&b);
        self.read()
    }
    pub fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read reply");
        assert!(line.ends_with("\r\n"), "bad reply line {line:?}");
        let body = line[1..line.len() - 2].to_string();
        match line.as_bytes()[0] {
            b'+' => Reply::Simple(body),
            b'-' => Reply::Error(body),
            b':' => Reply::Int(body.parse().expect("int")),
            b'$' => {
                let n: i64 = body.parse().expect("len");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut v = vec![0; n as usize + 2];
                self.r.read_exact(&mut v).expect("bulk");
                v.truncate(n as usize);
                Reply::Bulk(Some(v))
            }
            b'*' => {
                let n: usize = body.parse().expect("len");
                Reply::Array((0..n).map(|_| self.read()).collect())
            }
            c => panic!("unexpected reply type {:?}", c as char),
        }
    }
    /// True if the server closed the connection after the replies read so far: EOF, or a
    /// reset (a server that closes with unread input in its socket makes the kernel send RST).
    pub fn at_eof(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Redis's DEBUG POPULATE value for index `j` with `size` bytes.
pub fn populate_value(j: u64, size: usize) -> Vec<u8> {
    let mut v = format!("value:{j}").into_bytes();
    v.resize(size, 0);
    v
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("snapstore-test")
        .tempdir()
        .expect("tempdir")
}

/// A real redis-server for side-by-side comparisons: a free port, a private directory, no
/// snapshots (`--save ''`), killed by pid when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        // A port is free when we probe it but may be taken before redis-server binds it:
        // then it exits at once, and another port is tried.
        for _ in 0..20 {
            let port = free_port();
            let dir = tempdir();
            let log = dir.path().join("redis.log");
            let mut child = Command::new(tool("redis-server"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args([
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--enable-debug-command",
                    "local",
                ])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .contains("Ready to accept connections")
                {
                    return Redis {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server did not start:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server could not get a free port");
    }

    pub fn connect(&self) -> Resp {
        connect(self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

pub fn connect(port: u16) -> Resp {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    Resp {
        r: BufReader::new(s.try_clone().expect("clone")),
        w: s,
    }
}

impl Server {
    /// Path of the snapshot file (whatever --dbfilename says).
    pub fn snapshot_path(&self) -> PathBuf {
        let name = match self.connect().cmd(&["config", "get", "dbfilename"]) {
            Reply::Array(v) if v.len() == 2 => match &v[1] {
                Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
                r => panic!("dbfilename {r:?}"),
            },
            r => panic!("CONFIG GET dbfilename: {r:?}"),
        };
        self.dir.join(name)
    }

    /// Pid of the running snapshot child.
    pub fn save_child(&self) -> i32 {
        let pid: i32 = self
            .info_field("persistence", "rdb_saves_pid")
            .parse()
            .expect("pid");
        assert!(pid > 0, "no snapshot child running");
        pid
    }

    /// Parses the server's log into (unix ms, message) lines.
    pub fn log_lines(&self) -> Vec<(u64, String)> {
        parse_log(&self.log_text())
    }
}

/// Log lines look like `<pid>:M <secs>.<ms> * <message>`.
pub fn parse_log(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let _pid = it.next()?;
            let t = it.next()?;
            let _star = it.next()?;
            let msg = it.next()?;
            let (s, ms) = t.split_once('.')?;
            Some((
                s.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?,
                msg.to_string(),
            ))
        })
        .collect()
}

/// Names of the `temp-*` files in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("temp-"))
        .collect()
}

/// Sends `sig` to `pid` (a process this test started, or its server's child).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// State letter of a process from /proc/PID/stat (None once it is gone).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Private_Dirty + Private_Hugetlb of a process, from /proc/PID/smaps_rollup: what the store's
/// child reports as its COW size, read independently.
pub fn private_dirty(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .filter(|l| l.starts_with("Private_Dirty:") || l.starts_with("Private_Hugetlb:"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("kB value")
                * 1024
        })
        .sum()
}

/// True as root. Otherwise says the test's privileged part did not run and
/// records its name in SNAPSHOT_SKIP_LOG, the file `cargo xtask test` counts
/// (and fails on, unless --allow-skip), so an unprivileged run is never
/// silently green.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: CI must run the tests as root (huge page reservations)");
    eprintln!("SKIPPED {test}: needs root (run `cargo xtask test` as root)");
    if let Some(log) = std::env::var_os("SNAPSHOT_SKIP_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening SNAPSHOT_SKIP_LOG {}: {e}", Path::new(&log).display()));
        // One short write per line: O_APPEND keeps concurrent tests' lines whole.
        file.write_all(format!("{test}\n").as_bytes()).expect("writing SNAPSHOT_SKIP_LOG");
    }
    false
}
