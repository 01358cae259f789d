//! `snapshot`: copy-on-write tracer and fork snapshot store.
use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;

mod check;
mod cli;
mod exporter;
mod kernel;
mod loader;
mod metrics;
mod output;
mod privilege;
mod report;
mod run;
mod serve;
mod spawn;
mod stacks;
mod top;
mod trace;
mod workload;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return cli::usage_error(error),
    };
    match run(cli) {
        Ok(code) => code,
        // The command could not start; why was said, its status is ours.
        Err(error) if error.is::<trace::CommandFailed>() => {
            ExitCode::from(error.downcast_ref::<trace::CommandFailed>().map_or(1, |f| f.0))
        }
        Err(error) => {
            // One line: the error and its causes, no backtrace. Never panics
            // when stderr is gone.
            let _ = writeln!(std::io::stderr().lock(), "snapshot: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: libraries often
/// repeat their cause in their own message.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(|c| c.to_string()) {
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Check => check::run(),
        cli::Command::Trace(args) => trace::run(args),
        cli::Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Workload(args) => workload::run(&args),
        cli::Command::Demo => demo(),
        cli::Command::Run(args) => run::run(args),
        cli::Command::Exporter(args) => exporter::run(args),
        cli::Command::Top(args) => top::run(args),
    }
}

/// Traces the built-in forking workload (100 MiB written after each of two
/// forks), then prints the workload's own pagemap count beside the tracer's.
fn demo() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding snapshot's own executable")?.display().to_string();
    // A private directory: a predictable name in /tmp could be a planted link.
    let dir = tempfile::Builder::new().prefix("snapshot-demo-").tempdir().context("creating a private temp dir")?;
    let truth = dir.path().join("truth.json");
    let truth_arg = truth.display().to_string();
    let command = [&exe, "workload", "--pages", "25600", "--forks", "2", "--truth", &truth_arg].map(String::from).to_vec();
    let mut out = std::io::stdout().lock();
    writeln!(out, "demo: snapshot trace -- {}\n", command.join(" ")).context("writing stdout")?;
    drop(out);
    let status = trace::run(cli::TraceArgs {
        interval: Some(std::time::Duration::from_secs(1)),
        output: Some("-".into()),
        // Our own workload, writing into root's private directory.
        user: Some("root".into()),
        command,
        ..Default::default()
    })?;
    let text = std::fs::read_to_string(&truth).with_context(|| format!("reading {}", truth.display()))?;
    let truth: serde_json::Value = serde_json::from_str(&text).context("parsing the workload's ground truth")?;
    let mut out = std::io::stdout().lock();
    for fork in truth["forks"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "ground truth (pagemap frames): child {} -> parent copied {} pages",
            fork["child"], fork["parent_copied"]
        )
        .context("writing stdout")?;
    }
    Ok(status)
}
