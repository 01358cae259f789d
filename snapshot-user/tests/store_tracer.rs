//! `snapshot serve --trace`: the tracer's copies for a BGSAVE fork against the
//! Redis-style measure, the child's smaps Private_Dirty (rdb_last_cow_size),
//! under a real redis-benchmark write load.
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

struct Server {
    child: Child,
    port: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .output()
        .expect("redis-cli not found: apt-get install redis-tools");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn start(dir: &tempfile::TempDir) -> Server {
    let mut child = Command::new(SNAPSHOT)
        .args(["serve", "--trace", "--port", "0", "--save", "", "--dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited before it was ready");
        if let Some(rest) = line.split("tcp port ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Server { child, port }
}

#[test]
fn bgsave_copies_match_the_childs_private_dirty() {
    if !privileged("bgsave_copies_match_the_childs_private_dirty") {
        return;
    }
    let dir = temp_dir();
    let server = start(&dir);
    let port = server.port.as_str();
    redis_cli(port, &["DEBUG", "POPULATE", "300000", "key", "512"]);
    let mut load = Command::new("redis-benchmark")
        .args(["-p", port, "-t", "set", "-r", "300000", "-d", "512", "-n", "400000", "-c", "20", "-q"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-benchmark not found: apt-get install redis-tools");
    // The save starts once the writes flow: after a fixed wait, a slow start
    // of redis-benchmark on a loaded machine left the fork nothing to copy.
    let before = field(&redis_cli(port, &["INFO", "stats"]), "total_commands_processed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while field(&redis_cli(port, &["INFO", "stats"]), "total_commands_processed") < before + 10_000 {
        assert!(load.try_wait().unwrap().is_none(), "redis-benchmark ended before the save");
        assert!(Instant::now() < deadline, "redis-benchmark wrote nothing within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(redis_cli(port, &["BGSAVE"]).contains("Background saving started"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = redis_cli(port, &["INFO", "persistence"]);
        if field(&info, "rdb_bgsave_in_progress") == 0 && info.contains("tracer_last_fork_in_progress:0") {
            break info;
        }
        assert!(Instant::now() < deadline, "BGSAVE did not finish:\n{info}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = load.kill();
    let _ = load.wait();
    assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
    let private_dirty = field(&info, "rdb_last_cow_size");
    let traced = field(&info, "tracer_last_fork_cow_bytes");
    assert!(field(&info, "tracer_last_fork_parent_copies") > 100, "the write load copied nothing:\n{info}");
    // Private_Dirty also holds pages the child allocated (its write buffer),
    // and was read a moment before the child exited.
    let slack = private_dirty / 50 + (1 << 20);
    assert!(
        traced.abs_diff(private_dirty) <= slack,
        "tracer {traced} bytes vs child's Private_Dirty {private_dirty} bytes\n{info}"
    );
}
