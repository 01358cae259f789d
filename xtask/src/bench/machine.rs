//! What a generated block says it ran on: machine, kernel, commit, binary.
use std::{path::Path, process::Command};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Serialize, Clone, Debug)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub kernel: String,
    pub thp: String,
    pub commit: String,
    pub snapshot_sha256: String,
}

pub fn describe(root: &Path, binary: &Path) -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let cpu = field(&cpuinfo, "model name").unwrap_or("unknown").to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib: f64 = field(&meminfo, "MemTotal").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let thp = selected(&std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default());
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        ram_gib: kib / 1024.0 / 1024.0,
        kernel,
        thp,
        commit: commit(root)?,
        snapshot_sha256: sha256(binary)?,
    })
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then_some(v.trim())
    })
}

/// The bracketed choice of a sysfs list ("always [madvise] never" → "madvise").
fn selected(list: &str) -> String {
    list.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map_or_else(|| list.trim().to_string(), |(v, _)| v.to_string())
}

/// The short commit, "+dirty" when the code has uncommitted changes.
fn commit(root: &Path) -> Result<String> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git").arg("-C").arg(root).args(args).output().context("running git")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    // What a run writes (BENCHMARKS.md, bench/results/) does not make the code dirty.
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md", ":!bench/results"])?.is_empty();
    Ok(if dirty { format!("{head}+dirty") } else { head })
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("running sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string).with_context(|| format!("sha256sum {} printed nothing", path.display()))
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_proc_files() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\nMemTotal:       24000000 kB\n";
        assert_eq!(field(text, "model name"), Some("AMD EPYC"));
        assert_eq!(field(text, "MemTotal"), Some("24000000 kB"));
        assert_eq!(field(text, "nothing"), None);
        assert_eq!(selected("always [madvise] never\n"), "madvise");
        assert_eq!(selected("odd"), "odd");
    }
}
