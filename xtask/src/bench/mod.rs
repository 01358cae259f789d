//! `cargo xtask bench [NAME...] [--quick] [--out DIR]`: runs the benchmark
//! bodies (bench/bench_NAME.py, which print raw samples as JSON), and from
//! those samples alone writes bench/results/NAME.{json,svg} and NAME's block of
//! BENCHMARKS.md: medians, ranges, ratios and the issues' targets.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::step;

mod chart;
mod machine;
mod report;
mod stats;
mod targets;
mod total;

/// Every benchmark, in the order a full run takes them.
pub const NAMES: &[&str] = &["overhead", "accuracy", "store", "snapshot", "pages", "predict", "methods", "rdb", "stacks", "bpfcost"];

/// What the benchmarks run besides snapshot (rows of packages::NEEDS).
pub const COMMANDS: &[&str] = &["redis-server", "redis-cli", "redis-benchmark", "redis-check-rdb", "bpftrace", "bpftool", "python3", "cc"];

pub struct Options {
    pub names: Vec<String>,
    pub quick: bool,
    pub rounds: Option<u32>,
    /// Where BENCHMARKS.md and bench/results/ are written (default: the checkout
    /// for a full run, a new temporary directory for --quick).
    pub out: Option<PathBuf>,
}

/// What a body prints.
#[derive(Deserialize, Serialize, Clone, Debug)]
pub struct BodyResult {
    pub name: String,
    pub method: String,
    pub commands: Vec<String>,
    #[serde(default)]
    pub notes: Vec<String>,
    pub metrics: Vec<stats::Metric>,
}

/// One benchmark's run, as written to bench/results/NAME.json.
#[derive(Serialize, Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub command: String,
    pub mode: &'static str,
    pub rounds: u32,
    pub started: String,
    pub wall_s: f64,
    pub load_before: String,
    pub load_after: String,
    pub machine: machine::Machine,
    pub result: BodyResult,
    pub summaries: Vec<(String, Vec<stats::Summary>)>,
    pub verdicts: Vec<targets::Verdict>,
}

pub fn run(root: &Path, binary: &Path, opts: &Options) -> Result<ExitCode> {
    if !crate::is_root() {
        bail!("the benchmarks load eBPF programs and read other processes' memory maps: run `cargo xtask bench` as root");
    }
    // `bench total`: only the total block again, from the results already written.
    if opts.names == [total::NAME] {
        total::write(opts.out.as_deref().unwrap_or(root))?;
        step("[bench] total: written from bench/results/*.json");
        return Ok(ExitCode::SUCCESS);
    }
    let names = selected(&opts.names)?;
    let out = match &opts.out {
        Some(dir) => dir.clone(),
        None if opts.quick => tempfile::Builder::new().prefix("xtask-bench-").tempdir().context("creating a temporary directory")?.keep(),
        None => root.to_path_buf(),
    };
    prepare_out(root, &out)?;
    // The binary is copied, so a rebuild during the run changes nothing measured.
    let work = tempfile::Builder::new().prefix("xtask-bench-bin-").tempdir().context("creating a temporary directory")?;
    let snap = work.path().join("snapshot");
    std::fs::copy(binary, &snap).with_context(|| format!("copying {}", binary.display()))?;
    let machine = machine::describe(root, &snap)?;
    let mut failed = Vec::new();
    for name in &names {
        match run_one(root, &snap, &machine, name, opts).and_then(|o| write(&out, &o)) {
            Ok(()) => step(&format!("[bench] {name}: written to {}", out.display())),
            Err(e) => {
                eprintln!("xtask: [bench] {name} failed: {e:#}");
                failed.push(name.clone());
            }
        }
    }
    // How long the benchmarks took, from every result now in `out` (this run's and earlier ones').
    if let Err(e) = total::write(&out) {
        eprintln!("xtask: [bench] the total block: {e:#}");
        failed.push(total::NAME.to_string());
    }
    if opts.quick {
        verify(&out, &names)?;
        step(&format!("[bench] quick run checked: every block, JSON and chart in {}", out.display()));
    }
    if !failed.is_empty() {
        eprintln!("xtask: [bench] FAILED: {} (their blocks were left as they were)", failed.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn selected(names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(NAMES.iter().map(|n| n.to_string()).collect());
    }
    for n in names {
        if !NAMES.contains(&n.as_str()) {
            bail!("no benchmark named {n:?}; there are: {}", NAMES.join(", "));
        }
    }
    Ok(names.to_vec())
}

/// A --out directory gets a copy of BENCHMARKS.md to rewrite, and bench/results/.
fn prepare_out(root: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out.join("bench").join("results")).with_context(|| format!("creating {}/bench/results", out.display()))?;
    let doc = out.join("BENCHMARKS.md");
    if out != root && !doc.exists() {
        std::fs::copy(root.join("BENCHMARKS.md"), &doc).with_context(|| format!("copying BENCHMARKS.md to {}", out.display()))?;
    }
    Ok(())
}

fn run_one(root: &Path, snap: &Path, machine: &machine::Machine, name: &str, opts: &Options) -> Result<Outcome> {
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 });
    let script = root.join("bench").join(format!("bench_{name}.py"));
    step(&format!("[bench] {name}: python3 {} ({} round{})", script.display(), rounds, if rounds == 1 { "" } else { "s" }));
    let load_before = machine::load_average();
    let started = utc_now();
    let t0 = Instant::now();
    let mut python = Command::new("python3");
    // xtask killed (a CI timeout, a closed terminal): the body gets SIGTERM
    // and stops its tracers, instead of running on with parent 1.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        python.pre_exec(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from));
    }
    let output = python
        .arg(&script)
        .current_dir(root.join("bench"))
        .env("SNAP", snap)
        .env("BENCH_QUICK", if opts.quick { "1" } else { "0" })
        .env("BENCH_ROUNDS", rounds.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running python3 {}", script.display()))?;
    let wall_s = t0.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("{} exited with {} (its messages are above)", script.display(), output.status);
    }
    let result: BodyResult = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} printed no valid result JSON", script.display()))?;
    if result.name != name {
        bail!("{} printed the result of {:?}", script.display(), result.name);
    }
    let summaries = result.metrics.iter().map(|m| (m.id.clone(), stats::summarize(m))).collect();
    let verdicts = judged(name, &result.metrics, opts.quick, rounds);
    let mut command = format!("cargo xtask bench {name}");
    if opts.quick {
        command.push_str(" --quick");
    }
    if let Some(r) = opts.rounds {
        command.push_str(&format!(" --rounds {r}"));
    }
    Ok(Outcome {
        name: name.to_string(),
        command,
        mode: if opts.quick { "quick (tiny sizes, one round: proves the harness, does not judge speed)" } else { "full" },
        rounds,
        started,
        wall_s,
        load_before,
        load_after: machine::load_average(),
        machine: machine.clone(),
        result,
        summaries,
        verdicts,
    })
}

