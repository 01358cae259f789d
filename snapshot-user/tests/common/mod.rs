//! Shared by the integration tests: running `snapshot`, privilege, machine state.
#![allow(dead_code)]
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

pub const SNAPSHOT: &str = env!("CARGO_BIN_EXE_snapshot");

/// Tests that change machine-wide memory settings take this lock.
pub static MACHINE: Mutex<()> = Mutex::new(());

/// True when the test may load eBPF programs. Without root the test is
/// skipped with the reason, and recorded where `cargo xtask test` counts the
/// skips (it fails unless given `--allow-skip`); in CI that is a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI must run the tests as root: they load eBPF programs into the kernel");
    }
    eprintln!("SKIPPED {test}: needs root to load eBPF programs (run `cargo xtask test` as root)");
    record_skip(test);
    false
}

/// Appends the test's name to the file `cargo xtask test` names in
/// SNAPSHOT_SKIP_LOG (inside a private directory it made).
fn record_skip(test: &str) {
    use std::io::Write as _;
    let Some(log) = std::env::var_os("SNAPSHOT_SKIP_LOG") else { return };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("opening SNAPSHOT_SKIP_LOG {}: {e}", Path::new(&log).display()));
    // One short write per line: O_APPEND keeps concurrent test threads' lines whole.
    file.write_all(format!("{test}\n").as_bytes()).expect("writing SNAPSHOT_SKIP_LOG");
}

pub fn snapshot(args: &[&str]) -> Output {
    Command::new(SNAPSHOT).args(args).output().expect("running snapshot")
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}\n{text}", path.display()))
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// `program` under a name of its own (its comm, for `--comm`), as a symlink:
/// a copy would hold a writable fd that a child forked meanwhile by another
/// test thread inherits, and exec of the copy then fails with ETXTBSY.
pub fn named(dir: &tempfile::TempDir, name: &str, program: impl AsRef<std::path::Path>) -> PathBuf {
    let link = path(dir, name);
    std::os::unix::fs::symlink(program, &link).expect("linking the program under a name of its own");
    link
}

/// A copy of the `snapshot` binary that user nobody can run from any checkout (a clone
/// in a mode-700 directory is not theirs to reach): in a fresh temp dir opened to 0755.
/// `install` writes it, so no writable fd of it ever lives in this test process (a child
/// forked meanwhile by another test thread would keep one, and exec would fail with ETXTBSY).
pub fn snapshot_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod 755 the temp dir");
    let copy = path(&dir, "snapshot");
    let out = Command::new("install").args(["-m", "0755", SNAPSHOT]).arg(&copy).output().expect("install (coreutils)");
    assert!(out.status.success(), "install: {}", String::from_utf8_lossy(&out.stderr));
    (dir, copy)
}

/// The lines of a file another process is appending to, without its last one while that
/// has no newline yet (a reader can see a line half-written).
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n'))
}

/// Sets a /proc or /sys file and puts the old value back when dropped,
/// even when the test fails.
pub struct Restore {
    file: &'static str,
    old: String,
}

impl Restore {
    pub fn set(file: &'static str, value: &str) -> Restore {
        let old = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        std::fs::write(file, value).unwrap_or_else(|e| panic!("writing {value} to {file}: {e}"));
        Restore { file, old }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let old = match self.old.find('[') {
            // THP files show "always [madvise] never": write back the bracketed one.
            Some(start) => self.old[start + 1..].split(']').next().unwrap_or("").to_string(),
            None => self.old.trim().to_string(),
        };
        if let Err(e) = std::fs::write(self.file, &old) {
            eprintln!("could not restore {} to {old}: {e}", self.file);
        }
    }
}

const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";

