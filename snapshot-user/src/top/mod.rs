//! `snapshot top`: which processes are making copy-on-write copies now,
//! machine-wide. On a terminal, a live table (screen.rs); `--once` prints one
//! screen of plain text for scripts.
use std::{collections::HashMap, io::IsTerminal as _, io::Write as _, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::{
    exporter::Source,
    loader::{comm_bytes, comm_string},
    report::{Process, Report, escape, human},
};

mod screen;

/// The keys of the live table, for --help and its footer line.
pub const KEYS: &str = "keys: < > move the sort column, p pid, n comm, c copies/s, b bytes/s, \
                        f live forks, r reuse/s, q or Ctrl-C quit";

#[derive(Args, Debug)]
#[command(after_help = KEYS)]
pub struct TopArgs {
    /// Print one screen of plain text after one second, then exit. Without it:
    /// the live table on a terminal, else a plain screen every second until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Only processes with this name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Column to sort by, largest first (pid and comm: smallest first).
    #[arg(long, value_enum, default_value_t = SortKey::Bytes)]
    pub sort: SortKey,
    /// Rows to show in plain text (the live table shows as many as fit).
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
}

/// The sortable columns, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Pid,
    Comm,
    Copies,
    Bytes,
    Forks,
    Reuse,
}

impl SortKey {
    const ALL: [SortKey; 6] =
        [SortKey::Pid, SortKey::Comm, SortKey::Copies, SortKey::Bytes, SortKey::Forks, SortKey::Reuse];

    /// The column this key sorts, among the table's columns.
    fn column(self) -> usize {
        match self {
            SortKey::Pid => 0,
            SortKey::Comm => 1,
            SortKey::Copies => 2,
            SortKey::Bytes => 3,
            SortKey::Forks => 5,
            SortKey::Reuse => 6,
        }
    }

    /// The next sortable column to the left (-1) or right (+1), wrapping.
    fn step(self, by: isize) -> SortKey {
        let at = Self::ALL.iter().position(|&k| k == self).unwrap_or(0) as isize;
        Self::ALL[(at + by).rem_euclid(Self::ALL.len() as isize) as usize]
    }
}

/// Column names of the table, shared by the plain and the live view.
const HEADER: [&str; 7] = ["PID", "COMM", "COPIES/S", "BYTES/S", "COPIES_BY_SIZE", "LIVE_FORKS(SHARED)", "REUSE/S"];

/// One process's rates over the last interval.
struct Row {
    pid: u32,
    comm: String,
    copies_s: f64,
    bytes_s: f64,
    by_size: String,
    live_forks: usize,
    forks: String,
    reuse_s: f64,
}

impl Row {
    fn cells(&self) -> [String; 7] {
        [
            self.pid.to_string(),
            self.comm.clone(),
            format!("{:.0}", self.copies_s),
            human(self.bytes_s as u64),
            self.by_size.clone(),
            self.forks.clone(),
            format!("{:.0}", self.reuse_s),
        ]
    }
}

/// Which processes to show.
struct Filter {
    comm: Option<String>,
    pid: Option<u32>,
}

impl Filter {
    /// A name as the kernel keeps it (its first 15 bytes), as `trace --comm`
    /// matches it: a longer one would otherwise match nothing.
    fn new(args: &TopArgs) -> Result<Filter> {
        let comm = args.comm.as_deref().map(|name| Ok::<_, anyhow::Error>(comm_string(&comm_bytes(name)?))).transpose()?;
        Ok(Filter { comm, pid: args.pid })
    }
}

pub fn run(args: TopArgs) -> Result<ExitCode> {
    // A bad --comm is told before the programs load.
    Filter::new(&args)?;
    let source = Source::open()?;
    // The keys are read from stdin: both ends on the terminal.
    if !args.once && std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        return screen::run(source, &args);
    }
    plain(source, &args)
}

/// Plain text: one screen (--once) or one every second until Ctrl-C.
fn plain(mut source: Source, args: &TopArgs) -> Result<ExitCode> {
    let filter = Filter::new(args)?;
    let interval = Duration::from_secs(1);
    let mut before = source.read()?;
    loop {
        std::thread::sleep(interval);
        let after = source.read()?;
        let mut rows = rows(&filter, &before, &after);
        sort(&mut rows, args.sort);
        rows.truncate(args.rows);
        let mut out = std::io::stdout().lock();
        print(&rows, &mut out).context("writing stdout")?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(out).context("writing stdout")?;
        before = after;
    }
}

