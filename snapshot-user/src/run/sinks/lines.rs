//! Plain text for logs and CI: one line per interval, one per snapshot, a
//! table at the end.
use std::io::Write;

use anyhow::Result;

use super::{COMPARISON_HEADER, SUMMARY_HEADER, Setting, Sink, by_size, bytes, comparison_cells, micros, summary_cells};
use crate::run::{
    compare::Comparison,
    sample::{End, Sample, Summary},
};

pub struct Lines;

impl Sink for Lines {
    fn begin(&mut self, setting: &Setting) -> Result<()> {
        println!(
            "snapshot run: {}{} (pid {}) on {}, method {}: {} keys x {} B ({}), {} ops/s {:?}, reads {:.0}%, snapshot every {} s",
            setting.server,
            setting.pages_observed.as_ref().map(|o| format!(" (dataset in {o} pages)")).unwrap_or_default(),
            setting.pid,
            setting.addr,
            setting.method.name(),
            setting.keys,
            setting.value_size,
            bytes(setting.dataset_bytes),
            setting.rate,
            setting.dist,
            setting.read_ratio * 100.0,
            setting.every_s
        );
        Ok(())
    }

    fn compare(&mut self, comparison: &Comparison) -> Result<()> {
        println!("\n{}", comparison_table(comparison));
        Ok(())
    }

    fn interval(&mut self, s: &Sample) -> Result<()> {
        let snap = match &s.snapshot {
            Some(r) => format!(
                "  SNAPSHOT {:.1}s/{:.1}s copied {} predicted {}{}",
                r.elapsed_s,
                r.expected_duration_s,
                bytes(r.copied_bytes),
                bytes(r.predicted_peak_bytes),
                r.warning.as_ref().map(|w| format!("  WARNING: {w}")).unwrap_or_default()
            ),
            None => String::new(),
        };
        println!(
            "{:7.1}s  writes/s {:>8.0}  copies/s {:>8.0} ({}/s) [{}]  p99 child {} no-child {}  rss {}{}{snap}",
            s.t_s,
            s.writes_per_s,
            s.copies_per_s,
            bytes(s.copied_bytes_per_s as u64),
            by_size(&s.copies_by_size),
            micros(s.latency.child_alive.p99_us),
            micros(s.latency.no_child.p99_us),
            bytes(s.parent_rss_bytes),
            s.child_rss_bytes.map(|c| format!(" + child {}", bytes(c))).unwrap_or_default(),
        );
        for line in s.stacks.iter().flat_map(crate::run::stacks::lines) {
            println!("          {line}");
        }
        std::io::stdout().flush()?;
        Ok(())
    }

    fn snapshot(&mut self, s: &Summary) -> Result<()> {
        println!(
            "snapshot {}: fork {}, {:.2}s, {} copies [{}] = {} ({:.1}% of dataset), {:.0} copies/s, \
             amplification {:.1}, {:.0} writes/s, p50/p99/p999 child {}/{}/{} vs no child {}/{}/{}, \
             rss parent {} child {}, predicted {} (error {:+.1}%), child Private_Dirty {}",
            s.index,
            micros(s.fork_usec),
            s.duration_s,
            s.copies,
            by_size(&s.copies_by_size),
            bytes(s.copied_bytes),
            s.copied_share * 100.0,
            s.copies_per_s,
            s.amplification,
            s.writes_per_s,
            micros(s.latency.child_alive.p50_us),
            micros(s.latency.child_alive.p99_us),
            micros(s.latency.child_alive.p999_us),
            micros(s.latency.no_child.p50_us),
            micros(s.latency.no_child.p99_us),
            micros(s.latency.no_child.p999_us),
            bytes(s.parent_rss_peak_bytes),
            bytes(s.child_rss_peak_bytes),
            bytes(s.predicted_bytes),
            s.prediction_error * 100.0,
            s.private_dirty_bytes.map(bytes).unwrap_or_else(|| "-".into()),
        );
        Ok(())
    }

    fn end(&mut self, end: &End, summaries: &[Summary]) -> Result<()> {
        println!("\n{}", table(summaries));
        println!(
            "\n{:.1}s: {} writes, {} reads, {} errors; copies: server {} ({}), snapshot children {} ({}) [{}]",
            end.duration_s,
            end.writes,
            end.reads,
            end.errors,
            end.server_copies,
            bytes(end.server_bytes),
            end.children_copies,
            bytes(end.children_bytes),
            by_size(&end.copies_by_size)
        );
        if end.tracer_lost > 0 {
            println!("warning: the tracer lost {} records (tables or ring full): counts are low", end.tracer_lost);
        }
        Ok(())
    }
}

/// The snapshots side by side.
pub fn table(summaries: &[Summary]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(SUMMARY_HEADER.map(|h| h.to_uppercase()));
    for s in summaries {
        t.add_row(summary_cells(s));
    }
    t
}

/// The page sizes and methods side by side.
pub fn comparison_table(comparison: &Comparison) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(COMPARISON_HEADER.map(str::to_uppercase));
    for r in &comparison.rows {
        t.add_row(comparison_cells(r));
    }
    t
}
