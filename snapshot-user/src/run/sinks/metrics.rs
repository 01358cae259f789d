//! `--metrics`: the store's snapshot figures as Prometheus metrics (the
//! per-process ones come from the tracer's reads, see run/tracer.rs).
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::{Setting, Sink};
use crate::{
    metrics::{self, Metrics, Reports, Shared},
    run::sample::{End, Sample, Summary},
};

/// Binds ADDR and serves the run's metrics from a thread until the run ends.
pub fn serve(addr: std::net::SocketAddr) -> Result<Shared> {
    let server = metrics::bind(addr)?;
    let shared = Arc::new(Mutex::new(
        Metrics::new(false, Reports::Cumulative).and_then(Metrics::with_store).context("registering metrics")?,
    ));
    // Figures as of the last sample (every --interval).
    metrics::serve_in_background(server, shared.clone(), None)?;
    Ok(shared)
}

pub struct Prom(pub Shared);

impl Prom {
    fn store(&self, update: impl FnOnce(&metrics::StoreMetrics)) -> Result<()> {
        if let Some(store) = metrics::lock(&self.0)?.store() {
            update(store);
        }
        Ok(())
    }
}

impl Sink for Prom {
    fn begin(&mut self, _: &Setting) -> Result<()> {
        Ok(())
    }

    fn interval(&mut self, sample: &Sample) -> Result<()> {
        let running = sample.snapshot.as_ref();
        self.store(|s| {
            s.running.set(i64::from(running.is_some()));
            s.running_copied_bytes.set(gauge(running.map_or(0, |r| r.copied_bytes)));
            s.running_predicted_peak_bytes.set(gauge(running.map_or(0, |r| r.predicted_peak_bytes)));
        })
    }

    fn snapshot(&mut self, summary: &Summary) -> Result<()> {
        self.store(|s| {
            s.snapshots.inc();
            if summary.save_status.as_deref() == Some("err") {
                s.failed.inc();
            }
            s.fork_seconds.set(summary.fork_usec as f64 / 1e6);
            s.duration_seconds.set(summary.duration_s);
            s.copied_bytes.set(gauge(summary.copied_bytes));
            s.predicted_bytes.set(gauge(summary.predicted_bytes));
            s.running.set(0);
            s.running_copied_bytes.set(0);
            s.running_predicted_peak_bytes.set(0);
        })
    }

    fn end(&mut self, _: &End, _: &[Summary]) -> Result<()> {
        Ok(())
    }
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