/// The processes that copied, reused or shared in the interval between two reads.
fn rows(filter: &Filter, before: &Report, after: &Report) -> Vec<Row> {
    // The time between the reads, not the nominal second: reading and
    // printing take time too.
    let secs = after.duration_s - before.duration_s;
    let secs = if secs > 0.0 { secs } else { 1.0 };
    let earlier: HashMap<u32, &Process> = before.processes.iter().map(|p| (p.pid, p)).collect();
    let now_ns = crate::run::sample::monotonic_ns();
    after
        .processes
        .iter()
        .filter(|p| filter.pid.is_none_or(|pid| pid == p.pid))
        .filter(|p| filter.comm.as_ref().is_none_or(|c| *c == p.comm))
        .map(|p| {
            let was = earlier.get(&p.pid);
            let delta = |f: fn(&Process) -> u64| f(p).saturating_sub(was.map_or(0, |w| f(w))) as f64 / secs;
            let sizes: Vec<String> = p
                .copies_by_size
                .iter()
                .map(|(size, n)| {
                    let old = was.and_then(|w| w.copies_by_size.get(size)).copied().unwrap_or(0);
                    format!("{}:{}", human(*size).replace(' ', ""), n.saturating_sub(old))
                })
                .collect();
            let forks: Vec<String> = after
                .forks
                .iter()
                .filter(|f| f.parent == p.pid && f.end_ns.is_none())
                .map(|f| format!("{}({:.0}s)", f.child, now_ns.saturating_sub(f.start_ns) as f64 / 1e9))
                .collect();
            Row {
                pid: p.pid,
                comm: escape(&p.comm),
                copies_s: delta(|p| p.cow_copies),
                bytes_s: delta(|p| p.cow_bytes),
                by_size: sizes.join(" "),
                live_forks: forks.len(),
                forks: forks.join(" "),
                reuse_s: delta(|p| p.wp_reuse),
            }
        })
        .filter(|r| r.copies_s > 0.0 || r.reuse_s > 0.0 || r.live_forks > 0)
        .collect()
}

/// Rates and fork counts largest first; pid and comm in ascending order.
fn sort(rows: &mut [Row], key: SortKey) {
    match key {
        SortKey::Pid => rows.sort_by_key(|r| r.pid),
        SortKey::Comm => rows.sort_by(|a, b| a.comm.cmp(&b.comm).then(a.pid.cmp(&b.pid))),
        SortKey::Copies => rows.sort_by(|a, b| b.copies_s.total_cmp(&a.copies_s)),
        SortKey::Bytes => rows.sort_by(|a, b| b.bytes_s.total_cmp(&a.bytes_s)),
        SortKey::Forks => rows.sort_by_key(|r| std::cmp::Reverse(r.live_forks)),
        SortKey::Reuse => rows.sort_by(|a, b| b.reuse_s.total_cmp(&a.reuse_s)),
    }
}

fn print(rows: &[Row], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header(HEADER);
    for r in rows {
        table.add_row(r.cells());
    }
    writeln!(out, "{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_step_through_every_column_and_wrap() {
        let mut key = SortKey::Pid;
        let mut seen = vec![key];
        for _ in 1..SortKey::ALL.len() {
            key = key.step(1);
            seen.push(key);
        }
        assert_eq!(seen, SortKey::ALL);
        assert_eq!(key.step(1), SortKey::Pid);
        assert_eq!(SortKey::Pid.step(-1), SortKey::Reuse);
        let columns: Vec<usize> = SortKey::ALL.iter().map(|k| k.column()).collect();
        assert!(columns.windows(2).all(|w| w[0] < w[1]), "{columns:?}");
    }

    fn at(duration_s: f64, cow_bytes: u64) -> Report {
        let process = Process::copying(7, cow_bytes, false);
        Report::of(duration_s, vec![process])
    }

    #[test]
    fn rates_are_per_second_of_the_time_between_the_reads() {
        let filter = Filter { comm: None, pid: None };
        let shown = rows(&filter, &at(1.0, 4096), &at(3.0, 4096 + 8 * 4096));
        assert_eq!(shown.len(), 1);
        assert_eq!((shown[0].copies_s, shown[0].bytes_s), (4.0, 4.0 * 4096.0));
    }

    #[test]
    fn a_long_name_matches_as_the_kernel_keeps_it() {
        let args = TopArgs { once: true, comm: Some("w".repeat(20)), pid: None, sort: SortKey::Bytes, rows: 20 };
        let filter = Filter::new(&args).unwrap();
        let mut before = at(1.0, 0);
        let mut after = at(2.0, 4096);
        for report in [&mut before, &mut after] {
            report.processes[0].comm = "w".repeat(15);
        }
        assert_eq!(rows(&filter, &before, &after).len(), 1);
    }
}
