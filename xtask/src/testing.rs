//! `cargo xtask test`: every test, and a loud count of the privileged tests
//! that could not run (they need root), which fails the run unless allowed.
use std::{ffi::OsString, process::ExitCode};

use anyhow::{Context, Result};

use crate::step;

pub fn run(tools: &crate::tools::Tools, args: &[OsString], allow_skip: bool) -> Result<ExitCode> {
    // The tests append the names of those they skip to a file in a private directory.
    let dir = tempfile::Builder::new().prefix("xtask-test-").tempdir().context("creating a temporary directory")?;
    let log = dir.path().join("skipped");
    std::fs::File::create_new(&log).with_context(|| format!("creating {}", log.display()))?;
    step("testing: cargo test --release (privileged tests need root)");
    let status = crate::cargo(tools)
        // Every test binary runs even after a failure, so the skip count below is complete.
        .args(["test", "--release", "--no-fail-fast"])
        .args(args)
        .env("SNAPSHOT_SKIP_LOG", &log)
        // Under sudo, `snapshot trace` runs commands as the invoking user; the
        // tests' commands write into root's temp dirs.
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .status()
        .context("running cargo test")?;
    let skipped = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let verdict = verdict(status.success(), &skipped, allow_skip);
    if let Some(line) = &verdict.line {
        eprintln!("{line}");
    }
    Ok(if verdict.pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

struct Verdict {
    pass: bool,
    line: Option<String>,
}

/// Passes when cargo test passed and no test was skipped (or skips are allowed).
fn verdict(tests_passed: bool, skipped: &str, allow_skip: bool) -> Verdict {
    let mut names: Vec<&str> = skipped.lines().filter(|l| !l.is_empty()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Verdict { pass: tests_passed, line: None };
    }
    let what = format!(
        "{} privileged test{} did NOT run (not root): {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    let line = if allow_skip {
        format!("xtask: SKIPPED: {what}; allowed by --allow-skip")
    } else {
        format!("xtask: FAILED: {what}; run `cargo xtask test` as root, or pass --allow-skip to accept the skips")
    };
    Verdict { pass: tests_passed && allow_skip, line: Some(line) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_tests_fail_the_run_unless_allowed() {
        let v = verdict(true, "b_test\na_test\nb_test\n", false);
        assert!(!v.pass);
        let line = v.line.unwrap();
        assert!(line.contains("2 privileged tests did NOT run") && line.contains("a_test, b_test"), "{line}");
        assert!(line.contains("--allow-skip"), "{line}");
        let v = verdict(true, "a_test\n", true);
        assert!(v.pass);
        assert!(v.line.unwrap().contains("1 privileged test did NOT run"));
    }

    #[test]
    fn without_skips_the_cargo_result_decides() {
        assert!(verdict(true, "", false).pass && verdict(true, "", false).line.is_none());
        assert!(!verdict(false, "", true).pass);
        assert!(!verdict(false, "a\n", true).pass);
    }
}
