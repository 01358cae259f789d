//! Side by side with the real redis-server: every request goes to both, and the replies are
//! compared one by one (and whether the connection was closed after them). The few places
//! where the store differs on purpose are asserted separately, with the reason.

mod common;
use common::{Redis, Reply, Resp, Server, encode, tempdir};

/// One connection to each server.
struct Pair {
    ours: Resp,
    redis: Resp,
}

impl Pair {
    fn new(s: &Server, r: &Redis) -> Pair {
        Pair {
            ours: s.connect(),
            redis: r.connect(),
        }
    }

    /// Sends a command to both; their replies must be equal.
    fn same(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        let mut b = Vec::new();
        encode(&a, &mut b);
        self.raw(&b, 1, &format!("{args:?}")).remove(0)
    }

    /// Sends bytes to both and reads `n` replies from each; they must be equal.
    fn raw(&mut self, bytes: &[u8], n: usize, what: &str) -> Vec<Reply> {
        self.ours.send_raw(bytes);
        self.redis.send_raw(bytes);
        let mut got = Vec::new();
        for i in 0..n {
            let want = self.redis.read();
            let ours = self.ours.read();
            assert_eq!(ours, want, "reply {i} to {what}");
            got.push(want);
        }
        got
    }

    /// Both closed the connection, or both kept it open.
    fn same_close(&mut self, what: &str) {
        // A PING after: an open connection answers it, a closed one gives EOF.
        let probe = b"*1\r\n$4\r\nPING\r\n";
        let _ = std::io::Write::write_all(&mut self.ours.w, probe);
        let _ = std::io::Write::write_all(&mut self.redis.w, probe);
        let closed = |c: &mut Resp| c.at_eof();
        assert_eq!(
            closed(&mut self.ours),
            closed(&mut self.redis),
            "closed after {what}"
        );
    }
}

/// Every key and value of a server, through SCAN and GET, sorted.
fn dataset(c: &mut Resp) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let Reply::Array(mut r) = c.cmd(&["scan", &cursor, "count", "100"]) else {
            panic!("SCAN reply")
        };
        let Reply::Array(page) = r.remove(1) else {
            panic!("SCAN keys")
        };
        let Reply::Bulk(Some(next)) = r.remove(0) else {
            panic!("SCAN cursor")
        };
        for k in page {
            let Reply::Bulk(Some(k)) = k else {
                panic!("SCAN key")
            };
            keys.push(k);
        }
        cursor = String::from_utf8(next).expect("cursor");
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let mut b = Vec::new();
            encode(&[b"GET", &k], &mut b);
            c.send_raw(&b);
            let Reply::Bulk(v) = c.read() else {
                panic!("GET reply")
            };
            (k, v)
        })
        .collect()
}

fn start_pair(extra: &[&str]) -> (tempfile::TempDir, Server, Redis) {
    let dir = tempdir();
    let mut ours = vec!["--save", ""];
    ours.extend_from_slice(extra);
    let s = Server::start(dir.path(), &ours);
    let r = Redis::start(extra);
    (dir, s, r)
}

