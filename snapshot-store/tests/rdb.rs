//! The snapshot file is Redis's RDB: what the store writes passes redis-check-rdb and loads into
//! a real redis-server, what redis-server writes loads into the store, and damaged or foreign
//! files are refused with the byte offset. Ground truth is always the real redis-server.

mod common;
use common::{Reply, Resp, Server, Started, encode, tempdir, tool};
use snapshot_store::{PagesMode, snapfile, table::Table};
use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A real redis-server writing its file into a directory of the test, killed when dropped.
struct Redis {
    server: common::Redis,
    dir: PathBuf,
}

impl Redis {
    /// redis-server with its file in `dir`; the shared starter waits for this server's own
    /// "Ready" log line (a port probed free can be taken by another process meanwhile, and a
    /// connect would then reach that other server) and tries another port if ours is taken.
    fn start(dir: &Path) -> Redis {
        let d = dir.to_str().expect("utf-8 dir");
        let server = common::Redis::start(&[
            "--dir",
            d,
            "--dbfilename",
            "dump.rdb",
            "--enable-debug-command",
            "yes",
        ]);
        Redis {
            server,
            dir: dir.to_path_buf(),
        }
    }

    fn connect(&self) -> Resp {
        let s =
            TcpStream::connect(("127.0.0.1", self.server.port)).expect("connect to redis-server");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        Resp {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    fn dump_path(&self) -> PathBuf {
        self.dir.join("dump.rdb")
    }
}

fn call(c: &mut Resp, args: &[&[u8]]) -> Reply {
    let mut b = Vec::new();
    encode(args, &mut b);
    c.send_raw(&b);
    c.read()
}

fn ok(c: &mut Resp, args: &[&[u8]]) {
    let r = call(c, args);
    assert!(
        matches!(&r, Reply::Simple(_) | Reply::Int(_) | Reply::Bulk(Some(_))),
        "{:?}: {r:?}",
        args.iter()
            .map(|a| a.escape_ascii().to_string())
            .collect::<Vec<_>>()
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// xorshift64: incompressible bytes, reproducible.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes the same data set through any RESP server (the store or redis-server): every string
/// shape RDB encodes differently, binary keys, and keys with and without expiry.
fn fill(c: &mut Resp) {
    ok(c, &[b"debug", b"populate", b"2000", b"pop", b"60"]);
    let ints = [
        "0",
        "-1",
        "127",
        "-128",
        "128",
        "-129",
        "32767",
        "-32768",
        "32768",
        "2147483647",
        "-2147483648",
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "007",
        "-0",
        "+5",
        "1 ",
        "12345678901",
    ];
    for (i, v) in ints.iter().enumerate() {
        ok(c, &[b"set", format!("int:{i}").as_bytes(), v.as_bytes()]);
    }
    ok(c, &[b"set", b"empty", b""]);
    ok(c, &[b"set", b"", b"empty key"]);
    ok(c, &[b"set", b"bin\x00\xff\r\nkey", b"bin\x00value\xfe"]);
    ok(c, &[b"set", b"len20", &[b'a'; 20]]);
    ok(c, &[b"set", b"len21", &[b'a'; 21]]);
    ok(c, &[b"set", b"compressible", &b"abcdefgh".repeat(5000)]);
    ok(c, &[b"set", b"noise", &noise(3000, 7)]);
    ok(c, &[b"set", b"big-noise", &noise(200_000, 11)]);
    ok(c, &[b"set", &b"long key ".repeat(40), b"v"]);
    ok(c, &[b"set", b"ttl:ex", b"v", b"ex", b"1000"]);
    ok(c, &[b"set", b"ttl:px", &b"z".repeat(100), b"px", b"500000"]);
    ok(c, &[b"set", b"ttl:int", b"42", b"ex", b"86400"]);
    for i in 0..300 {
        ok(
            c,
            &[
                b"set",
                format!("ttl:{i}").as_bytes(),
                b"v",
                b"ex",
                format!("{}", 100 + i).as_bytes(),
            ],
        );
    }
}

/// Every key with its value.
fn values(c: &mut Resp) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let Reply::Array(r) = call(c, &[b"scan", &cursor, b"count", b"1000"]) else {
            panic!("SCAN reply")
        };
        let (Reply::Bulk(Some(next)), Reply::Array(batch)) = (&r[0], &r[1]) else {
            panic!("SCAN reply {r:?}")
        };
        keys.extend(batch.iter().map(|k| match k {
            Reply::Bulk(Some(k)) => k.clone(),
            k => panic!("SCAN key {k:?}"),
        }));
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    keys.into_iter()
        .map(|k| match call(c, &[b"get", &k]) {
            Reply::Bulk(Some(v)) => (k, v),
            r => panic!("GET {}: {r:?}", k.escape_ascii()),
        })
        .collect()
}

/// redis-server's exact expiry of `key` (Unix ms, -1 none).
fn redis_expiry(c: &mut Resp, key: &[u8]) -> i64 {
    match call(c, &[b"pexpiretime", key]) {
        Reply::Int(t) => t,
        r => panic!("PEXPIRETIME: {r:?}"),
    }
}

/// The window the store's expiry of `key` lies in: its PTTL plus the clock before and after.
fn store_expiry(c: &mut Resp, key: &[u8]) -> Option<(i64, i64)> {
    let before = now_ms();
    let ttl = match call(c, &[b"pttl", key]) {
        Reply::Int(t) => t,
        r => panic!("PTTL: {r:?}"),
    };
    let after = now_ms();
    assert_ne!(ttl, -2, "{} missing", key.escape_ascii());
    (ttl >= 0).then_some((before + ttl, after + ttl))
}

/// The store and redis-server hold the same keys, values and expiry times.
fn same_data(store: &mut Resp, redis: &mut Resp) -> usize {
    let want = values(redis);
    let got = values(store);
    let short = |b: &[u8]| b[..b.len().min(40)].escape_ascii().to_string();
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{}: {:?} != {}",
                short(k),
                got.get(k).map(|g| short(g)),
                short(v)
            )
        })
        .take(5)
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{} vs {} keys; {wrong:#?}",
        got.len(),
        want.len()
    );
    let mut with_ttl = 0;
    for k in want.keys() {
        let exact = redis_expiry(redis, k);
        match store_expiry(store, k) {
            None => assert_eq!(exact, -1, "{} has no expiry in the store", k.escape_ascii()),
            Some((lo, hi)) => {
                assert!(
                    lo <= exact && exact <= hi,
                    "{}: {exact} not in [{lo}, {hi}]",
                    k.escape_ascii()
                );
                with_ttl += 1;
            }
        }
    }
    assert_eq!(with_ttl, 303, "keys with expiry");
    want.len()
}

