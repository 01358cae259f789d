//! `snapshot top --once` under the built-in workload.
mod common;

use std::process::{Command, Stdio};

use common::{SNAPSHOT, named, path, privileged, temp_dir};

#[test]
fn once_lists_the_workload_with_copies_per_second() {
    if !privileged("once_lists_the_workload_with_copies_per_second") {
        return;
    }
    let dir = temp_dir();
    // A name of its own, so the filter picks the workload alone.
    let work = named(&dir, "cowtop", SNAPSHOT);
    // One workload forking for the whole test, each child writing: copies in
    // any second top samples. (A loop of short workloads spends part of each
    // run starting up, longer on a loaded machine: a second without a copy.)
    let workload = forking(&work, "8192");
    let out = Command::new(SNAPSHOT)
        .args(["top", "--once", "--comm", "cowtop", "--sort", "copies"])
        .output()
        .unwrap();
    drop(workload);
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

/// The workload forking until killed, each child writing `pages` pages while
/// the parent waits.
fn forking(work: &std::path::Path, pages: &str) -> Killed {
    Killed(
        Command::new(work)
            .args(["workload", "--scenario", "child-writes", "--pages", pages, "--forks", "1000000", "--no-pagemap"])
            .stdout(Stdio::null())
            .spawn()
            .expect("running the workload"),
    )
}

/// A process the test started, killed (by its pid) when the test ends, also on failure.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmux server of the test's own (a private socket), killed when dropped.
struct Tmux(std::path::PathBuf);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux not found: apt-get install tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// The first screen that `ready` accepts, within 60 s.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let screen = self.capture();
            if ready(&screen) {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "{what} within 60 s:\n{screen}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The table rows of processes named `comm`: (pid, copies/s).
fn table_rows(screen: &str, comm: &str) -> Vec<(u32, u64)> {
    screen
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            match cells[..] {
                [pid, name, copies, ..] if name == comm => Some((pid.parse().ok()?, copies.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// The header line with its sort mark on `column`, and at least two rows.
fn sorted_by(screen: &str, column: &str, comm: &str) -> bool {
    let marked = format!(" {column}* ");
    screen.lines().any(|l| l.starts_with("PID") && format!(" {l} ").contains(&marked))
        && table_rows(screen, comm).len() >= 2
}

#[test]
fn live_table_sorts_by_key_and_quits_on_q_restoring_the_terminal() {
    if !privileged("live_table_sorts_by_key_and_quits_on_q_restoring_the_terminal") {
        return;
    }
    let dir = temp_dir();
    let work = named(&dir, "cowtopi", SNAPSHOT);
    // The child writes while the parent waits: the parent shows a live fork
    // and no copies, its children the copies. Pid order and copies order
    // differ, so the sort is seen.
    let workload = forking(&work, "4096");
    let parent = workload.0.id();
    let tmux = Tmux(path(&dir, "tmux.sock"));
    let command = format!("{SNAPSHOT} top --comm cowtopi; echo EXITED $?; stty -a; echo STTY-DONE; sleep 60");
    let started = tmux.run(&["new-session", "-d", "-s", "top", "-x", "200", "-y", "40", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let first = tmux.wait_for("the workload copying, sorted by bytes/s", |s| {
        sorted_by(s, "BYTES/S", "cowtopi") && table_rows(s, "cowtopi").iter().any(|r| r.1 > 0)
    });
    assert!(first.contains("q or Ctrl-C quit"), "no footer of keys:\n{first}");
    tmux.run(&["send-keys", "-t", "top", "p"]);
    let by_pid = tmux.wait_for("a table sorted by pid", |s| sorted_by(s, "PID", "cowtopi"));
    let rows = table_rows(&by_pid, "cowtopi");
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "pids not ascending:\n{by_pid}");
    // Not "the parent first": pid_max is 32768 here and the children's pids
    // wrap below the parent's within seconds while other tests fork too.
    tmux.run(&["send-keys", "-t", "top", "c"]);
    let by_copies = tmux.wait_for("a table sorted by copies/s", |s| sorted_by(s, "COPIES/S", "cowtopi"));
    let rows = table_rows(&by_copies, "cowtopi");
    assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "copies/s not descending:\n{by_copies}");
    assert!(rows[0].1 > 0 && rows[0].0 != parent, "a copying child comes first:\n{by_copies}");
    tmux.run(&["send-keys", "-t", "top", "<"]);
    tmux.wait_for("< moving the sort to COMM", |s| sorted_by(s, "COMM", "cowtopi"));
    tmux.run(&["send-keys", "-t", "top", "q"]);
    // STTY-DONE comes after stty's whole output: waiting for EXITED alone
    // could capture the screen before stty has printed its flags.
    let after = tmux.wait_for("q ending snapshot top", |s| s.contains("STTY-DONE"));
    drop(workload);
    assert!(after.contains("EXITED 0"), "q exits with status 0:\n{after}");
    // Restored: cooked mode (stty shows icanon and echo, not -icanon), and the
    // alternate screen left (the shell's output is on the normal screen).
    let words: Vec<&str> = after.split_whitespace().collect();
    assert!(words.contains(&"icanon") && words.contains(&"echo"), "the terminal is still raw:\n{after}");
    let alternate = tmux.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"]);
    assert_eq!(String::from_utf8_lossy(&alternate.stdout).trim(), "0", "still on the alternate screen");
}
