//! One sample per interval from the three sources (tracer, the server's
//! INFO, the load generator) and /proc, and one summary per finished
//! snapshot. Sinks only render these.
use std::{collections::BTreeMap, sync::Arc, time::Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    args::Method,
    load::Shared,
    predict::{self, Model},
    resp::{Conn, Info},
    tracer::{Counts, ForkView, Tracer, View},
    watch,
};

#[derive(Serialize, Clone, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
        }
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Split {
    pub child_alive: Latency,
    pub no_child: Latency,
}

/// One interval.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Sample {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds since the load started.
    pub t_s: f64,
    pub interval_s: f64,
    pub writes_per_s: f64,
    pub reads_per_s: f64,
    pub errors: u64,
    pub copies_per_s: f64,
    pub copied_bytes_per_s: f64,
    /// Copies by page size (bytes) in this interval.
    pub copies_by_size: BTreeMap<u64, u64>,
    /// Since the start: the server's and its children's copies.
    pub cow_copies_total: u64,
    pub cow_bytes_total: u64,
    pub snapshot: Option<Running>,
    pub parent_rss_bytes: u64,
    pub child_rss_bytes: Option<u64>,
    pub used_memory_bytes: u64,
    pub mem_available_bytes: u64,
    pub latency: Split,
    /// `--stacks`: the code paths and mappings of the copies since the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<super::stacks::Stacks>,
}

/// The snapshot in progress, as far as it got.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Running {
    pub child_pid: u32,
    pub elapsed_s: f64,
    pub copied_bytes: u64,
    pub copies: u64,
    pub writes: u64,
    pub expected_duration_s: f64,
    pub predicted_peak_bytes: u64,
    /// The prediction exceeds MemAvailable: the snapshot may not fit.
    pub warning: Option<String>,
}

/// A finished snapshot.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub index: usize,
    pub child_pid: u32,
    /// Seconds since the load started.
    pub started_at_s: f64,
    /// fork, redirect or forkless.
    pub method: &'static str,
    /// The parent's stall at the start: fork() (INFO latest_fork_usec) or the forkless
    /// set-up (INFO forkless_last_setup_usec).
    pub fork_usec: u64,
    pub duration_s: f64,
    pub copies: u64,
    pub copied_bytes: u64,
    pub copies_by_size: BTreeMap<u64, u64>,
    pub copies_per_s: f64,
    pub dataset_bytes: u64,
    /// copied_bytes / dataset_bytes.
    pub copied_share: f64,
    pub writes: u64,
    pub written_bytes: u64,
    /// Bytes copied per byte written.
    pub amplification: f64,
    pub writes_per_s: f64,
    pub latency: Split,
    pub parent_rss_peak_bytes: u64,
    pub child_rss_peak_bytes: u64,
    /// Peak Pss of server + child above the server's Pss before the snapshot
    /// (sampled every 100 ms).
    pub extra_memory_peak_bytes: u64,
    /// Forkless: bytes of old versions the store copied because a write came
    /// first (INFO forkless_copied_before_write_bytes).
    pub copied_before_write_bytes: Option<u64>,
    /// The child's own measure (smaps Private_Dirty, INFO rdb_last_cow_size).
    pub private_dirty_bytes: Option<u64>,
    /// The store's verdict on the save (INFO rdb_last_bgsave_status: ok or err).
    pub save_status: Option<String>,
    /// The model with this snapshot's real write count and duration.
    pub predicted_bytes: u64,
    /// What was predicted at the first sample of the snapshot.
    pub predicted_at_start_bytes: u64,
    /// (predicted - measured) / measured.
    pub prediction_error: f64,
    pub mem_available_bytes: u64,
}

/// Totals at the end of the run.
#[derive(Serialize, Clone, Debug, Default)]
pub struct End {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_s: f64,
    pub writes: u64,
    pub reads: u64,
    pub errors: u64,
    pub server_copies: u64,
    pub server_bytes: u64,
    pub children_copies: u64,
    pub children_bytes: u64,
    pub copies_by_size: BTreeMap<u64, u64>,
    pub snapshots: usize,
    /// Records the tracer lost (full tables or ring): counts incomplete when > 0.
    pub tracer_lost: u64,
    pub latency_no_child: Latency,
}

/// A snapshot seen but not yet summarised.
struct Open {
    fork: ForkView,
    started_at_s: f64,
    writes_alive_at_start: u64,
    by_size_at_start: BTreeMap<u64, u64>,
    predicted_at_start: Option<u64>,
    fork_usec: u64,
    parent_rss_peak: u64,
    child_rss_peak: u64,
}

