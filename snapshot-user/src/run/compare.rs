//! One row per workload when `--pages` or `--method` names several: the same
//! load's snapshots side by side.
use serde::Serialize;

use super::{
    args::Method,
    sample::{End, Summary},
};

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    /// As asked (4k, thp, hugetlb) and as the store observed it.
    pub pages: String,
    pub observed: String,
    pub method: Method,
    pub snapshots: usize,
    pub copies: u64,
    pub copied_bytes: u64,
    /// Medians over the snapshots.
    /// The parent's stall at the start: fork() or the forkless set-up.
    pub stall_us: u64,
    pub duration_s: f64,
    pub copied_bytes_per_snapshot: u64,
    /// Peak Pss of server + child above the server's before the snapshot.
    pub extra_memory_bytes: u64,
    pub write_p99_child_us: u64,
    pub write_p99_no_child_us: u64,
    /// SETs per second while a snapshot ran (median over the snapshots), and
    /// over the rest of the run.
    pub writes_per_s_during: f64,
    pub writes_per_s_without: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Comparison {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rows: Vec<Row>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn row(pages: &str, observed: &str, method: Method, end: &End, summaries: &[Summary]) -> Row {
    let of = |f: fn(&Summary) -> f64| median(summaries.iter().map(f).collect());
    // The time and writes outside snapshots: the run's minus the snapshots'.
    let outside_s = end.duration_s - summaries.iter().map(|s| s.duration_s).sum::<f64>();
    let outside_writes = end.writes.saturating_sub(summaries.iter().map(|s| s.writes).sum());
    Row {
        pages: pages.to_string(),
        observed: observed.to_string(),
        method,
        snapshots: summaries.len(),
        copies: summaries.iter().map(|s| s.copies).sum(),
        copied_bytes: summaries.iter().map(|s| s.copied_bytes).sum(),
        stall_us: of(|s| s.fork_usec as f64) as u64,
        duration_s: of(|s| s.duration_s),
        copied_bytes_per_snapshot: of(|s| s.copied_bytes as f64) as u64,
        extra_memory_bytes: of(|s| s.extra_memory_peak_bytes as f64) as u64,
        write_p99_child_us: of(|s| s.latency.child_alive.p99_us as f64) as u64,
        write_p99_no_child_us: end.latency_no_child.p99_us,
        writes_per_s_during: of(|s| s.writes_per_s),
        writes_per_s_without: if outside_s > 0.0 { outside_writes as f64 / outside_s } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(fork_usec: u64, copied_bytes: u64) -> Summary {
        Summary { fork_usec, copied_bytes, copies: copied_bytes / 4096, ..Summary::default() }
    }

    #[test]
    fn rows_add_copies_and_take_medians() {
        let summaries = [summary(300, 4096), summary(100, 8192), summary(200, 40960)];
        let r = row("4k", "4k", Method::Fork, &End::default(), &summaries);
        assert_eq!((r.snapshots, r.copies, r.copied_bytes), (3, 13, 53248));
        assert_eq!((r.stall_us, r.copied_bytes_per_snapshot), (200, 8192));
        let two = row("thp", "4k", Method::Fork, &End::default(), &summaries[..2]);
        // Of two, the upper one.
        assert_eq!((two.stall_us, two.pages.as_str(), two.observed.as_str()), (300, "thp", "4k"));
        assert_eq!(row("4k", "4k", Method::Fork, &End::default(), &[]).stall_us, 0);
    }
}
