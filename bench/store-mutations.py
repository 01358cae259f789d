#!/usr/bin/env python3
"""Applies deliberate bugs to snapshot-store one at a time, runs the test meant to catch each,
and restores the file. Usage: python3 bench/store-mutations.py (from the repository root).
Prints one line per mutation: caught (the test failed) or SURVIVED."""
import subprocess, sys

S = "snapshot-store/src/"
MUTATIONS = [
    ("snapshot file not fsynced", S + "snapfile.rs",
     "file.0.file.sync_all().map_err(io)?;", "",
     "save_lifecycle", "file_then_directory_are_fsynced_around_the_rename"),
    ("directory not fsynced", S + "snapfile.rs",
     ".and_then(|d| d.sync_all())", ".map(|_| ())",
     "save_lifecycle", "file_then_directory_are_fsynced_around_the_rename"),
    ("no incremental fsync", S + "snapfile.rs",
     "if self.unsynced >= FSYNC_EVERY {", "if false {",
     "save_lifecycle", "file_then_directory_are_fsynced_around_the_rename"),
    ("DEBUG POPULATE's reserve ignores the resize block", S + "table.rs",
     "if want > self.nbuckets && !self.resize_blocked {", "if want > self.nbuckets {",
     "save_lifecycle", "debug_populate_does_not_resize_while_a_child_lives"),
    ("loader keeps expired records", S + "snapfile.rs",
     "Some(at) if at <= now => return Ok(()),", "Some(_) if false => return Ok(()),",
     "save_lifecycle", "expired_records_are_not_loaded"),
    ("writes during a save forgotten", S + "persist.rs",
     "self.dirty = self.dirty.saturating_sub(self.dirty_at_fork);\n            log(&format!(\n                \"Background saving",
     "self.dirty = 0;\n            log(&format!(\n                \"Background saving",
     "save_lifecycle", "writes_made_during_a_save_still_count_as_unsaved"),
    ("save policy ignores its seconds", S + "persist.rs",
     ".any(|p| self.dirty >= p.changes && age > p.secs)", ".any(|p| self.dirty >= p.changes)",
     "save_lifecycle", "the_save_policy_waits_its_seconds"),
    ("save policy's seconds off by one", S + "persist.rs",
     ".any(|p| self.dirty >= p.changes && age > p.secs)", ".any(|p| self.dirty >= p.changes && age >= p.secs)",
     "save_lifecycle", "the_save_policy_waits_its_seconds"),
    ("no PDEATHSIG", S + "persist.rs",
     "libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);", "",
     "save_lifecycle", "the_child_dies_with_the_server"),
    ("no 5 s wait after a failed save", S + "persist.rs",
     "if !self.last_bgsave_ok && self.last_try.elapsed() < Duration::from_secs(5) {", "if false {",
     "save_lifecycle", "a_failed_save_is_retried_after_5_seconds"),
    ("temp file of a killed child left", S + "persist.rs",
     "let _ = std::fs::remove_file(snapfile::temp_path(&self.dir, c.pid as u32));\n            let how", "let how",
     "save_lifecycle", "a_killed_child_leaves_no_temp_file_and_the_old_snapshot"),
    ("FLUSHALL leaves the save running", S + "commands/data.rs",
     "st.persist.kill_child(&mut st.table, &st.registry);", "",
     "save_lifecycle", "flushall_during_a_save_stops_it_and_the_empty_dataset_is_saved"),
    ("current_fork_perc always 0", S + "info.rs",
     "p.keys_processed as f64 * 100.0 / p.keys_total as f64", "0.0",
     "save_lifecycle", "progress_and_cow_figures_match_the_childs_proc_files"),
    ("COW size not measured at the end", S + "persist.rs",
     "send(fd, MSG_DONE, private_dirty(), n);", "send(fd, MSG_DONE, cow, n);",
     "save_lifecycle", "progress_and_cow_figures_match_the_childs_proc_files"),
    ("p99 reported as p50", S + "latency.rs",
     "us(0.99),", "us(0.5),",
     "save_lifecycle", "latency_percentiles_separate_fast_and_slow_calls"),
    ("SHUTDOWN SAVE does not save", S + "commands/admin.rs",
     "ShutdownSave::Yes => true,", "ShutdownSave::Yes => false,",
     "hardening", "shutdown_save_saves_without_a_save_policy"),
    ("--bind ignored", S + "lib.rs",
     "let addr = (args.bind.as_str(), args.port)", "let addr = (\"0.0.0.0\", args.port)",
     "hardening", "bind_address_is_respected"),
    ("SIGTERM exits although the save failed", S + "server.rs",
     "                            continue;\n                        }\n                        self.close_all();",
     "                        }\n                        self.close_all();",
     "hardening", "sigterm_with_a_failing_save_keeps_serving"),
    ("no accept retry after EMFILE", S + "server.rs",
     "                        self.accept_blocked = true;\n", "",
     "hardening", "queued_connections_are_served_after_running_out_of_descriptors"),
]

def run(test, name):
    r = subprocess.run(["cargo", "test", "--release", "-q", "-p", "snapshot-store", "--test", test,
                        name, "--", "--exact"], capture_output=True, text=True, timeout=1200)
    return r.returncode

only = sys.argv[1:]
stale = 0
for what, path, old, new, test, name in MUTATIONS:
    if only and not any(o in what for o in only):
        continue
    src = open(path).read()
    if src.count(old) != 1:
        # The code moved on: the mutation must be brought up to date, not skipped quietly.
        print(f"{what}: STALE, pattern not found once in {path}", flush=True)
        stale += 1
        continue
    open(path, "w").write(src.replace(old, new))
    try:
        rc = run(test, name)
    finally:
        open(path, "w").write(src)
    print(f"{what}: {'caught' if rc != 0 else 'SURVIVED'} by {test}::{name}", flush=True)
sys.exit(1 if stale else 0)
