//! `snapshot trace`: counts copies of the selected processes until the command
//! exits, the duration ends or Ctrl-C, then reports.
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use snapshot_common::ProcStats;
use tokio::io::unix::AsyncFd;

use crate::{
    cli::{BUDGET_EXCEEDED, TraceArgs},
    loader::{self, Loaded, Selection, comm_bytes},
    report::{self, Collector, Report, human},
    spawn,
};

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    let selection = Selection { all: args.all, comm: args.comm.clone() };
    let loaded = loader::load_all(&selection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let (report, status) = runtime.block_on(trace(loaded, &args))?;
    finish(&args, &report)?;
    Ok(status)
}

/// Prints and saves the report; the budget decides the exit status.
fn finish(args: &TraceArgs, report: &Report) -> Result<()> {
    report::print(report);
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Exit status for a report: the budget's verdict, else the command's status.
pub fn verdict(args: &TraceArgs, report: &Report, status: ExitCode) -> ExitCode {
    match args.budget {
        Some(budget) if report.total_cow_bytes() > budget => {
            eprintln!(
                "snapshot: COW budget exceeded: copied {} ({} bytes) > budget {} ({budget} bytes)",
                human(report.total_cow_bytes()),
                report.total_cow_bytes(),
                human(budget)
            );
            ExitCode::from(BUDGET_EXCEEDED)
        }
        _ => status,
    }
}

async fn trace(mut loaded: Loaded, args: &TraceArgs) -> Result<(Report, ExitCode)> {
    let ring: RingBuf<MapData> = RingBuf::try_from(loaded.ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
    // SAFETY: the ring's fd lives as long as the AsyncFd that owns the ring.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the event ring: {e}"))?;
    let mut collector = Collector::default();
    seed(&mut loaded, args)?;
    let mut child = match args.command.as_slice() {
        [] => None,
        [program, rest @ ..] => {
            let pid = spawn_traced(&mut loaded, program, rest)?;
            Some(tokio::task::spawn_blocking(move || spawn::wait(pid)))
        }
    };
    let watched = args.pid.map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    eprintln!("snapshot: tracing {} (Ctrl-C to stop)", describe(args));
    let start = Instant::now();
    let period = Duration::from_secs_f64(args.interval.unwrap_or(3600.0).max(0.05));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let deadline = tokio::time::sleep(Duration::from_secs_f64(args.duration.unwrap_or(1e9).max(0.0)));
    tokio::pin!(deadline);
    let mut last_bytes = 0;
    let mut status = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("event ring")?;
                collector.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticker.tick(), if args.interval.is_some() => {
                let now = collector.report(&mut loaded, start.elapsed().as_secs_f64())?;
                print_interval(&now, &mut last_bytes, period);
            }
            _ = tokio::signal::ctrl_c() => {
                // The command got the same SIGINT: wait for it to exit.
                if child.is_none() { break; }
            }
            exit = async { child.as_mut().expect("guarded by is_some").await }, if child.is_some() => {
                status = ExitCode::from(exit.context("waiting for the command")??);
                break;
            }
            _ = &mut deadline, if args.duration.is_some() => break,
            _ = gone(watched), if watched.is_some() => break,
        }
    }
    collector.drain(ring.get_mut());
    let report = collector.report(&mut loaded, start.elapsed().as_secs_f64())?;
    let status = verdict(args, &report, status);
    Ok((report, status))
}


fn print_interval(report: &Report, last_bytes: &mut u64, period: Duration) {
    let bytes = report.total_cow_bytes();
    let rate = (bytes - (*last_bytes).min(bytes)) as f64 / period.as_secs_f64();
    *last_bytes = bytes;
    let live = report.processes.iter().filter(|p| !p.exited).count();
    eprintln!(
        "{:8.1}s  copies {:>10}  copied {:>10}  rate {:>10}/s  wp_reuse {:>8}  live procs {live}",
        report.duration_s,
        report.total_cow_copies(),
        human(bytes),
        human(rate as u64),
        report.processes.iter().map(|p| p.wp_reuse).sum::<u64>(),
    );
}

/// Resolves when the process no longer exists (polled: no pidfd in tokio).
async fn gone(pid: Option<nix::unistd::Pid>) {
    let Some(pid) = pid else { return std::future::pending().await };
    while nix::sys::signal::kill(pid, None).is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(args: &TraceArgs) -> String {
    match (&args.pid, &args.comm, args.all) {
        (Some(pid), _, _) => format!("pid {pid} and the processes it forks"),
        (_, Some(name), _) => format!("processes named {name:?}"),
        (_, _, true) => "every process".to_string(),
        _ => format!("`{}` and the processes it forks", args.command.join(" ")),
    }
}

/// Puts the processes named by `--pid` or `--comm` into the traced set.
fn seed(loaded: &mut Loaded, args: &TraceArgs) -> Result<()> {
    if let Some(pid) = args.pid {
        let proc = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .with_context(|| format!("--pid {pid}: no such process"))?;
        add(loaded, pid, proc.ppid as u32, &proc.comm)?;
    }
    if let Some(name) = &args.comm {
        let want = comm_bytes(name)?;
        for proc in procfs::process::all_processes().context("listing /proc")?.flatten() {
            let Ok(stat) = proc.stat() else { continue };
            if comm_bytes(&stat.comm).is_ok_and(|c| c == want) {
                add(loaded, stat.pid as u32, stat.ppid as u32, &stat.comm)?;
            }
        }
    }
    Ok(())
}

fn add(loaded: &mut Loaded, pid: u32, ppid: u32, comm: &str) -> Result<()> {
    let stats = ProcStats::new(pid, ppid, comm_bytes(comm).unwrap_or([0; 16]));
    loaded.procs()?.insert(pid, stats, 0).with_context(|| format!("tracing pid {pid}"))
}

/// Starts the command with its pid already traced, so no fault or fork of
/// it is missed.
fn spawn_traced(loaded: &mut Loaded, program: &str, args: &[String]) -> Result<nix::unistd::Pid> {
    let held = spawn::hold(program, args)?;
    add(loaded, held.pid, std::process::id(), program.rsplit('/').next().unwrap_or(program))?;
    held.release()
}
