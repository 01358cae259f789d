//! `snapshot trace`: counts copies of the selected processes until the command
//! exits, the duration ends or a signal, then reports.
use std::{
    collections::HashMap,
    io::Write as _,
    os::fd::{FromRawFd as _, OwnedFd},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use nix::{
    sys::{
        signal::{SigSet, Signal, kill},
        signalfd::{SfdFlags, SignalFd},
    },
    unistd::Pid,
};
use snapshot_common::ProcStats;
use tokio::io::unix::AsyncFd;

use crate::{
    cli::{BUDGET_EXCEEDED, TraceArgs},
    loader::{self, Loaded, Selection, comm_bytes},
    metrics::{self, Metrics, Reports},
    output::{Sink, note},
    privilege::{self, Identity},
    report::{self, Collector, Report, escape, human},
    spawn::{self, Started},
    stacks,
};

/// Exit status when a second SIGINT ends tracing: a shell's for SIGINT.
const INTERRUPTED: u8 = 130;

/// What was checked and opened before anything is traced.
struct Plan {
    identity: Option<Identity>,
    table: Sink,
    json: Option<Sink>,
    /// `--pid` resolved to its process, with the thread it was given as.
    target: Option<(u32, Option<u32>)>,
    /// Parents of the processes running at the start (records of processes
    /// that started before tracing carry none).
    ppids: HashMap<u32, u32>,
    /// `--metrics`: bound before tracing starts.
    metrics: Option<std::net::TcpListener>,
    /// `--stacks` outputs, or None without it.
    stacks: Option<stacks::Outputs>,
}

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    let mut plan = plan(&args)?;
    let selection = Selection { all: args.all, comm: args.comm.clone(), stacks: args.stacks.enabled() };
    let loaded = loader::load_all(&selection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let endpoint = plan.metrics.take();
    let (mut report, status) = runtime.block_on(trace(loaded, &args, &plan, endpoint))?;
    for p in report.processes.iter_mut().filter(|p| p.ppid == 0) {
        p.ppid = plan.ppids.get(&p.pid).copied().unwrap_or(0);
    }
    let status = verdict(&args, &report, status);
    match finish(&mut plan, &report) {
        Ok(()) => Ok(ExitCode::from(status)),
        // The report is lost: say so, and never exit 0 for it; a failing
        // command's status or the budget's verdict still comes through.
        Err(error) => {
            note(&crate::error_text(&error));
            Ok(ExitCode::from(if status == 0 { 1 } else { status }))
        }
    }
}

/// Checks the arguments and opens the outputs before tracing starts.
fn plan(args: &TraceArgs) -> Result<Plan> {
    if args.user.is_some() && args.command.is_empty() {
        bail!("-u/--user sets who runs the command: give one after `--`");
    }
    let identity = match args.command.is_empty() {
        true => None,
        false => privilege::command_identity(args.user.as_deref())?,
    };
    // Two reports in one place interleave into something neither reader can parse.
    if let (Some(table), Some(json)) = (&args.output, &args.json)
        && table == json
    {
        bail!("-o/--output and --json both name {}: give them different places", table.display());
    }
    let table = Sink::open(args.output.as_deref(), Sink::Stderr).context("-o/--output")?;
    let json = args.json.as_deref().map(|p| Sink::open(Some(p), Sink::Stdout)).transpose().context("--json")?;
    let target = args.pid.map(resolve_pid).transpose()?;
    let ppids = if args.all || args.comm.is_some() { running_parents() } else { HashMap::new() };
    let metrics = args.metrics.map(metrics::bind).transpose().context("--metrics")?;
    let stacks = args.stacks.enabled().then(|| stacks::Outputs::open(&args.stacks)).transpose()?;
    Ok(Plan { identity, table, json, target, ppids, metrics, stacks })
}

/// A thread id becomes its process's id: the whole process is traced.
fn resolve_pid(pid: u32) -> Result<(u32, Option<u32>)> {
    let status = i32::try_from(pid)
        .ok()
        .and_then(|p| procfs::process::Process::new(p).and_then(|p| p.status()).ok())
        .with_context(|| format!("--pid {pid}: no such process"))?;
    let tgid = status.tgid as u32;
    Ok((tgid, (tgid != pid).then_some(pid)))
}

fn running_parents() -> HashMap<u32, u32> {
    let Ok(all) = procfs::process::all_processes() else { return HashMap::new() };
    all.flatten().filter_map(|p| p.stat().ok()).map(|s| (s.pid as u32, s.ppid as u32)).collect()
}

/// Writes the table and the JSON; every write is checked.
fn finish(plan: &mut Plan, report: &Report) -> Result<()> {
    plan.table.write(|out| report::print(report, out))?;
    if let (Some(outputs), Some(stacks)) = (&mut plan.stacks, &report.stacks) {
        outputs.write(stacks, &mut plan.table)?;
    }
    if let Some(json) = &mut plan.json {
        json.write(|out| {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        })?;
    }
    Ok(())
}

/// Exit status for a report: the budget's verdict, else the command's status.
pub fn verdict(args: &TraceArgs, report: &Report, status: u8) -> u8 {
    match args.budget {
        Some(budget) if report.total_cow_bytes() > budget => {
            note(&format!(
                "COW budget exceeded: copied {} ({} bytes) > budget {} ({budget} bytes)",
                human(report.total_cow_bytes()),
                report.total_cow_bytes(),
                human(budget)
            ));
            BUDGET_EXCEEDED
        }
        _ => status,
    }
}

/// The signals snapshot handles, read from a signalfd so it learns who sent them.
const HANDLED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Traces until the end: the report and the command's status. A command that
/// could not start is a `CommandFailed` error carrying its status.
async fn trace(
    mut loaded: Loaded,
    args: &TraceArgs,
    plan: &Plan,
    endpoint: Option<std::net::TcpListener>,
) -> Result<(Report, u8)> {
    let mut ring = watch_ring(&mut loaded, "EVENTS")?;
    let mut addresses = match args.stacks.enabled() {
        true => Some(watch_ring(&mut loaded, "COPY_ADDRS")?),
        false => None,
    };
    let mut recorder = stacks::Recorder::default();
    let signals = watch_signals()?;
    let mut collector = Collector::default();
    let (metrics, mut scrapes) = serve_metrics(endpoint)?;
    seed(&mut loaded, args, plan)?;
    let child = match args.command.as_slice() {
        [] => None,
        [program, rest @ ..] => match spawn_traced(&mut loaded, program, rest, plan.identity.as_ref())? {
            Started::Running(pid) => Some(pid),
            Started::Failed(status) => return Err(CommandFailed(status).into()),
        },
    };
    // Attached, maps open, command started: from here on only map reads.
    let mut keep = privilege::kept_while_tracing(plan.identity.is_some());
    if addresses.is_some() {
        keep.extend(privilege::kept_to_read_processes());
    }
    privilege::drop_capabilities(&keep)?;
    let child_exit = child.map(exit_watch).transpose()?;
    let watched = plan.target.map(|(pid, _)| exit_watch(Pid::from_raw(pid as i32))).transpose()?;
    note(&format!("tracing {} (Ctrl-C to stop)", describe(args, plan)));
    let start = Instant::now();
    let period = args.interval.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let (mut last_bytes, mut interrupts, mut deadline_passed) = (0, 0, false);
    let status = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("event ring")?;
                collector.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            Some(done) = scrapes.recv(), if metrics.is_some() => {
                // A scrape waits for figures as fresh as a report's.
                let now = collector.report(&mut loaded, ring.get_mut(), start.elapsed().as_secs_f64())?;
                if let Some(metrics) = &metrics {
                    metrics::lock(metrics)?.update(&now);
                }
                let _ = done.send(());
            }
            guard = ready(addresses.as_mut()) => {
                let mut guard = guard.context("address ring")?;
                recorder.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticker.tick(), if args.interval.is_some() => {
                let now = collector.report(&mut loaded, ring.get_mut(), start.elapsed().as_secs_f64())?;
                print_interval(&now, &mut last_bytes, period);
            }
            guard = signals.readable() => {
                let mut guard = guard.context("signals")?;
                if let Some(status) = on_signals(guard.get_inner(), child, &mut interrupts)? {
                    break status;
                }
                guard.clear_ready();
            }
            _ = exited(child_exit.as_ref()) => {
                break spawn::wait(child.context("no command")?)?;
            }
            _ = &mut deadline, if args.duration.is_some() && !deadline_passed => {
                deadline_passed = true;
                let Some(pid) = child else { break 0 };
                // As perf stat --timeout: the command is ended, its status kept.
                note(&format!("--duration reached: sending SIGTERM to pid {pid}"));
                let _ = kill(pid, Signal::SIGTERM);
            }
            _ = exited(watched.as_ref()) => break 0,
        }
    };
    let mut report = collector.report(&mut loaded, ring.get_mut(), start.elapsed().as_secs_f64())?;
    if let Some(ring) = &mut addresses {
        recorder.drain(ring.get_mut());
        report.stacks = Some(recorder.finish(&loaded, &report)?);
    }
    Ok((report, status))
}

