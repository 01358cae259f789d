//! The tracer under faults: many short-lived processes, a full process
//! table, a traced process killed, snapshot itself killed, and a machine
//! without kernel BTF, without tracefs or without privilege. Each ends in a
//! report or one clear line, never a panic, and leaves nothing attached.
mod common;

use std::{
    collections::HashSet,
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapInfo};
use common::*;
use snapshot_common::ProcStats;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The id of the eBPF map called `name` that process `pid` holds.
fn map_id(pid: u32, name: &str) -> u32 {
    let mut ids = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        ids.extend(info.lines().filter_map(|l| l.strip_prefix("map_id:")).map(|v| v.trim().parse::<u32>().unwrap()));
    }
    ids.into_iter()
        .find(|&id| MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(name)))
        .unwrap_or_else(|| panic!("pid {pid} holds no map {name}"))
}

/// The keys (tgids) in the tracer's process table, read from the kernel
/// independently of the tracer. Entries removed during the walk make the
/// kernel restart it from the first key: the walk stops at the first repeat.
fn procs_keys(id: u32) -> HashSet<u32> {
    let map = Map::HashMap(MapData::from_id(id).expect("opening PROCS by id"));
    let table: HashMap<_, u32, ProcStats> = HashMap::try_from(map).unwrap();
    let mut keys = HashSet::new();
    for key in table.keys() {
        let Ok(key) = key else { break };
        if !keys.insert(key) {
            break;
        }
    }
    keys
}

/// The leaked entries as the tracer recorded them: who they were tells which
/// path made them (ppid 0: a fault in a process that had none).
fn describe(id: u32, pids: &[u32]) -> String {
    let map = Map::HashMap(MapData::from_id(id).expect("opening PROCS by id"));
    let table: HashMap<_, u32, ProcStats> = HashMap::try_from(map).unwrap();
    let entry = |p: &u32| match table.get(p, 0) {
        Ok(v) => format!("{p} (comm {:?}, ppid {}, faults {})", String::from_utf8_lossy(&v.comm).trim_end_matches('\0'), v.ppid, v.faults),
        Err(_) => format!("{p} (gone)"),
    };
    pids.iter().map(entry).collect::<Vec<_>>().join(", ")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn processes_on_the_machine() -> usize {
    std::fs::read_dir("/proc").unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<u32>().is_ok()).count()
}

/// A child process killed if the test fails before it ends: a tracer left
/// running would trace the machine (and hold the test's locks) for good.
struct Reap(Option<Child>);

