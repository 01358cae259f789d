//! The real redis-benchmark runs unchanged against the store.

mod common;
use common::{Server, tempdir, tool};

/// Runs redis-benchmark and returns (test name, requests per second) pairs.
fn bench(s: &Server, extra: &[&str]) -> Vec<(String, f64)> {
    let out = std::process::Command::new(tool("redis-benchmark"))
        .args(["-p", &s.port.to_string(), "-q"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run redis-benchmark");
    assert!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let mut res = Vec::new();
    for line in text.lines() {
        // Final lines look like "SET: 123456.79 requests per second, p50=0.311 msec".
        if let Some((name, rest)) = line.split_once(": ")
            && let Some(rps) = rest
                .strip_suffix(" msec")
                .and_then(|r| r.split(" requests per second").next())
        {
            res.push((
                name.trim().to_string(),
                rps.trim().parse().expect("rps number"),
            ));
        }
    }
    res
}

#[test]
fn redis_benchmark_set_get_pipelined() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    let r = bench(
        &s,
        &[
            "-t", "set,get", "-n", "20000", "-P", "16", "-c", "20", "-r", "5000",
        ],
    );
    let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["SET", "GET"], "results: {r:?}");
    // Speed is BENCHMARKS.md's business; here: every request answered right under load.
    let keys: u64 = s
        .cli(&["dbsize"])
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap();
    assert!(keys > 1000 && keys <= 5000, "dbsize {keys}");
    assert!(s.info_u64("stats", "total_commands_processed") >= 40000);
    // Every benchmark connection was seen closing (only the INFO connection remains).
    s.wait_until("benchmark clients to be closed", 10, || {
        s.info_u64("clients", "connected_clients") == 1
    });
    // redis-benchmark's payload is 3 bytes by default.
    let mut c = s.connect();
    let (mut payload, mut seen) = (None, 0u64);
    for i in 0..5000 {
        match c.cmd(&["get", &format!("key:{i:012}")]) {
            // One payload for every SET: 3 random capital letters.
            common::Reply::Bulk(Some(v)) => {
                assert!(
                    v.len() == 3 && v.iter().all(u8::is_ascii_uppercase),
                    "{v:?}"
                );
                let first = payload.get_or_insert_with(|| v.clone());
                assert_eq!(&v, first, "key:{i:012}");
                seen += 1;
            }
            common::Reply::Bulk(None) => {}
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(seen, keys, "every key DBSIZE counts was read back");
}

#[test]
fn redis_benchmark_unpipelined_with_auth() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", "", "--requirepass", "pw"]);
    let r = bench(
        &s,
        &[
            "-t",
            "set,get,incr,mset",
            "-n",
            "3000",
            "-c",
            "10",
            "-a",
            "pw",
        ],
    );
    assert_eq!(r.len(), 4, "results: {r:?}");
    // 3000 INCRs of one key from 10 connections: none lost, none doubled.
    let out = std::process::Command::new(tool("redis-cli"))
        .args(["-p", &s.port.to_string(), "-a", "pw", "--no-auth-warning"])
        .args(["get", "counter:__rand_int__"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000");
    // MSET's ten keys (without -r they are all "key:__rand_int__").
    let out = std::process::Command::new(tool("redis-cli"))
        .args([
            "-p",
            &s.port.to_string(),
            "-a",
            "pw",
            "--no-auth-warning",
            "dbsize",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}
