//! Security and limits: file creation as root, refused directories and names, DEBUG's gate,
//! --bind, running out of descriptors, counters reset, a failing final save on SIGTERM.

mod common;
use common::{Reply, Server, Started, signal, tempdir};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

/// Sets `fs.protected_symlinks` to 0 and puts the old value back when dropped, even when the test fails.
struct ProtectedSymlinks(String);

impl ProtectedSymlinks {
    const FILE: &str = "/proc/sys/fs/protected_symlinks";
    fn off() -> ProtectedSymlinks {
        let old = std::fs::read_to_string(Self::FILE).unwrap();
        std::fs::write(Self::FILE, "0").unwrap();
        ProtectedSymlinks(old.trim().to_string())
    }
}

impl Drop for ProtectedSymlinks {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::FILE, &self.0);
    }
}

fn start_fails(dir: &std::path::Path, extra: &[&str]) -> String {
    match Server::try_start(dir, extra, None) {
        Started::Up(_) => panic!("server started with {extra:?}"),
        Started::Exited { code, log } => {
            assert_ne!(code, Some(0), "{log}");
            log
        }
    }
}

#[test]
fn a_planted_temp_link_is_not_followed_and_snapshots_are_private() {
    // As on a host without the kernel's protection: root would follow another user's link.
    let _links = ProtectedSymlinks::off();
    let top = tempdir();
    let victim = top.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // A shared directory like /tmp: sticky, world-writable, owned by root (so the store accepts it).
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let s = Server::start(&shared, &["--save", ""]);
    assert_eq!(s.cli(&["set", "k", "* * * * * root evil"]), "OK");
    // SAVE writes temp-<server pid>: another user (nobody) plants that name as a link to a file we care about.
    let link = shared.join(format!("temp-{}.rdb", s.pid));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    assert_eq!(s.cli(&["save"]), "OK");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "link followed"
    );
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err());
    let snap = s.snapshot_path();
    assert!(
        !std::fs::symlink_metadata(&snap)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the snapshot is a file of its own"
    );
    assert_eq!(std::fs::metadata(&snap).unwrap().mode() & 0o777, 0o600);

    // The child's file too.
    std::fs::remove_file(&snap).unwrap();
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    assert_eq!(std::fs::metadata(&snap).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn world_writable_dir_and_path_dbfilename_are_refused() {
    let dir = tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = start_fails(&open, &["--save", ""]);
    assert!(
        log.contains("world-writable") && log.contains("without the sticky bit"),
        "{log}"
    );
    // Sticky and ours (like /tmp for root): other users can't replace what we create.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let s = Server::start(&open, &["--save", ""]);
    assert_eq!(s.cli(&["ping"]), "PONG");
    drop(s);

    for name in ["../x", "/tmp/x", "a/b", "..", ""] {
        let log = start_fails(dir.path(), &["--save", "", "--dbfilename", name]);
        assert!(log.contains("dbfilename can't be a path"), "{name}: {log}");
    }
    let s = Server::start(dir.path(), &["--save", "", "--dbfilename", "mine.rdb"]);
    assert_eq!(s.cli(&["save"]), "OK");
    assert!(dir.path().join("mine.rdb").is_file());
}

/// In a sticky world-writable directory (accepted, like /tmp for root) another user can create
/// the snapshot's name before the server starts: a link, a FIFO or a file of theirs must not be
/// followed, block the start, or be loaded as the dataset.
#[test]
fn a_snapshot_planted_in_a_shared_dir_is_refused() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["set", "planted", "by another user"]), "OK");
    assert_eq!(s.cli(&["save"]), "OK");
    let rdb = s.snapshot_path();
    drop(s);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let snap = shared.join("dump.rdb");

    std::os::unix::fs::symlink(&rdb, &snap).unwrap();
    let log = start_fails(&shared, &["--save", ""]);
    assert!(log.contains("symbolic link"), "{log}");
    std::fs::remove_file(&snap).unwrap();

    let c = std::ffi::CString::new(snap.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let log = start_fails(&shared, &["--save", ""]);
    assert!(log.contains("not a regular file"), "{log}");
    std::fs::remove_file(&snap).unwrap();

    std::fs::copy(&rdb, &snap).unwrap();
    std::os::unix::fs::chown(&snap, Some(65534), None).unwrap();
    let log = start_fails(&shared, &["--save", ""]);
    assert!(log.contains("owned by uid 65534"), "{log}");

    // Ours, it loads.
    std::os::unix::fs::chown(&snap, Some(unsafe { libc::geteuid() }), None).unwrap();
    let s = Server::start(&shared, &["--save", ""]);
    assert_eq!(s.cli(&["get", "planted"]), "\"by another user\"");
}

#[test]
fn debug_is_gated_and_bounded() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "", "--enable-debug-command", "no"]);
    let r = s.cli(&["debug", "populate", "10"]);
    assert!(
        r.starts_with("(error) ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\""),
        "{r}"
    );
    assert_eq!(s.cli(&["dbsize"]), "(integer) 0");
    assert_eq!(
        s.cli(&["config", "get", "enable-debug-command"]),
        "1) \"enable-debug-command\"\n2) \"no\""
    );
    drop(s);

    // The default, "local": allowed from loopback, refused from the machine's other address.
    let s = Server::start(dir.path(), &["--save", "", "--bind", "0.0.0.0"]);
    assert_eq!(s.cli(&["debug", "populate", "10"]), "OK");
    let other = non_loopback_ipv4().expect("a non-loopback IPv4 address on this host");
    let mut c = remote(other, s.port);
    assert_eq!(
        c.cmd(&["debug", "populate", "20"]),
        c_err_debug(),
        "from {other}"
    );
    assert_eq!(c.cmd(&["dbsize"]), Reply::Int(10));

    // Arguments a client can't abuse: no abort, no truncation, the server goes on.
    for (args, want) in [
        (
            &["debug", "populate", "1", "big", "9223372036854775807"][..],
            "(error) ERR DEBUG POPULATE: the value size is at most 536870912 bytes",
        ),
        (
            &["debug", "populate", "1", "huge", "4294967396"],
            "(error) ERR DEBUG POPULATE: the value size is at most 536870912 bytes",
        ),
        (
            &["debug", "populate", "9223372036854775807"],
            "(error) ERR DEBUG POPULATE: at most 4294967296 keys at a time",
        ),
    ] {
        assert_eq!(s.cli(args), want);
    }
    assert_eq!(s.cli(&["dbsize"]), "(integer) 10");
}

