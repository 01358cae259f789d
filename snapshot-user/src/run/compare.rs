//! One row per page size when `--pages` names several: the same workload's
//! snapshots side by side.
use serde::Serialize;

use super::sample::{End, Summary};

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    /// As asked (4k, thp, hugetlb) and as the store observed it.
    pub pages: String,
    pub observed: String,
    pub snapshots: usize,
    pub copies: u64,
    pub copied_bytes: u64,
    /// Medians over the snapshots.
    pub fork_usec: u64,
    pub duration_s: f64,
    pub copied_bytes_per_snapshot: u64,
    pub write_p99_child_us: u64,
    pub write_p99_no_child_us: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Comparison {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rows: Vec<Row>,
}

pub fn row(pages: &str, observed: &str, _end: &End, summaries: &[Summary]) -> Row {
    let median = |mut v: Vec<f64>| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let of = |f: fn(&Summary) -> f64| median(summaries.iter().map(f).collect());
    Row {
        pages: pages.to_string(),
        observed: observed.to_string(),
        snapshots: summaries.len(),
        copies: summaries.iter().map(|s| s.copies).sum(),
        copied_bytes: summaries.iter().map(|s| s.copied_bytes).sum(),
        fork_usec: of(|s| s.fork_usec as f64) as u64,
        duration_s: of(|s| s.duration_s),
        copied_bytes_per_snapshot: of(|s| s.copied_bytes as f64) as u64,
        write_p99_child_us: of(|s| s.latency.child_alive.p99_us as f64) as u64,
        write_p99_no_child_us: of(|s| s.latency.no_child.p99_us as f64) as u64,
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
        let r = row("4k", "4k", &End::default(), &summaries);
        assert_eq!((r.snapshots, r.copies, r.copied_bytes), (3, 13, 53248));
        assert_eq!((r.fork_usec, r.copied_bytes_per_snapshot), (200, 8192));
        let two = row("thp", "4k", &End::default(), &summaries[..2]);
        // Of two, the upper one.
        assert_eq!((two.fork_usec, two.pages.as_str(), two.observed.as_str()), (300, "thp", "4k"));
        assert_eq!(row("4k", "4k", &End::default(), &[]).fork_usec, 0);
    }
}
