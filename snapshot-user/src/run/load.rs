//! The load: the dataset loaded over RESP, then a paced stream of SET/GET on
//! one connection, each command's latency recorded apart for "a snapshot
//! child lives" and "none does".
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{
    args::Dist,
    resp::{Conn, Reply},
};

/// Keys sent in one pipelined batch while loading.
const LOAD_BATCH: u64 = 1000;
/// A prime larger than any keyspace: rank * SCATTER mod keys is a bijection
/// that spreads Zipf's hot ranks over the keyspace, as YCSB scrambles them.
const SCATTER: u64 = 2_654_435_761;

/// Fixed-width names, so every record has the same size.
pub fn key(index: u64) -> String {
    format!("key:{index:012}")
}

/// The key index the Zipf rank `rank` (0 = hottest) stands for.
pub fn key_of_rank(rank: u64, keys: u64) -> u64 {
    ((rank as u128 * SCATTER as u128) % keys as u128) as u64
}

/// The user stopped the run while the dataset was loading: not a failure.
#[derive(Debug)]
pub struct Stopped {
    loaded: u64,
    keys: u64,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped while loading the dataset ({} of {} keys loaded)", self.loaded, self.keys)
    }
}

impl std::error::Error for Stopped {}

/// Loads keys 0..keys with values of `value_size` bytes, pipelined, with a
/// progress bar on stderr (a line where it is no terminal).
/// Gives up between batches once `stop` says so (Ctrl-C, SIGTERM, q on the live screen).
pub fn populate(addr: SocketAddr, keys: u64, value_size: usize, stop: &mut dyn FnMut() -> Result<bool>) -> Result<()> {
    let mut conn = Conn::connect(addr)?;
    let bar = indicatif::ProgressBar::new(keys).with_style(
        indicatif::ProgressStyle::with_template("loading {pos}/{len} keys {wide_bar} {per_sec} eta {eta}")
            .context("progress bar template")?,
    );
    // Without a terminal the bar is hidden: one line says the load began (scripts and tests
    // wait for it).
    if bar.is_hidden() {
        eprintln!("snapshot: loading {keys} keys into the store");
    }
    let value = vec![b'v'; value_size];
    let mut next = 0;
    while next < keys {
        if stop()? {
            bar.finish_and_clear();
            return Err(Stopped { loaded: next, keys }.into());
        }
        let end = (next + LOAD_BATCH).min(keys);
        for i in next..end {
            conn.push(&[b"SET", key(i).as_bytes(), &value]);
        }
        conn.flush()?;
        for _ in next..end {
            if let Reply::Error(e) = conn.read()? {
                bail!("loading the dataset: the server refused SET: {e}");
            }
        }
        bar.inc(end - next);
        next = end;
    }
    bar.finish_and_clear();
    Ok(())
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub keys: u64,
    pub value_size: usize,
    pub rate: f64,
    pub dist: Dist,
    pub zipf_s: f64,
    pub read_ratio: f64,
    pub insert_ratio: f64,
}

/// Latency in microseconds, apart for "child alive" and "no child".
pub struct Split {
    pub alive: Histogram<u64>,
    pub idle: Histogram<u64>,
}

impl Split {
    fn new() -> Split {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds");
        Split { alive: h(), idle: h() }
    }

    fn record(&mut self, alive: bool, micros: u64) {
        let h = if alive { &mut self.alive } else { &mut self.idle };
        h.saturating_record(micros.max(1));
    }

    fn reset(&mut self) {
        self.alive.reset();
        self.idle.reset();
    }
}

/// What the load generator measured; the sampler takes it under the lock.
pub struct LoadStats {
    pub writes: u64,
    pub reads: u64,
    /// Writes sent while a snapshot child lived (cumulative).
    pub writes_alive: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Since the last sample.
    pub interval: Split,
    /// Since the current snapshot began (alive) and over the whole run (idle).
    pub run: Split,
}