pub struct Sampler {
    tracer: Tracer,
    conn: Conn,
    shared: Arc<Shared>,
    pid: u32,
    method: Method,
    /// Forkless: the server's counts before the open save began.
    forkless_base: Option<(u64, Counts)>,
    model: Model,
    value_size: u64,
    dataset_bytes: u64,
    start: Instant,
    last_at: Instant,
    last_view: View,
    last_writes: u64,
    last_reads: u64,
    last_writes_alive: u64,
    open: Option<Open>,
    done: Vec<u64>,
    previous_duration: Option<f64>,
    pub summaries: Vec<Summary>,
}

pub struct Setup {
    pub tracer: Tracer,
    pub conn: Conn,
    pub shared: Arc<Shared>,
    pub pid: u32,
    pub method: Method,
    pub model: Model,
    pub value_size: u64,
    pub dataset_bytes: u64,
}

impl Sampler {
    pub fn new(mut s: Setup) -> Result<Sampler> {
        let last_view = s.tracer.read()?;
        let now = Instant::now();
        Ok(Sampler {
            tracer: s.tracer,
            conn: s.conn,
            shared: s.shared,
            pid: s.pid,
            method: s.method,
            forkless_base: None,
            model: s.model,
            value_size: s.value_size,
            dataset_bytes: s.dataset_bytes,
            start: now,
            last_at: now,
            last_view,
            last_writes: 0,
            last_reads: 0,
            last_writes_alive: 0,
            open: None,
            done: Vec::new(),
            previous_duration: None,
            summaries: Vec::new(),
        })
    }

    /// True while a snapshot this sampler saw has not been summarised.
    pub fn snapshot_open(&self) -> bool {
        self.open.is_some()
    }

