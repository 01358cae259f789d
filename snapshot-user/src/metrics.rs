//! The Prometheus metrics of the tracer (per process, per fork, its own
//! health) and of the store's snapshots, and the HTTP endpoint serving them.
//! One code path for `snapshot exporter` and `--metrics` on trace and run.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use prometheus::{
    Encoder as _, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    output::note,
    report::{Report, escape},
};

/// How a source's successive reports relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reports {
    /// Each report has the processes that exited since the last one once, then
    /// forgets them (`snapshot exporter`: memory stays bounded).
    Forgetting,
    /// Each report has everything since the tracer started (trace, run).
    Cumulative,
}

/// Label values, in the order of the family's label names.
type Labels = Vec<String>;

/// Families of per-process counters, indexed by `Metrics::counters`.
const COPIES: usize = 0;
const BYTES: usize = 1;
const FILE_COPIES: usize = 2;
const REUSE: usize = 3;
const FAULTS: usize = 4;
/// The tracer's health families, in the same vector: a new tracer counts them
/// from zero too, so they are retired like the per-process ones.
const LOST: usize = 5;
const UNATTRIBUTED: usize = 6;

/// Distinct `comm` label values kept before the rest are counted as
/// `OTHER_COMM`: any user can name processes at will (prctl PR_SET_NAME), and
/// every name would otherwise become series of its own, for ever.
pub const MAX_COMMS: usize = 1000;
pub const OTHER_COMM: &str = "(other)";

/// The metric families, and the totals of processes that have exited.
pub struct Metrics {
    registry: Registry,
    /// Per process (comm, or comm and pid): COPIES..FAULTS; then LOST and
    /// UNATTRIBUTED.
    counters: Vec<IntCounterVec>,
    live_forks: IntGaugeVec,
    shared_seconds: GaugeVec,
    fork_bytes: IntGaugeVec,
    /// Exited processes' counts per series: counters never go down when a
    /// process leaves the kernel's table.
    retired: HashMap<(usize, Labels), u64>,
    /// The values of the last update, for `retire_all`.
    last: HashMap<(usize, Labels), u64>,
    /// Live processes at the last update, by pid.
    seen: HashMap<u32, Seen>,
    /// Cumulative source: how many exited processes of each pid its last report had.
    exits: HashMap<u32, usize>,
    /// Cumulative source: the offsets of exited processes (pid, nth exit of
    /// that pid) that were renamed while they lived.
    exited_offsets: HashMap<(u32, usize), Parts>,
    reports: Reports,
    pid_labels: bool,
    /// The comm label values given out so far (at most MAX_COMMS).
    comms: std::collections::HashSet<String>,
    /// The store's snapshot figures, when a store is the source.
    store: Option<StoreMetrics>,
}

