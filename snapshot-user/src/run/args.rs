//! `snapshot run` options.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::parse_seconds;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Keys in the dataset (loaded before the write load starts).
    #[arg(long, default_value_t = 2_000_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 512)]
    pub value_size: usize,
    /// Operations per second the load generator sends (0: no load).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Which keys the load touches.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,
    /// Zipf exponent for --dist zipf.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,
    /// Share of the operations that are GETs (the rest are SETs), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Start a snapshot (BGSAVE) every TIME after the last one ended
    /// (10, 1.5s, 500ms, 2m); 0 leaves snapshots to the server's own save policy.
    #[arg(long, value_name = "TIME", default_value_t = 10.0, value_parser = parse_seconds)]
    pub every: f64,
    /// Time of load before the first snapshot (a baseline for latency).
    #[arg(long, value_name = "TIME", default_value_t = 3.0, value_parser = parse_seconds)]
    pub warmup: f64,
    /// Share of the SETs that insert new keys (the dataset grows, and so
    /// does the store's hash table), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub insert_ratio: f64,
    /// Let the store's hash table resize while a snapshot child lives (Redis
    /// does not): with --insert-ratio, shows what that costs in copies.
    #[arg(long)]
    pub resize_during_snapshot: bool,
    /// Stop after this long under load: 10 (seconds), 1.5s, 500ms, 2m (default: q or Ctrl-C).
    #[arg(long, value_name = "TIME", value_parser = parse_seconds)]
    pub duration: Option<f64>,
    /// Time between samples (and screen refreshes).
    #[arg(long, value_name = "TIME", default_value_t = 1.0, value_parser = parse_seconds)]
    pub interval: f64,
    /// Plain text, one line per interval, instead of the live screen
    /// (the default when stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Write JSON Lines here: one object per interval, one per snapshot, one at the end.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Show who makes the copies: the top code paths (user stacks) and the
    /// top mappings of the server's and its snapshot children's copies, in
    /// every sample. Whole stacks need frame pointers (the store has them).
    #[arg(long)]
    pub stacks: bool,
    /// Write an HTML report here at the end (one self-contained file with the charts).
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Page size backing the store's dataset; several (4k,thp,hugetlb) run the
    /// same workload under each in turn (each for --duration) and end with one table.
    /// hugetlb reserves huge pages for the run and gives them back.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "4k")]
    pub pages: Vec<snapshot_store::PagesMode>,
    /// How the store snapshots: fork (a child, the kernel copies shared pages the
    /// store writes), redirect (a child; writes to shared values go to new memory),
    /// forkless (no child; a thread of the store). Several (fork,redirect,forkless)
    /// run the same dataset and load under each in turn and end with one table.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fork")]
    pub method: Vec<Method>,
    /// Drive and trace an existing RESP server (e.g. redis-server) instead of starting the store.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// With --connect: the server's pid (default: found from its listening socket).
    #[arg(long, requires = "connect")]
    pub pid: Option<u32>,
    /// Keep the dataset already in the server instead of loading one; the load
    /// then writes keys named like the loader's (key:000000000000, ...), up to
    /// the server's key count.
    #[arg(long)]
    pub no_load: bool,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9435) while running:
    /// the server's and its children's copies, as `snapshot exporter` serves
    /// them, and the store's snapshot figures (snapshot_store_*).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (Zipf, exponent --zipf-s), scattered over the keyspace.
    Zipf,
    /// Keys in order, wrapping around.
    Sequential,
}

/// A snapshot method of the store, as `snapshot serve` is started for it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// fork, and writes go where they are (--cow-strategy inplace).
    Fork,
    /// fork, and writes to shared values go to new memory (--cow-strategy redirect).
    Redirect,
    /// No child: a thread of the store writes the snapshot (BGSAVE FORKLESS).
    Forkless,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Fork => "fork",
            Method::Redirect => "redirect",
            Method::Forkless => "forkless",
        }
    }
}

impl RunArgs {
    /// Checks what clap cannot: ranges that depend on meaning.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.keys > 0, "--keys must be at least 1");
        anyhow::ensure!(self.value_size > 0, "--value-size must be at least 1");
        anyhow::ensure!(self.rate >= 0.0 && self.rate.is_finite(), "--rate must be 0 or more ops/s");
        anyhow::ensure!((0.0..=1.0).contains(&self.read_ratio), "--read-ratio must be between 0 and 1");
        anyhow::ensure!((0.0..=1.0).contains(&self.insert_ratio), "--insert-ratio must be between 0 and 1");
        anyhow::ensure!(
            !(self.resize_during_snapshot && self.connect.is_some()),
            "--resize-during-snapshot is an option of the store: not with --connect"
        );
        anyhow::ensure!(self.interval >= 0.05, "--interval must be at least 0.05 s");
        anyhow::ensure!(self.every >= 0.0 && self.warmup >= 0.0, "--every and --warmup must be 0 or more");
        anyhow::ensure!(self.zipf_s > 0.0, "--zipf-s must be more than 0");
        anyhow::ensure!(
            self.connect.is_none() || self.method == [Method::Fork],
            "--method other than fork is a method of the store: not with --connect"
        );
        if self.method.len() > 1 {
            anyhow::ensure!(self.duration.is_some(), "--method with several methods needs --duration (the time under each)");
        }
        if self.pages.len() > 1 {
            anyhow::ensure!(self.connect.is_none(), "--pages with several sizes runs the store: not with --connect");
            anyhow::ensure!(self.duration.is_some(), "--pages with several sizes needs --duration (the time under each)");
        }
        Ok(())
    }
}
