//! Per-command latency histograms, split by whether a snapshot child was alive.
//!
//! The split is the point: it shows what a fork and the copy-on-write faults that follow it
//! cost the commands served meanwhile.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Nanoseconds, 1 ns .. 100 s, 2 significant digits (enough for p50/p99/p99.9).
fn new_hist() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000_000, 2).ok()
}

#[derive(Default)]
pub struct Latency {
    /// Indexed by command id; [0] = no child, [1] = child alive. Created on first use.
    hists: Vec<[Option<Histogram<u64>>; 2]>,
}

impl Latency {
    pub fn record(&mut self, cmd: usize, during_save: bool, nanos: u64) {
        if self.hists.len() <= cmd {
            self.hists.resize_with(cmd + 1, Default::default);
        }
        let slot = &mut self.hists[cmd][during_save as usize];
        if slot.is_none() {
            *slot = new_hist();
        }
        if let Some(h) = slot {
            h.saturating_record(nanos.max(1));
        }
    }

    /// Redis-like `latency_percentiles_usec_<cmd>:p50=..,p99=..,p99.9=..` lines; the
    /// `_during_save` suffix marks the histograms taken while a snapshot child lived.
    pub fn info(&self, out: &mut String, name: impl Fn(usize) -> &'static str) {
        for (cmd, pair) in self.hists.iter().enumerate() {
            for (i, h) in pair.iter().enumerate() {
                let Some(h) = h else { continue };
                if h.is_empty() {
                    continue;
                }
                let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "latency_percentiles_usec_{}{}:p50={:.3},p99={:.3},p99.9={:.3},calls={}\r",
                    name(cmd),
                    if i == 1 { "_during_save" } else { "" },
                    us(0.5),
                    us(0.99),
                    us(0.999),
                    h.len()
                );
            }
        }
    }
}
