//! `snapshot run`: the live COW report. Starts (or connects to) a RESP
//! server, loads a dataset, drives a write load, takes snapshots on a policy,
//! traces the server and its snapshot children, and feeds one stream of
//! samples to sinks that render it (live screen, plain lines, JSON Lines).
use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

pub mod args;
mod load;
mod predict;
mod resp;
mod sample;
mod sinks;
mod store;
mod tracer;
mod watch;

use args::RunArgs;
use resp::{Conn, Reply};
use sample::Sampler;
use sinks::{Setting, Sink};

/// How long the end of a run waits for a snapshot in progress to finish.
const FINISH_WAIT: Duration = Duration::from_secs(120);

pub fn run(args: RunArgs) -> Result<ExitCode> {
    args.validate()?;
    crate::kernel::Caps::current()?.require_tracing()?;
    let target = match &args.connect {
        Some(addr) => store::connect(addr, args.pid)?,
        None => store::start(args.pages)?,
    };
    let tracer = tracer::Tracer::attach(target.pid)?;
    if !args.no_load {
        load::populate(target.addr, args.keys, args.value_size)?;
    }
    let mut conn = Conn::connect(target.addr)?;
    let info = conn.info("all")?;
    let keys = info.keys().max(1);
    let dataset = info.num("used_memory").unwrap_or(args.keys * args.value_size as u64);
    let page = match (target.owned(), args.pages) {
        (true, snapshot_store::PagesMode::Hugetlb) => 2 << 20,
        // THP is split on a COW fault and copied in base pages.
        _ => crate::kernel::page_size(),
    };
    let model = predict::Model::new(keys, dataset as f64 / keys as f64, page, args.dist, args.zipf_s);
    let setting = Setting {
        kind: "setting",
        server: target.name.clone(),
        pid: target.pid,
        addr: target.addr.to_string(),
        keys,
        value_size: args.value_size,
        dataset_bytes: dataset,
        page_bytes: page,
        rate: args.rate,
        dist: args.dist,
        read_ratio: args.read_ratio,
        every_s: args.every,
    };
    let shared = load::Shared::new();
    let watcher = watch::spawn(target.pid, shared.clone())?;
    let config = load::LoadConfig {
        keys,
        value_size: args.value_size,
        rate: args.rate,
        dist: args.dist,
        zipf_s: args.zipf_s,
        read_ratio: args.read_ratio,
    };
    let loader = load::spawn(target.addr, config, shared.clone())?;
    let setup = sample::Setup {
        tracer,
        conn: Conn::connect(target.addr)?,
        shared: shared.clone(),
        pid: target.pid,
        model,
        value_size: args.value_size as u64,
        dataset_bytes: dataset,
    };
    let sampler = Sampler::new(setup)?;
    let mut sinks = open_sinks(&args, &setting)?;
    let outcome = drive(&args, sampler, &mut conn, &shared, &mut sinks, &loader);
    shared.stop.store(true, Ordering::Relaxed);
    let loaded = loader.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    let _ = watcher.join();
    // Screens are restored (sinks dropped) before any error is printed.
    let (end, summaries) = match outcome {
        Ok(done) => done,
        Err(e) => {
            drop(sinks);
            return Err(e);
        }
    };
    for sink in &mut sinks {
        sink.end(&end, &summaries)?;
    }
    drop(sinks);
    loaded.context("the load generator")?;
    drop(target);
    Ok(ExitCode::SUCCESS)
}

fn open_sinks(args: &RunArgs, setting: &Setting) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !args.no_tui && std::io::stdout().is_terminal() {
        sinks.push(Box::new(sinks::tui::Tui::start(setting.clone())?));
    } else {
        sinks.push(Box::new(sinks::lines::Lines::new(setting)));
    }
    if let Some(path) = &args.html {
        sinks.push(Box::new(sinks::html::Html::new(path.clone(), setting)));
    }
    if let Some(path) = &args.json {
        sinks.push(Box::new(sinks::jsonl::Jsonl::create(path, setting)?));
    }
    Ok(sinks)
}

/// Samples every interval and applies the snapshot policy until q, Ctrl-C
/// or --duration; then lets a snapshot in progress finish.
fn drive(
    args: &RunArgs,
    mut sampler: Sampler,
    conn: &mut Conn,
    shared: &load::Shared,
    sinks: &mut [Box<dyn Sink>],
    loader: &std::thread::JoinHandle<Result<()>>,
) -> Result<(sample::End, Vec<sample::Summary>)> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing the Ctrl-C handler")?;
    }
    let start = Instant::now();
    let period = Duration::from_secs_f64(args.interval);
    let mut next = start + period;
    let mut next_snapshot = start + Duration::from_secs_f64(args.warmup);
    let mut ending: Option<Instant> = None;
    loop {
        let quit = wait_until(next, sinks, &stop)?;
        next += period;
        let (sample, summary) = sampler.sample()?;
        for sink in sinks.iter_mut() {
            sink.interval(&sample)?;
            if let Some(summary) = &summary {
                sink.snapshot(summary)?;
            }
        }
        if summary.is_some() {
            next_snapshot = Instant::now() + Duration::from_secs_f64(args.every);
        }
        if quit || loader.is_finished() {
            break;
        }
        if args.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            ending.get_or_insert_with(Instant::now);
        }
        let busy = sampler.snapshot_open() || shared.child_alive.load(Ordering::Relaxed);
        match ending {
            // --duration ends the run once the snapshot in progress is summarised.
            Some(at) if !busy || at.elapsed() > FINISH_WAIT => break,
            None if args.every > 0.0 && !busy && Instant::now() >= next_snapshot => {
                bgsave(conn)?;
                // The next one is planned when this one's summary arrives.
                next_snapshot = Instant::now() + Duration::from_secs(3600);
            }
            _ => {}
        }
    }
    let end = sampler.end()?;
    Ok((end, sampler.summaries))
}

/// Sleeps until `at`, watching for Ctrl-C and the sinks' quit key.
fn wait_until(at: Instant, sinks: &mut [Box<dyn Sink>], stop: &AtomicBool) -> Result<bool> {
    let mut quit = false;
    loop {
        for sink in sinks.iter_mut() {
            quit |= sink.quit_requested()?;
        }
        quit |= stop.load(Ordering::Relaxed);
        let now = Instant::now();
        if now >= at {
            return Ok(quit);
        }
        std::thread::sleep((at - now).min(Duration::from_millis(20)));
    }
}

fn bgsave(conn: &mut Conn) -> Result<()> {
    match conn.call(&["BGSAVE"])? {
        // Another save (the server's own policy) is running: take that one.
        Reply::Error(e) if e.contains("in progress") => Ok(()),
        Reply::Error(e) => anyhow::bail!("BGSAVE refused: {e}"),
        _ => Ok(()),
    }
}

/// A process name made printable: other users choose these bytes.
pub fn escape(name: &str) -> String {
    name.chars().flat_map(char::escape_default).collect()
}