fn check_rdb(path: &Path) {
    let out = Command::new(tool("redis-check-rdb"))
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-check-rdb");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );
}

#[test]
fn store_snapshot_passes_redis_check_rdb_and_loads_into_redis_server() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let mut store = s.connect();
    fill(&mut store);
    let mut sizes = Vec::new();
    // SAVE writes in the server process, BGSAVE in a fork child: both are checked.
    for (compression, save) in [("no", "save"), ("yes", "bgsave")] {
        assert_eq!(
            s.cli(&["config", "set", "rdbcompression", compression]),
            "OK"
        );
        s.cli(&[save]);
        s.wait_no_child();
        assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
        let rdb = dir.path().join("dump.rdb");
        check_rdb(&rdb);
        sizes.push(std::fs::metadata(&rdb).expect("dump.rdb").len());
        let rdir = tempdir();
        std::fs::copy(&rdb, rdir.path().join("dump.rdb")).expect("copy");
        let redis = Redis::start(rdir.path());
        let n = same_data(&mut store, &mut redis.connect());
        assert!(n > 2300, "{n} keys");
    }
    // The compressible values are ~40 KB raw: compression must show in the file size.
    assert!(sizes[1] + 30_000 < sizes[0], "sizes no/yes: {sizes:?}");
}

#[test]
fn redis_server_dump_loads_into_the_store() {
    let rdir = tempdir();
    let redis = Redis::start(rdir.path());
    let mut rc = redis.connect();
    fill(&mut rc);
    let mut sizes = Vec::new();
    // An LRU policy makes Redis write each key's idle time, an LFU one its frequency.
    let rounds = [
        ("yes", "noeviction"),
        ("no", "allkeys-lru"),
        ("yes", "allkeys-lfu"),
    ];
    for (compression, policy) in rounds {
        ok(
            &mut rc,
            &[b"config", b"set", b"rdbcompression", compression.as_bytes()],
        );
        ok(
            &mut rc,
            &[b"config", b"set", b"maxmemory-policy", policy.as_bytes()],
        );
        ok(&mut rc, &[b"save"]);
        sizes.push(
            std::fs::metadata(redis.dump_path())
                .expect("dump.rdb")
                .len(),
        );
        let dir = tempdir();
        std::fs::copy(redis.dump_path(), dir.path().join("dump.rdb")).expect("copy");
        let s = Server::start(dir.path(), &["--save", ""]);
        let n = same_data(&mut s.connect(), &mut rc);
        assert!(n > 2300, "{n} keys");
        assert!(
            s.log_text().contains(&format!("{n} records")),
            "{}",
            s.log_text()
        );
    }
    assert!(sizes[0] + 30_000 < sizes[1], "sizes yes/no: {sizes:?}");
}

fn load(path: &Path) -> Result<Option<u64>, String> {
    let mut t = Table::new(PagesMode::Small).expect("table");
    snapfile::load(path, &mut t, now_ms()).map_err(|e| format!("{e:#}"))
}

/// The offset an error names.
fn offset_of(e: &str) -> u64 {
    let rest = &e[e
        .find("byte offset ")
        .unwrap_or_else(|| panic!("no offset: {e}"))
        + 12..];
    rest.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("offset number")
}

