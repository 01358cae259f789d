//! `snapshot top`: which processes are making copy-on-write copies now,
//! machine-wide. `--once` prints one screen of plain text for scripts.
use std::{collections::HashMap, io::Write as _, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::{
    exporter::Source,
    report::{Process, Report, escape, human},
};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Print one screen of plain text after one second, then exit
    /// (without it, a fresh screen every second until Ctrl-C).
    #[arg(long)]
    pub once: bool,
    /// Only processes with this name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Column to sort by, largest first.
    #[arg(long, value_enum, default_value_t = SortKey::Bytes)]
    pub sort: SortKey,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortKey {
    Bytes,
    Copies,
    Reuse,
    Pid,
}

/// One process's rates over the last interval.
struct Row {
    pid: u32,
    comm: String,
    copies_s: f64,
    bytes_s: f64,
    by_size: String,
    forks: String,
    reuse_s: f64,
}

pub fn run(args: TopArgs) -> Result<ExitCode> {
    let mut source = Source::open()?;
    let interval = Duration::from_secs(1);
    let mut before = source.read()?;
    loop {
        std::thread::sleep(interval);
        let after = source.read()?;
        let rows = rows(&args, &before, &after, interval.as_secs_f64());
        let mut out = std::io::stdout().lock();
        if !args.once {
            // Home and clear: a fresh screen each second, until Ctrl-C.
            write!(out, "\x1b[H\x1b[2J").context("writing stdout")?;
        }
        print(&rows, &mut out).context("writing stdout")?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        before = after;
    }
}

fn rows(args: &TopArgs, before: &Report, after: &Report, secs: f64) -> Vec<Row> {
    let earlier: HashMap<u32, &Process> = before.processes.iter().map(|p| (p.pid, p)).collect();
    let now_ns = crate::run::sample::monotonic_ns();
    let mut rows: Vec<Row> = after
        .processes
        .iter()
        .filter(|p| args.pid.is_none_or(|pid| pid == p.pid))
        .filter(|p| args.comm.as_ref().is_none_or(|c| *c == p.comm))
        .map(|p| {
            let was = earlier.get(&p.pid);
            let delta =
                |f: fn(&Process) -> u64| f(p).saturating_sub(was.map_or(0, |w| f(w))) as f64 / secs;
            let sizes: Vec<String> = p
                .copies_by_size
                .iter()
                .map(|(size, n)| {
                    let old = was
                        .and_then(|w| w.copies_by_size.get(size))
                        .copied()
                        .unwrap_or(0);
                    format!("{}:{}", human(*size), n.saturating_sub(old))
                })
                .collect();
            let forks: Vec<String> = after
                .forks
                .iter()
                .filter(|f| f.parent == p.pid && f.end_ns.is_none())
                .map(|f| {
                    format!(
                        "{}({:.0}s)",
                        f.child,
                        now_ns.saturating_sub(f.start_ns) as f64 / 1e9
                    )
                })
                .collect();
            Row {
                pid: p.pid,
                comm: escape(&p.comm),
                copies_s: delta(|p| p.cow_copies),
                bytes_s: delta(|p| p.cow_bytes),
                by_size: sizes.join(" "),
                forks: forks.join(" "),
                reuse_s: delta(|p| p.wp_reuse),
            }
        })
        .filter(|r| r.copies_s > 0.0 || r.reuse_s > 0.0 || !r.forks.is_empty())
        .collect();
    let key = |r: &Row| match args.sort {
        SortKey::Bytes => r.bytes_s,
        SortKey::Copies => r.copies_s,
        SortKey::Reuse => r.reuse_s,
        SortKey::Pid => -f64::from(r.pid),
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
    rows.truncate(args.rows);
    rows
}

fn print(rows: &[Row], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header([
            "PID",
            "COMM",
            "COPIES/S",
            "BYTES/S",
            "COPIES_BY_SIZE",
            "LIVE_FORKS(SHARED)",
            "REUSE/S",
        ]);
    for r in rows {
        table.add_row([
            r.pid.to_string(),
            r.comm.clone(),
            format!("{:.0}", r.copies_s),
            human(r.bytes_s as u64),
            r.by_size.clone(),
            r.forks.clone(),
            format!("{:.0}", r.reuse_s),
        ]);
    }
    writeln!(out, "{table}")
}