/// The commands of the old recorded transcript and of issue 16's compatibility list.
const COMMANDS: &[&[&str]] = &[
    // Cursors as strtoul reads them, on an empty database (where the replies can't differ
    // by hash order).
    &["scan", "-1"],
    &["scan", "+0"],
    &["scan", " 0"],
    &["scan", "18446744073709551616"],
    &["scan", "abc"],
    &["ping"],
    &["ping", "hello"],
    &["echo", "hi there"],
    &["select", "0"],
    &["select", "x"],
    &["set", "k1", "v1"],
    &["get", "k1"],
    &["get", "nokey"],
    &["set", "k1", "v2", "nx"],
    &["set", "k1", "v2", "xx"],
    &["get", "k1"],
    &["set", "k2", "v", "nx"],
    &["set", "k3", "v", "xx"],
    &["set", "k4", "v", "ex", "100"],
    &["ttl", "k4"],
    &["set", "k4", "v", "px", "5000"],
    &["ttl", "k4"],
    &["set", "k4", "v", "ex", "0"],
    &["set", "k4", "v", "ex", "abc"],
    &["set", "k4", "v", "ex", "10", "px", "10"],
    &["set", "k4", "v", "ex", "10", "ex", "20"],
    &["ttl", "k4"],
    &["set", "k4", "v", "ex", "abc", "foo"],
    &["set", "k4", "v", "ex", "9223372036854775807"],
    &["set", "k4", "v", "px", "-1"],
    &["set", "k5", "v", "pxat", "1"],
    &["get", "k5"],
    &["set", "k5", "v", "exat", "99999999999"],
    &["ttl", "k5"],
    &["set", "k5", "v", "keepttl", "ex", "1"],
    &["set", "k5", "w", "keepttl"],
    &["ttl", "k5"],
    &["set", "k4", "v", "foo"],
    &["set", "k4", "v", "nx", "xx"],
    &["set", "k4", "v", "get"],
    &["ttl", "k1"],
    &["ttl", "nokey"],
    &["expire", "k1", "100"],
    &["ttl", "k1"],
    &["expire", "nokey", "100"],
    &["expire", "k1", "abc"],
    &["expire", "k1", "10", "gt", "lt"],
    &["expire", "k1", "abc", "foo"],
    &["expire", "k1", "abc", "gt", "lt"],
    &["expire", "k1", "10", "nx", "xx"],
    &["expire", "k1", "200", "lt"],
    &["expire", "k1", "200", "gt"],
    &["expire", "k2", "50", "gt"],
    &["expire", "k2", "50", "lt"],
    &["expire", "k3", "9223372036854775807"],
    &["persist", "k2"],
    &["persist", "k2"],
    &["set", "cnt", "10"],
    &["incr", "cnt"],
    &["incrby", "cnt", "5"],
    &["decr", "cnt"],
    &["incrby", "cnt", "abc"],
    &["decrby", "cnt", "-9223372036854775808"],
    &["decrby", "cnt", "9223372036854775807"],
    &["decrby", "cnt", "9223372036854775807"],
    &["incr", "k1"],
    &["incr", "newcnt"],
    &["set", "big", "9223372036854775807"],
    &["incr", "big"],
    &["set", "lz", "012"],
    &["incr", "lz"],
    &["del", "k1", "k2", "nokey"],
    &["exists", "k1", "k3", "cnt", "cnt"],
    &["mset", "a", "1", "b", "2", "c", "3"],
    &["mset", "a", "1", "b"],
    &["mget", "a", "b", "nokey", "c"],
    &["dbsize"],
    &["config", "get", "save"],
    &["config", "set", "save", "100 10"],
    &["config", "get", "save"],
    &["config", "set", "save", "abc"],
    &["config", "set", "save", ""],
    &["config", "set", "nosuch", "1"],
    &["config", "get", "appendonly"],
    &["config", "get", "stop-writes-on-bgsave-error"],
    &["config", "set", "stop-writes-on-bgsave-error", "maybe"],
    &["config", "set", "stop-writes-on-bgsave-error", "no"],
    &["config", "get", "stop-writes-on-bgsave-error"],
    &["config", "set", "stop-writes-on-bgsave-error", "yes"],
    &["config", "foo"],
    &["config", "get"],
    &["client", "setname", "myname"],
    &["client", "setname", "bad name"],
    &["client", "getname"],
    &["client", "foo"],
    &["client", "setname"],
    &["get"],
    &["get", "a", "b"],
    &["foo", "a", "b"],
    &["debug", "populate", "3"],
    &["mget", "key:0", "key:1", "key:2"],
    &["debug", "populate", "2", "pfx", "10"],
    &["get", "pfx:1"],
    &["debug", "populate", "1", "q", "3"],
    &["get", "q:0"],
    &["debug", "populate", "3", "q", "0"],
    &["mget", "q:0", "q:1", "q:2"],
    &["debug", "populate", "-1"],
    &["debug", "populate", "abc"],
    &["debug", "populate", "1", "x", "-5"],
    &["debug", "populate", "1", "x", "abc"],
    &["scan", "0", "count", "0"],
    &["auth", "pass"],
    &["auth", "a", "b", "c"],
    &["auth", "default", "anything"],
    &["auth", "someone", "x"],
    &["dbsize"],
];

#[test]
fn commands_reply_like_redis() {
    let (_d, s, r) = start_pair(&[]);
    let mut p = Pair::new(&s, &r);
    for cmd in COMMANDS {
        p.same(cmd);
    }
    // SCAN's order follows the hash function: compare what full scans return.
    assert_eq!(dataset(&mut p.ours), dataset(&mut p.redis), "the datasets");

    // Differences on purpose: one database here (Redis has 16), our own command table,
    // LASTSAVE's time.
    assert_eq!(
        p.ours.cmd(&["select", "1"]),
        Reply::Error("ERR DB index is out of range".into())
    );
    assert_eq!(p.redis.cmd(&["select", "1"]), Reply::Simple("OK".into()));
    assert!(matches!(p.ours.cmd(&["command", "count"]), Reply::Int(n) if n > 20));
    assert!(matches!(p.ours.cmd(&["lastsave"]), Reply::Int(_)));

    // Saving and flushing end the same way.
    p.same(&["save"]);
    p.same(&["flushall"]);
    p.same(&["dbsize"]);
}

