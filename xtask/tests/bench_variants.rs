//! bench/ebpf-variants.py cuts parts out of the eBPF sources to build
//! variants, scripts/ebpf-mutants.py breaks them on purpose; stopped mid-build
//! (SIGTERM), each must put the source back (and the first end the build).
//! The "cargo" here is /bin/sh running a script named after cargo's first
//! argument, `xtask` or `test` (read, not executed, so no file this test wrote
//! is exec'd): it succeeds on the unchanged source and, once an edit is in,
//! records its pid and waits.
use std::{fs, os::unix::fs::symlink, path::Path, process::Command, thread, time::Duration};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A checkout holding `sources` (under snapshot-ebpf/src) and a fake cargo
/// whose `first_arg` subcommand hangs once a source differs from its original.
fn checkout(dir: &Path, sources: &[&str], first_arg: &str) {
    let src = dir.join("snapshot-ebpf/src");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(dir.join("orig")).unwrap();
    fs::create_dir_all(dir.join("target/release")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("snapshot-user")).unwrap();
    fs::write(dir.join("snapshot-user/build.rs"), "").unwrap();
    for &name in sources {
        let text = fs::read(format!("{REPO}/snapshot-ebpf/src/{name}")).unwrap();
        fs::write(src.join(name), &text).unwrap();
        fs::write(dir.join("orig").join(name), &text).unwrap();
    }
    fs::write(dir.join("target/release/snapshot"), "not a binary").unwrap();
    let script = format!(
        "for f in {}; do cmp -s snapshot-ebpf/src/$f orig/$f || cut=1; done\n\
         [ -z \"$cut\" ] && exit 0\necho $$ > building.tmp && mv building.tmp building\nexec sleep 1000\n",
        sources.join(" ")
    );
    fs::write(dir.join(first_arg), script).unwrap();
    symlink("/bin/sh", dir.join("bin/cargo")).unwrap();
}

fn wait_for(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = fs::read_to_string(path) {
            return text;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

/// Runs `script ARGS` in a fake checkout of `sources`, sends it SIGTERM once
/// its build hangs on an edited source; (its exit ok, build still running).
fn stopped_mid_build(script: &str, args: &[&str], sources: &[&str], first_arg: &str) -> (tempfile::TempDir, bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path(), sources, first_arg);
    let path = format!("{}:{}", dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut py = Command::new("python3")
        .arg(format!("{REPO}/{script}"))
        .args(args)
        .current_dir(dir.path())
        .env("PATH", path)
        .spawn()
        .expect("python3");
    let build: i32 = wait_for(&dir.path().join("building")).trim().parse().unwrap();
    let pid = nix::unistd::Pid::from_raw(py.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let status = py.wait().unwrap();
    let build_left = std::fs::read_to_string(format!("/proc/{build}/cmdline")).is_ok_and(|c| c.starts_with("sleep"));
    if build_left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(build), nix::sys::signal::SIGKILL);
    }
    (dir, status.success(), build_left)
}

fn assert_restored(dir: &Path, sources: &[&str]) {
    for &name in sources {
        let now = fs::read(dir.join("snapshot-ebpf/src").join(name)).unwrap();
        assert!(now == fs::read(dir.join("orig").join(name)).unwrap(), "{name} left cut");
    }
}

#[test]
fn sigterm_during_a_variant_build_restores_the_source_and_ends_the_build() {
    let sources = ["fault.rs", "maps.rs", "alloc.rs"];
    let (dir, ok, build_left) = stopped_mid_build("bench/ebpf-variants.py", &["out"], &sources, "xtask");
    assert!(!ok, "ebpf-variants ended well after SIGTERM");
    assert_restored(dir.path(), &sources);
    assert!(!build_left, "the build still runs");
}

#[test]
fn sigterm_during_a_mutant_build_restores_the_source() {
    // Only the first mutant (alloc.rs's gfp filter) is picked.
    let (dir, ok, build_left) = stopped_mid_build("scripts/ebpf-mutants.py", &["gfp filter"], &["alloc.rs"], "test");
    assert!(!ok, "ebpf-mutants ended well after SIGTERM");
    assert_restored(dir.path(), &["alloc.rs"]);
    assert!(!build_left, "the build still runs");
}
