//! Watches the server every few milliseconds, so each command's latency is
//! filed under "snapshot running" or "none" precisely, not at the sampling
//! interval's resolution; and reads the memory of the server and its child
//! often enough to catch the snapshot's peak.
//!
//! A fork snapshot runs while the server has a child; a forkless one has no
//! child, so the watcher asks the server (INFO persistence) instead.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    load::Shared,
    resp::{Conn, Info},
    sample::monotonic_ns,
};

const PERIOD: Duration = Duration::from_millis(5);
/// smaps_rollup walks the page tables: read it less often than the child list.
const MEMORY_PERIOD: Duration = Duration::from_millis(100);

/// One forkless save as the watcher saw it (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// Pss of the server plus its child: before the current (or last) snapshot and its peak.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// The latest reading while no snapshot ran.
    pub idle: u64,
    /// `idle` when the current (or last) snapshot started. Kept apart from
    /// `idle`: the reading after a save ends must not become its "before".
    pub before: u64,
    pub peak: u64,
}

impl Memory {
    /// Memory the snapshot added on top of the server's before it.
    pub fn extra(&self) -> u64 {
        self.peak.saturating_sub(self.before)
    }

    /// One reading of server + children; `started`: the first of a snapshot.
    pub fn record(&mut self, total: u64, busy: bool, started: bool) {
        if started {
            self.before = self.idle;
            self.peak = total;
        } else if busy {
            self.peak = self.peak.max(total);
        } else {
            self.idle = total;
        }
    }
}

/// `forkless`: the server's saves have no child; they are found by INFO on `addr`.
pub fn spawn(pid: u32, forkless: Option<SocketAddr>, shared: Arc<Shared>) -> Result<JoinHandle<()>> {
    let conn = forkless.map(Conn::connect).transpose()?;
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || watch(pid, conn, &shared))
        .context("starting the snapshot watcher")
}

fn watch(pid: u32, mut conn: Option<Conn>, shared: &Shared) {
    let mut was = false;
    let mut memory_at = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let busy = match conn.as_mut() {
            None => !children(pid).is_empty(),
            // The server gone or refusing: the run ends on its own errors.
            Some(conn) => save_in_progress(conn).unwrap_or(false),
        };
        shared.child_alive.store(busy, Ordering::Relaxed);
        if conn.is_some() && busy != was {
            let mut saves = shared.saves.lock().unwrap_or_else(|e| e.into_inner());
            match saves.last_mut() {
                Some(last) if !busy => last.end_ns = Some(monotonic_ns()),
                _ => saves.push(Span { start_ns: monotonic_ns(), end_ns: None }),
            }
        }
        if busy != was || memory_at.elapsed() >= MEMORY_PERIOD {
            record_memory(pid, busy, !was && busy, shared);
            memory_at = Instant::now();
        }
        was = busy;
        std::thread::sleep(PERIOD);
    }
}

fn save_in_progress(conn: &mut Conn) -> Result<bool> {
    let text = conn.call(&["INFO", "persistence"])?.text()?;
    Ok(Info::parse(&text).num("rdb_bgsave_in_progress").unwrap_or(0) != 0)
}

/// Idle: the server's Pss is the "before"; during a snapshot: the peak of server + child.
fn record_memory(pid: u32, busy: bool, started: bool, shared: &Shared) {
    let mut total = pss(pid).unwrap_or(0);
    total += children(pid).into_iter().filter_map(pss).sum::<u64>();
    shared.memory.lock().unwrap_or_else(|e| e.into_inner()).record(total, busy, started);
}

/// Proportional set size: shared pages divided among their sharers, so the
/// server's and its child's add up to the memory really used.
pub fn pss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Pids of the process's children, from /proc/PID/task/*/children.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_memory_is_above_the_reading_before_the_save_not_after() {
        let mut m = Memory::default();
        m.record(100, false, false);
        m.record(130, true, true);
        m.record(180, true, false);
        // The save ended; the allocator kept what the save used.
        m.record(170, false, false);
        assert_eq!(m.extra(), 80);
        m.record(175, true, true);
        assert_eq!(m.extra(), 5);
    }
}
