//! `cargo xtask build|run|test`: builds the eBPF programs and the `snapshot`
//! binary, installing first what a fresh machine lacks (the nightly rust-src
//! component and a bpf-linker built against rustc's own libLLVM).
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod tools;

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
    /// Without ARGS: the main job.
    Run {
        #[arg(long)]
        debug: bool,
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build, then run every test: unit tests and the privileged tests that
    /// load the eBPF programs into the running kernel.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
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
    let root = workspace_root();
    let tools = tools::ensure(&root)?;
    match task {
        Task::Build { debug } => build(&tools, !debug).map(|_| ExitCode::SUCCESS),
        Task::Run { debug, args } => {
            let binary = build(&tools, !debug)?;
            // `snapshot` alone prints its help: the main job is named.
            let args = if args.is_empty() { vec![OsString::from("run")] } else { args };
            run_as_root(&binary, &args)
        }
        Task::Test { args } => {
            step("testing: cargo test --release (privileged tests need root)");
            let status = cargo(&tools)
                .args(["test", "--release"])
                .args(&args)
                // Under sudo, `snapshot trace` runs commands as the invoking
                // user; the tests' commands write into root's temp dirs.
                .env_remove("SUDO_UID")
                .env_remove("SUDO_GID")
                .status()
                .context("running cargo test")?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

pub fn step(text: &str) {
    eprintln!("xtask: {text}");
}

/// `cargo` with the installed tools first on PATH.
fn cargo(tools: &tools::Tools) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env("PATH", &tools.path);
    cmd
}

fn build(tools: &tools::Tools, release: bool) -> Result<PathBuf> {
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
    let binary = workspace_root().join("target").join(if release { "release" } else { "debug" }).join("snapshot");
    step(&format!("built {}", binary.display()));
    Ok(binary)
}

fn run_as_root(binary: &Path, args: &[OsString]) -> Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc_geteuid() } == 0;
    let mut cmd = if is_root {
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
    let status = cmd.status().with_context(|| format!("running {}", binary.display()))?;
    Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
