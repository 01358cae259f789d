//! Shared by the integration tests: running `snapshot`, privilege, machine state.
#![allow(dead_code)]
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

pub const SNAPSHOT: &str = env!("CARGO_BIN_EXE_snapshot");

/// Tests that change machine-wide memory settings take this lock.
pub static MACHINE: Mutex<()> = Mutex::new(());

/// True when the test may load eBPF programs. Outside CI a test without root
/// is skipped with the reason; in CI (privileged) that is a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI must run the tests as root: they load eBPF programs into the kernel");
    }
    eprintln!("SKIPPED {test}: needs root to load eBPF programs (run `cargo xtask test` as root)");
    false
}

pub fn snapshot(args: &[&str]) -> Output {
    Command::new(SNAPSHOT).args(args).output().expect("running snapshot")
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}\n{text}", path.display()))
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Sets a /proc or /sys file and puts the old value back when dropped,
/// even when the test fails.
pub struct Restore {
    file: &'static str,
    old: String,
}

impl Restore {
    pub fn set(file: &'static str, value: &str) -> Restore {
        let old = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        std::fs::write(file, value).unwrap_or_else(|e| panic!("writing {value} to {file}: {e}"));
        Restore { file, old }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let old = match self.old.find('[') {
            // THP files show "always [madvise] never": write back the bracketed one.
            Some(start) => self.old[start + 1..].split(']').next().unwrap_or("").to_string(),
            None => self.old.trim().to_string(),
        };
        if let Err(e) = std::fs::write(self.file, &old) {
            eprintln!("could not restore {} to {old}: {e}", self.file);
        }
    }
}