/// A small RDB from redis-server with every string encoding and an expiry.
fn small_redis_rdb(dir: &Path) -> Vec<u8> {
    let redis = Redis::start(dir);
    let mut c = redis.connect();
    ok(&mut c, &[b"set", b"int", b"-30000"]);
    ok(&mut c, &[b"set", b"raw", b"some value"]);
    ok(&mut c, &[b"set", b"lzf", &b"0123456789".repeat(10)]);
    ok(&mut c, &[b"set", b"ttl", b"x", b"ex", b"1000"]);
    ok(&mut c, &[b"save"]);
    std::fs::read(redis.dump_path()).expect("dump.rdb")
}

#[test]
fn truncation_and_bit_flips_are_refused_with_the_offset() {
    let dir = tempdir();
    let good = small_redis_rdb(dir.path());
    let path = dir.path().join("cut.rdb");
    std::fs::write(&path, &good).expect("write");
    assert_eq!(load(&path), Ok(Some(4)));

    for cut in 0..good.len() {
        std::fs::write(&path, &good[..cut]).expect("write");
        let e = load(&path).expect_err("a truncated file loads");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(offset_of(&e) <= cut as u64, "cut at {cut}: {e}");
        if cut >= 9 {
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
    }
    // Every single-bit flip, then random multi-bit damage.
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &bad).expect("write");
        let e = load(&path).expect_err("a damaged file loads");
        // The offset may be the end of the file: where a field that ran past it started.
        assert!(offset_of(&e) <= good.len() as u64, "bit {bit}: {e}");
    }
    let r = noise(4000, 3);
    for i in 0..1000 {
        let mut bad = good.clone();
        for j in 0..3 {
            let p =
                u16::from_le_bytes([r[i * 4 + j], r[i * 4 + j + 1]]) as usize % (good.len() * 8);
            bad[p / 8] ^= 1 << (p % 8);
        }
        if bad == good {
            continue;
        }
        std::fs::write(&path, &bad).expect("write");
        let e = load(&path).expect_err("a damaged file loads");
        offset_of(&e);
    }
}

#[test]
fn a_damaged_redis_rdb_stops_the_store_start() {
    let dir = tempdir();
    let good = small_redis_rdb(dir.path());
    let sdir = tempdir();
    let path = sdir.path().join("dump.rdb");
    std::fs::write(&path, &good[..good.len() - 3]).expect("write");
    match Server::try_start(sdir.path(), &["--save", ""], None) {
        Started::Up(_) => panic!("the store started on a truncated file"),
        Started::Exited { code, log } => {
            assert_ne!(code, Some(0));
            let at = format!("byte offset {}", good.len() - 8);
            assert!(log.contains("truncated") && log.contains(&at), "{log}");
        }
    }
}

/// What the store says about an RDB holding `setup`'s data next to a string key.
fn refusal(setup: &[&[&[u8]]]) -> String {
    let dir = tempdir();
    let redis = Redis::start(dir.path());
    let mut c = redis.connect();
    ok(&mut c, &[b"set", b"a-string", b"v"]);
    for cmd in setup {
        ok(&mut c, cmd);
    }
    ok(&mut c, &[b"save"]);
    load(&redis.dump_path()).expect_err("the store loaded a type it does not hold")
}

#[test]
fn other_types_databases_and_functions_are_refused_by_name() {
    let cases: [(&[&[u8]], &str); 6] = [
        (
            &[b"rpush", b"my\nlist", b"a", b"b"],
            "key \"my\\nlist\" holds a list",
        ),
        (&[b"hset", b"h", b"f", b"v"], "key \"h\" holds a hash"),
        (&[b"sadd", b"s", b"1", b"2"], "key \"s\" holds a set"),
        (&[b"zadd", b"z", b"1", b"m"], "key \"z\" holds a zset"),
        (
            &[b"xadd", b"x", b"*", b"f", b"v"],
            "key \"x\" holds a stream",
        ),
        (
            &[
                b"function",
                b"load",
                b"#!lua name=lib\nredis.register_function('f', function() return 1 end)",
            ],
            "a function library",
        ),
    ];
    for (cmd, want) in cases {
        let e = refusal(&[cmd]);
        assert!(e.contains(want) && e.contains("byte offset"), "{want}: {e}");
    }
    let e = refusal(&[&[b"select", b"3"], &[b"set", b"k3", b"v"]]);
    assert!(e.contains("key \"k3\" is in database 3"), "{e}");

    // The server itself refuses to start, naming key and type.
    let dir = tempdir();
    let redis = Redis::start(dir.path());
    let mut c = redis.connect();
    ok(&mut c, &[b"rpush", b"mylist", b"a"]);
    ok(&mut c, &[b"save"]);
    let sdir = tempdir();
    std::fs::copy(redis.dump_path(), sdir.path().join("dump.rdb")).expect("copy");
    match Server::try_start(sdir.path(), &["--save", ""], None) {
        Started::Up(_) => panic!("the store started on a list"),
        Started::Exited { log, .. } => {
            assert!(log.contains("key \"mylist\" holds a list"), "{log}")
        }
    }
}