    /// Takes a sample; returns it and the snapshot that ended in it, if any.
    pub fn sample(&mut self) -> Result<(Sample, Option<Summary>)> {
        let view = self.tracer.read()?;
        let info = self.conn.call(&["INFO", "persistence", "stats", "memory"])?.text()?;
        let info = Info::parse(&info);
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-6);
        let t_s = now.duration_since(self.start).as_secs_f64();
        let (writes, reads, errors, writes_alive, latency) = self.take_load();
        let children = watch::children(self.pid);
        let child_rss = children.first().and_then(|&c| rss(c));
        let parent_rss = rss(self.pid).unwrap_or(0);
        let total = sum(&view.server, &view.children);
        let last = sum(&self.last_view.server, &self.last_view.children);
        let mut sample = Sample {
            kind: "interval",
            t_s,
            interval_s: dt,
            writes_per_s: (writes - self.last_writes) as f64 / dt,
            reads_per_s: (reads - self.last_reads) as f64 / dt,
            errors,
            copies_per_s: (total.copies - last.copies.min(total.copies)) as f64 / dt,
            copied_bytes_per_s: (total.bytes - last.bytes.min(total.bytes)) as f64 / dt,
            copies_by_size: diff(&total.by_size, &last.by_size),
            cow_copies_total: total.copies,
            cow_bytes_total: total.bytes,
            snapshot: None,
            parent_rss_bytes: parent_rss,
            child_rss_bytes: child_rss,
            used_memory_bytes: info.num("used_memory").unwrap_or(0),
            mem_available_bytes: mem_available(),
            latency,
            stacks: view.stacks.clone(),
        };
        let forks = self.forks(&view);
        self.track(&forks, &info, &sample, writes_alive, t_s);
        sample.snapshot = self.running(&forks, &info, writes_alive, sample.writes_per_s, sample.mem_available_bytes);
        let summary = self.finish(&forks, &info, &sample, writes_alive, total);
        self.last_at = now;
        self.last_writes = writes;
        self.last_reads = reads;
        self.last_writes_alive = writes_alive;
        self.last_view = view;
        Ok((sample, summary))
    }

    fn take_load(&mut self) -> (u64, u64, u64, u64, Split) {
        let mut stats = self.shared.lock();
        let split = Split { child_alive: Latency::of(&stats.interval.alive), no_child: Latency::of(&stats.interval.idle) };
        stats.reset_interval();
        (stats.writes, stats.reads, stats.errors, stats.writes_alive, split)
    }

    /// The snapshots so far: the tracer's forks, or the forkless saves the
    /// watcher saw (no child: the server's own copies during the save count).
    fn forks(&mut self, view: &View) -> Vec<ForkView> {
        if self.method != Method::Forkless {
            return view.forks.clone();
        }
        let saves = self.shared.saves.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(save) = saves.into_iter().find(|s| !self.done.contains(&s.start_ns)) else { return Vec::new() };
        let base = match &self.forkless_base {
            Some((start, counts)) if *start == save.start_ns => counts.clone(),
            // First seen now: it began after the last sample, whose counts are the base.
            _ => self.last_view.server.clone(),
        };
        self.forkless_base = Some((save.start_ns, base.clone()));
        vec![ForkView {
            child: 0,
            start_ns: save.start_ns,
            end_ns: save.end_ns,
            copies: view.server.copies.saturating_sub(base.copies),
            bytes: view.server.bytes.saturating_sub(base.bytes),
        }]
    }

    /// The parent's stall at the start of the last snapshot.
    fn stall_usec(&self, info: &Info) -> Option<u64> {
        match self.method {
            Method::Forkless => info.num("forkless_last_setup_usec"),
            _ => info.num("latest_fork_usec"),
        }
    }

    /// Opens a snapshot for the first fork not seen before.
    fn track(&mut self, forks: &[ForkView], info: &Info, sample: &Sample, writes_alive: u64, t_s: f64) {
        if let Some(open) = &mut self.open {
            open.parent_rss_peak = open.parent_rss_peak.max(sample.parent_rss_bytes);
            open.child_rss_peak = open.child_rss_peak.max(sample.child_rss_bytes.unwrap_or(0));
            return;
        }
        let Some(fork) = forks.iter().find(|f| !self.done.contains(&f.start_ns)) else { return };
        let elapsed = fork.end_ns.unwrap_or_else(monotonic_ns).saturating_sub(fork.start_ns) as f64 / 1e9;
        if let Some(buckets) = info.num("dataset_table_buckets") {
            self.model.set_buckets(buckets);
        }
        // The counters from before the fork: the last sample's.
        let before = sum(&self.last_view.server, &self.last_view.children);
        self.open = Some(Open {
            fork: fork.clone(),
            started_at_s: (t_s - elapsed).max(0.0),
            // Writes only count as "alive" while a child lives: the last
            // sample's count is the count at the fork.
            writes_alive_at_start: self.last_writes_alive.min(writes_alive),
            by_size_at_start: before.by_size,
            predicted_at_start: None,
            fork_usec: self.stall_usec(info).unwrap_or(0),
            parent_rss_peak: sample.parent_rss_bytes,
            child_rss_peak: sample.child_rss_bytes.unwrap_or(0),
        });
    }

    fn running(&mut self, forks: &[ForkView], info: &Info, writes_alive: u64, rate: f64, available: u64) -> Option<Running> {
        let open = self.open.as_mut()?;
        let fork = forks.iter().find(|f| f.start_ns == open.fork.start_ns)?;
        if fork.end_ns.is_some() {
            return None;
        }
        let elapsed = monotonic_ns().saturating_sub(fork.start_ns) as f64 / 1e9;
        let progress = match (info.num("current_save_keys_processed"), info.num("current_save_keys_total")) {
            (Some(done), Some(total)) if total > 0 => Some(done as f64 / total as f64),
            _ => None,
        };
        let expected = predict::expected_duration(elapsed, progress, self.previous_duration, self.dataset_bytes as f64);
        let writes = writes_alive - open.writes_alive_at_start.min(writes_alive);
        // Writes so far, plus the rest of the expected duration at the current rate.
        let predicted = self.model.copied_bytes(writes as f64 + rate * (expected - elapsed).max(0.0)) as u64;
        open.predicted_at_start.get_or_insert(predicted);
        let warning = (predicted > available).then(|| {
            format!(
                "predicted {} of copies exceeds MemAvailable {}",
                crate::report::human(predicted),
                crate::report::human(available)
            )
        });
        Some(Running {
            child_pid: fork.child,
            elapsed_s: elapsed,
            copied_bytes: fork.bytes,
            copies: fork.copies,
            writes,
            expected_duration_s: expected,
            predicted_peak_bytes: predicted,
            warning,
        })
    }

    /// Summarises the open snapshot once its fork ended and the server reaped the child.
    fn finish(&mut self, forks: &[ForkView], info: &Info, sample: &Sample, writes_alive: u64, total: Counts) -> Option<Summary> {
        let open = self.open.as_ref()?;
        let fork = forks.iter().find(|f| f.start_ns == open.fork.start_ns)?;
        let end_ns = fork.end_ns?;
        if info.num("rdb_bgsave_in_progress").unwrap_or(0) != 0 {
            return None;
        }
        let open = self.open.take()?;
        self.done.push(fork.start_ns);
        let duration = end_ns.saturating_sub(fork.start_ns) as f64 / 1e9;
        self.previous_duration = Some(duration);
        let writes = writes_alive - open.writes_alive_at_start.min(writes_alive);
        let written = writes * self.value_size;
        // The model is the kernel's copy-on-write; a forkless save has none.
        let predicted = match self.method {
            Method::Forkless => 0,
            _ => self.model.copied_bytes(writes as f64) as u64,
        };
        let latency = {
            let mut stats = self.shared.lock();
            let split = Split { child_alive: Latency::of(&stats.run.alive), no_child: Latency::of(&stats.run.idle) };
            // The next snapshot's "alive" latencies start from here.
            stats.reset_snapshot();
            split
        };
        let summary = Summary {
            kind: "snapshot",
            index: self.summaries.len() + 1,
            child_pid: fork.child,
            started_at_s: open.started_at_s,
            method: self.method.name(),
            fork_usec: self.stall_usec(info).unwrap_or(open.fork_usec),
            duration_s: duration,
            copies: fork.copies,
            copied_bytes: fork.bytes,
            copies_by_size: diff(&total.by_size, &open.by_size_at_start),
            copies_per_s: fork.copies as f64 / duration.max(1e-9),
            dataset_bytes: self.dataset_bytes,
            copied_share: fork.bytes as f64 / self.dataset_bytes.max(1) as f64,
            writes,
            written_bytes: written,
            amplification: if written > 0 { fork.bytes as f64 / written as f64 } else { 0.0 },
            writes_per_s: writes as f64 / duration.max(1e-9),
            latency,
            parent_rss_peak_bytes: open.parent_rss_peak.max(sample.parent_rss_bytes),
            child_rss_peak_bytes: open.child_rss_peak,
            extra_memory_peak_bytes: self.shared.memory.lock().unwrap_or_else(|e| e.into_inner()).extra(),
            copied_before_write_bytes: match self.method {
                Method::Forkless => info.num("forkless_copied_before_write_bytes"),
                _ => None,
            },
            private_dirty_bytes: info.num("rdb_last_cow_size"),
            save_status: info.get("rdb_last_bgsave_status").map(crate::run::escape),
            predicted_bytes: predicted,
            predicted_at_start_bytes: open.predicted_at_start.unwrap_or(predicted),
            prediction_error: (predicted as f64 - fork.bytes as f64) / (fork.bytes.max(1) as f64),
            mem_available_bytes: sample.mem_available_bytes,
        };
        self.summaries.push(summary.clone());
        Some(summary)
    }

    /// The totals for the end of the run.
    pub fn end(&mut self) -> Result<End> {
        let view = self.tracer.read()?;
        let stats = self.shared.lock();
        let total = sum(&view.server, &view.children);
        Ok(End {
            kind: "end",
            duration_s: self.start.elapsed().as_secs_f64(),
            writes: stats.writes,
            reads: stats.reads,
            errors: stats.errors,
            server_copies: view.server.copies,
            server_bytes: view.server.bytes,
            children_copies: view.children.copies,
            children_bytes: view.children.bytes,
            copies_by_size: total.by_size,
            snapshots: self.summaries.len(),
            tracer_lost: view.lost,
            latency_no_child: Latency::of(&stats.run.idle),
        })
    }
}

fn sum(a: &Counts, b: &Counts) -> Counts {
    let mut by_size = a.by_size.clone();
    for (size, n) in &b.by_size {
        *by_size.entry(*size).or_default() += n;
    }
    Counts { copies: a.copies + b.copies, bytes: a.bytes + b.bytes, by_size }
}

fn diff(now: &BTreeMap<u64, u64>, before: &BTreeMap<u64, u64>) -> BTreeMap<u64, u64> {
    now.iter()
        .map(|(size, n)| (*size, n - before.get(size).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn rss(pid: u32) -> Option<u64> {
    let statm = procfs::process::Process::new(pid as i32).and_then(|p| p.statm()).ok()?;
    Some(statm.resident * procfs::page_size())
}

fn mem_available() -> u64 {
    use procfs::Current;
    procfs::Meminfo::current().ok().and_then(|m| m.mem_available).unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds, the tracer's clock.
pub(crate) fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