pub struct Shared {
    pub stats: Mutex<LoadStats>,
    pub stop: AtomicBool,
    /// Set by the watcher: a snapshot runs (a child of the server lives, or a forkless save).
    pub child_alive: AtomicBool,
    /// Forkless saves as the watcher saw them begin and end.
    pub saves: Mutex<Vec<super::watch::Span>>,
    /// Memory before and during the snapshot, from the watcher.
    pub memory: Mutex<super::watch::Memory>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            stats: Mutex::new(LoadStats {
                writes: 0,
                reads: 0,
                writes_alive: 0,
                errors: 0,
                last_error: None,
                interval: Split::new(),
                run: Split::new(),
            }),
            stop: AtomicBool::new(false),
            child_alive: AtomicBool::new(false),
            saves: Mutex::new(Vec::new()),
            memory: Mutex::new(super::watch::Memory::default()),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, LoadStats> {
        // A panicked load thread leaves plain counters: still worth reading.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LoadStats {
    pub fn reset_interval(&mut self) {
        self.interval.reset();
    }

    /// A new snapshot began: its "alive" histogram starts empty.
    pub fn reset_snapshot(&mut self) {
        self.run.alive.reset();
    }
}

/// Picks keys by the distribution.
enum Picker {
    Uniform,
    Zipf(rand_distr::Zipf<f64>),
    Sequential(u64),
}

impl Picker {
    fn new(config: &LoadConfig) -> Result<Picker> {
        Ok(match config.dist {
            Dist::Uniform => Picker::Uniform,
            Dist::Sequential => Picker::Sequential(0),
            Dist::Zipf => Picker::Zipf(
                rand_distr::Zipf::new(config.keys as f64, config.zipf_s).context("Zipf distribution")?,
            ),
        })
    }

    fn next(&mut self, rng: &mut SmallRng, keys: u64) -> u64 {
        match self {
            Picker::Uniform => rng.random_range(0..keys),
            Picker::Zipf(z) => key_of_rank(rng.sample(&*z) as u64 - 1, keys),
            Picker::Sequential(i) => {
                *i = (*i + 1) % keys;
                *i
            }
        }
    }
}

/// Starts the load thread; it runs until `shared.stop`.
pub fn spawn(addr: SocketAddr, config: LoadConfig, shared: Arc<Shared>) -> Result<JoinHandle<Result<()>>> {
    let conn = Conn::connect(addr)?;
    let picker = Picker::new(&config)?;
    Ok(std::thread::Builder::new()
        .name("load".into())
        .spawn(move || generate(conn, config, picker, &shared))
        .context("starting the load thread")?)
}

/// Every millisecond, sends the operations that are due at `rate` as one
/// pipeline and records each one's round trip.
fn generate(mut conn: Conn, config: LoadConfig, mut picker: Picker, shared: &Shared) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut value = vec![b'w'; config.value_size];
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut writes = Vec::new();
    let mut new_key = config.keys;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * config.rate) as u64;
        let batch = due.saturating_sub(sent).min(1000);
        if batch == 0 {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        writes.clear();
        for _ in 0..batch {
            let mut k = key(picker.next(&mut rng, config.keys));
            let write = config.read_ratio == 0.0 || rng.random::<f64>() >= config.read_ratio;
            if write && config.insert_ratio > 0.0 && rng.random::<f64>() < config.insert_ratio {
                k = key(new_key);
                new_key += 1;
            }
            if write {
                // Each value differs, so the server really writes it.
                value[..8.min(config.value_size)].copy_from_slice(&sent.to_le_bytes()[..8.min(config.value_size)]);
                conn.push(&[b"SET", k.as_bytes(), &value]);
            } else {
                conn.push(&[b"GET", k.as_bytes()]);
            }
            writes.push(write);
            sent += 1;
        }
        let alive = shared.child_alive.load(Ordering::Relaxed);
        let t0 = Instant::now();
        conn.flush()?;
        let replies: Vec<Reply> = writes.iter().map(|_| conn.read()).collect::<Result<_>>()?;
        let micros = t0.elapsed().as_micros() as u64;
        let mut stats = shared.lock();
        for (write, reply) in writes.iter().zip(replies) {
            if let Reply::Error(e) = reply {
                stats.errors += 1;
                stats.last_error = Some(e);
                continue;
            }
            let n = if *write { &mut stats.writes } else { &mut stats.reads };
            *n += 1;
            if *write && alive {
                stats.writes_alive += 1;
            }
            stats.interval.record(alive, micros);
            stats.run.record(alive, micros);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_is_a_bijection() {
        let keys = 1000;
        let mut seen: Vec<u64> = (0..keys).map(|r| key_of_rank(r, keys)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), keys as usize);
    }
}