/// Scrape requests of `--metrics`, answered by the tracing loop.
type Scrapes = tokio::sync::mpsc::UnboundedReceiver<std::sync::mpsc::SyncSender<()>>;

/// Starts after `watch_signals`: the HTTP threads inherit its blocked signals.
fn serve_metrics(endpoint: Option<std::net::TcpListener>) -> Result<(Option<metrics::Shared>, Scrapes)> {
    let (refresh, scrapes) = tokio::sync::mpsc::unbounded_channel();
    let Some(server) = endpoint else { return Ok((None, scrapes)) };
    let shared = Arc::new(Mutex::new(Metrics::new(false, Reports::Cumulative).context("registering metrics")?));
    metrics::serve_in_background(server, shared.clone(), Some(refresh))?;
    Ok((Some(shared), scrapes))
}

/// A ring buffer of the programs, readable in the event loop.
fn watch_ring(loaded: &mut Loaded, name: &str) -> Result<AsyncFd<RingBuf<MapData>>> {
    let ring = RingBuf::try_from(loaded.ebpf.take_map(name).with_context(|| format!("no {name} map"))?)?;
    // SAFETY: the ring's fd lives as long as the AsyncFd that owns the ring.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the {name} ring: {e}"))
}

/// Resolves when the ring has records; never without one.
async fn ready(
    ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(ring) => ring.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// The command could not be run: its shell status, the reason already said.
#[derive(Debug)]
pub struct CommandFailed(pub u8);

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command could not be run (status {})", self.0)
    }
}

