//! Installs, once, what building eBPF in Rust needs (see docs/ebpf-build.md):
//! the nightly pinned in snapshot-ebpf/rust-toolchain with its rust-src for
//! `-Z build-std=core`, and bpf-linker linked against that rustc's own libLLVM,
//! so their LLVM versions match. bpf-linker goes under target/tools.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::step;

/// The bpf-linker release verified with aya 0.14 and LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The file naming the one nightly the eBPF crate is built with.
pub const TOOLCHAIN_FILE: &str = "snapshot-ebpf/rust-toolchain";

/// What the build needs: PATH with bpf-linker first.
pub struct Tools {
    pub path: OsString,
}

pub fn ensure(ws: &crate::workspace::Workspace) -> Result<Tools> {
    let file = ws.root.join(TOOLCHAIN_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let nightly = pinned(&text).with_context(|| format!("{} names no nightly toolchain", file.display()))?;
    let dir = ws.tools();
    ensure_nightly(&nightly)?;
    ensure_rust_src(&nightly)?;
    ensure_bpf_linker(&dir, &nightly)?;
    let mut paths = vec![dir.join("bin")];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    Ok(Tools { path: std::env::join_paths(paths).context("PATH")? })
}

/// The toolchain a one-line rust-toolchain file names, e.g. `nightly-2026-05-20`.
fn pinned(file: &str) -> Option<String> {
    let name = file.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))?;
    name.starts_with("nightly").then(|| name.to_string())
}

/// Whether `rustup toolchain list` shows `name` (listed with the host triple
/// after it, and maybe `(default)`).
fn installed(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| t == name || t.strip_prefix(name).is_some_and(|rest| rest.starts_with('-') && !rest[1..].starts_with(char::is_numeric)))
}

/// Runs a command, naming it and what to do when it fails.
fn run(cmd: &mut Command, what: &str, fix: &str) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().with_context(|| format!("{what}: cannot run `{shown}`; {fix}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed: `{shown}` exited with {}:\n{}\n{fix}", out.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn ensure_nightly(nightly: &str) -> Result<()> {
    let list = run(rustup().args(["toolchain", "list"]), "listing toolchains", "install rustup")?;
    if installed(&list, nightly) {
        return Ok(());
    }
    step(&format!("[tools] installing the {nightly} toolchain (the eBPF crate needs -Z build-std)"));
    run(
        rustup().args(["toolchain", "install", nightly, "--profile", "minimal", "--component", "rust-src"]),
        &format!("installing {nightly}"),
        &format!("install it by hand: rustup toolchain install {nightly} --profile minimal --component rust-src"),
    )?;
    Ok(())
}

fn ensure_rust_src(nightly: &str) -> Result<()> {
    let installed = run(
        rustup().args(["component", "list", "--toolchain", nightly, "--installed"]),
        "listing the nightly's components",
        &format!("check `rustup component list --toolchain {nightly}`"),
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step(&format!("[tools] installing rust-src for {nightly} (core is built from source for bpfel-unknown-none)"));
    run(
        rustup().args(["component", "add", "rust-src", "--toolchain", nightly]),
        "installing rust-src",
        &format!("run it by hand: rustup component add rust-src --toolchain {nightly}"),
    )?;
    Ok(())
}

/// Builds bpf-linker against the nightly's libLLVM unless the one in `dir`
/// was built for this very nightly (a stamp file holds its version and `rustc -vV`).
fn ensure_bpf_linker(dir: &Path, nightly: &str) -> Result<()> {
    let version = run(
        Command::new("rustc").arg(format!("+{nightly}")).arg("-vV"),
        "asking nightly rustc its version",
        "check the nightly toolchain",
    )?;
    let stamp = dir.join("bpf-linker.stamp");
    let stamped = format!("bpf-linker {BPF_LINKER_VERSION}\n{version}");
    let linker = dir.join("bin").join("bpf-linker");
    // Always re-linked: the same `rustc -vV` means the same libLLVM, wherever
    // that toolchain is installed.
    let prefix = llvm_prefix(dir, nightly)?;
    if linker.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == stamped) {
        return Ok(());
    }
    let llvm = llvm_major(&version)?;
    step(&format!(
        "[tools] building bpf-linker {BPF_LINKER_VERSION} against nightly's libLLVM {llvm} into {} (a few minutes, once)",
        dir.display()
    ));
    run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
            .args(["--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{llvm}"))
            .arg("--root")
            .arg(dir),
        "building bpf-linker",
        "see docs/ebpf-build.md; crates.io must be reachable",
    )?;
    std::fs::write(&stamp, stamped).with_context(|| format!("writing {}", stamp.display()))?;
    step("[tools] bpf-linker ready");
    Ok(())
}

/// `LLVM version: 22.1.4` -> 22
fn llvm_major(version: &str) -> Result<u32> {
    version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.trim().parse().ok())
        .context("nightly rustc -vV printed no `LLVM version:` line")
}

/// A prefix whose lib/ holds rustc's libLLVM under the names bpf-linker's
/// build looks for.
fn llvm_prefix(dir: &Path, nightly: &str) -> Result<PathBuf> {
    let sysroot = run(
        Command::new("rustc").arg(format!("+{nightly}")).args(["--print", "sysroot"]),
        "finding nightly's sysroot",
        "check the nightly toolchain",
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .find(|n| n.to_string_lossy().starts_with("libLLVM.so"))
        .with_context(|| format!("no libLLVM.so* in {}: is this a rustup nightly?", lib_dir.display()))?;
    let prefix = dir.join("llvm");
    let target_lib = prefix.join("lib");
    std::fs::create_dir_all(&target_lib).with_context(|| format!("creating {}", target_lib.display()))?;
    for name in [OsString::from("libLLVM.so"), lib.clone()] {
        let link = target_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_version() {
        let v = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(v).unwrap(), 22);
        assert!(llvm_major("rustc 1.0").is_err());
    }

    #[test]
    fn the_pinned_nightly_is_the_files_one_line() {
        assert_eq!(pinned("nightly-2026-05-20\n").as_deref(), Some("nightly-2026-05-20"));
        assert_eq!(pinned("# why\n\n nightly \n").as_deref(), Some("nightly"));
        assert_eq!(pinned("stable\n"), None);
        assert_eq!(pinned(""), None);
    }

    #[test]
    fn a_dated_nightly_is_found_by_its_exact_name() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-2026-05-20-x86_64-unknown-linux-gnu\n";
        assert!(installed(list, "nightly-2026-05-20"));
        assert!(installed(list, "stable"));
        // A dated nightly is not the floating `nightly`, nor another date.
        assert!(!installed(list, "nightly"));
        assert!(!installed(list, "nightly-2026-05-01"));
        assert!(installed("nightly-x86_64-unknown-linux-gnu\n", "nightly"));
    }

    /// The pinned file in the repository names a dated nightly.
    #[test]
    fn the_repository_pins_a_dated_nightly() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(TOOLCHAIN_FILE);
        let nightly = pinned(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let date = nightly.strip_prefix("nightly-").expect("a dated nightly");
        assert!(date.len() == 10 && date.split('-').all(|p| p.chars().all(|c| c.is_ascii_digit())), "{nightly}");
    }
}
