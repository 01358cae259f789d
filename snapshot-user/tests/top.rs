//! `snapshot top --once` under the built-in workload.
mod common;

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use common::{SNAPSHOT, path, privileged, temp_dir};

#[test]
fn once_lists_the_workload_with_copies_per_second() {
    if !privileged("once_lists_the_workload_with_copies_per_second") {
        return;
    }
    let dir = temp_dir();
    // A name of its own, so the filter picks the workload alone.
    let work = path(&dir, "cowtop");
    std::fs::copy(SNAPSHOT, &work).expect("copying the binary");
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let status = Command::new(&work)
                    .args([
                        "workload",
                        "--pages",
                        "8192",
                        "--forks",
                        "2",
                        "--no-pagemap",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .expect("running the workload");
                assert!(status.success(), "workload: {status}");
            }
        })
    };
    let out = Command::new(SNAPSHOT)
        .args(["top", "--once", "--comm", "cowtop", "--sort", "copies"])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    looping.join().expect("the workload loop");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header[..4],
        ["PID", "COMM", "COPIES/S", "BYTES/S"],
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    assert!(!rows.is_empty(), "no rows:\n{text}");
    assert!(
        rows.iter().all(|r| r[1] == "cowtop"),
        "--comm keeps the workload alone:\n{text}"
    );
    let top: u64 = rows[0][2].parse().expect("copies/s");
    assert!(top > 0, "the workload copies pages:\n{text}");
}