impl std::error::Error for CommandFailed {}

/// Blocks the handled signals (threads started later inherit the mask) and
/// reads them from a signalfd instead.
fn watch_signals() -> Result<AsyncFd<SignalFd>> {
    let mut mask = SigSet::empty();
    HANDLED.iter().for_each(|&s| mask.add(s));
    mask.thread_block().context("blocking signals")?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    // SAFETY: the AsyncFd owns the signalfd, so the fd outlives the registration.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching signals: {e}"))
}

/// Acts on pending signals; Some(status) ends tracing. Without a command any
/// of them ends it. With one, a signal sent to snapshot alone (by kill, not
/// by the terminal, which signals the whole foreground group) is passed on,
/// and the second SIGINT ends tracing whatever the command does.
fn on_signals(fd: &SignalFd, child: Option<Pid>, interrupts: &mut u32) -> Result<Option<u8>> {
    while let Some(info) = fd.read_signal().context("reading signals")? {
        let Some(pid) = child else { return Ok(Some(0)) };
        let signal = Signal::try_from(info.ssi_signo as i32).context("signal number")?;
        if signal == Signal::SIGINT {
            *interrupts += 1;
            if *interrupts >= 2 {
                note(&format!("interrupted twice: tracing stopped; pid {pid} goes on untraced"));
                return Ok(Some(INTERRUPTED));
            }
        }
        if info.ssi_code != libc::SI_KERNEL {
            let _ = kill(pid, signal);
        }
    }
    Ok(None)
}

/// A pidfd: readable once the process has exited (zombies included).
fn exit_watch(pid: Pid) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("watching pid {pid}"));
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the pidfd, so the fd outlives the registration.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching pid {pid}: {e}"))
}

/// Resolves when the watched process has exited; never without one.
async fn exited(fd: Option<&AsyncFd<OwnedFd>>) {
    match fd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

fn print_interval(report: &Report, last_bytes: &mut u64, period: Duration) {
    let bytes = report.total_cow_bytes();
    let rate = (bytes - (*last_bytes).min(bytes)) as f64 / period.as_secs_f64();
    *last_bytes = bytes;
    let live = report.processes.iter().filter(|p| !p.exited).count();
    let line = format!(
        "{:8.1}s  copies {:>10}  copied {:>10}  rate {:>10}/s  wp_reuse {:>8}  live procs {live}",
        report.duration_s,
        report.total_cow_copies(),
        human(bytes),
        human(rate as u64),
        report.processes.iter().map(|p| p.wp_reuse).sum::<u64>(),
    );
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn describe(args: &TraceArgs, plan: &Plan) -> String {
    match (&plan.target, &args.comm, args.all) {
        (Some((pid, None)), _, _) => format!("pid {pid} and the processes it forks"),
        (Some((pid, Some(tid))), _, _) => format!("pid {pid} (the process of thread {tid}) and the processes it forks"),
        (_, Some(name), _) => format!("processes named \"{}\"", escape(name)),
        (_, _, true) => "every process".to_string(),
        _ => format!("`{}` and the processes it forks", escape(&args.command.join(" "))),
    }
}

/// Puts the processes named by `--pid` or `--comm` into the traced set.
fn seed(loaded: &mut Loaded, args: &TraceArgs, plan: &Plan) -> Result<()> {
    if let Some((pid, _)) = plan.target {
        let proc = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .with_context(|| format!("--pid {pid}: no such process"))?;
        add(loaded, pid, proc.ppid as u32, &proc.comm)?;
    }
    if let Some(name) = &args.comm {
        let name = comm_bytes(name)?;
        for proc in procfs::process::all_processes().context("listing /proc")?.flatten() {
            let Ok(stat) = proc.stat() else { continue };
            if comm_bytes(&stat.comm).is_ok_and(|c| c == name) {
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
fn spawn_traced(loaded: &mut Loaded, program: &str, args: &[String], identity: Option<&Identity>) -> Result<Started> {
    let held = spawn::hold(program, args, identity)?;
    add(loaded, held.pid, std::process::id(), program.rsplit('/').next().unwrap_or(program))?;
    held.release()
}
