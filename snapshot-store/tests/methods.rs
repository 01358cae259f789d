//! Snapshot methods (fork, forkless): the file a background save writes is the dataset at the
//! instant BGSAVE ran, while one client keeps overwriting, deleting, expiring, incrementing,
//! flushing, reading and sending bad commands until the save is over.

mod common;
use common::*;
use std::collections::BTreeMap;

/// key -> (value, absolute expiry in ms or 0)
type Model = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Small deterministic generator (the test must replay the same way every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn value(i: u64, round: u64) -> Vec<u8> {
    match i % 3 {
        // Integers, stored as RDB ints and INCR's targets.
        0 => (i * 7 + round).to_string().into_bytes(),
        // Long, repetitive: LZF-compressed in the file.
        1 => format!("{i}:{round}:")
            .repeat(100 + (i % 13) as usize)
            .into_bytes(),
        _ => format!("v{i}.{round}").repeat(250).into_bytes(),
    }
}

/// Pipelines `cmds` and reads every reply (errors included: they are part of the load).
fn pipeline(c: &mut Resp, cmds: &[Vec<Vec<u8>>]) -> Vec<Reply> {
    let mut b = Vec::new();
    for a in cmds {
        let a: Vec<&[u8]> = a.iter().map(|x| x.as_slice()).collect();
        encode(&a, &mut b);
    }
    c.send_raw(&b);
    cmds.iter().map(|_| c.read()).collect()
}

fn args(a: &[&[u8]]) -> Vec<Vec<u8>> {
    a.iter().map(|x| x.to_vec()).collect()
}

/// Loads `n` keys; a tenth expire in an hour, a tenth in `soon_ms` (during the save).
fn load(c: &mut Resp, n: u64, soon_ms: i64) -> Model {
    let mut m = Model::new();
    let t = now_ms();
    let mut cmds = Vec::new();
    for i in 0..n {
        let k = format!("k{i}").into_bytes();
        let v = value(i, 0);
        let exp = match i % 10 {
            1 => t + 3_600_000,
            2 => t + soon_ms,
            _ => 0,
        };
        let mut a = args(&[b"SET", &k, &v]);
        if exp != 0 {
            a.extend(args(&[b"PXAT", exp.to_string().as_bytes()]));
        }
        cmds.push(a);
        m.insert(k, (v, exp));
    }
    for chunk in cmds.chunks(1000) {
        for r in pipeline(c, chunk) {
            assert!(matches!(r, Reply::Simple(ref s) if s == "OK"), "{r:?}");
        }
    }
    m
}

/// One batch of mixed commands on random keys (some new, some missing).
fn batch(g: &mut Lcg, n: u64, round: u64, flush: bool) -> Vec<Vec<Vec<u8>>> {
    let mut cmds = Vec::new();
    for _ in 0..200 {
        let i = g.next() % (n + n / 10);
        let k = format!("k{i}").into_bytes();
        let k2 = format!("k{}", g.next() % n).into_bytes();
        let a = match g.next() % 17 {
            0 | 1 => args(&[b"SET", &k, &value(i, round)]),
            2 => args(&[b"DEL", &k]),
            3 => args(&[b"INCR", &k]),
            4 => args(&[b"EXPIRE", &k, b"1000"]),
            5 => args(&[b"SET", &k, b"short", b"PX", b"1"]),
            6 => args(&[b"PERSIST", &k]),
            7 => args(&[b"GET", &k]),
            8 => args(&[b"SCAN", b"0", b"COUNT", b"50"]),
            9 => args(&[b"INCRBY", &k, b"notanumber"]),
            10 => args(&[b"SET", &k, &vec![b'x'; 3000]]),
            11 => args(&[b"MSET", &k, b"m1", &k2, b"m2"]),
            12 => args(&[b"SET", &k, b"g", b"NX", b"GET"]),
            13 => args(&[b"SET", &k, b"x", b"XX", b"KEEPTTL"]),
            14 => args(&[b"PTTL", &k]),
            15 => args(&[b"EXPIRE", &k, b"-1"]),
            _ => args(&[b"NOSUCHCOMMAND", &k]),
        };
        cmds.push(a);
    }
    if flush {
        cmds.push(args(&[b"FLUSHALL"]));
    }
    if round == 3 {
        // Many new keys at once: the table grows (a resize) in the middle of the save.
        cmds.push(args(&[b"DEBUG", b"POPULATE", b"30000", b"extra", b"20"]));
    }
    cmds
}

fn read_file(path: &std::path::Path) -> Model {
    let f = std::fs::File::open(path).expect("snapshot file");
    let size = f.metadata().expect("stat").len();
    let mut m = Model::new();
    let mut put = |k: &[u8], v: &[u8], exp: Option<i64>| -> Result<(), String> {
        if m.insert(k.to_vec(), (v.to_vec(), exp.unwrap_or(0)))
            .is_some()
        {
            return Err(format!("key {:?} twice", String::from_utf8_lossy(k)));
        }
        Ok(())
    };
    snapshot_store::rdb::decode::decode(std::io::BufReader::new(f), size, &mut put)
        .unwrap_or_else(|e| panic!("decoding the snapshot: {} at {}", e.msg, e.offset));
    m
}

/// Keys that had expired by the save's instant may be in the file or not (loading drops them).
fn diff(want: &Model, got: &Model, t0: i64) -> String {
    let mut out = Vec::new();
    let gone = |v: &(Vec<u8>, i64)| v.1 != 0 && v.1 <= t0;
    for (k, v) in want {
        if got.get(k) != Some(v) && !(gone(v) && got.get(k).is_none()) {
            out.push(format!(
                "{}: want {:?} got {:?}",
                String::from_utf8_lossy(k),
                (String::from_utf8_lossy(&v.0), v.1),
                got.get(k)
                    .map(|g| (String::from_utf8_lossy(&g.0).into_owned(), g.1))
            ));
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!(
            "{}: not in the dataset",
            String::from_utf8_lossy(k)
        ));
    }
    if out.is_empty() {
        return String::new();
    }
    let n = out.len();
    out.truncate(10);
    format!("{n} keys differ, first: {out:#?}")
}

/// Runs the adversarial load during a `BGSAVE <method>` and checks the file.
fn exact_under_load(method: &str, flush: bool) -> (Server, tempfile::TempDir) {
    exact_under_load_with(method, flush, &[])
}

fn exact_under_load_with(method: &str, flush: bool, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let tmp = tempdir();
    let dir = tmp.path().to_path_buf();
    let s = Server::start(&dir, &[&["--save", ""], extra].concat());
    let mut c = s.connect();
    const N: u64 = 20_000;
    let want = load(&mut c, N, 800);
    // 50 us per key: the save takes about a second, long enough for the load to race it.
    assert!(matches!(
        c.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "50"]),
        Reply::Simple(_)
    ));
    let r = c.cmd(&["BGSAVE", method]);
    assert!(
        matches!(r, Reply::Simple(ref s) if s == "Background saving started"),
        "{r:?}"
    );
    let t0 = now_ms();
    let mut g = Lcg(7);
    let mut rounds = 0;
    loop {
        rounds += 1;
        // FLUSHALL once, a few rounds into the save; the load goes on into the new dataset.
        pipeline(&mut c, &batch(&mut g, N, rounds, flush && rounds == 5));
        let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "persistence"]) else {
            panic!("INFO");
        };
        if String::from_utf8_lossy(&info).contains("rdb_bgsave_in_progress:0") {
            break;
        }
    }
    assert!(
        rounds > 10,
        "the save ended after {rounds} rounds: the load did not race it"
    );
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    let m = if method == "fork" { "fork" } else { "forkless" };
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_method"), m);
    let got = read_file(&dir.join("dump.rdb"));
    let d = diff(&want, &got, t0);
    assert!(d.is_empty(), "{method}: {d}");
    let check = std::process::Command::new(tool("redis-check-rdb"))
        .arg(dir.join("dump.rdb"))
        .output()
        .expect("redis-check-rdb");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    (s, tmp)
}

