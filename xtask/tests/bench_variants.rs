//! bench/ebpf-variants.py cuts parts out of the eBPF sources to build
//! variants; stopped mid-build (SIGTERM), it must put the source back and end
//! the build. The "cargo" here is /bin/sh running a script named xtask (read,
//! not executed, so no file this test wrote is exec'd): it succeeds on the
//! uncut source and, once a cut is in, records its pid and waits.
use std::{fs, os::unix::fs::symlink, path::Path, process::Command, thread, time::Duration};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const SOURCES: [&str; 3] = ["fault.rs", "maps.rs", "alloc.rs"];

fn checkout(dir: &Path) {
    let src = dir.join("snapshot-ebpf/src");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(dir.join("orig")).unwrap();
    fs::create_dir_all(dir.join("target/release")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    for name in SOURCES {
        let text = fs::read(format!("{REPO}/snapshot-ebpf/src/{name}")).unwrap();
        fs::write(src.join(name), &text).unwrap();
        fs::write(dir.join("orig").join(name), &text).unwrap();
    }
    fs::write(dir.join("target/release/snapshot"), "not a binary").unwrap();
    fs::write(
        dir.join("xtask"),
        "for f in fault.rs maps.rs alloc.rs; do cmp -s snapshot-ebpf/src/$f orig/$f || cut=1; done\n\
         [ -z \"$cut\" ] && exit 0\necho $$ > building.tmp && mv building.tmp building\nexec sleep 1000\n",
    )
    .unwrap();
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

#[test]
fn sigterm_during_a_variant_build_restores_the_source_and_ends_the_build() {
    let dir = tempfile::tempdir().unwrap();
    checkout(dir.path());
    let path = format!("{}:{}", dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut py = Command::new("python3")
        .arg(format!("{REPO}/bench/ebpf-variants.py"))
        .arg(dir.path().join("out"))
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
    assert!(!status.success(), "ebpf-variants ended well after SIGTERM");
    for name in SOURCES {
        let now = fs::read(dir.path().join("snapshot-ebpf/src").join(name)).unwrap();
        assert!(now == fs::read(dir.path().join("orig").join(name)).unwrap(), "{name} left cut");
    }
    assert!(!build_left, "the build ({build}) still runs");
}