/// Lets MADV_HUGEPAGE regions get transparent huge pages: THP mode and its
/// defrag setting become `madvise` where they are `never` (with defrag
/// `never` a fragmented machine gives no huge page). Restored when dropped.
pub fn thp_for_madvise() -> Vec<Restore> {
    [THP_ENABLED, THP_DEFRAG]
        .into_iter()
        .filter(|file| std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {file}: {e}")).contains("[never]"))
        .map(|file| Restore::set(file, "madvise"))
        .collect()
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Reserves `pages` more hugetlb pages and checks they are free, compacting
/// memory once when the kernel could not find them; the old count comes back
/// when dropped. Fails the test when the machine cannot provide them.
pub fn reserve_hugepages(pages: u64) -> Restore {
    let old: u64 = std::fs::read_to_string(NR_HUGEPAGES)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("reading {NR_HUGEPAGES}"));
    let free_before = hugepages_free();
    let restore = Restore::set(NR_HUGEPAGES, &(old + pages).to_string());
    if hugepages_free() < free_before + pages {
        // The pool grows only from free 2 MiB blocks: make some, and ask again.
        std::fs::write("/proc/sys/vm/compact_memory", "1").expect("compacting memory");
        std::fs::write(NR_HUGEPAGES, (old + pages).to_string()).expect("writing nr_hugepages");
    }
    let free = hugepages_free();
    assert!(
        free >= free_before + pages,
        "could reserve only {} of {pages} hugetlb pages (HugePages_Free {free}): the machine has no free 2 MiB blocks",
        free.saturating_sub(free_before)
    );
    restore
}

fn hugepages_free() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("HugePages_Free in /proc/meminfo")
}

/// A port free now, for a server that cannot be told to pick its own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Ids of the eBPF links (attached programs) a process holds, from its fdinfo.
pub fn link_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        ids.extend(info.lines().filter_map(|l| l.strip_prefix("link_id:")).map(|v| v.trim().parse::<u32>().unwrap()));
    }
    ids
}

