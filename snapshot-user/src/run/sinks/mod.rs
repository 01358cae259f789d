//! Renderers of the sample stream. They only render: every number they show
//! was computed in `sample`.
use anyhow::Result;
use serde::Serialize;

use super::{
    compare::Comparison,
    sample::{End, Sample, Summary},
};

pub mod html;
pub mod jsonl;
pub mod lines;
pub mod metrics;
pub mod tui;

/// What runs, for headers.
#[derive(Serialize, Clone, Debug)]
pub struct Setting {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub server: String,
    /// How the server snapshots (fork for a server this run connected to).
    pub method: super::args::Method,
    /// The page size the store's dataset really got (INFO dataset_pages_mode), when it says.
    pub pages_observed: Option<String>,
    pub pid: u32,
    pub addr: String,
    pub keys: u64,
    pub value_size: usize,
    pub dataset_bytes: u64,
    pub page_bytes: u64,
    pub rate: f64,
    pub dist: super::args::Dist,
    pub read_ratio: f64,
    pub every_s: f64,
}

pub trait Sink {
    /// A workload starts (one per --pages mode).
    fn begin(&mut self, setting: &Setting) -> Result<()>;
    fn interval(&mut self, sample: &Sample) -> Result<()>;
    fn snapshot(&mut self, summary: &Summary) -> Result<()>;
    fn end(&mut self, end: &End, summaries: &[Summary]) -> Result<()>;
    /// The page sizes side by side, after the last workload.
    fn compare(&mut self, _comparison: &Comparison) -> Result<()> {
        Ok(())
    }
    /// Whether the user asked to quit (the live screen's q).
    fn quit_requested(&mut self) -> Result<bool> {
        Ok(false)
    }
}

/// Bytes for people.
pub fn bytes(n: u64) -> String {
    crate::report::human(n)
}

/// Microseconds for people.
pub fn micros(us: u64) -> String {
    if us >= 1000 { format!("{:.1}ms", us as f64 / 1000.0) } else { format!("{us}µs") }
}

/// `4KiB:120 2MiB:3`.
pub fn by_size(map: &std::collections::BTreeMap<u64, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter().map(|(s, n)| format!("{}:{n}", bytes(*s).replace(".0 ", "").replace(' ', ""))).collect::<Vec<_>>().join(" ")
}

/// Column names of the per-snapshot table, for the plain and the live report.
pub const SUMMARY_HEADER: [&str; 12] = [
    "#", "fork", "secs", "copies", "copied", "share", "ampl", "writes/s", "p99 child", "p99 none", "predicted", "error",
];

/// One snapshot's row of that table.
pub fn summary_cells(s: &Summary) -> [String; 12] {
    [
        s.index.to_string(),
        micros(s.fork_usec),
        format!("{:.2}", s.duration_s),
        s.copies.to_string(),
        bytes(s.copied_bytes),
        format!("{:.1}%", s.copied_share * 100.0),
        format!("{:.1}", s.amplification),
        format!("{:.0}", s.writes_per_s),
        micros(s.latency.child_alive.p99_us),
        micros(s.latency.no_child.p99_us),
        bytes(s.predicted_bytes),
        format!("{:+.1}%", s.prediction_error * 100.0),
    ]
}

/// Column names of the table that compares workloads (page sizes, methods).
pub const COMPARISON_HEADER: [&str; 13] = [
    "pages", "observed", "method", "snapshots", "copied", "per snapshot", "extra mem", "stall", "secs",
    "sets/s during", "sets/s without", "p99 during", "p99 without",
];

/// One workload's row of that table (medians per snapshot).
pub fn comparison_cells(r: &super::compare::Row) -> [String; 13] {
    [
        r.pages.clone(),
        r.observed.clone(),
        r.method.name().to_string(),
        r.snapshots.to_string(),
        bytes(r.copied_bytes),
        bytes(r.copied_bytes_per_snapshot),
        bytes(r.extra_memory_bytes),
        micros(r.stall_us),
        format!("{:.2}", r.duration_s),
        format!("{:.0}", r.writes_per_s_during),
        format!("{:.0}", r.writes_per_s_without),
        micros(r.write_p99_child_us),
        micros(r.write_p99_no_child_us),
    ]
}
