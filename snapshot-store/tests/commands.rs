//! Command semantics through the real redis-cli, plus what redis-cli can't show
//! (per-connection state, pipelining, malformed RESP). Reply-by-reply comparison with
//! redis-server is in redis_compat.rs.

mod common;
use common::{Reply, Server, encode, tempdir};

#[test]
fn connection_state_quit_and_pipelining() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let mut c = s.connect();
    assert_eq!(c.cmd(&["client", "getname"]), Reply::Bulk(None));
    assert_eq!(
        c.cmd(&["client", "setname", "worker-1"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["client", "getname"]),
        Reply::Bulk(Some(b"worker-1".to_vec()))
    );
    assert_eq!(c.cmd(&["command"]), Reply::Array(vec![]));

    // 5000 commands in one write; replies come back in order.
    let mut batch = Vec::new();
    for i in 0..2500 {
        let k = format!("p{i}");
        let v = format!("v{i}");
        encode(&[b"SET", k.as_bytes(), v.as_bytes()], &mut batch);
        encode(&[b"GET", k.as_bytes()], &mut batch);
    }
    c.send_raw(&batch);
    for i in 0..2500 {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
        assert_eq!(c.read(), Reply::Bulk(Some(format!("v{i}").into_bytes())));
    }
    // Inline commands (telnet style) work too.
    c.send_raw(b"PING\r\nECHO 'a b'\r\n");
    assert_eq!(c.read(), Reply::Simple("PONG".into()));
    assert_eq!(c.read(), Reply::Bulk(Some(b"a b".to_vec())));

    assert_eq!(c.cmd(&["quit"]), Reply::Simple("OK".into()));
    assert!(c.at_eof(), "QUIT closes the connection");
    assert_eq!(s.cli(&["dbsize"]), "(integer) 2500");
}

#[test]
fn auth_required() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "", "--requirepass", "s3cret"]);
    let mut c = s.connect();
    assert_eq!(
        c.cmd(&["get", "a"]),
        Reply::Error("NOAUTH Authentication required.".into())
    );
    // Redis answers unknown commands before checking AUTH.
    assert_eq!(
        c.cmd(&["nosuch"]),
        Reply::Error("ERR unknown command 'nosuch', with args beginning with: ".into())
    );
    assert_eq!(
        c.cmd(&["auth", "wrong"]),
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(c.cmd(&["auth", "s3cret"]), Reply::Simple("OK".into()));
    assert_eq!(c.cmd(&["set", "a", "1"]), Reply::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["auth", "default", "s3cret"]),
        Reply::Simple("OK".into())
    );
    let out = std::process::Command::new(common::tool("redis-cli"))
        .args([
            "--no-raw",
            "-p",
            &s.port.to_string(),
            "-a",
            "s3cret",
            "--no-auth-warning",
            "get",
            "a",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"1\"");
}

#[test]
fn malformed_resp_gets_error_and_server_survives() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(s.cli(&["set", "keep", "me"]), "OK");
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*2\r\n$3\r\nGET\r\n+x\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*99999999999\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"SET a \"unbalanced\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (bytes, want) in cases {
        let mut c = s.connect();
        // A good command first, in the same write: it is answered, then the error, then EOF.
        let mut b = b"*1\r\n$4\r\nPING\r\n".to_vec();
        b.extend_from_slice(bytes);
        c.send_raw(&b);
        assert_eq!(c.read(), Reply::Simple("PONG".into()));
        assert_eq!(
            c.read(),
            Reply::Error(want.to_string()),
            "for {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(c.at_eof(), "connection closed after protocol error");
    }
    assert_eq!(s.cli(&["ping"]), "PONG");
    assert_eq!(s.cli(&["get", "keep"]), "\"me\"");
}

#[test]
fn expiry_is_enforced() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let mut c = s.connect();
    assert_eq!(
        c.cmd(&["set", "short", "x", "px", "50"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["set", "lazy", "x", "px", "50"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["set", "long", "x", "ex", "1000"]),
        Reply::Simple("OK".into())
    );
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(c.cmd(&["get", "short"]), Reply::Bulk(None));
    assert_eq!(c.cmd(&["ttl", "short"]), Reply::Int(-2));
    assert_eq!(c.cmd(&["expire", "long", "-1"]), Reply::Int(1));
    assert_eq!(c.cmd(&["exists", "long"]), Reply::Int(0));
    // The active cycle removes 'lazy' without anyone reading it.
    s.wait_until("active expiry", 10, || s.cli(&["dbsize"]) == "(integer) 0");
}

#[test]
fn info_sections_and_fields() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "900 1"]);
    assert_eq!(s.cli(&["mset", "a", "1", "b", "2"]), "OK");
    assert_eq!(s.cli(&["set", "c", "3", "ex", "100"]), "OK");
    let out = std::process::Command::new(common::tool("redis-cli"))
        .args(["-p", &s.port.to_string(), "info"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Latencystats",
        "# Keyspace",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    let fields = [
        "redis_version:",
        &format!("tcp_port:{}", s.port),
        "connected_clients:1",
        "used_memory:",
        "used_memory_rss:",
        "dataset_pages_mode:4k",
        "dataset_page_size:4096",
        "rdb_changes_since_last_save:3",
        "rdb_bgsave_in_progress:0",
        "rdb_last_save_time:",
        "rdb_last_bgsave_status:ok",
        "rdb_last_bgsave_time_sec:-1",
        "rdb_current_bgsave_time_sec:-1",
        "rdb_last_cow_size:0",
        "current_cow_size:0",
        "current_fork_perc:0.00",
        "current_save_keys_processed:0",
        "current_save_keys_total:0",
        "save_policy:900 1",
        "total_commands_processed:",
        "instantaneous_ops_per_sec:",
        "latest_fork_usec:0",
        "total_forks:0",
        "latency_percentiles_usec_mset:p50=",
        "db0:keys=3,expires=1,avg_ttl=0",
    ];
    for f in fields {
        assert!(
            text.lines().any(|l| l.starts_with(f)),
            "{f} missing:\n{text}"
        );
    }
    // One section only when asked.
    let ks = s.cli(&["info", "keyspace"]);
    assert!(
        ks.contains("db0:keys=3") && !ks.contains("# Server"),
        "{ks}"
    );
    let used = s.info_u64("memory", "used_memory");
    let rss = s.info_u64("memory", "used_memory_rss");
    assert!(used > 0 && rss >= used, "used {used} rss {rss}");
}
