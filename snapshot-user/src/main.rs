//! `snapshot`: copy-on-write tracer and fork snapshot store.
use std::process::ExitCode;

use clap::Parser;

mod check;
mod cli;
mod kernel;
mod loader;
mod report;
mod run;
mod serve;
mod spawn;
mod trace;
mod workload;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("snapshot: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(cli::Command::Demo) {
        cli::Command::Check => check::run(),
        cli::Command::Trace(args) => trace::run(args),
        cli::Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Workload(args) => workload::run(&args),
        cli::Command::Demo => demo(),
        cli::Command::Run(args) => run::run(args),
    }
}

/// Traces the built-in forking workload (100 MiB written after each of two
/// forks), then prints the workload's own pagemap count beside the tracer's.
fn demo() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?.display().to_string();
    let truth = std::env::temp_dir().join(format!("snapshot-demo-{}.json", std::process::id()));
    let truth_arg = truth.display().to_string();
    let command = [&exe, "workload", "--pages", "25600", "--forks", "2", "--truth", &truth_arg].map(String::from).to_vec();
    println!("demo: snapshot trace -- {}\n", command.join(" "));
    let status = trace::run(cli::TraceArgs {
        pid: None,
        comm: None,
        all: false,
        duration: None,
        interval: Some(1.0),
        json: None,
        budget: None,
        command,
    })?;
    let text = std::fs::read_to_string(&truth);
    let _ = std::fs::remove_file(&truth);
    let truth: serde_json::Value = serde_json::from_str(&text?)?;
    for fork in truth["forks"].as_array().into_iter().flatten() {
        println!(
            "ground truth (pagemap frames): child {} -> parent copied {} pages",
            fork["child"], fork["parent_copied"]
        );
    }
    Ok(status)
}