#[test]
fn forkless_file_is_one_instant_under_writes() {
    let (s, _dir) = exact_under_load("FORKLESS", false);
    // The save raced writes to keys it had not reached: it copied them first.
    // (The dataset, ~25 MB, is 3 times what the walk may copy ahead of the writer.)
    let early = s.info_u64("persistence", "forkless_copied_before_write_keys");
    eprintln!("forkless: {early} keys copied before a write");
    assert!(early > 100, "{early} keys copied before a write");
}

#[test]
fn forkless_file_is_one_instant_across_flushall() {
    exact_under_load("forkless", true);
}

#[test]
fn fork_file_is_one_instant_under_writes() {
    exact_under_load("fork", false);
}

#[test]
fn method_protocol() {
    let dir = tempdir();
    let s = Server::start(
        dir.path(),
        &["--save", "", "--default-bgsave-method", "forkless"],
    );
    assert_eq!(
        s.cli(&["CONFIG", "GET", "default-bgsave-method"]),
        "1) \"default-bgsave-method\"\n2) \"forkless\""
    );
    assert!(s.cli(&["BGSAVE", "SIDEWAYS"]).contains("syntax error"));
    assert!(
        s.cli(&["CONFIG", "SET", "default-bgsave-method", "thread"])
            .contains("argument must be 'fork' or 'forkless'")
    );
    s.cli(&["SET", "a", "1"]);
    assert_eq!(s.cli(&["BGSAVE"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(
        s.info_field("persistence", "rdb_last_bgsave_method"),
        "forkless"
    );
    assert_eq!(s.info_u64("stats", "total_forks"), 0);
    assert_eq!(
        s.cli(&["CONFIG", "SET", "default-bgsave-method", "FORK"]),
        "OK"
    );
    assert_eq!(s.cli(&["BGSAVE", "SCHEDULE"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(
        s.info_field("persistence", "rdb_last_bgsave_method"),
        "fork"
    );
    assert_eq!(s.info_u64("stats", "total_forks"), 1);
    // A second save while one runs is refused, whatever the method.
    s.cli(&["CONFIG", "SET", "rdb-key-save-delay", "100000"]);
    assert_eq!(s.cli(&["BGSAVE", "FORKLESS"]), "Background saving started");
    assert!(s.cli(&["BGSAVE", "FORK"]).contains("already in progress"));
    assert!(s.cli(&["SAVE"]).contains("already in progress"));
    // SHUTDOWN NOSAVE stops the writer and leaves no temp file behind.
    s.cli(&["SHUTDOWN", "NOSAVE"]);
    let mut s = s;
    s.wait_exit();
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn redirect_file_is_one_instant_under_writes() {
    exact_under_load_with("fork", false, &["--cow-strategy", "redirect"]);
}

/// Whether `pid` is blocked in nanosleep or clock_nanosleep (x86-64 syscalls
/// 35 and 230): the save child's rdb-key-save-delay.
fn in_nanosleep(pid: i32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    matches!(syscall.split_whitespace().next(), Some("35" | "230"))
}

/// Growth of the fork child's Private_Dirty (read from its smaps_rollup) while the parent
/// overwrites 10 000 random keys of 50 000 × 512 B, and the store's own count of shared
/// (index, record) pages it wrote, for one `--cow-strategy`.
fn cow_of_overwrites(strategy: &str) -> (u64, u64, u64) {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "", "--cow-strategy", strategy]);
    let mut c = s.connect();
    assert!(matches!(
        c.cmd(&["DEBUG", "POPULATE", "50000", "key", "512"]),
        Reply::Simple(_)
    ));
    // The child stops after its first 1024 keys for 100 s: it lives through the writes.
    c.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "100000"]);
    assert!(matches!(c.cmd(&["BGSAVE", "FORK"]), Reply::Simple(_)));
    let pid = s.save_child();
    // Measured from the pause on: a fixed wait could end before the child got
    // there on a loaded machine, and its own buffers would count as copies.
    s.wait_until("the child's pause", 60, || in_nanosleep(pid));
    let before = private_dirty(pid);
    let mut g = Lcg(11);
    let cmds: Vec<_> = (0..10_000)
        .map(|_| {
            let j = g.next() % 50_000;
            args(&[
                b"SET",
                format!("key:{j}").as_bytes(),
                &populate_value(j + 1, 512),
            ])
        })
        .collect();
    for chunk in cmds.chunks(1000) {
        pipeline(&mut c, chunk);
    }
    let after = private_dirty(pid);
    let index = s.info_u64("persistence", "fork_shared_index_pages_written");
    let records = s.info_u64("persistence", "fork_shared_record_pages_written");
    signal(pid, libc::SIGKILL);
    (after - before, index, records)
}

#[test]
fn redirect_copies_a_fraction_of_inplace() {
    let (inplace, ii, ir) = cow_of_overwrites("inplace");
    let (redirect, ri, rr) = cow_of_overwrites("redirect");
    let report = format!(
        "inplace: child +{inplace} B, {ii} index + {ir} record pages; \
         redirect: child +{redirect} B, {ri} index + {rr} record pages"
    );
    eprintln!("{report}");
    // The store's count of shared pages it wrote matches what the kernel copied (the child's
    // Private_Dirty), give or take the parent's other memory (client buffers, its heap).
    for (cow, pages) in [(inplace, ii + ir), (redirect, ri + rr)] {
        let counted = pages * 4096;
        assert!(
            cow + (2 << 20) >= counted && cow <= counted + (2 << 20),
            "{report}"
        );
    }
    assert!(redirect * 4 <= inplace, "{report}");
    // What redirect still writes in shared memory is index links: bucket slots, and the `next`
    // of a record ahead in the same chain.
    assert_eq!(rr, 0, "{report}");
}

/// A forkless save that cannot write its file (the disk "full": RLIMIT_FSIZE) fails cleanly:
/// status err, no temp file, the old snapshot untouched, the server still serving and saving
/// again once there is room.
#[test]
fn forkless_write_error_loses_nothing() {
    let dir = tempdir();
    let extra = ["--save", "", "--rdbcompression", "no"];
    let Started::Up(s) = Server::try_start(dir.path(), &extra, Some(256 * 1024)) else {
        panic!("server did not start");
    };
    s.cli(&["SET", "small", "1"]);
    assert_eq!(s.cli(&["BGSAVE", "FORKLESS"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    let old = std::fs::read(dir.path().join("dump.rdb")).expect("first snapshot");
    s.cli(&["DEBUG", "POPULATE", "5000", "big", "1000"]);
    assert_eq!(s.cli(&["BGSAVE", "FORKLESS"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "err");
    assert!(
        s.log_text().contains("Background forkless saving error"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        std::fs::read(dir.path().join("dump.rdb")).expect("snapshot"),
        old
    );
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
    assert_eq!(s.cli(&["DBSIZE"]), "(integer) 5001");
    s.cli(&["FLUSHALL"]);
    s.cli(&["SET", "small", "2"]);
    assert_eq!(s.cli(&["BGSAVE", "FORKLESS"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
}