/// Whether the kernel still has a link with this id (BPF_LINK_GET_FD_BY_ID).
/// A link's id is freed as it is detached; its program's memory follows after
/// an RCU grace period.
pub fn attached(link: u32) -> bool {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let attr = [link, 0, 0, 0];
    // SAFETY: bpf() reads an attr of the size given.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_GET_FD_BY_ID, attr.as_ptr(), size_of_val(&attr)) };
    if fd >= 0 {
        // SAFETY: the fd was just returned to us.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOENT), "BPF_LINK_GET_FD_BY_ID {link}");
    false
}

/// Starts `snapshot trace ARGS` and returns once it says it is tracing.
pub fn start_tracer(args: &[&str]) -> std::process::Child {
    start_tracer_with(Command::new(SNAPSHOT).arg("trace").args(args).stdout(std::process::Stdio::piped()))
}

/// Starts a prepared `snapshot trace` and returns once it is tracing (its
/// programs attached, its capabilities dropped, the command started).
/// The tracer is killed when the thread that started it ends (a test that
/// panics before stopping it, or a test binary killed outright): a tracer
/// left running traces the machine, with the test's locks, for good.
pub fn start_tracer_with(command: &mut Command) -> std::process::Child {
    use std::{io::BufRead as _, os::unix::process::CommandExt as _};
    // SAFETY: prctl and signal are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Ignored signals stay ignored through exec: a suite started
            // under nohup or as a background job would hand its traced
            // commands an ignored SIGHUP or SIGINT, and a test that signals
            // them waits forever. Default, as from a terminal.
            for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
                if libc::signal(signal, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut tracer = command.stderr(std::process::Stdio::piped()).spawn().expect("snapshot trace");
    let mut line = String::new();
    let read = std::io::BufReader::new(tracer.stderr.as_mut().unwrap()).read_line(&mut line);
    if !matches!(read, Ok(n) if n > 0) || !line.contains("snapshot: tracing") {
        let _ = tracer.kill();
        let _ = tracer.wait();
        panic!("unexpected first line: {line:?} ({read:?})");
    }
    tracer
}

/// Renders `page` in headless Chromium at `size` ("W,H") and returns the
/// screenshot's pixels and the bytes per pixel: proof it draws, not just parses.
pub fn screenshot(page: &std::path::Path, dir: &tempfile::TempDir, size: &str) -> (Vec<u8>, usize) {
    let shot = path(dir, "shot.png");
    let profile = path(dir, "chromium-profile");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .args([format!("--window-size={size}").as_str(), "--hide-scrollbars"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium not found: apt-get install chromium");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (buf, info.line_size / info.width as usize)
}

/// `privileged(test)`, then the machine lock for tests that run the store
/// under load or change machine-wide settings; None when skipped.
pub fn privileged_machine(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    privileged(test).then(|| MACHINE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `snapshot run ARGS --no-tui --json DIR/run.jsonl`, stdout to /dev/null:
/// the command, to add to and start, and the JSON Lines file's path.
pub fn snapshot_run(dir: &tempfile::TempDir, args: &[&str]) -> (Command, PathBuf) {
    let json = path(dir, "run.jsonl");
    let mut command = Command::new(SNAPSHOT);
    command.arg("run").args(args).args(["--no-tui", "--json"]).arg(&json).stdout(std::process::Stdio::null());
    (command, json)
}

/// Waits until the run's JSON Lines hold `count` complete setting lines (one
/// per workload started) and returns them; fails if the run ends first.
pub fn settings(json: &Path, run: &mut std::process::Child, count: usize) -> Vec<serde_json::Value> {
    loop {
        let text = std::fs::read_to_string(json).unwrap_or_default();
        let settings: Vec<serde_json::Value> = complete_lines(&text)
            .filter(|l| l.contains("\"type\":\"setting\""))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if settings.len() >= count {
            return settings;
        }
        assert!(run.try_wait().unwrap().is_none(), "the run ended before its setting line {count}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Reads stderr lines until one says where metrics are served; its address.
pub fn metrics_address(stderr: &mut impl std::io::BufRead) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).expect("reading stderr") > 0, "no metrics address in:\n{seen}");
        if let Some(rest) = line.split("serving metrics on http://").nth(1) {
            return rest.split('/').next().unwrap().to_string();
        }
        seen.push_str(&line);
    }
}

/// A `snapshot trace --comm` started by `trace_comm`; killed when dropped.
pub struct CommTracer {
    pub child: std::process::Child,
    /// Kept open to the end: the tracer's notes go there.
    pub stderr: std::io::BufReader<std::process::ChildStderr>,
    /// Where it serves metrics (empty without).
    pub addr: String,
    /// Its JSON report, written when it ends.
    pub report: PathBuf,
}

impl Drop for CommTracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the tracer said.
        if std::thread::panicking() {
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut self.stderr, &mut said);
            eprintln!("snapshot trace's stderr:\n{said}");
        }
    }
}

/// `snapshot trace --comm COMM --json DIR/report.json -o DIR/table.txt`, with
/// `--metrics 127.0.0.1:0` when `metrics`: returned once it says it is tracing.
pub fn trace_comm(dir: &tempfile::TempDir, comm: &str, metrics: bool) -> CommTracer {
    use std::io::BufRead as _;
    let report = path(dir, "report.json");
    let mut child = Command::new(SNAPSHOT)
        .args(["trace", "--comm", comm])
        .args(metrics.then_some(["--metrics", "127.0.0.1:0"]).into_iter().flatten())
        .arg("--json")
        .arg(&report)
        .arg("-o")
        .arg(path(dir, "table.txt"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running snapshot trace");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut tracer = CommTracer { child, stderr, addr: String::new(), report };
    if metrics {
        tracer.addr = metrics_address(&mut tracer.stderr);
    }
    let mut note = String::new();
    tracer.stderr.read_line(&mut note).expect("reading the tracer's stderr");
    assert!(note.contains("tracing"), "{note}");
    tracer
}
