//! Snapshots on disk: crash recovery, shutdown saves, the save policy, corrupt files, write errors.

mod common;
use common::{Reply, Server, Started, encode, tempdir};
use std::path::Path;

fn fill(s: &Server, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut c = s.connect();
    let mut kv = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let k = format!("user:{i}");
        // Binary values of varying size, including an empty one.
        let v: Vec<u8> = (0..(i * 7) % 300).map(|j| (i + j) as u8).collect();
        encode(&[b"SET", k.as_bytes(), &v], &mut batch);
        kv.push((k, v));
    }
    c.send_raw(&batch);
    for _ in 0..n {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    kv
}

fn check(s: &Server, kv: &[(String, Vec<u8>)]) {
    let mut c = s.connect();
    for (k, v) in kv {
        assert_eq!(c.cmd(&["get", k]), Reply::Bulk(Some(v.clone())), "key {k}");
    }
    assert_eq!(c.cmd(&["dbsize"]), Reply::Int(kv.len() as i64 + 1));
}

fn lastsave(s: &Server) -> i64 {
    match s.connect().cmd(&["lastsave"]) {
        Reply::Int(t) => t,
        r => panic!("LASTSAVE: {r:?}"),
    }
}

#[test]
fn bgsave_then_kill9_then_restart_restores_every_key() {
    let dir = tempdir();
    let mut s = Server::start(dir.path(), &["--save", ""]);
    let kv = fill(&s, 5000);
    assert_eq!(s.cli(&["set", "ttl-key", "v", "ex", "1000"]), "OK");
    let before = lastsave(&s);
    // LASTSAVE has one-second resolution: make sure a new save shows.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_until("LASTSAVE to change", 60, || lastsave(&s) > before);
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    assert_eq!(s.info_u64("persistence", "rdb_changes_since_last_save"), 0);
    assert!(s.info_u64("stats", "total_forks") >= 1);
    s.kill9();
    assert!(dir.path().join("dump.rdb").exists());
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("temp-")
    }));

    let s2 = Server::start(dir.path(), &["--save", ""]);
    check(&s2, &kv);
    let ttl: i64 = s2
        .cli(&["ttl", "ttl-key"])
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap();
    assert!((990..=1000).contains(&ttl), "ttl survived: {ttl}");
}

#[test]
fn shutdown_and_sigterm_save_nosave_does_not() {
    let dir = tempdir();
    // Default save policy: SHUTDOWN and SIGTERM save first.
    let mut s = Server::start(dir.path(), &[]);
    let kv = fill(&s, 300);
    assert_eq!(s.cli(&["set", "x", "1"]), "OK");
    let _ = s.cli(&["shutdown"]);
    assert!(s.wait_exit().success());

    let mut s = Server::start(dir.path(), &[]);
    check(&s, &kv);
    assert_eq!(s.cli(&["set", "x", "2"]), "OK");
    assert!(s.signal_and_wait(libc::SIGTERM).success());

    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(s.cli(&["get", "x"]), "\"2\"");
    assert_eq!(s.cli(&["set", "x", "3"]), "OK");
    let _ = s.cli(&["shutdown", "nosave"]);
    assert!(s.wait_exit().success());

    let s = Server::start(dir.path(), &[]);
    assert_eq!(
        s.cli(&["get", "x"]),
        "\"2\"",
        "NOSAVE kept the old snapshot"
    );
}

#[test]
fn save_policy_starts_a_background_save() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "1 3"]);
    assert_eq!(s.cli(&["config", "get", "save"]), "1) \"save\"\n2) \"1 3\"");
    assert_eq!(s.cli(&["mset", "a", "1", "b", "2"]), "OK");
    assert_eq!(s.info_u64("persistence", "rdb_changes_since_last_save"), 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !dir.path().join("dump.rdb").exists(),
        "2 changes < 3: no save yet"
    );
    assert_eq!(s.cli(&["set", "c", "3"]), "OK");
    s.wait_until("the policy's save", 30, || {
        s.info_u64("persistence", "rdb_changes_since_last_save") == 0
            && dir.path().join("dump.rdb").exists()
    });
    assert!(s.info_u64("stats", "total_forks") >= 1);
    // CONFIG SET save "" turns it off.
    assert_eq!(s.cli(&["config", "set", "save", ""]), "OK");
    assert_eq!(s.cli(&["set", "d", "4"]), "OK");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(s.info_u64("persistence", "rdb_changes_since_last_save"), 1);
}

