//! `snapshot exporter` scraped by a real Prometheus server, its figures
//! checked against `snapshot trace --json` for the same run, and its output
//! linted by Prometheus's own promtool.
mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{SNAPSHOT, complete_lines, free_port, json, metrics_address, named, path, privileged, snapshot_run, temp_dir, trace_comm};

/// Kills a server the test started, by its pid, when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the exporter on a port the kernel picks; returns it and its address.
fn exporter() -> (Server, String) {
    let mut child = Command::new(SNAPSHOT)
        .args(["exporter", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting snapshot exporter");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("reading the exporter's stderr");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the exporter did not say where it serves: {line:?}"))
        .to_string();
    (Server(child), addr)
}

/// A plain HTTP/1.0 GET: the body, after checking the status is 200.
fn get(addr: &str, target: &str) -> String {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("sending the request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("reading the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET {target}: {head}"
    );
    body.to_string()
}

/// Starts Prometheus with a private config and data dir, scraping `target`
/// every second, and returns once it answers queries. Its port was free when
/// probed; another process may bind it first (Prometheus then exits saying
/// so), and the next free port is tried.
fn prometheus(dir: &tempfile::TempDir, target: &str) -> (Server, String) {
    let config = path(dir, "prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: snapshot\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    for attempt in 0..20 {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = path(dir, &format!("prometheus-{attempt}.log"));
        let mut child = Server(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", path(dir, &format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create_new(&log).unwrap())
                .spawn()
                .expect("starting prometheus (apt-get install prometheus)"),
        );
        if wait_ready(&addr, &mut child.0) {
            return (child, addr);
        }
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(said.contains("address already in use"), "prometheus exited:\n{said}");
    }
    panic!("prometheus found no free port in 20 tries");
}

/// An instant PromQL query's vector, as (labels, value) pairs.
fn query(addr: &str, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = get(addr, &format!("/api/v1/query?query={encoded}"));
    let reply: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(reply["status"], "success", "{promql}: {body}");
    reply["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].clone(),
                r["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Waits for Prometheus to answer queries at all: false if it exited first.
fn wait_ready(addr: &str, prometheus: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() || !ready(addr) {
        if prometheus.try_wait().expect("waiting for prometheus").is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "prometheus did not start on {addr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

fn ready(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = write!(stream, "GET /-/ready HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until Prometheus holds a sample of `series` taken at or after `time`
/// (a sample's own timestamp, not the query's).
fn wait_for_scrape_after(prom: &str, series: &str, time: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stamps = query(prom, &format!("min(timestamp({series}))"));
        if stamps.first().is_some_and(|(_, t)| *t >= time) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape after {time} reached prometheus: {stamps:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_same_copied_bytes_as_the_json_report() {
    if !privileged("prometheus_scrapes_the_same_copied_bytes_as_the_json_report") {
        return;
    }
    let dir = temp_dir();
    // A name of its own: the exporter and the tracer are `snapshot` too.
    let work = named(&dir, "cowwork", SNAPSHOT);
    let (_exporter, metrics) = exporter();
    let (_prometheus, prom) = prometheus(&dir, &metrics);
    // The tracer counts processes named cowwork from their exec on; spawned
    // with vfork, the workload copies nothing before it, so both tracers see
    // the same copies.
    let mut trace = trace_comm(&dir, "cowwork", false);
    let series = "snapshot_cow_copied_bytes_total{comm=\"cowwork\"}";
    // Twice: the second run's counts add to the first's, which has exited.
    for _ in 0..2 {
        let status = Command::new(&work)
            .args(["workload", "--pages", "8192", "--forks", "3"])
            .stdout(Stdio::null())
            .status()
            .expect("running the workload");
        assert!(status.success(), "workload: {status}");
        // Prometheus sees each run's end before the next starts.
        wait_for_scrape_after(&prom, series, unix_now());
    }
    // SAFETY: kill sends a signal to the tracer this test started.
    assert_eq!(unsafe { libc::kill(trace.child.id() as i32, libc::SIGINT) }, 0);
    assert!(trace.child.wait().unwrap().success());
    let traced = copied_in(&trace.report);
    assert!(
        traced >= 2 * 8192 * 4096,
        "both runs copied their pages: {traced}"
    );
    let scraped = query(&prom, &format!("sum({series})"));
    assert_eq!(scraped.len(), 1, "{scraped:?}");
    assert_eq!(
        scraped[0].1 as u64, traced,
        "prometheus's copied bytes for cowwork vs the JSON report"
    );
    let up = query(&prom, "up{job=\"snapshot\"}");
    assert_eq!(up.first().map(|(_, v)| *v), Some(1.0), "{up:?}");
}

#[test]
fn promtool_accepts_the_metrics() {
    if !privileged("promtool_accepts_the_metrics") {
        return;
    }
    let (_exporter, addr) = exporter();
    // Something forks and copies, so every family has series.
    let status = Command::new(SNAPSHOT)
        .args(["workload", "--pages", "256", "--forks", "1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = get(&addr, "/metrics");
    for name in [
        "snapshot_cow_copies_total{",
        "snapshot_cow_copied_bytes_total{",
        "snapshot_tracer_lost_records_total{",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric names a PromQL expression uses (this project's start with `snapshot_`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("snapshot_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_dashboard_query_names_a_served_metric() {
    if !privileged("every_dashboard_query_names_a_served_metric") {
        return;
    }
    let (_exporter, addr) = exporter();
    // A shell whose subshell lives on without exec: a live fork, so the
    // per-fork gauges have series too.
    let mut shell = Command::new("sh")
        .args(["-c", "(sleep 60; :) & wait"])
        .process_group(0)
        .spawn()
        .expect("running sh");
    let group = shell.id() as i32;
    let workload = Command::new(SNAPSHOT)
        .args(["workload", "--pages", "256", "--forks", "1"])
        .stdout(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = get(&addr, "/metrics");
        if text.contains("\nsnapshot_live_forks{") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: kill signals the process group this test started.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = shell.wait();
    assert!(workload.expect("running the workload").success());
    let served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("reading the dashboard"))
            .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("each panel has targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no metric");
            // The store's figures come from `snapshot run --metrics`: checked
            // in run_metrics_serve_the_store_snapshots_of_its_json_lines.
            for name in names.into_iter().filter(|n| !n.starts_with("snapshot_store_")) {
                assert!(
                    served.contains(&name.as_str()),
                    "{expr}: {name} is not served:\n{text}"
                );
            }
        }
    }
}

/// The bytes copied by every process of a `snapshot trace` JSON report.
fn copied_in(report: &std::path::Path) -> u64 {
    json(report)["processes"].as_array().unwrap().iter().map(|p| p["cow_bytes"].as_u64().unwrap()).sum()
}

/// The sum of a family's samples whose labels contain `labels` (e.g.
/// `comm="x"`), from the text exposition format.
fn sum_of(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter(|l| l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap_or_else(|e| panic!("{e}: {l}")))
        .sum()
}

#[test]
fn trace_metrics_serve_the_copied_bytes_of_its_json_report() {
    if !privileged("trace_metrics_serve_the_copied_bytes_of_its_json_report") {
        return;
    }
    let dir = temp_dir();
    let work = named(&dir, "cowtrm", SNAPSHOT);
    let mut trace = trace_comm(&dir, "cowtrm", true);
    // Twice: the first run has exited (its final record came through the
    // ring) when the second one runs.
    for _ in 0..2 {
        let status = Command::new(&work)
            .args(["workload", "--pages", "8192", "--forks", "2", "--no-pagemap"])
            .stdout(Stdio::null())
            .status()
            .expect("running the workload");
        assert!(status.success(), "workload: {status}");
    }
    // Each scrape reads the tracer afresh, and nothing named cowtrm runs
    // now: this scrape holds every copy the report will.
    let text = get(&trace.addr, "/metrics");
    let scraped = sum_of(&text, "snapshot_cow_copied_bytes_total", "comm=\"cowtrm\"") as u64;
    // SAFETY: kill sends a signal to the tracer this test started.
    assert_eq!(unsafe { libc::kill(trace.child.id() as i32, libc::SIGINT) }, 0);
    assert!(trace.child.wait().unwrap().success());
    let traced = copied_in(&trace.report);
    assert!(traced >= 2 * 2 * 8192 * 4096, "both runs copied their pages: {traced}");
    assert_eq!(scraped, traced, "--metrics copied bytes vs the JSON report:\n{text}");
}

#[test]
fn run_metrics_serve_the_store_snapshots_of_its_json_lines() {
    if !privileged("run_metrics_serve_the_store_snapshots_of_its_json_lines") {
        return;
    }
    let dir = temp_dir();
    // One snapshot (after 1 s of load; the next would be 60 s later).
    let (mut command, lines) = snapshot_run(
        &dir,
        &["--keys", "20000", "--rate", "2000", "--every", "60", "--warmup", "1", "--duration", "60", "--metrics", "127.0.0.1:0"],
    );
    let mut run = Server(command.stderr(Stdio::piped()).spawn().expect("running snapshot run"));
    // Kept open to the end: a run writing to a closed pipe would fail.
    let mut stderr = BufReader::new(run.0.stderr.take().unwrap());
    let addr = metrics_address(&mut stderr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let summary = loop {
        let text = std::fs::read_to_string(&lines).unwrap_or_default();
        let found = complete_lines(&text)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .find(|v| v["type"] == "snapshot");
        if let Some(summary) = found {
            break summary;
        }
        assert!(Instant::now() < deadline, "no snapshot summary within 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The metrics are updated before the JSON Lines are written.
    let text = get(&addr, "/metrics");
    // SAFETY: kill sends a signal to the run this test started.
    assert_eq!(unsafe { libc::kill(run.0.id() as i32, libc::SIGINT) }, 0);
    let u = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("{key}: {summary}"));
    assert_eq!(sum_of(&text, "snapshot_store_snapshots_total", ""), 1.0, "{text}");
    assert_eq!(sum_of(&text, "snapshot_store_snapshots_failed_total", ""), 0.0, "{text}");
    assert_eq!(sum_of(&text, "snapshot_store_last_snapshot_copied_bytes", "") as u64, u("copied_bytes"), "{text}");
    let duration = sum_of(&text, "snapshot_store_last_snapshot_duration_seconds", "");
    assert!((duration - summary["duration_s"].as_f64().unwrap()).abs() < 1e-6, "{duration}: {summary}");
    let fork = sum_of(&text, "snapshot_store_last_fork_seconds", "");
    assert!((fork - u("fork_usec") as f64 / 1e6).abs() < 1e-9, "{fork}: {summary}");
    // The server's and its child's own counters hold at least the fork's copies.
    let copied = sum_of(&text, "snapshot_cow_copied_bytes_total", "") as u64;
    assert!(copied >= u("copied_bytes") && copied > 0, "{copied}: {summary}\n{text}");
    assert_eq!(run.0.wait().unwrap().code(), Some(130), "128 + SIGINT");
    // Every store figure the dashboard asks for is served.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana-dashboard.json");
    let dashboard = std::fs::read_to_string(file).expect("reading the dashboard");
    let names = metric_names(&dashboard);
    let store: Vec<&String> = names.iter().filter(|n| n.starts_with("snapshot_store_")).collect();
    assert!(!store.is_empty(), "the dashboard has no store panel");
    for name in store {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is not served by snapshot run:\n{text}");
    }
}

#[test]
fn trace_metrics_count_exiting_processes_once_while_scraped() {
    if !privileged("trace_metrics_count_exiting_processes_once_while_scraped") {
        return;
    }
    let dir = temp_dir();
    let work = named(&dir, "cowexit", SNAPSHOT);
    let mut trace = trace_comm(&dir, "cowexit", true);
    let copied = |addr: &str| sum_of(&get(addr, "/metrics"), "snapshot_cow_copied_bytes_total", "comm=\"cowexit\"") as u64;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        // Scrapes as fast as they are answered, while processes exit: each
        // scrape reads the ring and the process table at some point of an exit.
        let scraper = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(copied(&trace.addr));
            }
            seen
        });
        let workers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..40 {
                        let status = Command::new(&work)
                            .args(["workload", "--pages", "64", "--forks", "1", "--no-pagemap"])
                            .stdout(Stdio::null())
                            .status()
                            .expect("running the workload");
                        assert!(status.success(), "workload: {status}");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a workload thread");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        scraper.join().expect("the scraping thread")
    });
    let last = copied(&trace.addr);
    // SAFETY: kill sends a signal to the tracer this test started.
    assert_eq!(unsafe { libc::kill(trace.child.id() as i32, libc::SIGINT) }, 0);
    assert!(trace.child.wait().unwrap().success());
    let traced = copied_in(&trace.report);
    assert!(seen.len() > 10, "only {} scrapes while the processes ran", seen.len());
    assert!(traced >= 120 * 64 * 4096, "every run copied its pages: {traced}");
    // Ground truth: 120 runs, each a parent and the child it forked. A
    // process read live and then from its final record in the same read
    // would be listed (and counted) twice.
    let report = json(&trace.report);
    let listed = report["processes"].as_array().unwrap().iter().filter(|p| p["comm"] == "cowexit").count();
    assert_eq!(listed, 2 * 120, "cowexit processes in the report: {:#}", report["processes"]);
    // Served counters never go down: a process counted twice while it exited
    // (its live entry and its final record) would stay above the report.
    let over = seen.iter().position(|&s| s > traced);
    assert!(over.is_none(), "scrape {over:?} of {} counted more than the report's {traced}: {seen:?}", seen.len());
    assert_eq!(last, traced, "--metrics copied bytes vs the JSON report after {} scrapes", seen.len());
}

#[test]
fn a_taken_port_fails_before_anything_is_loaded() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let addr = taken.local_addr().unwrap().to_string();
    // A process table size the loader refuses: were the programs loaded
    // first, this would be the error.
    let out = Command::new(SNAPSHOT)
        .args(["exporter", "--listen", &addr])
        .env("SNAPSHOT_PROCS_TABLE", "none")
        .output()
        .expect("running snapshot exporter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{addr}: cannot serve metrics there")), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("SNAPSHOT_PROCS_TABLE"), "{stderr}");
}

/// A forked child copies pages, is scraped, then execs another program: its
/// copies move to the new name but are counted once, as in the JSON report.
#[test]
fn trace_metrics_count_a_child_that_execs_once() {
    if !privileged("trace_metrics_count_a_child_that_execs_once") {
        return;
    }
    // The child writes every page of a buffer its parent never writes again: copies.
    const SCRIPT: &str = "import os, sys
buf = bytearray(4 << 20)
for i in range(0, len(buf), 4096): buf[i] = 1
pid = os.fork()
if pid == 0:
    for i in range(0, len(buf), 4096): buf[i] = 2
    print('ready', flush=True)
    sys.stdin.readline()
    os.execvp('true', ['true'])
os.waitpid(pid, 0)
print('done', flush=True)
sys.stdin.readline()
";
    let dir = temp_dir();
    let report = path(&dir, "report.json");
    let mut trace = Server(
        Command::new(SNAPSHOT)
            .args(["trace", "--metrics", "127.0.0.1:0", "--json", report.to_str().unwrap(), "-o"])
            .arg(path(&dir, "table.txt"))
            .args(["--", "python3", "-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running snapshot trace"),
    );
    // Kept open to the end: the tracer's notes go there.
    let mut stderr = BufReader::new(trace.0.stderr.take().unwrap());
    let addr = metrics_address(&mut stderr);
    let mut stdin = trace.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(trace.0.stdout.take().unwrap());
    let mut said = |word: &str| {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the script's output");
        assert_eq!(line.trim(), word);
    };
    said("ready");
    let before = get(&addr, "/metrics");
    let child = sum_of(&before, "snapshot_cow_copied_bytes_total", "comm=\"python3\"") as u64;
    writeln!(stdin).unwrap();
    said("done");
    // The child exec'd `true` and exited; nothing shares pages any more.
    let after = get(&addr, "/metrics");
    writeln!(stdin).unwrap();
    assert!(trace.0.wait().unwrap().success());
    let traced = copied_in(&report);
    assert!(child >= 1024 * 4096, "the child's copies were scraped under python3: {child}\n{before}");
    let scraped = sum_of(&after, "snapshot_cow_copied_bytes_total", "") as u64;
    assert_eq!(scraped, traced, "--metrics copied bytes (every name) vs the JSON report:\n{before}\n{after}");
}
