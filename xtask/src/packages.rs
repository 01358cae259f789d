//! The system commands the tests run, and the Debian packages that provide
//! them: `cargo xtask test` installs the missing ones with apt-get.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::step;

/// A command some tests run, the Debian package that provides it, and who needs it.
pub struct Need {
    pub command: &'static str,
    pub package: &'static str,
    pub tests: &'static str,
}

/// One row per command a test runs: add a row when a test needs a new tool.
pub const NEEDS: &[Need] = &[
    Need {
        command: "redis-server",
        package: "redis-server",
        tests: "snapshot-store tests that compare replies with the real Redis server; snapshot-user run::resp unit test; xtask bench_checks",
    },
    Need {
        command: "redis-cli",
        package: "redis-tools",
        tests: "snapshot-store commands and snapshot-user store_tracer (the real client); xtask bench_checks",
    },
    Need {
        command: "redis-benchmark",
        package: "redis-tools",
        tests: "snapshot-store benchmark, snapshot-user store_tracer and xtask bench_checks (the real load generator)",
    },
    Need {
        command: "runuser",
        package: "util-linux",
        tests: "snapshot-user cli and reliability (commands run as an unprivileged user)",
    },
    Need { command: "script", package: "bsdutils", tests: "xtask signals (Ctrl-C typed on a real terminal)" },
    Need { command: "objdump", package: "binutils", tests: "snapshot-user portability (the binary's glibc needs)" },
    Need { command: "redis-check-rdb", package: "redis-tools", tests: "snapshot-store rdb and methods (Redis's own RDB checker)" },
    Need { command: "strace", package: "strace", tests: "snapshot-store save_lifecycle (fsync order of the save child)" },
    Need { command: "hostname", package: "hostname", tests: "snapshot-store hardening (DEBUG and --bind from a non-loopback address)" },
    Need { command: "mkfs.ext4", package: "e2fsprogs", tests: "snapshot-store reliability (power loss on a loop device)" },
    Need { command: "mount", package: "mount", tests: "snapshot-store reliability (full disk, power loss), snapshot-user reliability (no BTF, no tracefs)" },
    Need { command: "unshare", package: "util-linux", tests: "snapshot-user cli (check in a user namespace), reliability (private mount namespaces)" },
    Need { command: "cc", package: "gcc", tests: "snapshot-user truth and stacks (ground-truth programs in C, io_uring and futex headers)" },
    Need { command: "tmux", package: "tmux", tests: "snapshot-user run and top (the live report and table in a real terminal)" },
    Need { command: "prometheus", package: "prometheus", tests: "snapshot-user exporter (a real Prometheus scrapes the exporter)" },
    Need { command: "promtool", package: "prometheus", tests: "snapshot-user exporter (promtool check metrics on the endpoint)" },
    Need { command: "chromium", package: "chromium", tests: "snapshot-user run and stacks (the HTML report and the flame graph rendered headless)" },
    Need { command: "bpftrace", package: "bpftrace", tests: "cargo xtask bench overhead and accuracy (the one-liner compared with)" },
    Need { command: "bpftool", package: "bpftool", tests: "cargo xtask bench bpfcost (run counts and times of each eBPF program); overhead, accuracy and xtask bench_harness (bpftrace counts as attached once its tracepoint is listed)" },
    Need { command: "python3", package: "python3", tests: "snapshot-user stacks (a forked Python worker's copies); cargo xtask bench (bench/bench_*.py), xtask bench_harness, xtask bench_checks, xtask bench_variants" },
];

/// Installs the packages of every missing command, or says what to install.
pub fn ensure() -> Result<()> {
    install_missing(missing(NEEDS, |cmd| find(cmd).is_some()))
}

/// The same for the rows of these commands only.
pub fn ensure_commands(commands: &[&str]) -> Result<()> {
    install_missing(missing(NEEDS, |cmd| !commands.contains(&cmd) || find(cmd).is_some()))
}

fn install_missing(missing: Vec<&Need>) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    for need in &missing {
        step(&format!("[packages] {} not found: the {} need it (package {})", need.command, need.tests, need.package));
    }
    let packages = packages(&missing);
    if !crate::is_root() {
        bail!(
            "the tests need {}: run `cargo xtask test` as root to install them, or install them yourself: \
             sudo apt-get install -y --no-install-recommends {}",
            packages.join(" "),
            packages.join(" ")
        );
    }
    install(&packages)?;
    let still: Vec<&str> = missing.iter().filter(|n| find(n.command).is_none()).map(|n| n.command).collect();
    if !still.is_empty() {
        bail!("installed {} but still cannot find {}", packages.join(" "), still.join(" "));
    }
    Ok(())
}

/// The rows whose command `found` does not find.
fn missing(needs: &[Need], found: impl Fn(&str) -> bool) -> Vec<&Need> {
    needs.iter().filter(|n| !found(n.command)).collect()
}

/// Their packages, each once, in table order.
fn packages(missing: &[&Need]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for need in missing {
        if !packages.contains(&need.package) {
            packages.push(need.package);
        }
    }
    packages
}

/// A command on PATH, or in the sbin directories root's PATH has (runuser lives there).
pub fn find(command: &str) -> Option<PathBuf> {
    which::which(command)
        .ok()
        .or_else(|| ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(command)).find(|p| p.is_file()))
}

fn install(packages: &[&str]) -> Result<()> {
    if find("apt-get").is_none() {
        bail!("no apt-get here: install by hand what provides {}", packages.join(" "));
    }
    step("[packages] apt-get update");
    apt(&["update", "-qq"])?;
    step(&format!("[packages] apt-get install {}", packages.join(" ")));
    apt(&["install", "-y", "-qq", "--no-install-recommends"].iter().copied().chain(packages.iter().copied()).collect::<Vec<_>>())
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status}); see its output above", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_providing_two_missing_commands_is_installed_once() {
        let need = |command, package| Need { command, package, tests: "t" };
        let table = [need("server", "srv"), need("cli", "tools"), need("bench", "tools"), need("su", "util")];
        let missing = missing(&table, |cmd| cmd == "server");
        assert_eq!(missing.iter().map(|n| n.command).collect::<Vec<_>>(), ["cli", "bench", "su"]);
        assert_eq!(packages(&missing), ["tools", "util"]);
        assert!(super::missing(&table, |_| true).is_empty());
    }

    #[test]
    fn every_row_names_a_command_a_package_and_its_tests() {
        for need in NEEDS {
            assert!(!need.command.is_empty() && !need.package.is_empty() && !need.tests.is_empty());
            assert!(!need.command.contains('/'), "{}: a command name, looked up on PATH", need.command);
        }
    }
}
