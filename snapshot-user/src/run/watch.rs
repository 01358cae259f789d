//! Watches the server's children every few milliseconds, so each command's
//! latency is filed under "snapshot child alive" or "no child" precisely,
//! not at the sampling interval's resolution.
use std::{
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};

use super::load::Shared;

const PERIOD: Duration = Duration::from_millis(5);

pub fn spawn(pid: u32, shared: Arc<Shared>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                shared.child_alive.store(!children(pid).is_empty(), Ordering::Relaxed);
                std::thread::sleep(PERIOD);
            }
        })
        .context("starting the child watcher")
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