/// The targets' verdicts; a quick run, or one of fewer than 5 rounds, shows
/// what it measured but judges nothing (tiny sizes say nothing of speed).
fn judged(name: &str, metrics: &[stats::Metric], quick: bool, rounds: u32) -> Vec<targets::Verdict> {
    let mut verdicts = targets::judge(name, metrics);
    let why = if quick {
        "not judged (quick run)"
    } else if rounds < 5 {
        "not judged (fewer than 5 rounds)"
    } else {
        return verdicts;
    };
    for v in verdicts.iter_mut().filter(|v| v.verdict != "not measured" && v.verdict != targets::FIGURE) {
        v.verdict = why;
    }
    verdicts
}

fn write(out: &Path, o: &Outcome) -> Result<()> {
    let results = out.join("bench").join("results");
    let json = serde_json::to_string_pretty(o).context("serialising the results")?;
    std::fs::write(results.join(format!("{}.json", o.name)), json + "\n").context("writing the results JSON")?;
    let title = format!("{}: medians of {} round(s), {}", o.name, o.rounds, o.started);
    std::fs::write(results.join(format!("{}.svg", o.name)), chart::svg(&title, &o.result.metrics)).context("writing the chart")?;
    let path = out.join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc = report::replace(&doc, &o.name, &report::block(o))?;
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))
}

/// Every selected benchmark left a block with a table of numbers, a JSON that
/// parses with samples, and a chart.
pub fn verify(out: &Path, names: &[String]) -> Result<()> {
    let doc = std::fs::read_to_string(out.join("BENCHMARKS.md")).context("reading the written BENCHMARKS.md")?;
    report::find(&doc, total::NAME).with_context(|| format!("no total block in {}/BENCHMARKS.md", out.display()))?;
    for name in names {
        let block = report::find(&doc, name).with_context(|| format!("no block for {name} in {}/BENCHMARKS.md", out.display()))?;
        let numbers = block.lines().filter(|l| l.starts_with("| ") && l.split('|').nth(3).is_some_and(|c| c.trim().parse::<f64>().is_ok())).count();
        if numbers == 0 {
            bail!("{name}'s block has no table row with a median");
        }
        let results = out.join("bench").join("results");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join(format!("{name}.json")))?)
            .with_context(|| format!("{name}.json does not parse"))?;
        let samples = json["summaries"].as_array().map(|a| a.iter().filter(|s| s[1].as_array().is_some_and(|r| !r.is_empty())).count()).unwrap_or(0);
        if samples == 0 {
            bail!("{name}.json has no metric with samples");
        }
        let svg = std::fs::read_to_string(results.join(format!("{name}.svg"))).with_context(|| format!("no chart for {name}"))?;
        if !(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("<rect")) {
            bail!("{name}.svg is not a complete SVG chart");
        }
        if !block.contains(&format!("bench/results/{name}.svg")) {
            bail!("{name}'s block does not show its chart");
        }
    }
    Ok(())
}

