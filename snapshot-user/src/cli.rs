//! Command line.
use std::{io::Write as _, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status when the traced processes copied more than `--budget`.
pub const BUDGET_EXCEEDED: u8 = 99;

/// Counts the pages the kernel copies on write after fork(), per process,
/// per fork and per page size, and runs a fork-snapshotting key-value store
/// to explain them.
#[derive(Parser, Debug)]
#[command(name = "snapshot", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    /// Trace the built-in forking workload and print the report beside its
    /// own pagemap count.
    Demo,
    /// The live COW report: a store (or --connect SERVER) under a write load,
    /// snapshotted on a policy, traced, with a predicted peak per snapshot.
    Run(crate::run::args::RunArgs),
    /// Serve every process's copies as Prometheus metrics (needs root).
    Exporter(crate::exporter::ExporterArgs),
    /// The processes making copy-on-write copies now, machine-wide (needs root).
    Top(crate::top::TopArgs),
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

/// Where the report goes, and why: see `after_long_help`.
const TRACE_OUTPUT: &str = "\
Output: the report goes to stderr (like perf stat, strace and time), or to the file given
with -o/--output, so the traced command's stdout stays the command's alone; --json adds
the report as JSON (`-` for stdout). Progress notes and --interval lines go to stderr.

Signals: SIGINT, SIGTERM and SIGHUP sent to snapshot alone are passed on to the command
(a terminal's Ctrl-C reaches both already); the report is written when the command exits.
A second SIGINT stops tracing at once and leaves the command running (exit status 130).

Exit status: the command's (128+N when signal N killed it, 127 when it was not found,
126 when it could not be run), 99 when --budget is exceeded, 1 when snapshot failed,
2 for a usage error.";

#[derive(Args, Debug, Default)]
#[command(
    group = clap::ArgGroup::new("target").required(true).args(["pid", "comm", "all", "command"]),
    override_usage = "snapshot trace [OPTIONS] -- CMD [ARGS]...\n       \
                      snapshot trace [OPTIONS] --pid PID | --comm NAME | --all",
    after_long_help = TRACE_OUTPUT,
)]
pub struct TraceArgs {
    /// Trace this running process and the processes it forks from now on
    /// (a thread's id is resolved to its process).
    #[arg(long, short, value_name = "PID")]
    pub pid: Option<u32>,
    /// Trace processes with this name: running ones, and those that exec it later.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Trace every process on the machine.
    #[arg(long)]
    pub all: bool,
    /// Stop after this long: 10 (seconds), 1.5s, 500ms, 2m. With a command,
    /// it is sent SIGTERM then, like perf stat --timeout, and its status is kept.
    #[arg(long, short, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a line of totals to stderr every TIME (as for --duration).
    #[arg(long, short, value_name = "TIME", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Write the report table to FILE instead of stderr (`-` for stdout).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the report as JSON to PATH (`-` for stdout; schema in the README).
    /// Opened before tracing starts.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Fail (exit status 99) when the traced processes copied more than
    /// BYTES, e.g. 64MiB or 1GiB: a CI gate on snapshot cost.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub budget: Option<u64>,
    /// Run the command as USER (name or uid), like strace -u. Default: the
    /// user who ran sudo (SUDO_UID) when started through sudo, else unchanged.
    /// `-u root` keeps root under sudo.
    #[arg(long, short, value_name = "USER")]
    pub user: Option<String>,
    /// Serve the traced processes' figures as Prometheus metrics on ADDR
    /// (e.g. 127.0.0.1:9435) while tracing: the same metrics as `snapshot exporter`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub stacks: crate::stacks::StackArgs,
    /// Run this command and trace it and everything it forks until it exits.
    /// Its exit status becomes snapshot's.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A positive, finite time: a bare number of seconds or a humantime
/// duration such as 500ms, 1.5s or 2m.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_time(text)?;
    if duration.is_zero() {
        return Err(format!("{:?} is zero: {TIME_HINT}", text.trim()));
    }
    Ok(duration)
}

/// A time in seconds for `snapshot run`, where 0 can mean "off": the same
/// forms as `parse_duration`, so nan, inf and 1e300 are refused, not panics.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    parse_time(text).map(|d| d.as_secs_f64())
}

const TIME_HINT: &str = "expected a positive time such as 10 (seconds), 1.5s, 500ms or 2m";

fn parse_time(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is out of range: {TIME_HINT}"))?,
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{e}: {TIME_HINT}"))?,
    };
    // Far beyond any trace; keeps deadline arithmetic from overflowing.
    if duration > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err(format!("{text:?} is more than 100 years: {TIME_HINT}"));
    }
    Ok(duration)
}

/// Prints clap's message (help, version or a usage error) and says how to
/// trace a command when one was given without `--`. Never panics on a closed
/// stdout or stderr.
pub fn usage_error(error: clap::Error) -> std::process::ExitCode {
    use clap::error::{ContextKind, ErrorKind};
    let _ = error.print();
    let stray = match (error.kind(), error.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(arg)) => Some(arg.to_string()),
        _ => None,
    };
    let tracing = std::env::args().nth(1).is_some_and(|a| a == "trace");
    if let Some(arg) = stray.filter(|a| tracing && !a.starts_with('-')) {
        let arg = crate::report::escape(&arg);
        let _ = writeln!(std::io::stderr(), "hint: put `--` before the command to trace: snapshot trace -- {arg} ...");
    }
    std::process::ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
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
    /// As `thp`, in a process that also maps one hugetlb page (never written
    /// after the fork): its THP splits flush like hugetlb copies.
    ThpHugetlb,
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
    fn durations_take_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0", "0s", "-5", "nan", "inf", "1e30", "1e300", "-1s", "soon", ""] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("expected a positive time"), "{bad}: {err}");
        }
    }

    #[test]
    fn times_stop_at_100_years() {
        assert_eq!(parse_duration("99y"), Ok(Duration::from_secs(99 * 31_557_600)));
        assert_eq!(parse_duration("3153600000"), Ok(Duration::from_secs(100 * 365 * 24 * 3600)));
        for bad in ["101y", "3153600001"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("more than 100 years"), "{bad}: {err}");
        }
    }

    #[test]
    fn seconds_may_be_zero() {
        assert_eq!(parse_seconds("0"), Ok(0.0));
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert_eq!(parse_seconds("250ms"), Ok(0.25));
        assert!(parse_seconds("nan").unwrap_err().contains("expected a positive time"));
    }

    #[test]
    fn trace_needs_a_target() {
        assert!(Cli::try_parse_from(["snapshot", "trace"]).is_err());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--", "true"]).is_ok());
        assert!(Cli::try_parse_from(["snapshot", "trace", "--pid", "1", "--all"]).is_err());
    }
}