impl Metrics {
    pub fn new(pid_labels: bool, reports: Reports) -> Result<Metrics> {
        let who: &[&str] = if pid_labels {
            &["comm", "pid"]
        } else {
            &["comm"]
        };
        let with = |extra: &'static str| [who, &[extra]].concat();
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec> {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let mut counters = vec![
            counter(
                "snapshot_cow_copies_total",
                "Pages copied on write after fork, by page size.",
                &with("page_size"),
            )?,
            counter(
                "snapshot_cow_copied_bytes_total",
                "Bytes copied on write after fork, by page size.",
                &with("page_size"),
            )?,
            counter(
                "snapshot_file_copies_total",
                "Page-cache pages copied into private file mappings.",
                who,
            )?,
            counter(
                "snapshot_wp_reuse_faults_total",
                "Write-protect faults that copied nothing.",
                who,
            )?,
            counter(
                "snapshot_faults_total",
                "Page faults of traced processes.",
                who,
            )?,
        ];
        counters.push(counter(
            "snapshot_tracer_lost_records_total",
            "Records the tracer could not keep, by table.",
            &["table"],
        )?);
        counters.push(counter(
            "snapshot_tracer_unattributed_copies_total",
            "Copies made while no fork shared the page.",
            &[],
        )?);
        let live_forks = IntGaugeVec::new(
            Opts::new(
                "snapshot_live_forks",
                "Forks whose parent and child still share pages.",
            ),
            who,
        )?;
        let shared_seconds = GaugeVec::new(
            Opts::new(
                "snapshot_fork_shared_seconds",
                "How long the oldest live fork has shared.",
            ),
            who,
        )?;
        let fork_bytes = IntGaugeVec::new(
            Opts::new(
                "snapshot_fork_copied_bytes",
                "Bytes copied during live forks, by side (parent or child).",
            ),
            &with("side"),
        )?;
        registry.register(Box::new(live_forks.clone()))?;
        registry.register(Box::new(shared_seconds.clone()))?;
        registry.register(Box::new(fork_bytes.clone()))?;
        Ok(Metrics {
            registry,
            counters,
            live_forks,
            shared_seconds,
            fork_bytes,
            retired: HashMap::new(),
            last: HashMap::new(),
            seen: HashMap::new(),
            exits: HashMap::new(),
            exited_offsets: HashMap::new(),
            reports,
            pid_labels,
            comms: std::collections::HashSet::new(),
            store: None,
        })
    }

    fn labels(&mut self, comm: &str, pid: u32) -> Labels {
        let mut comm = escape(comm);
        if !self.comms.contains(&comm) {
            if self.comms.len() < MAX_COMMS {
                self.comms.insert(comm.clone());
            } else {
                comm = OTHER_COMM.to_string();
            }
        }
        let mut labels = vec![comm];
        if self.pid_labels {
            labels.push(pid.to_string());
        }
        labels
    }

    /// Brings every series up to the report's figures. Forgetting reports:
    /// exited processes' (reported once) join the retired totals. Live ones,
    /// and every process of a cumulative report, are added to them. A process
    /// that changed its name (exec) leaves what it counted under the old one.
    pub fn update(&mut self, report: &Report) {
        let mut live: HashMap<(usize, Labels), u64> = HashMap::new();
        let mut before = std::mem::take(&mut self.seen);
        let mut exits: HashMap<u32, usize> = HashMap::new();
        for p in &report.processes {
            let labels = self.labels(&p.comm, p.pid);
            let raw = parts(p);
            let offset = match p.exited {
                false => {
                    let offset = before.remove(&p.pid).map(|s| self.renamed(s, &labels)).unwrap_or_default();
                    self.seen.insert(p.pid, Seen { labels: labels.clone(), last: raw.clone(), offset: offset.clone() });
                    offset
                }
                true => self.exited_offset(p.pid, &labels, &mut exits, &mut before),
            };
            let totals = if p.exited && self.reports == Reports::Forgetting {
                &mut self.retired
            } else {
                &mut live
            };
            for ((family, suffix), value) in raw {
                let value = value.saturating_sub(offset.get(&(family, suffix.clone())).copied().unwrap_or(0));
                *totals.entry((family, [labels.as_slice(), &suffix].concat())).or_default() += value;
            }
        }
        if self.reports == Reports::Cumulative {
            self.exits = exits;
        }
        // The tracer's own counts since it started: never retired by a forgetting source.
        for (key, value) in health(report) {
            *live.entry(key).or_default() += value;
        }
        let mut now = self.retired.clone();
        for (key, value) in live {
            *now.entry(key).or_default() += value;
        }
        for ((family, labels), value) in &now {
            raise(&self.counters[*family], labels, *value);
        }
        self.last = now;
        self.update_forks(report);
    }

    /// What of a live process's counts its earlier names hold. Renamed since
    /// the last update, it leaves what it counted then under the old name.
    fn renamed(&mut self, seen: Seen, labels: &Labels) -> Parts {
        if seen.labels == *labels {
            return seen.offset;
        }
        for ((family, suffix), value) in &seen.last {
            let counted = value.saturating_sub(seen.offset.get(&(*family, suffix.clone())).copied().unwrap_or(0));
            *self.retired.entry((*family, [seen.labels.as_slice(), suffix].concat())).or_default() += counted;
        }
        seen.last
    }

    /// The offset of an exited process: taken from its live self when it is
    /// new in this report (the first new exit of its pid is the process
    /// live at the last update), kept for a cumulative source's next reports
    /// (its exits are in every report, in the order they happened).
    fn exited_offset(
        &mut self,
        pid: u32,
        labels: &Labels,
        exits: &mut HashMap<u32, usize>,
        before: &mut HashMap<u32, Seen>,
    ) -> Parts {
        let nth = exits.entry(pid).or_default();
        let index = *nth;
        *nth += 1;
        let new = self.reports == Reports::Forgetting || index >= self.exits.get(&pid).copied().unwrap_or(0);
        if !new {
            return self.exited_offsets.get(&(pid, index)).cloned().unwrap_or_default();
        }
        let offset = before.remove(&pid).map(|s| self.renamed(s, labels)).unwrap_or_default();
        if self.reports == Reports::Cumulative && !offset.is_empty() {
            self.exited_offsets.insert((pid, index), offset.clone());
        }
        offset
    }

    fn update_forks(&mut self, report: &Report) {
        let comms: HashMap<u32, &str> = report
            .processes
            .iter()
            .map(|p| (p.pid, p.comm.as_str()))
            .collect();
        let now_ns = crate::run::sample::monotonic_ns();
        self.live_forks.reset();
        self.shared_seconds.reset();
        self.fork_bytes.reset();
        for f in report.forks.iter().filter(|f| f.end_ns.is_none()) {
            let labels = self.labels(comms.get(&f.parent).copied().unwrap_or(""), f.parent);
            let names: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.live_forks.with_label_values(&names).inc();
            let seconds = now_ns.saturating_sub(f.start_ns) as f64 / 1e9;
            let oldest = self.shared_seconds.with_label_values(&names);
            oldest.set(oldest.get().max(seconds));
            for (side, bytes) in [("parent", f.parent_bytes), ("child", f.child_bytes)] {
                let sided = [names.as_slice(), &[side]].concat();
                self.fork_bytes
                    .with_label_values(&sided)
                    .add(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }

    /// The source is replaced by a new one that counts from zero (`snapshot
    /// run` under another page size): what was counted so far stays.
    pub fn retire_all(&mut self) {
        self.retired = std::mem::take(&mut self.last);
        // Its pids are other processes.
        self.seen.clear();
        self.exits.clear();
        self.exited_offsets.clear();
    }

    /// Adds the store's snapshot families (`snapshot run`).
    pub fn with_store(mut self) -> Result<Metrics> {
        self.store = Some(StoreMetrics::new(&self.registry)?);
        Ok(self)
    }

    pub fn store(&self) -> Option<&StoreMetrics> {
        self.store.as_ref()
    }

    /// The text exposition format of every family.
    pub fn encode(&self) -> Result<String> {
        let mut text = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut text).context("encoding metrics")?;
        String::from_utf8(text).context("encoding metrics")
    }
}

/// A process's counter values by family and the labels after comm (and pid): the page size.
type Parts = HashMap<(usize, Vec<String>), u64>;

/// A live process as the last update counted it.
struct Seen {
    labels: Labels,
    /// Its counts then.
    last: Parts,
    /// What of them its earlier names hold.
    offset: Parts,
}

/// One process's counter values.
fn parts(p: &crate::report::Process) -> Parts {
    let mut out: Parts = [
        ((FILE_COPIES, Vec::new()), p.file_copies),
        ((REUSE, Vec::new()), p.wp_reuse),
        ((FAULTS, Vec::new()), p.faults),
    ]
    .into();
    for (&size, &n) in &p.copies_by_size {
        out.insert((COPIES, vec![size.to_string()]), n);
        out.insert((BYTES, vec![size.to_string()]), n * size);
    }
    out
}

/// The tracer's health counter values, keyed like `series`.
fn health(report: &Report) -> Vec<((usize, Labels), u64)> {
    let h = &report.health;
    let mut out: Vec<((usize, Labels), u64)> = [
        ("procs", h.procs_table_full),
        ("forks", h.forks_table_full),
        ("pending", h.pending_table_full),
        ("ring", h.ring_full),
    ]
    .into_iter()
    .map(|(table, value)| ((LOST, vec![table.to_string()]), value))
    .collect();
    out.push(((UNATTRIBUTED, Vec::new()), h.unattributed_copies));
    out
}

/// Counters only go up: a process that left the kernel's table before its
/// final record was read would otherwise dip for one scrape.
fn raise(vec: &IntCounterVec, labels: &[String], value: u64) {
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let counter = vec.with_label_values(&names);
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}


/// The store's snapshots (BGSAVE forks), as `snapshot run` measures them.
pub struct StoreMetrics {
    pub snapshots: IntCounter,
    pub failed: IntCounter,
    pub fork_seconds: Gauge,
    pub duration_seconds: Gauge,
    pub copied_bytes: IntGauge,
    pub predicted_bytes: IntGauge,
    pub running: IntGauge,
    pub running_copied_bytes: IntGauge,
    pub running_predicted_peak_bytes: IntGauge,
}

impl StoreMetrics {
    fn new(registry: &Registry) -> Result<StoreMetrics> {
        let counter = |name: &str, help: &str| -> Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<Gauge> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let int_gauge = |name: &str, help: &str| -> Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(StoreMetrics {
            snapshots: counter("snapshot_store_snapshots_total", "Snapshots (BGSAVE forks) that ended.")?,
            failed: counter(
                "snapshot_store_snapshots_failed_total",
                "Snapshots that ended with the store reporting a failed save.",
            )?,
            fork_seconds: gauge("snapshot_store_last_fork_seconds", "The store's stall in fork() at the last snapshot.")?,
            duration_seconds: gauge(
                "snapshot_store_last_snapshot_duration_seconds",
                "How long the last snapshot's child shared pages with the store.",
            )?,
            copied_bytes: int_gauge(
                "snapshot_store_last_snapshot_copied_bytes",
                "Bytes copied on write (store and child) during the last snapshot.",
            )?,
            predicted_bytes: int_gauge(
                "snapshot_store_last_snapshot_predicted_bytes",
                "Bytes the model predicted for the last snapshot from its writes.",
            )?,
            running: int_gauge("snapshot_store_snapshot_running", "1 while a snapshot's child shares pages, else 0.")?,
            running_copied_bytes: int_gauge(
                "snapshot_store_running_snapshot_copied_bytes",
                "Bytes copied so far by the snapshot in progress (0 when none).",
            )?,
            running_predicted_peak_bytes: int_gauge(
                "snapshot_store_running_snapshot_predicted_peak_bytes",
                "Predicted copied bytes at the end of the snapshot in progress (0 when none).",
            )?,
        })
    }
}

/// Metrics that a tracing loop updates and an HTTP thread serves.
pub type Shared = Arc<Mutex<Metrics>>;

/// The metrics, for an update or an encoding.
pub fn lock(metrics: &Shared) -> Result<std::sync::MutexGuard<'_, Metrics>> {
    metrics.lock().map_err(|_| anyhow!("the metrics lock was poisoned"))
}

/// A request to the owner of the tracer to bring the metrics up to date; it
/// answers on the channel inside once done.
pub type Refresh = tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::SyncSender<()>>;

/// Binds `addr` (before capabilities are dropped: a low port needs one) and
/// says where.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = listen(addr)?;
    announce(&listener)?;
    Ok(listener)
}

/// Binds `addr` without a word: the exporter binds before loading, and says
/// where it serves only once it is tracing (what its users wait for).
pub fn listen(addr: SocketAddr) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).with_context(|| format!("{addr}: cannot serve metrics there"))
}

