//! `snapshot serve --trace`: the store with the tracer attached to itself, so
//! INFO persistence shows the exact copies beside Redis's Private_Dirty figures.
use std::sync::Mutex;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use snapshot_common::ProcStats;
use snapshot_store::InfoSource;

use crate::{
    cli::ServeArgs,
    loader::{self, Loaded, Selection},
    privilege,
    report::{self, Collector, Report},
};

pub fn run(args: ServeArgs) -> Result<()> {
    let tracer = match args.trace {
        true => Some(Box::new(Tracer::attach()?) as Box<dyn InfoSource>),
        false => None,
    };
    if args.trace {
        // Attached, maps open: the store itself needs no capability, but a
        // port below 1024 needs CAP_NET_BIND_SERVICE to be bound next.
        let mut keep = privilege::kept_to_read_maps();
        if (1..1024).contains(&args.store.port) {
            keep.push(caps::Capability::CAP_NET_BIND_SERVICE);
        }
        privilege::drop_capabilities(&keep)?;
    }
    snapshot_store::serve(args.store, tracer)
}

struct Tracer {
    state: Mutex<State>,
    started: std::time::Instant,
}

struct State {
    loaded: Loaded,
    ring: RingBuf<MapData>,
    collector: Collector,
}

impl Tracer {
    /// Traces this very process, and so every BGSAVE child it forks.
    fn attach() -> Result<Self> {
        let mut loaded = loader::load_all(&Selection::default())?;
        let pid = std::process::id();
        let ppid = nix::unistd::getppid().as_raw() as u32;
        loaded.procs()?.insert(pid, ProcStats::new(pid, ppid, loader::comm_bytes("snapshot")?), 0)?;
        let ring = RingBuf::try_from(loaded.ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let state = State { loaded, ring, collector: Collector::default() };
        Ok(Tracer { state: Mutex::new(state), started: std::time::Instant::now() })
    }

    fn report(&self) -> Result<Report> {
        let mut state = self.state.lock().map_err(|_| anyhow::anyhow!("tracer state poisoned"))?;
        let State { loaded, ring, collector } = &mut *state;
        collector.report(loaded, ring, self.started.elapsed().as_secs_f64())
    }
}

impl InfoSource for Tracer {
    fn info_lines(&self, out: &mut String) {
        match self.report() {
            Ok(report) => lines(&report, std::process::id(), out),
            Err(e) => out.push_str(&format!("tracer_error:{}\r\n", format!("{e:#}").replace(['\r', '\n'], " "))),
        }
    }
}

/// `tracer_*` fields: the server's own copies and those of its latest fork.
fn lines(report: &Report, pid: u32, out: &mut String) {
    let mut field = |name: &str, value: String| out.push_str(&format!("tracer_{name}:{value}\r\n"));
    field("attached", "1".into());
    field("path", report::path_token(report.tracing_path).to_string());
    if let Some(me) = report.processes.iter().find(|p| p.pid == pid) {
        field("cow_copies", me.cow_copies.to_string());
        field("cow_bytes", me.cow_bytes.to_string());
        field("wp_reuse", me.wp_reuse.to_string());
        let sizes: Vec<String> = me.copies_by_size.iter().map(|(s, n)| format!("{s}={n}")).collect();
        field("copies_by_size", sizes.join(","));
    }
    let latest = report.forks.iter().filter(|f| f.parent == pid).max_by_key(|f| f.start_ns);
    if let Some(f) = latest {
        field("last_fork_child", f.child.to_string());
        field("last_fork_in_progress", u8::from(f.end_ns.is_none()).to_string());
        field("last_fork_parent_copies", f.parent_copies.to_string());
        field("last_fork_parent_bytes", f.parent_bytes.to_string());
        field("last_fork_child_copies", f.child_copies.to_string());
        field("last_fork_child_bytes", f.child_bytes.to_string());
        field("last_fork_cow_bytes", (f.parent_bytes + f.child_bytes).to_string());
    }
    field("forks", report.forks.iter().filter(|f| f.parent == pid).count().to_string());
}
