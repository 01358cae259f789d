//! Forkless save: the event loop hands copies of records to a writer thread.
//!
//! The dataset stays owned by the event-loop thread. While a save runs the table copies every
//! record present at the start exactly once ([`Table::walk_step`] in bucket order, or
//! just before a write changes or removes it), and [`Job::step`], called between events, sends
//! those copies over a channel. The writer thread encodes them into the usual RDB temp file,
//! fsyncs it and renames it over the snapshot. The walk pauses while more than
//! [`MAX_IN_FLIGHT`] bytes wait for the writer, so memory stays bounded by the writer's pace
//! plus what writes force out early.

use crate::rdb;
use crate::snapfile;
use crate::table::{Table, pop_raw};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes the walk copies per step of the event loop (~0.1 ms of memcpy).
const STEP_BYTES: usize = 256 << 10;
/// Copied bytes waiting for the writer above which the walk pauses.
const MAX_IN_FLIGHT: u64 = 8 << 20;

enum Msg {
    Records(Vec<u8>),
    /// The table FLUSHALL replaced: the writer walks what is left of it itself.
    Rest(Box<Table>),
    End,
}

/// What the writer thread shares with the event loop.
struct Shared {
    in_flight: AtomicU64,
    keys_done: AtomicU64,
    /// Set (under the lock) when the save is abandoned; the writer renames only while holding
    /// the lock and seeing false, so after [`Job::abort`] no old snapshot can land.
    cancelled: Mutex<bool>,
}

pub struct Job {
    tx: Option<mpsc::Sender<Msg>>,
    result: mpsc::Receiver<Result<u64, String>>,
    shared: Arc<Shared>,
    walked: bool,
    tmp: PathBuf,
    pub start: Instant,
    /// Time the event loop spent starting the save (the stall a fork would cost).
    pub setup_usec: u64,
    /// Bytes and keys copied early because a write was about to change them.
    pub early_bytes: u64,
    pub early_keys: u64,
    pub keys_total: u64,
}

pub struct Config<'a> {
    pub dir: &'a Path,
    pub dest: PathBuf,
    pub compress: bool,
    /// Redis's `rdb-key-save-delay` (microseconds per key; for tests).
    pub key_delay_us: u64,
}

impl Job {
    /// Starts a save of `table`'s current contents.
    pub fn start(table: &mut Table, cfg: Config) -> Result<Job, String> {
        let t0 = Instant::now();
        let shared = Arc::new(Shared {
            in_flight: AtomicU64::new(0),
            keys_done: AtomicU64::new(0),
            cancelled: Mutex::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let (res_tx, result) = mpsc::sync_channel(1);
        let info = rdb::SaveInfo {
            compress: cfg.compress,
            ctime: crate::table::now_ms() / 1000,
            used_mem: table.arena().live_bytes() as u64,
        };
        let counts = (table.len() as u64, table.expires() as u64);
        // A new name per save: an abandoned writer's clean-up must never hit a later save's file.
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let tmp = cfg.dir.join(format!(
            "temp-{}-forkless-{}.rdb",
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        ));
        // Created here, not in the thread, so an abort right after the start always finds it.
        let file = snapfile::open_temp(&tmp).map_err(|e| format!("ERR {e:#}"))?;
        let w = Writer {
            rx,
            shared: shared.clone(),
            tmp: tmp.clone(),
            dest: cfg.dest,
            dir: cfg.dir.to_path_buf(),
            key_delay: Duration::from_micros(cfg.key_delay_us),
        };
        std::thread::Builder::new()
            .name("forkless-save".into())
            .spawn(move || {
                let _ = res_tx.send(w.run(file, &info, counts));
            })
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("ERR can't start the save thread: {e}")
            })?;
        table.begin_cow();
        Ok(Job {
            tx: Some(tx),
            result,
            shared,
            walked: false,
            tmp,
            start: Instant::now(),
            setup_usec: t0.elapsed().as_micros() as u64,
            early_bytes: 0,
            early_keys: 0,
            keys_total: counts.0,
        })
    }

    pub fn keys_done(&self) -> u64 {
        self.shared.keys_done.load(Ordering::Relaxed)
    }