pub fn announce(listener: &std::net::TcpListener) -> Result<()> {
    // The bound address: with port 0 the kernel chose it.
    let bound = listener.local_addr().context("reading the bound address")?;
    note(&format!("serving metrics on http://{bound}/metrics"));
    Ok(())
}

/// The HTTP server on a bound listener. Its threads start here, with this
/// thread's signal mask: `trace` blocks its signals (read from a signalfd)
/// before this, or a Ctrl-C would be taken by an HTTP thread.
pub fn http(listener: std::net::TcpListener) -> Result<tiny_http::Server> {
    tiny_http::Server::from_listener(listener, None).map_err(|e| anyhow!("serving HTTP: {e}"))
}

/// Serves `metrics` from a thread of its own until the process ends. With
/// `refresh`, each scrape first asks the tracer's owner for fresh figures.
pub fn serve_in_background(
    listener: std::net::TcpListener,
    metrics: Shared,
    refresh: Option<Refresh>,
) -> Result<()> {
    let server = http(listener)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            serve(&server, || {
                if let Some(refresh) = &refresh {
                    let (done, wait) = std::sync::mpsc::sync_channel(1);
                    // Gone (tracing ended) or slow: the last figures are served.
                    if refresh.send(done).is_ok() {
                        let _ = wait.recv_timeout(Duration::from_secs(5));
                    }
                }
                lock(&metrics)?.encode()
            })
        })
        .context("starting the metrics thread")?;
    Ok(())
}