fn c_err_debug() -> Reply {
    Reply::Error(
        "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", \
         you can run it from a local connection, otherwise you need to set this option in the \
         configuration file, and then restart the server."
            .into(),
    )
}

/// This host's first IPv4 address that is not loopback (`hostname -I`).
fn non_loopback_ipv4() -> Option<std::net::Ipv4Addr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
}

fn remote(ip: std::net::Ipv4Addr, port: u16) -> common::Resp {
    let s = std::net::TcpStream::connect((ip, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    common::Resp {
        r: std::io::BufReader::new(s.try_clone().unwrap()),
        w: s,
    }
}

#[test]
fn bind_address_is_respected() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "", "--bind", "127.0.0.2"]);
    let c = std::net::TcpStream::connect(("127.0.0.2", s.port));
    assert!(c.is_ok(), "{c:?}");
    let refused = std::net::TcpStream::connect(("127.0.0.1", s.port));
    assert!(refused.is_err(), "listening beyond --bind");
    drop(s);
    // By default only loopback: the machine's other address is refused.
    let s = Server::start(dir.path(), &["--save", ""]);
    let other = non_loopback_ipv4().expect("a non-loopback IPv4 address on this host");
    assert!(std::net::TcpStream::connect((other, s.port)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok());
}

#[test]
fn queued_connections_are_served_after_running_out_of_descriptors() {
    let dir = tempdir();
    let s = match Server::try_start_limited(
        dir.path(),
        &["--save", ""],
        &[(libc::RLIMIT_NOFILE, 32)],
    ) {
        Started::Up(s) => s,
        Started::Exited { log, .. } => panic!("{log}"),
    };
    // More connections than descriptors: the kernel queues the rest (backlog).
    let mut conns: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect"))
        .collect();
    s.wait_until("accept to fail", 30, || {
        s.log_text().contains("Error accepting a client connection")
    });
    let rest = conns.split_off(30);
    drop(conns);
    // No new connection arrives: the server must go back to its queue by itself.
    for mut c in rest {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"PING\r\n").unwrap();
        let mut b = [0u8; 7];
        c.read_exact(&mut b)
            .expect("a queued connection is answered");
        assert_eq!(&b, b"+PONG\r\n");
    }
    assert!(s.log_text().contains("Accepting client connections again"));
}

#[test]
fn resetstat_restarts_the_counters_without_wrapping() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let mut c = s.connect();
    for i in 0..2000 {
        c.cmd(&["set", &format!("k{i}"), "v"]);
    }
    // Let the cron sample the rate with the high count, then reset under it.
    s.wait_until("a rate sample", 30, || {
        s.info_u64("stats", "instantaneous_ops_per_sec") > 0
    });
    assert_eq!(c.cmd(&["config", "resetstat"]), Reply::Simple("OK".into()));
    let total = s.info_u64("stats", "total_commands_processed");
    assert!(total < 10, "reset: {total}");
    // The two INFO connections since the reset.
    assert_eq!(s.info_u64("stats", "total_connections_received"), 2);
    // Cron samples after the reset: a wrapped subtraction would show ~10^19 ops/s.
    std::thread::sleep(Duration::from_millis(300));
    let ops = s.info_u64("stats", "instantaneous_ops_per_sec");
    assert!(ops < 1_000_000_000, "ops/s {ops} after a reset");
}

#[test]
fn sigterm_with_a_failing_save_keeps_serving() {
    let dir = tempdir();
    // Files may not grow past 64 KiB: the final save fails like on a full disk.
    let mut s = match Server::try_start(dir.path(), &["--save", "3600 1"], Some(64 * 1024)) {
        Started::Up(s) => s,
        Started::Exited { log, .. } => panic!("{log}"),
    };
    assert_eq!(s.cli(&["debug", "populate", "5000", "key", "100"]), "OK");
    signal(s.pid as i32, libc::SIGTERM);
    s.wait_until("the refusal to exit", 30, || {
        s.log_text()
            .contains("SIGTERM received but errors trying to shut down")
    });
    assert_eq!(s.cli(&["ping"]), "PONG");
    assert_eq!(s.cli(&["dbsize"]), "(integer) 5000", "nothing lost");
    // The user can still choose to lose the data.
    let _ = s.cli(&["shutdown", "nosave"]);
    assert!(s.wait_exit().success());
}

#[test]
fn shutdown_save_saves_without_a_save_policy() {
    let dir = tempdir();
    let mut s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["set", "k", "kept"]), "OK");
    let _ = s.cli(&["shutdown", "save"]);
    assert!(s.wait_exit().success());
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["get", "k"]), "\"kept\"");
    // Plain SHUTDOWN with no policy does not save (Redis's rule).
    assert_eq!(s.cli(&["set", "k", "new"]), "OK");
    let mut s = s;
    let _ = s.cli(&["shutdown"]);
    assert!(s.wait_exit().success());
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["get", "k"]), "\"kept\"");
}