    fn send(&mut self, m: Msg) {
        if let Msg::Records(b) = &m {
            if b.is_empty() {
                return;
            }
            self.shared
                .in_flight
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        // A send fails only if the writer is gone; its result says why.
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    /// How long the event loop may sleep before the next [`Job::step`].
    pub fn next_step_in(&self) -> Duration {
        let behind = self.shared.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT;
        if self.walked || behind {
            Duration::from_millis(2)
        } else {
            Duration::ZERO
        }
    }

    /// One step between events: hands over what writes copied, walks a little further, and
    /// returns the writer's result once it is done.
    pub fn step(&mut self, table: &mut Table) -> Option<Result<u64, String>> {
        if !self.walked {
            let copied = table.take_copied();
            self.send(Msg::Records(copied));
            if self.shared.in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT {
                let done = table.walk_step(STEP_BYTES);
                let copied = table.take_copied();
                self.send(Msg::Records(copied));
                if done {
                    (self.early_bytes, self.early_keys) = table.end_cow();
                    self.send(Msg::End);
                    self.walked = true;
                }
            }
        }
        match self.result.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                Some(Err("the save thread ended without a result".into()))
            }
        }
    }

    /// FLUSHALL during the save: the old table (with what it still has to copy) goes to the
    /// writer, which finishes the walk on its own and then frees it.
    pub fn adopt(&mut self, mut old: Table) {
        if self.walked {
            return;
        }
        let copied = old.take_copied();
        self.send(Msg::Records(copied));
        (self.early_bytes, self.early_keys) = (0, 0);
        self.send(Msg::Rest(Box::new(old)));
        self.walked = true;
    }

    /// Abandons the save: the writer stops, removes its temp file and renames nothing.
    pub fn abort(mut self, table: &mut Table) {
        if let Ok(mut c) = self.shared.cancelled.lock() {
            *c = true;
        }
        self.tx = None;
        // The writer may still hold it open; the name goes now (the process may exit next).
        let _ = std::fs::remove_file(&self.tmp);
        if !self.walked {
            table.end_cow();
        }
    }
}

struct Writer {
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    key_delay: Duration,
}

impl Writer {
    fn run(
        self,
        file: snapfile::TempFile,
        info: &rdb::SaveInfo,
        counts: (u64, u64),
    ) -> Result<u64, String> {
        let mut buf = Vec::with_capacity(1 << 20);
        let r = snapfile::write_temp(&self.tmp, file, |file| {
            rdb::write_with(file, &mut buf, info, counts, |e| self.body(e))
        })
        .and_then(|n| {
            let cancelled = self
                .shared
                .cancelled
                .lock()
                .map_err(|_| anyhow::anyhow!("save state lock poisoned"))?;
            if *cancelled {
                anyhow::bail!("save cancelled");
            }
            snapfile::publish(&self.tmp, &self.dest, &self.dir)?;
            Ok(n)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        r.map_err(|e| format!("{e:#}"))
    }

    fn body<W: std::io::Write>(&self, e: &mut rdb::encode::Encoder<W>) -> std::io::Result<u64> {
        let mut n = 0;
        loop {
            match self.rx.recv() {
                Ok(Msg::Records(b)) => {
                    n += self.encode(e, &b)?;
                    self.shared
                        .in_flight
                        .fetch_sub(b.len() as u64, Ordering::Relaxed);
                }
                Ok(Msg::Rest(mut t)) => loop {
                    let done = t.walk_step(STEP_BYTES);
                    n += self.encode(e, &t.take_copied())?;
                    if done {
                        return Ok(n);
                    }
                },
                Ok(Msg::End) => return Ok(n),
                Err(_) => return Err(std::io::Error::other("save cancelled")),
            }
        }
    }

    fn encode<W: std::io::Write>(
        &self,
        e: &mut rdb::encode::Encoder<W>,
        mut b: &[u8],
    ) -> std::io::Result<u64> {
        let mut n = 0;
        while let Some((r, rest)) = pop_raw(b) {
            e.string_key(r.key, r.val, (r.expire_ms != 0).then_some(r.expire_ms))?;
            n += 1;
            b = rest;
            if !self.key_delay.is_zero() {
                std::thread::sleep(self.key_delay);
            }
        }
        self.shared.keys_done.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}
