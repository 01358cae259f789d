//! `snapshot exporter`: the tracer's figures for every process as Prometheus
//! metrics over HTTP, read afresh at each scrape.
use std::{collections::HashMap, net::SocketAddr, process::ExitCode};

use anyhow::{Context, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use clap::Args;
use prometheus::{Encoder as _, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    loader::{self, Loaded, Selection},
    output::note,
    privilege,
    report::{Collector, Report, escape},
};

#[derive(Args, Debug)]
pub struct ExporterArgs {
    /// Address to serve /metrics on (9435 is the port registered for ebpf_exporter).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9435")]
    pub listen: SocketAddr,
    /// Label series by pid as well as comm. Off by default: every process
    /// that ever ran would become a series of its own.
    #[arg(long)]
    pub pid_labels: bool,
}

/// Label values, in the order of the family's label names.
type Labels = Vec<String>;

/// Families of per-process counters, indexed by `Metrics::counters`.
const COPIES: usize = 0;
const BYTES: usize = 1;
const FILE_COPIES: usize = 2;
const REUSE: usize = 3;
const FAULTS: usize = 4;

/// The metric families, and the totals of processes that have exited.
struct Metrics {
    registry: Registry,
    /// Per process (comm, or comm and pid): COPIES..FAULTS.
    counters: Vec<IntCounterVec>,
    live_forks: IntGaugeVec,
    shared_seconds: GaugeVec,
    fork_bytes: IntGaugeVec,
    lost: IntCounterVec,
    unattributed: IntCounterVec,
    /// Exited processes' counts per series: counters never go down when a
    /// process leaves the kernel's table.
    retired: HashMap<(usize, Labels), u64>,
    pid_labels: bool,
}

impl Metrics {
    fn new(pid_labels: bool) -> Result<Metrics> {
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
        let counters = vec![
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
        let lost = counter(
            "snapshot_tracer_lost_records_total",
            "Records the tracer could not keep, by table.",
            &["table"],
        )?;
        let unattributed = counter(
            "snapshot_tracer_unattributed_copies_total",
            "Copies made while no fork shared the page.",
            &[],
        )?;
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
            lost,
            unattributed,
            retired: HashMap::new(),
            pid_labels,
        })
    }

    fn labels(&self, comm: &str, pid: u32) -> Labels {
        let mut labels = vec![escape(comm)];
        if self.pid_labels {
            labels.push(pid.to_string());
        }
        labels
    }

    /// Brings every series up to the report's figures: exited processes'
    /// (reported once, then forgotten) join the retired totals, live ones
    /// are added to them.
    fn update(&mut self, report: &Report) {
        let mut live: HashMap<(usize, Labels), u64> = HashMap::new();
        for p in &report.processes {
            let labels = self.labels(&p.comm, p.pid);
            let totals = if p.exited {
                &mut self.retired
            } else {
                &mut live
            };
            for (key, value) in series(p, labels) {
                *totals.entry(key).or_default() += value;
            }
        }
        let mut now = self.retired.clone();
        for (key, value) in live {
            *now.entry(key).or_default() += value;
        }
        for ((family, labels), value) in now {
            raise(&self.counters[family], &labels, value);
        }
        self.update_forks(report);
        self.update_health(report);
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

    fn update_health(&mut self, report: &Report) {
        let h = &report.health;
        for (table, value) in [
            ("procs", h.procs_table_full),
            ("forks", h.forks_table_full),
            ("pending", h.pending_table_full),
            ("ring", h.ring_full),
        ] {
            raise(&self.lost, &[table.to_string()], value);
        }
        raise(&self.unattributed, &[], h.unattributed_copies);
    }
}

/// One process's counter values, keyed by family index and labels.
fn series(p: &crate::report::Process, base: Labels) -> Vec<((usize, Labels), u64)> {
    let mut out = vec![
        ((FILE_COPIES, base.clone()), p.file_copies),
        ((REUSE, base.clone()), p.wp_reuse),
        ((FAULTS, base.clone()), p.faults),
    ];
    for (&size, &n) in &p.copies_by_size {
        let mut sized = base.clone();
        sized.push(size.to_string());
        out.push(((COPIES, sized.clone()), n));
        out.push(((BYTES, sized), n * size));
    }
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

/// The tracer of every process, read on demand.
pub struct Source {
    loaded: Loaded,
    ring: RingBuf<MapData>,
    collector: Collector,
    started: std::time::Instant,
}

impl Source {
    /// Loads and attaches the programs for every process.
    pub fn open() -> Result<Source> {
        let mut loaded = loader::load_all(&Selection {
            all: true,
            comm: None,
            stacks: false,
        })?;
        let ring = RingBuf::try_from(loaded.ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        Ok(Source {
            loaded,
            ring,
            collector: Collector::default(),
            started: std::time::Instant::now(),
        })
    }

    /// What was counted since the last read's exited processes: those are
    /// reported once.
    pub fn read(&mut self) -> Result<Report> {
        self.collector.drain(&mut self.ring);
        let report = self
            .collector
            .report(&mut self.loaded, self.started.elapsed().as_secs_f64())?;
        // Their figures now live in Metrics::retired.
        self.collector.forget();
        Ok(report)
    }
}

pub fn run(args: ExporterArgs) -> Result<ExitCode> {
    let mut source = Source::open()?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("--listen {}: cannot serve there", args.listen))?;
    // The bound address: with port 0 the kernel chose it.
    let bound = listener.local_addr().context("reading the bound address")?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow!("serving HTTP: {e}"))?;
    privilege::drop_capabilities(&privilege::kept_to_read_maps())?;
    let mut metrics = Metrics::new(args.pid_labels).context("registering metrics")?;
    note(&format!("serving metrics on http://{bound}/metrics"));
    for request in server.incoming_requests() {
        let response = respond(request.url(), &mut source, &mut metrics);
        // A client that went away loses only its own answer.
        let _ = request.respond(response);
    }
    Ok(ExitCode::SUCCESS)
}

fn respond(
    url: &str,
    source: &mut Source,
    metrics: &mut Metrics,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header =
        |value: &str| tiny_http::Header::from_bytes("Content-Type", value).expect("a valid header");
    match url.split('?').next() {
        Some("/metrics") => match scrape(source, metrics) {
            Ok(text) => {
                tiny_http::Response::from_string(text).with_header(header(prometheus::TEXT_FORMAT))
            }
            Err(error) => tiny_http::Response::from_string(format!(
                "reading the tracer: {}\n",
                crate::error_text(&error)
            ))
            .with_status_code(500),
        },
        Some("/") => tiny_http::Response::from_string("snapshot exporter: metrics at /metrics\n")
            .with_header(header("text/plain; charset=utf-8")),
        _ => tiny_http::Response::from_string("not found: metrics are at /metrics\n")
            .with_status_code(404),
    }
}

fn scrape(source: &mut Source, metrics: &mut Metrics) -> Result<String> {
    let report = source.read()?;
    metrics.update(&report);
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut text)
        .context("encoding metrics")?;
    String::from_utf8(text).context("encoding metrics")
}