/// Answers requests: `scrape` makes the /metrics text.
pub fn serve(server: &tiny_http::Server, mut scrape: impl FnMut() -> Result<String>) {
    for request in server.incoming_requests() {
        let response = respond(request.url(), &mut scrape);
        // A client that went away loses only its own answer.
        let _ = request.respond(response);
    }
}

fn respond(url: &str, scrape: &mut impl FnMut() -> Result<String>) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = |value: &str| tiny_http::Header::from_bytes("Content-Type", value).expect("a valid header");
    match url.split('?').next() {
        Some("/metrics") => match scrape() {
            Ok(text) => tiny_http::Response::from_string(text).with_header(header(prometheus::TEXT_FORMAT)),
            Err(error) => {
                tiny_http::Response::from_string(format!("reading the tracer: {}\n", crate::error_text(&error)))
                    .with_status_code(500)
            }
        },
        Some("/") => tiny_http::Response::from_string("snapshot metrics at /metrics\n")
            .with_header(header("text/plain; charset=utf-8")),
        _ => tiny_http::Response::from_string("not found: metrics are at /metrics\n").with_status_code(404),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Process;

    fn process(pid: u32, bytes: u64, exited: bool) -> Process {
        Process::copying(pid, bytes, exited)
    }

    fn report(processes: Vec<Process>) -> Report {
        Report::of(1.0, processes)
    }

    fn copied(metrics: &Metrics) -> u64 {
        metrics.counters[BYTES].with_label_values(&["w", "4096"]).get()
    }

    #[test]
    fn a_cumulative_source_counts_an_exited_process_once() {
        let mut metrics = Metrics::new(false, Reports::Cumulative).unwrap();
        let done = report(vec![process(10, 8192, true), process(11, 4096, false)]);
        metrics.update(&done);
        metrics.update(&done);
        assert_eq!(copied(&metrics), 12288);
    }

    #[test]
    fn a_forgetting_source_keeps_what_exited_processes_copied() {
        let mut metrics = Metrics::new(false, Reports::Forgetting).unwrap();
        metrics.update(&report(vec![process(10, 8192, true), process(11, 4096, false)]));
        // pid 10 was reported once and forgotten; pid 11 copied more.
        metrics.update(&report(vec![process(11, 16384, false)]));
        assert_eq!(copied(&metrics), 8192 + 16384);
    }

    #[test]
    fn a_new_cumulative_source_adds_to_what_the_old_one_counted() {
        let mut metrics = Metrics::new(false, Reports::Cumulative).unwrap();
        metrics.update(&report(vec![process(10, 8192, false)]));
        metrics.retire_all();
        metrics.update(&report(vec![process(20, 4096, false)]));
        assert_eq!(copied(&metrics), 12288);
    }

    #[test]
    fn a_new_cumulative_source_adds_to_the_old_ones_health_counts() {
        let mut metrics = Metrics::new(false, Reports::Cumulative).unwrap();
        let mut first = report(Vec::new());
        first.health.ring_full = 5;
        first.health.unattributed_copies = 3;
        metrics.update(&first);
        metrics.retire_all();
        let mut second = report(Vec::new());
        second.health.ring_full = 2;
        second.health.unattributed_copies = 1;
        metrics.update(&second);
        assert_eq!(metrics.counters[LOST].with_label_values(&["ring"]).get(), 7);
        assert_eq!(metrics.counters[UNATTRIBUTED].with_label_values::<&str>(&[]).get(), 4);
    }

    fn all_copied(metrics: &Metrics) -> u64 {
        let text = metrics.encode().unwrap();
        let values = text.lines().filter(|l| l.starts_with("snapshot_cow_copied_bytes_total{"));
        values.map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum()
    }

    fn named(comm: &str, pid: u32, bytes: u64, exited: bool) -> Process {
        Process { comm: comm.into(), ..process(pid, bytes, exited) }
    }

    #[test]
    fn a_process_that_execs_moves_to_its_new_name_without_counting_twice() {
        for reports in [Reports::Cumulative, Reports::Forgetting] {
            let mut metrics = Metrics::new(false, reports).unwrap();
            // A forked shell copied 2 pages, then exec'd ls, which copied 1 more and exited.
            metrics.update(&report(vec![named("sh", 10, 4096, false), named("sh", 11, 8192, false)]));
            metrics.update(&report(vec![named("sh", 10, 4096, false), named("ls", 11, 12288, false)]));
            assert_eq!(all_copied(&metrics), 16384, "{reports:?}");
            let exited = named("ls", 11, 12288, true);
            metrics.update(&report(vec![named("sh", 10, 4096, false), exited.clone()]));
            let after = match reports {
                Reports::Cumulative => vec![named("sh", 10, 8192, false), exited],
                Reports::Forgetting => vec![named("sh", 10, 8192, false)],
            };
            metrics.update(&report(after));
            // What the JSON report adds up to: 2 pages of sh, 3 of sh-then-ls.
            assert_eq!(all_copied(&metrics), 8192 + 12288, "{reports:?}");
            let by = |comm: &str| metrics.counters[BYTES].with_label_values(&[comm, "4096"]).get();
            assert_eq!((by("sh"), by("ls")), (8192 + 8192, 4096), "{reports:?}");
        }
    }

    #[test]
    fn a_pid_used_again_after_a_rename_is_a_new_process() {
        let mut metrics = Metrics::new(false, Reports::Cumulative).unwrap();
        metrics.update(&report(vec![named("sh", 11, 8192, false)]));
        metrics.update(&report(vec![named("ls", 11, 12288, false)]));
        // ls exited; a new sh got pid 11.
        metrics.update(&report(vec![named("ls", 11, 12288, true), named("sh", 11, 4096, false)]));
        metrics.update(&report(vec![named("ls", 11, 12288, true), named("sh", 11, 4096, false)]));
        assert_eq!(all_copied(&metrics), 12288 + 4096);
    }

    #[test]
    fn names_past_the_limit_share_one_series() {
        let mut metrics = Metrics::new(false, Reports::Forgetting).unwrap();
        let many: Vec<Process> = (0..MAX_COMMS as u32 + 50)
            .map(|pid| Process { comm: format!("p{pid}"), ..process(pid, 4096, true) })
            .collect();
        metrics.update(&report(many));
        let text = metrics.encode().unwrap();
        let series = text.lines().filter(|l| l.starts_with("snapshot_cow_copied_bytes_total{")).count();
        assert_eq!(series, MAX_COMMS + 1, "{text}");
        let other = metrics.counters[BYTES].with_label_values(&[OTHER_COMM, "4096"]).get();
        assert_eq!(other, 50 * 4096);
    }
}