impl Reap {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
    fn take(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to a process we started.
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

#[test]
fn tracing_all_through_10000_short_lived_processes_keeps_the_tables_bounded() {
    if !privileged("tracing_all_through_10000_short_lived_processes_keeps_the_tables_bounded") {
        return;
    }
    const CHILDREN: usize = 10_000;
    // Entries may belong to processes born between the two /proc counts
    // around a walk; a leak of the exited children would be thousands.
    const SLACK: usize = 256;
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    let tracer = Reap(Some(start_tracer(&["--all", "--json", report.to_str().unwrap()])));
    let procs = map_id(tracer.id(), "PROCS");
    let script = format!("i=0; while [ $i -lt {CHILDREN} ]; do ( : ); i=$((i+1)); done");
    let mut shell = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let (mut samples, mut most) = (0, 0);
    while shell.try_wait().unwrap().is_none() {
        let before = processes_on_the_machine();
        let entries = procs_keys(procs).len();
        let after = processes_on_the_machine();
        assert!(entries <= before.max(after) + SLACK, "{entries} entries for {before}..{after} processes");
        (samples, most) = (samples + 1, most.max(entries));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(shell.wait().unwrap().success());
    // Exit cleans: an entry of a process already gone from /proc (its exit
    // ran) must be gone from the table too, checked in a second walk.
    let first = procs_keys(procs);
    let dead: Vec<u32> = first.iter().copied().filter(|&p| !alive(p)).collect();
    let second = procs_keys(procs);
    let leaked: Vec<u32> = dead.into_iter().filter(|p| second.contains(p) && !alive(*p)).collect();
    assert!(leaked.is_empty(), "entries of exited processes left: {}", describe(procs, &leaked));
    eprintln!("{samples} samples during the run, at most {most} entries; {} after", second.len());
    signal(tracer.id(), libc::SIGINT);
    let out = tracer.take().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&report);
    let sh = u64::from(shell.id());
    let children = report["processes"].as_array().unwrap().iter().filter(|p| p["ppid"] == sh).collect::<Vec<_>>();
    assert_eq!(children.len(), CHILDREN, "every child reported once");
    assert!(children.iter().all(|p| p["exited"] == true));
    let forks = report["forks"].as_array().unwrap().iter().filter(|f| f["parent"] == sh).count();
    assert_eq!(forks, CHILDREN);
    for (key, value) in report["health"].as_object().unwrap() {
        if key != "unattributed_copies" {
            assert_eq!(value, 0, "health.{key}: {:#}", report["health"]);
        }
    }
}

#[test]
fn a_full_process_table_is_counted_and_freed_by_exits() {
    if !privileged("a_full_process_table_is_counted_and_freed_by_exits") {
        return;
    }
    const TABLE: usize = 64;
    const SLEEPERS: usize = 200;
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // SLEEPERS processes alive at once (sleeping until the shell kills them),
    // then, the table freed by their exits, ten more.
    let script = format!(
        "pids=; for i in $(seq {SLEEPERS}); do sleep 1000 & pids=\"$pids $!\"; done; kill $pids; wait; \
         for i in $(seq 10); do ( : ); done"
    );
    let tracer = Command::new(SNAPSHOT)
        .env("SNAPSHOT_PROCS_TABLE", TABLE.to_string())
        .args(["trace", "--json", report.to_str().unwrap(), "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let snapshot_pid = tracer.id();
    let out = tracer.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: tables full, counts incomplete: procs "), "{err}");
    let report = json(&report);
    let full = report["health"]["procs_table_full"].as_u64().unwrap();
    assert!(full >= (SLEEPERS + 1 - TABLE) as u64, "{SLEEPERS} sleepers and the shell in {TABLE} entries: {full} refused");
    let processes = report["processes"].as_array().unwrap();
    let sleepers = processes.iter().filter(|p| p["comm"] == "sleep").count();
    assert!(sleepers < TABLE, "{sleepers} sleepers reported in a table of {TABLE}");
    let shell = processes.iter().find(|p| p["ppid"] == snapshot_pid).expect("the command");
    assert_eq!(shell["comm"], "sh", "{report:#}");
    let later = processes.iter().filter(|p| p["ppid"] == shell["pid"] && p["comm"] == "sh").count();
    assert_eq!(later, 10, "the processes after the readers exited found room: {report:#}");
}

#[test]
fn a_traced_process_killed_ends_the_trace_with_a_report() {
    if !privileged("a_traced_process_killed_ends_the_trace_with_a_report") {
        return;
    }
    let dir = temp_dir();
    let (report, sleeper) = (path(&dir, "r.json"), path(&dir, "sleeper"));
    // The command killed: its status is snapshot's, the report is written.
    let script = format!("sleep 1000 >/dev/null 2>&1 & echo $! > '{}'; kill -9 $$", sleeper.display());
    let out = snapshot(&["trace", "--json", report.to_str().unwrap(), "--", "sh", "-c", &script]);
    // Its child, orphaned and still sleeping, is ended also when an assertion
    // below fails: left behind it would hold for 1000 s every fd it inherited
    // (a lock the suite runs under, the pipes of a CI log).
    let orphan = Orphan(std::fs::read_to_string(&sleeper).unwrap().trim().parse().expect("the sleeper's pid"));
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\ntotal: "), "{}", text(&out.stderr));
    let traced = json(&report);
    // The fork's parent, not the first process listed: they are listed by
    // pid, and sleep's pid is below sh's when the pids (pid_max is 32768
    // here) wrapped between the two.
    let fork = &traced["forks"][0];
    let processes = traced["processes"].as_array().unwrap();
    let sh = processes.iter().find(|p| p["pid"] == fork["parent"]).unwrap_or_else(|| panic!("no fork's parent: {traced:#}"));
    assert_eq!((&sh["comm"], &sh["exited"]), (&"sh".into(), &true.into()), "{traced:#}");
    assert_eq!(fork["child"], orphan.0, "{traced:#}");
    drop(orphan);
    // A process traced by pid and killed: the trace ends by itself.
    let mut victim = Command::new("sleep").arg("1000").spawn().unwrap();
    let tracer = Reap(Some(start_tracer(&["--pid", &victim.id().to_string(), "--json", report.to_str().unwrap()])));
    victim.kill().unwrap();
    victim.wait().unwrap();
    let out = tracer.take().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let traced = json(&report);
    assert_eq!(traced["processes"][0]["pid"], victim.id(), "{traced:#}");
    assert_eq!(traced["processes"][0]["exited"], true, "{traced:#}");
}

/// A process the test left without a parent (a sleep), killed when dropped
/// if it is still that sleep (its pid is not reused while it lives).
struct Orphan(u32);

impl Drop for Orphan {
    fn drop(&mut self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        if stat.contains("(sleep) ") && !stat.contains(") Z ") {
            // SAFETY: kill has no memory effects; gone meanwhile is fine.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// Starts a long-running tracing command and waits until its programs are
/// attached (it holds eBPF links).
fn attached_command(args: &[&str]) -> (Reap, Vec<u32>) {
    let mut child = Reap(Some(
        Command::new(SNAPSHOT).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap(),
    ));
    for _ in 0..600 {
        let ids = link_ids(child.id());
        if ids.len() >= 5 {
            return (child, ids);
        }
        if child.0.as_mut().unwrap().try_wait().unwrap().is_some() {
            let out = child.take().wait_with_output().unwrap();
            panic!("snapshot {args:?} ended before attaching: {}: {}", out.status, text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("snapshot {args:?} did not attach");
}

#[test]
fn sigkill_of_any_tracing_command_leaves_no_program_attached() {
    if !privileged("sigkill_of_any_tracing_command_leaves_no_program_attached") {
        return;
    }
    let dir = temp_dir();
    let commands: [&[&str]; 4] = [
        &["top"],
        &["exporter", "--listen", "127.0.0.1:0"],
        &["serve", "--trace", "--port", "0", "--save", "", "--dir", dir.path().to_str().unwrap()],
        &["run", "--keys", "1000", "--rate", "100", "--no-tui", "--every", "1"],
    ];
    for args in commands {
        let (child, ids) = attached_command(args);
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        assert!(ids.iter().all(|&id| attached(id)));
        let mut child = child.take();
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(ids.iter().all(|&id| !attached(id)), "{args:?}: programs left attached: {ids:?}");
        // `run` started a store: it goes with the run (PR_SET_PDEATHSIG).
        // Exited (a zombie until its new parent reaps it) counts as gone.
        let gone = |pid: u32| !alive(pid) || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
        for pid in children.split_whitespace().map(|p| p.parse::<u32>().unwrap()) {
            for _ in 0..600 {
                if gone(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(gone(pid), "{args:?}: child {pid} outlived snapshot");
        }
    }
}

/// How long a command that must fail at once may run (coreutils timeout).
const WATCHDOG: &str = "120";

/// Runs `snapshot ARGS` in a private mount namespace after `setup` (shell
/// commands run there first, as root): what is mounted there stays there.
fn in_mount_namespace(setup: &str, args: &[&str]) -> std::process::Output {
    let script = format!("{setup} && exec \"$0\" \"$@\"");
    // A command that should refuse to start but ran (a regression) would
    // trace, with the kernel lock held, for good: killed after WATCHDOG.
    Command::new("timeout")
        .args(["--signal=KILL", WATCHDOG, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script, SNAPSHOT])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)")
}

fn mount_table() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn without_kernel_btf_each_tracing_command_says_so_in_one_line() {
    if !privileged("without_kernel_btf_each_tracing_command_says_so_in_one_line") {
        return;
    }
    let mounts = mount_table();
    // An empty tmpfs over /sys/kernel/btf: the kernel's BTF is absent for snapshot.
    let hide = "mount -t tmpfs none /sys/kernel/btf";
    let dir = temp_dir();
    let commands: [&[&str]; 6] = [
        &["trace", "--", "true"],
        &["trace", "--all", "--duration", "1"],
        &["top", "--once"],
        &["run", "--keys", "10", "--duration", "1"],
        &["serve", "--trace", "--port", "0", "--dir", dir.path().to_str().unwrap()],
        &["exporter", "--listen", "127.0.0.1:0"],
    ];
    for args in commands {
        let out = in_mount_namespace(hide, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("snapshot: ") && err.contains("kernel BTF") && err.contains("CONFIG_DEBUG_INFO_BTF"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = in_mount_namespace(hide, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).lines().any(|l| l.contains("kernel BTF") && l.contains(" no ")), "{}", text(&out.stdout));
    assert_eq!(mount_table(), mounts, "mounts changed outside the namespace");
    assert!(std::path::Path::new("/sys/kernel/btf/vmlinux").exists());
}

#[test]
fn tracing_needs_no_tracefs_and_leaves_mounts_as_found() {
    if !privileged("tracing_needs_no_tracefs_and_leaves_mounts_as_found") {
        return;
    }
    let mounts = mount_table();
    // Wherever tracefs is mounted (tracing, debug/tracing), not in there.
    let unmount = "for m in $(awk '$3 == \"tracefs\" { print $2 }' /proc/mounts); do umount -l \"$m\"; done; \
                   ! grep -q ' tracefs ' /proc/mounts";
    let dir = temp_dir();
    let (report, truth) = (path(&dir, "r.json"), path(&dir, "t.json"));
    let args = ["trace", "--json", report.to_str().unwrap(), "--", SNAPSHOT, "workload", "--pages", "1000"];
    let mut args = args.to_vec();
    args.extend(["--truth", truth.to_str().unwrap()]);
    let out = in_mount_namespace(unmount, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (report, truth) = (json(&report), json(&truth));
    let fork = &report["forks"][0];
    assert_eq!(fork["child"], truth["forks"][0]["child"], "{report:#}");
    let copies = fork["parent_copies"].as_u64().unwrap();
    let measured = truth["forks"][0]["parent_copied"].as_u64().expect("pagemap count");
    assert!(copies >= measured && copies < measured + 64, "traced {copies}, pagemap {measured}");
    let check = in_mount_namespace(unmount, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).lines().any(|l| l.contains("tracefs") && l.contains("not mounted")));
    assert_eq!(mount_table(), mounts, "mounts changed outside the namespace");
}

#[test]
fn unprivileged_each_tracing_command_fails_with_one_line() {
    if !privileged("unprivileged_each_tracing_command_fails_with_one_line") {
        return;
    }
    let dir = temp_dir();
    let commands: [&[&str]; 5] = [
        &["top", "--once"],
        &["run", "--keys", "10", "--duration", "1"],
        &["serve", "--trace", "--port", "0", "--dir", dir.path().to_str().unwrap()],
        &["exporter", "--listen", "127.0.0.1:0"],
        &["trace", "--pid", "1", "--duration", "1"],
    ];
    // A copy nobody can reach, wherever the checkout is.
    let (_bin, copy) = snapshot_for_nobody();
    for args in commands {
        let out = Command::new("timeout")
            .args(["--signal=KILL", WATCHDOG, "runuser", "-u", "nobody", "--"])
            .arg(&copy)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runuser");
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains("CAP_BPF") && err.contains("CAP_PERFMON") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The tests' own tracer starter: a tracer that does not start as expected
/// is ended, and one whose test thread is gone (a test that panicked before
/// stopping it) is killed. A stand-in prints the lines a tracer would.
#[test]
fn the_tests_never_leave_a_tracer_running() {
    let dir = temp_dir();
    let pid_file = path(&dir, "pid");
    let script = format!("echo $$ > '{}'; echo 'warning: something' >&2; exec sleep 1000", pid_file.display());
    let bad = std::panic::catch_unwind(|| start_tracer_with(Command::new("sh").args(["-c", &script]).stdout(Stdio::null())));
    assert!(bad.is_err(), "a first line other than 'snapshot: tracing' is refused");
    let refused: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let started = std::thread::spawn(|| {
        let mut tracer = start_tracer_with(Command::new("sh").args(["-c", "echo 'snapshot: tracing' >&2; exec sleep 1000"]).stdout(Stdio::null()));
        let pid = tracer.id();
        drop(tracer.stderr.take());
        // As a panicking test would: the Child dropped, never killed nor waited.
        drop(tracer);
        pid
    })
    .join()
    .unwrap();
    // Gone, or a zombie of this process (a dropped Child is never reaped).
    let gone = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
    for _ in 0..100 {
        if gone(refused) && gone(started) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = [refused, started].into_iter().filter(|&p| !gone(p)).collect();
    for &pid in &left {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn exits_lost_to_a_full_ring_are_found_and_reported() {
    if !privileged("exits_lost_to_a_full_ring_are_found_and_reported") {
        return;
    }
    const RUNS: usize = 40;
    const PAGES: u64 = 16;
    let dir = temp_dir();
    let work = named(&dir, "cowlost", SNAPSHOT);
    let report = path(&dir, "r.json");
    // One page of ring: a few final records fill it.
    let tracer = start_tracer_with(
        Command::new(SNAPSHOT)
            .env("SNAPSHOT_RING_BYTES", "4096")
            .args(["trace", "--comm", "cowlost", "--json", report.to_str().unwrap()])
            .stdout(Stdio::piped()),
    );
    // Stopped, the tracer reads nothing while the processes exit.
    signal(tracer.id(), libc::SIGSTOP);
    for _ in 0..RUNS {
        let out = Command::new(&work)
            .args(["workload", "--pages", &PAGES.to_string(), "--forks", "1", "--no-pagemap"])
            .output()
            .expect("running the workload");
        assert!(out.status.success(), "workload: {}", text(&out.stderr));
    }
    signal(tracer.id(), libc::SIGCONT);
    signal(tracer.id(), libc::SIGINT);
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&report);
    let processes = report["processes"].as_array().unwrap();
    let ours: Vec<_> = processes.iter().filter(|p| p["comm"] == "cowlost").collect();
    assert_eq!(ours.len(), 2 * RUNS, "each run's parent and child, once: {report:#}");
    let live: Vec<_> = ours.iter().filter(|p| p["exited"] != true).collect();
    assert!(live.is_empty(), "every one has exited, none is live: {live:#?}");
    let health = &report["health"];
    let lost = health["ring_full"].as_u64().unwrap();
    let found = health["exited_in_table"].as_u64().unwrap_or_else(|| panic!("no exited_in_table: {health:#}"));
    assert!(found > 0 && found <= lost, "records lost {lost}, exited processes found in the table {found}: {health:#}");
    // Their counts stayed in the table: nothing copied is lost.
    let copied: u64 = ours.iter().map(|p| p["cow_bytes"].as_u64().unwrap()).sum();
    assert!(copied >= RUNS as u64 * PAGES * 4096, "{copied} bytes copied by {RUNS} runs of {PAGES} pages");
}

#[test]
fn a_zombie_traced_by_pid_is_reported_as_exited() {
    if !privileged("a_zombie_traced_by_pid_is_reported_as_exited") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "r.json");
    // Not waited for until the trace is over: a zombie of this process.
    let mut zombie = Command::new("true").spawn().unwrap();
    let pid = zombie.id();
    let state = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().rsplit(") ").next().unwrap().chars().next();
    while state() != Some('Z') {
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = snapshot(&["trace", "-p", &pid.to_string(), "--json", report.to_str().unwrap()]);
    zombie.wait().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report = json(&report);
    let process = report["processes"].as_array().unwrap().iter().find(|p| p["pid"] == pid).cloned();
    let process = process.unwrap_or_else(|| panic!("pid {pid} not reported: {report:#}"));
    assert_eq!(process["exited"], true, "{process:#}");
    assert_eq!(report["health"]["exited_in_table"], 1, "{:#}", report["health"]);
    let row = err.lines().find(|l| l.split_whitespace().next() == Some(&pid.to_string())).unwrap_or_default();
    assert!(row.contains("true") && !row.contains("(live)"), "{err}");
}
