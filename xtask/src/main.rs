//! `cargo xtask build|run|test`: builds the eBPF programs and the `snapshot`
//! binary, installing first what a fresh machine lacks (the pinned nightly
//! with rust-src, a bpf-linker built against its libLLVM, and for the tests
//! the system packages they run).
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod child;
mod packages;
mod testing;
mod tools;
mod workspace;

#[derive(Parser)]
#[command(about = "Build, run and test snapshot")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing build tools, then build the eBPF object and the `snapshot` binary.
    Build {
        /// Build without optimisations.
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run `snapshot ARGS` as root (through sudo when needed).
    /// Without ARGS: the main job. Signals go on to `snapshot`, whose exit
    /// status is xtask's.
    Run {
        #[arg(long)]
        debug: bool,
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Install what the tests need, build, then run every test: unit tests and
    /// the privileged tests that load the eBPF programs into the running kernel.
    /// Privileged tests skipped without root fail the run unless --allow-skip.
    Test {
        /// Accept privileged tests skipped because this is not root.
        #[arg(long)]
        allow_skip: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Install the peers (redis-server, redis-tools, bpftrace), build, run the
    /// benchmarks (all, or those named) and rewrite their blocks of
    /// BENCHMARKS.md, bench/results/NAME.json and NAME.svg. Needs root.
    Bench {
        /// Benchmarks to run (default: all): overhead, accuracy, store, snapshot, pages, predict, methods, rdb, stacks, bpfcost; `total` only sums the wall times of the results already written.
        names: Vec<String>,
        /// A few seconds each (tiny sizes, 1 round), to prove the harness works;
        /// written to a new temporary directory unless --out is given.
        #[arg(long)]
        quick: bool,
        /// Interleaved rounds per benchmark (default 5, or 1 with --quick).
        // 0 would write blocks without a number over the last run's.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: Option<u32>,
        /// Write BENCHMARKS.md (a copy of the checkout's, when missing) and
        /// bench/results/ under this directory instead of the checkout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run ARGS as `run` runs snapshot: signals forwarded, status returned (for xtask's tests).
    #[command(hide = true)]
    Exec {
        #[arg(last = true, required = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<ExitCode> {
    match task {
        Task::Build { debug } => {
            let (ws, tools) = setup()?;
            build(&ws, &tools, !debug).map(|_| ExitCode::SUCCESS)
        }
        Task::Run { debug, args } => {
            let (ws, tools) = setup()?;
            let binary = build(&ws, &tools, !debug)?;
            // `snapshot` alone prints its help: the main job is named.
            let args = if args.is_empty() { vec![OsString::from("run")] } else { args };
            run_as_root(&binary, &args)
        }
        Task::Test { allow_skip, args } => {
            let (ws, tools) = setup()?;
            packages::ensure()?;
            let code = testing::run(&tools, &args, allow_skip)?;
            // The whole suite ends with the benchmark harness, quick: it proves
            // every benchmark still runs and writes its block (not its speed).
            if code != ExitCode::SUCCESS || !args.is_empty() || !is_root() {
                return Ok(code);
            }
            let binary = build(&ws, &tools, true)?;
            // Written and checked in a directory removed afterwards: CI keeps nothing.
            let out = tempfile::Builder::new().prefix("xtask-bench-").tempdir().context("creating a temporary directory")?;
            let opts = bench::Options { names: Vec::new(), quick: true, rounds: None, out: Some(out.path().to_path_buf()) };
            bench::run(&ws.root, &binary, &opts)
        }
        Task::Bench { names, quick, rounds, out } => {
            let (ws, tools) = setup()?;
            packages::ensure_commands(bench::COMMANDS)?;
            let binary = build(&ws, &tools, true)?;
            bench::run(&ws.root, &binary, &bench::Options { names, quick, rounds, out })
        }
        Task::Exec { args } => child::run(Command::new(&args[0]).args(&args[1..])),
    }
}

/// The workspace, and the build tools installed when missing.
fn setup() -> Result<(workspace::Workspace, tools::Tools)> {
    let ws = workspace::Workspace::find()?;
    let tools = tools::ensure(&ws)?;
    Ok((ws, tools))
}

pub fn step(text: &str) {
    eprintln!("xtask: {text}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The cargo that runs xtask (`cargo xtask` sets CARGO).
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo` with the installed tools first on PATH.
fn cargo(tools: &tools::Tools) -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.env("PATH", &tools.path);
    cmd
}

fn build(ws: &workspace::Workspace, tools: &tools::Tools, release: bool) -> Result<PathBuf> {
    step(&format!("building: cargo build --package snapshot-user{}", if release { " --release" } else { "" }));
    let mut cmd = cargo(tools);
    cmd.args(["build", "--package", "snapshot-user"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed (see above)");
    }
    let binary = ws.binary(release);
    if !binary.is_file() {
        bail!("cargo build succeeded but left no {}", binary.display());
    }
    step(&format!("built {}", binary.display()));
    Ok(binary)
}

fn run_as_root(binary: &Path, args: &[OsString]) -> Result<ExitCode> {
    let mut cmd = if is_root() {
        Command::new(binary)
    } else {
        let Ok(sudo) = which::which("sudo") else {
            bail!("snapshot needs root to load eBPF programs, and sudo is not installed: run this as root");
        };
        step("not root: running through sudo");
        let mut cmd = Command::new(sudo);
        cmd.arg("--preserve-env").arg(binary);
        cmd
    };
    cmd.args(args);
    child::run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn zero_rounds_are_refused() {
        let e = Cli::try_parse_from(["xtask", "bench", "store", "--rounds", "0"]).err().expect("--rounds 0 accepted");
        assert!(e.to_string().contains("--rounds"), "{e}");
        assert!(Cli::try_parse_from(["xtask", "bench", "store", "--rounds", "1"]).is_ok());
    }
}
