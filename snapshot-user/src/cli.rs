//! Command line.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status when the traced processes copied more than `--budget`.
pub const BUDGET_EXCEEDED: u8 = 99;

/// Counts the pages the kernel copies on write after fork(), per process,
/// per fork and per page size, and runs a fork-snapshotting key-value store
/// to explain them.
#[derive(Parser, Debug)]
#[command(name = "snapshot", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what the kernel offers for tracing and which path snapshot uses.
    ///
    /// Exits 0 when tracing works here, non-zero with the reason when not.
    Check,
    /// Count copy-on-write copies of a command, a process, a name or every process.
    Trace(TraceArgs),
    /// Run the fork snapshot store (Redis protocol, BGSAVE by fork()).
    Serve(ServeArgs),
    /// A forking program that writes pages and prints the copies it caused,
    /// measured from /proc/self/pagemap (the ground truth tests compare with).
    Workload(WorkloadArgs),
    /// Trace the built-in forking workload and print the report (the default).
    Demo,
    /// The live COW report: a store (or --connect SERVER) under a write load,
    /// snapshotted on a policy, traced, with a predicted peak per snapshot.
    Run(crate::run::args::RunArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: snapshot_store::ServeArgs,
    /// Attach the COW tracer to the server (needs root): INFO persistence then
    /// shows tracer_* fields, the exact pages each BGSAVE fork copied.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["pid", "comm", "all", "command"]))]
pub struct TraceArgs {
    /// Trace this running process and the processes it forks from now on.
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// Trace processes with this name: running ones, and those that exec it later.
    #[arg(long)]
    pub comm: Option<String>,
    /// Trace every process on the machine.
    #[arg(long)]
    pub all: bool,
    /// Stop after this many seconds (default: when the command exits, or Ctrl-C).
    #[arg(long, short, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print a line of totals every SECS seconds.
    #[arg(long, short, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Write the final report as JSON to PATH (schema in the README).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Fail (exit status 99) when the traced processes copied more than
    /// BYTES, e.g. 64MiB or 1GiB: a CI gate on snapshot cost.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub budget: Option<u64>,
    /// Run this command and trace it and everything it forks until it exits.
    /// Its exit status becomes snapshot's.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("{e}: expected a size such as 4096, 512KiB, 64MiB or 2GiB"))
}

#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// What memory the pages live in.
    #[arg(long, value_enum, default_value_t = Memory::Private)]
    pub memory: Memory,
    /// How many pages to write after each fork (huge pages for hugetlb).
    #[arg(long, default_value_t = 4000)]
    pub pages: usize,
    /// Who writes, and when.
    #[arg(long, value_enum, default_value_t = Scenario::ParentWrites)]
    pub scenario: Scenario,
    /// Fork this many times, one after the other; each child writes or waits in turn.
    #[arg(long, default_value_t = 1)]
    pub forks: usize,
    /// Write the measured ground truth as JSON here (default: stdout).
    #[arg(long, value_name = "PATH")]
    pub truth: Option<PathBuf>,
    /// How each page is written: by a CPU store, or by the kernel (read(2)
    /// of one byte from /dev/zero into the page: a kernel-mode fault).
    #[arg(long, value_enum, default_value_t = Writer::Store)]
    pub writer: Writer,
    /// After each page write, also write() 4 KiB to a file in DIR: syscalls
    /// that allocate page-cache pages between write faults (use /dev/shm for tmpfs).
    #[arg(long, value_name = "DIR")]
    pub file_writes: Option<PathBuf>,
    /// Skip reading /proc/self/pagemap (for benchmarks: the writes alone).
    #[arg(long)]
    pub no_pagemap: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Memory {
    /// Private anonymous memory, base pages.
    Private,
    /// MAP_SHARED anonymous memory: never copied.
    Shared,
    /// A private mapping of a file.
    File,
    /// Private anonymous memory with MADV_HUGEPAGE (transparent huge pages).
    Thp,
    /// MAP_HUGETLB pages (needs /proc/sys/vm/nr_hugepages > 0).
    Hugetlb,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Writer {
    Store,
    Read,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The child waits while the parent writes: every write copies.
    ParentWrites,
    /// The child exits before the parent writes: nothing is copied.
    ChildExitsFirst,
    /// The child writes while the parent waits: copies in the child.
    ChildWrites,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert!(parse_bytes("lots").unwrap_err().contains("expected a size"));
    }

    #[test]
    fn trace_needs_a_target() {
        assert!(Cli::try_parse_from(["snapshot", "trace"]).is_err());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--", "true"]).is_ok());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--pid", "1", "--all"]).is_err());
    }
}
