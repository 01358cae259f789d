//! `snapshot run`: the live COW report. Starts (or connects to) a RESP
//! server, loads a dataset, drives a write load, takes snapshots on a policy,
//! traces the server and its snapshot children, and feeds one stream of
//! samples to sinks that render it (live screen, plain lines, JSON Lines).
use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

pub mod args;
mod compare;
mod hugetlb;
mod load;
mod predict;
mod resp;
pub(crate) mod sample;
mod sinks;
mod stacks;
mod store;
mod tracer;
mod watch;

use args::{Method, RunArgs};
use snapshot_store::PagesMode;
use resp::{Conn, Reply};
use sample::Sampler;
use sinks::{Setting, Sink};

/// How long the end of a run waits for a snapshot in progress to finish.
const FINISH_WAIT: Duration = Duration::from_secs(120);

pub fn run(args: RunArgs) -> Result<ExitCode> {
    args.validate()?;
    crate::kernel::Caps::current()?.require_tracing()?;
    // Installed before anything is reserved or started: a signal at any point
    // unwinds, so the huge pages go back and the store is stopped.
    let stop = Arc::new(AtomicBool::new(false));
    // The signal that stopped the run: its status is 128 + it, as a shell's.
    let caught = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing the Ctrl-C handler")?;
        signal_hook::flag::register_usize(signal, caught.clone(), signal as usize)
            .context("installing the Ctrl-C handler")?;
    }
    let tui = !args.no_tui && std::io::stdout().is_terminal();
    let metrics = args.metrics.map(sinks::metrics::serve).transpose().context("--metrics")?;
    let mut sinks = open_sinks(&args, tui, metrics.as_ref())?;
    let modes: Vec<Option<PagesMode>> = match args.connect {
        Some(_) => vec![None],
        None => args.pages.iter().copied().map(Some).collect(),
    };
    let mut rows = Vec::new();
    let mut last = Vec::new();
    let mut stopped_loading = None;
    'modes: for mode in modes {
        for &method in &args.method {
            let outcome = workload(&args, mode, method, &mut sinks, &stop, metrics.as_ref());
            let (setting, end, summaries) = match outcome {
                Ok(outcome) => outcome,
                // Ctrl-C, SIGTERM or q while loading: a stop, as during the run.
                Err(error) if error.is::<load::Stopped>() => {
                    stopped_loading = Some(error);
                    break 'modes;
                }
                Err(error) => return Err(failed(error, &rows, &mut sinks, tui, method, mode)),
            };
            let observed = setting.pages_observed.clone().unwrap_or_default();
            let pages = mode.map_or("server's", PagesMode::name);
            let stopped = stop.load(Ordering::Relaxed);
            // Stopped before its first snapshot ended, a workload has nothing to
            // compare: its zeros would read as no copies and no stall.
            if !(stopped && summaries.is_empty()) {
                rows.push(compare::row(pages, &observed, method, &end, &summaries));
                last = summaries;
            }
            // Stopped: the page sizes and methods not run yet are not started.
            if stopped {
                break 'modes;
            }
        }
    }
    if rows.len() > 1 {
        compare_all(rows, sinks, tui)?;
    } else if tui {
        drop(sinks);
        // Nothing to show when stopped before any snapshot.
        if !last.is_empty() {
            println!("{}", sinks::lines::table(&last));
        }
    }
    // Said once the live screen is closed.
    if let Some(stopped) = stopped_loading {
        crate::output::note(&format!("{stopped:#}"));
    }
    // Keys on the live screen (q, Ctrl-C in raw mode) end it as top's q does: 0.
    Ok(match caught.load(Ordering::Relaxed) {
        0 => ExitCode::SUCCESS,
        signal => ExitCode::from(128 + signal as u8),
    })
}

/// Shows the rows side by side (every sink; the screen's after it is closed).
fn compare_all(rows: Vec<compare::Row>, mut sinks: Vec<Box<dyn Sink>>, tui: bool) -> Result<()> {
    let comparison = compare::Comparison { kind: "comparison", rows };
    for sink in &mut sinks {
        sink.compare(&comparison)?;
    }
    if tui {
        // The screen is restored before the table is printed.
        drop(sinks);
        println!("{}", sinks::lines::comparison_table(&comparison));
    }
    Ok(())
}

/// A workload failed: what the ones before it measured is shown, and the
/// error says which one failed.
fn failed(
    error: anyhow::Error,
    rows: &[compare::Row],
    sinks: &mut Vec<Box<dyn Sink>>,
    tui: bool,
    method: Method,
    mode: Option<PagesMode>,
) -> anyhow::Error {
    let taken = std::mem::take(sinks);
    let pages = mode.map_or("the server's", PagesMode::name);
    let shown = match rows.is_empty() {
        true => Ok(String::new()),
        false => compare_all(rows.to_vec(), taken, tui).map(|()| "; the comparison shows the runs before it".into()),
    };
    match shown {
        Ok(shown) => error.context(format!("the {} method under {pages} pages failed{shown}", method.name())),
        Err(e) => error.context(format!("the {} method under {pages} pages failed (and the comparison: {e:#})", method.name())),
    }
}

