//! The one place `snapshot run` reads the COW tracer: the server's own
//! counters and its forks (snapshot children), reduced to what the report
//! needs. When the tracer's record types change, only this file changes.
use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use snapshot_common::ProcStats;

use crate::{
    loader::{self, Loaded, Selection},
    report::{Collector, Report},
};

/// Copies made by one process, in total and by page size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub copies: u64,
    pub bytes: u64,
    pub by_size: BTreeMap<u64, u64>,
}

/// One fork of the server: a snapshot child while it shares pages.
#[derive(Clone, Debug)]
pub struct ForkView {
    pub child: u32,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub copies: u64,
    /// Bytes copied by the server and by the child while they shared.
    pub bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct View {
    /// The server process.
    pub server: Counts,
    /// Its children (snapshot processes), added up; exited ones included.
    pub children: Counts,
    pub forks: Vec<ForkView>,
    /// Records lost to full tables or ring: counts are incomplete when > 0.
    pub lost: u64,
    /// `--stacks`: who made the copies.
    pub stacks: Option<super::stacks::Stacks>,
}

pub struct Tracer {
    loaded: Loaded,
    ring: RingBuf<MapData>,
    collector: Collector,
    started: Instant,
    pid: u32,
    /// `--metrics`: brought up to date at every read.
    metrics: Option<crate::metrics::Shared>,
    /// `--stacks`: the copies' address ring and what it resolved so far.
    stacks: Option<(RingBuf<MapData>, crate::stacks::Recorder)>,
}

impl Tracer {
    /// Traces `pid` and whatever it forks from now on; with `stacks`, the
    /// stack and address of each copy too.
    pub fn attach(pid: u32, stacks: bool) -> Result<Tracer> {
        let mut loaded = loader::load_all(&Selection { stacks, ..Selection::default() })?;
        let stat = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .with_context(|| format!("pid {pid}: no such process"))?;
        let comm = loader::comm_bytes(&stat.comm).unwrap_or([0; 16]);
        loaded
            .procs()?
            .insert(pid, ProcStats::new(pid, stat.ppid as u32, comm), 0)
            .with_context(|| format!("tracing pid {pid}"))?;
        let ring = RingBuf::try_from(loaded.ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let stacks = match stacks {
            true => Some((
                RingBuf::try_from(loaded.ebpf.take_map("COPY_ADDRS").context("no COPY_ADDRS map")?)?,
                crate::stacks::Recorder::default(),
            )),
            false => None,
        };
        Ok(Tracer { loaded, ring, collector: Collector::default(), started: Instant::now(), pid, metrics: None, stacks })
    }

    /// Publishes every read to `metrics`; what an earlier tracer counted stays.
    pub fn publish(&mut self, metrics: crate::metrics::Shared) -> Result<()> {
        crate::metrics::lock(&metrics)?.retire_all();
        self.metrics = Some(metrics);
        Ok(())
    }

    pub fn read(&mut self) -> Result<View> {
        let report = self.collector.report(&mut self.loaded, &mut self.ring, self.started.elapsed().as_secs_f64())?;
        if let Some(metrics) = &self.metrics {
            crate::metrics::lock(metrics)?.update(&report);
        }
        let mut view = view(&report, self.pid);
        if let Some((ring, recorder)) = &mut self.stacks {
            recorder.drain(ring);
            let parents: std::collections::HashMap<u32, u32> =
                report.processes.iter().map(|p| (p.pid, p.ppid)).collect();
            let stacks = recorder.report(&self.loaded, &report)?;
            view.stacks = Some(super::stacks::view(&stacks, self.pid, |pid| parents.get(&pid).copied()));
        }
        Ok(view)
    }
}

fn view(report: &Report, pid: u32) -> View {
    let mut out = View::default();
    for p in &report.processes {
        let counts = if p.pid == pid {
            &mut out.server
        } else if p.ppid == pid {
            &mut out.children
        } else {
            continue;
        };
        counts.copies += p.cow_copies;
        counts.bytes += p.cow_bytes;
        for (size, n) in &p.copies_by_size {
            *counts.by_size.entry(*size).or_default() += n;
        }
    }
    out.forks = report
        .forks
        .iter()
        .filter(|f| f.parent == pid)
        .map(|f| ForkView {
            child: f.child,
            start_ns: f.start_ns,
            end_ns: f.end_ns,
            copies: f.parent_copies + f.child_copies,
            bytes: f.parent_bytes + f.child_bytes,
        })
        .collect();
    let h = &report.health;
    out.lost = h.procs_table_full + h.forks_table_full + h.pending_table_full + h.ring_full;
    out
}
