//! `snapshot exporter`: the tracer's figures for every process as Prometheus
//! metrics over HTTP, read afresh at each scrape.
use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use clap::Args;

use crate::{
    loader::{self, Loaded, Selection},
    metrics::{self, Metrics, Reports},
    privilege,
    report::{Collector, Report},
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
        let report = self
            .collector
            .report(&mut self.loaded, &mut self.ring, self.started.elapsed().as_secs_f64())?;
        // Their figures now live in Metrics::retired.
        self.collector.forget();
        Ok(report)
    }
}

pub fn run(args: ExporterArgs) -> Result<ExitCode> {
    // Bound first: a taken address fails at once, with nothing loaded.
    let listener = metrics::listen(args.listen).context("--listen")?;
    let mut source = Source::open()?;
    metrics::announce(&listener)?;
    let server = metrics::http(listener)?;
    privilege::drop_capabilities(&privilege::kept_to_read_maps())?;
    let mut metrics = Metrics::new(args.pid_labels, Reports::Forgetting).context("registering metrics")?;
    // Read afresh at each scrape.
    metrics::serve(&server, || {
        let report = source.read()?;
        metrics.update(&report);
        metrics.encode()
    });
    Ok(ExitCode::SUCCESS)
}