/// One workload against one server: start it (or connect), load, drive,
/// snapshot and sample until the end; the server is stopped on return.
fn workload(
    args: &RunArgs,
    mode: Option<PagesMode>,
    method: Method,
    sinks: &mut [Box<dyn Sink>],
    stop: &AtomicBool,
    metrics: Option<&crate::metrics::Shared>,
) -> Result<(Setting, sample::End, Vec<sample::Summary>)> {
    let _huge = match mode {
        Some(PagesMode::Hugetlb) => Some(hugetlb::reserve(hugetlb::pages_for(args.keys, args.value_size))?),
        _ => None,
    };
    let target = match (&args.connect, mode) {
        (Some(addr), _) => store::connect(addr, args.pid)?,
        (None, mode) => store::start(mode.unwrap_or(PagesMode::Small), method, args.resize_during_snapshot)?,
    };
    let mut tracer = tracer::Tracer::attach(target.pid, args.stacks)?;
    if let Some(metrics) = metrics {
        tracer.publish(metrics.clone())?;
    }
    if !args.no_load {
        // The live screen holds the terminal in raw mode: Ctrl-C and q are keys there, not signals.
        let mut quit = || -> Result<bool> {
            let mut quit = stop.load(Ordering::Relaxed);
            for sink in sinks.iter_mut() {
                quit |= sink.quit_requested()?;
            }
            Ok(quit)
        };
        load::populate(target.addr, args.keys, args.value_size, &mut quit)?;
    }
    let mut conn = Conn::connect(target.addr)?;
    let info = conn.info("all")?;
    let keys = info.keys().max(1);
    let dataset = info.num("used_memory").unwrap_or(args.keys * args.value_size as u64);
    let page = match mode {
        Some(PagesMode::Hugetlb) => 2 << 20,
        // THP is split on a COW fault and copied in base pages.
        _ => crate::kernel::page_size(),
    };
    // Without the store's bucket count (another server), a load factor of 1.
    let buckets = info.num("dataset_table_buckets").unwrap_or(keys);
    let model = predict::Model::new(keys, dataset as f64 / keys as f64, page, args.dist, args.zipf_s)
        .with_inserts(args.insert_ratio, buckets);
    let setting = Setting {
        kind: "setting",
        server: target.name.clone(),
        method,
        pages_observed: info.get("dataset_pages_mode").map(crate::run::escape),
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
    for sink in sinks.iter_mut() {
        sink.begin(&setting)?;
    }
    let shared = load::Shared::new();
    let forkless = (method == Method::Forkless).then_some(target.addr);
    let watcher = watch::spawn(target.pid, forkless, shared.clone())?;
    let config = load::LoadConfig {
        keys,
        value_size: args.value_size,
        rate: args.rate,
        dist: args.dist,
        zipf_s: args.zipf_s,
        read_ratio: args.read_ratio,
        insert_ratio: args.insert_ratio,
    };
    let loader = load::spawn(target.addr, config, shared.clone())?;
    let setup = sample::Setup {
        tracer,
        conn: Conn::connect(target.addr)?,
        shared: shared.clone(),
        pid: target.pid,
        method,
        model,
        value_size: args.value_size as u64,
        dataset_bytes: dataset,
    };
    let outcome = Sampler::new(setup).and_then(|sampler| drive(args, sampler, &mut conn, &shared, sinks, &loader, stop));
    shared.stop.store(true, Ordering::Relaxed);
    let loaded = loader.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    let _ = watcher.join();
    let (end, summaries) = outcome?;
    loaded.context("the load generator")?;
    for sink in sinks.iter_mut() {
        sink.end(&end, &summaries)?;
    }
    Ok((setting, end, summaries))
}

fn open_sinks(args: &RunArgs, tui: bool, metrics: Option<&crate::metrics::Shared>) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if tui {
        sinks.push(Box::new(sinks::tui::Tui::start()?));
    } else {
        sinks.push(Box::new(sinks::lines::Lines));
    }
    // Before the files: a snapshot in the JSON Lines is in the metrics already.
    if let Some(metrics) = metrics {
        sinks.push(Box::new(sinks::metrics::Prom(metrics.clone())));
    }
    if let Some(path) = &args.html {
        sinks.push(Box::new(sinks::html::Html::new(path.clone())));
    }
    if let Some(path) = &args.json {
        sinks.push(Box::new(sinks::jsonl::Jsonl::create(path)?));
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
    stop: &AtomicBool,
) -> Result<(sample::End, Vec<sample::Summary>)> {
    let start = Instant::now();
    let period = Duration::from_secs_f64(args.interval);
    let mut next = start + period;
    let mut next_snapshot = start + Duration::from_secs_f64(args.warmup);
    let mut ending: Option<Instant> = None;
    // A BGSAVE was sent since the last sample.
    let mut sent = false;
    loop {
        let quit = wait_until(next, sinks, stop)?;
        next += period;
        let (sample, summary) = sampler.sample()?;
        for sink in sinks.iter_mut() {
            sink.interval(&sample)?;
            if let Some(summary) = &summary {
                sink.snapshot(summary)?;
            }
        }
        let busy = sampler.snapshot_open() || shared.child_alive.load(Ordering::Relaxed);
        // A save over before the watcher saw it (a few ms, on a tiny dataset) has no summary: plan the next anyway.
        if summary.is_some() || (sent && !busy) {
            next_snapshot = Instant::now() + Duration::from_secs_f64(args.every);
        }
        // By now the save is open, summarised or missed: either way planned.
        sent = false;
        if quit || loader.is_finished() {
            break;
        }
        if args.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            ending.get_or_insert_with(Instant::now);
        }
        match ending {
            // --duration ends the run once the snapshot in progress is summarised.
            Some(at) if !busy || at.elapsed() > FINISH_WAIT => break,
            None if args.every > 0.0 && !busy && Instant::now() >= next_snapshot => {
                bgsave(conn)?;
                sent = true;
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