#[test]
fn inline_commands_split_like_redis() {
    let (_d, s, r) = start_pair(&[]);
    let mut p = Pair::new(&s, &r);
    let good: &[&[u8]] = &[
        b"set a \"x\\\"y\"\r\n",
        b"get a\r\n",
        b"set b \"\\x41\\x4a\\x4\"\r\n",
        b"get b\r\n",
        b"set c 'it\\'s' \r\n",
        b"get c\r\n",
        b"set d \"\\n\\r\\t\\b\\a\\z\"\n",
        b"get d\n",
        b"  echo \t spaced\x0bargs  \r\n",
        b"set e a\"b c\"\r\n",
        b"get e\r\n",
        b"echo \"\"\r\n",
        b"echo ''\r\n",
    ];
    for line in good {
        p.raw(line, 1, &String::from_utf8_lossy(line));
    }
    // An empty line is no command: the PING after it gets the only reply.
    p.raw(b"\r\n\r\nping\r\n", 1, "empty lines");
    p.same_close("good inline commands");

    let bad: &[&[u8]] = &[
        b"set f \"unbalanced\r\n",
        b"set f 'unbalanced\r\n",
        b"set f \"x\"y\r\n",
        b"set f 'x'y\r\n",
        b"set f a\"b c\"d\r\n",
    ];
    for line in bad {
        let mut p = Pair::new(&s, &r);
        let what = String::from_utf8_lossy(line);
        p.raw(line, 1, &what);
        p.same_close(&what);
    }
}

#[test]
fn protocol_errors_like_redis() {
    let (_d, s, r) = start_pair(&[]);
    let cases: &[(&[u8], usize)] = &[
        (b"*01\r\n", 1),
        (b"*1\r\n$04\r\nPING\r\n", 1),
        (b"*+1\r\n", 1),
        (b"*-0\r\n", 1),
        (b"*1\r\n$-1\r\n", 1),
        (b"*1\r\n$abc\r\n", 1),
        (b"*x\r\n", 1),
        (b"*99999999999\r\n", 1),
        (b"*2147483648\r\n", 1),
        (b"*2\r\n$3\r\nGET\r\n+x\r\n", 1),
        (b"*1\r\n$536870913\r\n", 1),
        // Non-positive counts are empty commands; the PING after them is answered.
        (b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", 1),
        // Redis takes the two bytes after a bulk as its CRLF without looking at them.
        (b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n", 2),
    ];
    for (bytes, n) in cases {
        let mut p = Pair::new(&s, &r);
        let what = String::from_utf8_lossy(bytes);
        p.raw(bytes, *n, &what);
        p.same_close(&what);
    }
}

#[test]
fn multibulk_over_a_million_arguments() {
    let (_d, s, r) = start_pair(&[]);
    let mut p = Pair::new(&s, &r);
    // 1 + 2 x 524289 = 1048579 arguments: more than 1024 x 1024, far below Redis's INT_MAX.
    let pairs = 524_289;
    let keys: Vec<String> = (0..pairs).map(|i| format!("m{i}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        args.push(k.as_bytes());
        args.push(b"v");
    }
    let mut b = Vec::new();
    encode(&args, &mut b);
    p.raw(&b, 1, "MSET with 1048579 arguments");
    assert_eq!(p.same(&["dbsize"]), Reply::Int(pairs as i64));
    p.same(&["get", "m524288"]);
}

#[test]
fn before_auth_like_redis() {
    let (_d, s, r) = start_pair(&["--requirepass", "pw"]);
    let mut p = Pair::new(&s, &r);
    for cmd in [
        &["nosuch", "x"][..],
        &["get", "a"],
        &["get"],
        &["ping"],
        &["auth", "a", "b", "c"],
        &["auth", "wrong"],
        &["auth", "default", "wrong"],
        &["auth", "other", "pw"],
    ] {
        p.same(cmd);
    }
    // Before AUTH, no big requests: the client is refused and dropped.
    for (bytes, what) in [
        (&b"*11\r\n"[..], "11 arguments"),
        (b"*1\r\n$16385\r\n", "a 16385-byte bulk"),
    ] {
        let mut p = Pair::new(&s, &r);
        p.raw(bytes, 1, what);
        p.same_close(what);
    }
    // Up to the bounds is fine, and QUIT needs no AUTH.
    let mut p = Pair::new(&s, &r);
    let v = vec![b'x'; 16384];
    let mut b = Vec::new();
    encode(&[b"ECHO", &v], &mut b);
    p.raw(&b, 1, "a 16384-byte bulk");
    p.same(&["quit"]);
    p.same_close("QUIT");

    // After AUTH the bounds are Redis's usual ones.
    let mut p = Pair::new(&s, &r);
    p.same(&["auth", "pw"]);
    let v = vec![b'y'; 100_000];
    let mut b = Vec::new();
    encode(&[b"SET", b"k", &v], &mut b);
    p.raw(&b, 1, "a 100000-byte bulk after AUTH");
    p.same(&["exists", "k"]);
    p.same(&["auth", "default", "pw"]);
    p.same(&["get", "a"]);
}