fn utc_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str) -> Outcome {
        let result: BodyResult = serde_json::from_str(&format!(
            r#"{{"name":"{name}","method":"m","commands":["c"],"metrics":[{{"id":"set_per_s_P1","title":"t","unit":"SET/s",
                "better":"higher","baseline":"redis-server","samples":{{"redis-server":[10,12,11],"snapshot":[13,12,14]}}}}]}}"#
        ))
        .unwrap();
        let machine = machine::Machine {
            cpu: "cpu".into(),
            cores: 2,
            ram_gib: 1.0,
            kernel: "k".into(),
            thp: "t".into(),
            commit: "c".into(),
            snapshot_sha256: "s".into(),
        };
        Outcome {
            name: name.into(),
            command: format!("cargo xtask bench {name}"),
            mode: "full",
            rounds: 3,
            started: "now".into(),
            wall_s: 1.0,
            load_before: "0".into(),
            load_after: "0".into(),
            machine,
            summaries: result.metrics.iter().map(|m| (m.id.clone(), stats::summarize(m))).collect(),
            verdicts: targets::judge(name, &result.metrics),
            result,
        }
    }

    #[test]
    fn a_written_run_passes_the_check_and_a_missing_chart_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bench/results")).unwrap();
        std::fs::write(dir.path().join("BENCHMARKS.md"), "# B\n\n<!-- bench:store begin -->\nold\n<!-- bench:store end -->\nkept\n").unwrap();
        write(dir.path(), &outcome("store")).unwrap();
        let doc = std::fs::read_to_string(dir.path().join("BENCHMARKS.md")).unwrap();
        assert!(doc.ends_with("<!-- bench:store end -->\nkept\n") && !doc.contains("old"), "{doc}");
        assert!(doc.contains("| snapshot | 3 | 13.00 | 12.00–14.00 | 1.182 |"), "{doc}");
        assert!(doc.contains("| 4 | store SET/s ≥ redis-server's (-P 1) | 1.182× | met |"), "{doc}");
        assert!(verify(dir.path(), &["store".to_string()]).is_err(), "no total block yet");
        total::write(dir.path()).unwrap();
        verify(dir.path(), &["store".to_string()]).unwrap();
        assert!(verify(dir.path(), &["overhead".to_string()]).is_err(), "a benchmark without a block");
        let svg = dir.path().join("bench/results/store.svg");
        let text = std::fs::read_to_string(&svg).unwrap();
        std::fs::write(&svg, &text[..text.len() / 2]).unwrap();
        assert!(verify(dir.path(), &["store".to_string()]).is_err(), "a cut chart");
        std::fs::remove_file(&svg).unwrap();
        assert!(verify(dir.path(), &["store".to_string()]).is_err());
    }

    #[test]
    fn a_quick_or_short_run_judges_no_target() {
        let o = outcome("store");
        assert_eq!(judged("store", &o.result.metrics, false, 5)[0].verdict, "met");
        for (quick, rounds) in [(true, 1), (true, 5), (false, 3)] {
            let v = judged("store", &o.result.metrics, quick, rounds);
            assert!(v.iter().all(|v| v.verdict.starts_with("not ")), "{quick} {rounds}: {v:?}");
            assert_eq!(v[0].measured, "1.182×", "the measured figure is still shown");
        }
    }

    #[test]
    fn every_benchmark_has_a_body_and_a_block_in_benchmarks_md() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let doc = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap();
        for name in NAMES {
            assert!(root.join("bench").join(format!("bench_{name}.py")).is_file(), "no bench/bench_{name}.py");
            assert!(report::find(&doc, name).is_some(), "BENCHMARKS.md has no block for {name}");
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let e = selected(&["overhead".into(), "speed".into()]).unwrap_err().to_string();
        assert!(e.contains("\"speed\"") && e.contains("overhead, accuracy"), "{e}");
        assert_eq!(selected(&[]).unwrap().len(), NAMES.len());
    }
}