fn start_fails(dir: &Path) -> String {
    match Server::try_start(dir, &["--save", ""], None) {
        Started::Up(_) => panic!("server started on a bad snapshot"),
        Started::Exited { code, log } => {
            assert_ne!(code, Some(0), "non-zero exit: {log}");
            log
        }
    }
}

#[test]
fn corrupt_or_truncated_snapshot_stops_the_start() {
    let dir = tempdir();
    // One big value, uncompressed: the middle of the file is value bytes, which only the
    // checksum covers.
    let mut s = Server::start(dir.path(), &["--save", "", "--rdbcompression", "no"]);
    let big = "v".repeat(100_000);
    assert_eq!(s.cli(&["set", "big", &big]), "OK");
    assert_eq!(s.cli(&["set", "small", "1"]), "OK");
    assert_eq!(s.cli(&["save"]), "OK");
    s.kill9();
    let path = dir.path().join("dump.rdb");
    let good = std::fs::read(&path).unwrap();
    let shown = path.canonicalize().unwrap().display().to_string();

    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let log = start_fails(dir.path());
    assert!(
        log.contains(&shown) && log.contains("checksum mismatch") && log.contains("byte offset"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bad,
        "a failed start leaves the file alone"
    );

    std::fs::write(&path, &good[..good.len() - 1000]).unwrap();
    let log = start_fails(dir.path());
    assert!(
        log.contains(&shown) && log.contains("truncated") && log.contains("byte offset"),
        "{log}"
    );

    std::fs::write(&path, &good[..good.len() - 2]).unwrap();
    let log = start_fails(dir.path());
    assert!(
        log.contains("truncated") && log.contains(&format!("byte offset {}", good.len() - 8)),
        "{log}"
    );

    std::fs::write(&path, b"SNAPSTOR not an RDB file").unwrap();
    let log = start_fails(dir.path());
    assert!(
        log.contains(&shown) && log.contains("bad magic") && log.contains("byte offset 0"),
        "{log}"
    );

    std::fs::write(&path, b"REDIS0011 from a newer Redis").unwrap();
    let log = start_fails(dir.path());
    assert!(
        log.contains("unsupported RDB version \"0011\"") && log.contains("byte offset 5"),
        "{log}"
    );

    std::fs::write(&path, &good).unwrap();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(
        s.connect().cmd(&["get", "big"]),
        Reply::Bulk(Some(big.into_bytes()))
    );
    assert_eq!(s.cli(&["get", "small"]), "\"1\"");
}

#[test]
fn write_error_in_child_keeps_old_snapshot() {
    let dir = tempdir();
    // Files may not grow past 256 KiB: the save fails with EFBIG like on a full disk.
    let s = match Server::try_start(dir.path(), &["--save", ""], Some(256 * 1024)) {
        Started::Up(s) => s,
        Started::Exited { log, .. } => panic!("start: {log}"),
    };
    assert_eq!(s.cli(&["set", "old", "value"]), "OK");
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    let path = dir.path().join("dump.rdb");
    let old = std::fs::read(&path).unwrap();

    assert_eq!(s.cli(&["debug", "populate", "20000", "key", "100"]), "OK");
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "err");
    assert_eq!(std::fs::read(&path).unwrap(), old, "old snapshot untouched");
    let temps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("temp-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert!(s.log_text().contains("snapshot failed"), "{}", s.log_text());

    // SAVE fails the same way, with an error reply; the server keeps serving.
    let r = s.cli(&["save"]);
    assert!(r.starts_with("(error) ERR"), "{r}");
    assert_eq!(std::fs::read(&path).unwrap(), old);
    assert_eq!(s.cli(&["ping"]), "PONG");
    assert_eq!(s.cli(&["dbsize"]), "(integer) 20001");
}
