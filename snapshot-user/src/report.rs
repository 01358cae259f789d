//! Collects what the programs counted (final records from the ring buffer,
//! live ones from the maps) into one report: a table for people, JSON for tools.
use std::{collections::BTreeMap, io::Write};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, RingBuf};
use serde::Serialize;
use snapshot_common::{Event, ForkRecord, ORDERS, ProcStats, counter, end_reason, event_kind};

use crate::loader::{Loaded, Path, comm_string};

/// Bumped when a field changes meaning or goes away (new fields may appear).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Pages the kernel copied because another process still shared them.
    pub cow_copies: u64,
    pub cow_bytes: u64,
    /// Copies of page-cache pages in private file mappings: made with or
    /// without a fork, so not in `cow_copies` and charged to no fork.
    pub file_copies: u64,
    /// Write-protect faults that copied nothing (the page was no longer shared).
    pub wp_reuse: u64,
    /// Write faults on present pages (copies + reuses + zero fills).
    pub wp_faults: u64,
    /// First writes to the shared zero page (a fresh zeroed page, not a copy).
    pub zero_fills: u64,
    pub faults: u64,
    /// Always 0: no mapping is looked up any more (kept for the report's shape).
    pub vma_misses: u64,
    /// Copies by page size in bytes.
    pub copies_by_size: BTreeMap<u64, u64>,
    pub exited: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct Fork {
    pub parent: u32,
    pub child: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    /// When the sharing ended; null while it lasts.
    pub end_ns: Option<u64>,
    pub end_reason: &'static str,
    pub parent_copies: u64,
    pub child_copies: u64,
    pub parent_bytes: u64,
    pub child_bytes: u64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Health {
    /// Processes not counted because the process table was full.
    pub procs_table_full: u64,
    pub forks_table_full: u64,
    pub pending_table_full: u64,
    /// Final records that found the ring buffer full (their data stayed in the maps).
    pub ring_full: u64,
    /// Copies made while no fork shared the page (e.g. a private file mapping's first write).
    pub unattributed_copies: u64,
    /// Exited processes whose entry was still in the process table, taken
    /// out by the reader: their final record was lost (`ring_full`), or they
    /// had exited before tracing began (a zombie given to `--pid`).
    pub exited_in_table: u64,
    /// `--stacks`: copies whose stack was not kept (stack or count table full).
    pub dropped_stacks: u64,
    /// `--stacks`: copies whose address found the address ring full (missing from `stacks.by_mapping`).
    pub dropped_addresses: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub schema_version: u32,
    pub duration_s: f64,
    /// How the programs attached: a stable token, `btf_tracepoint` or `raw_tracepoint`.
    pub tracing_path: Option<Path>,
    /// The same for people.
    pub tracing_path_text: String,
    pub processes: Vec<Process>,
    pub forks: Vec<Fork>,
    pub health: Health,
    /// `--stacks`: the code paths and mappings that copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<crate::stacks::StacksReport>,
}

impl Process {
    /// A process named w that copied `bytes` in 4 KiB pages, for unit tests.
    #[cfg(test)]
    pub fn copying(pid: u32, bytes: u64, exited: bool) -> Process {
        Process {
            pid,
            ppid: 1,
            comm: "w".into(),
            cow_copies: bytes / 4096,
            cow_bytes: bytes,
            file_copies: 0,
            wp_reuse: 0,
            wp_faults: 0,
            zero_fills: 0,
            faults: 0,
            vma_misses: 0,
            copies_by_size: [(4096, bytes / 4096)].into(),
            exited,
        }
    }
}

impl Report {
    /// A report of these processes only, for unit tests.
    #[cfg(test)]
    pub fn of(duration_s: f64, processes: Vec<Process>) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            duration_s,
            tracing_path: None,
            tracing_path_text: String::new(),
            processes,
            forks: Vec::new(),
            health: Health::default(),
            stacks: None,
        }
    }

    pub fn total_cow_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.cow_bytes).sum()
    }
    pub fn total_cow_copies(&self) -> u64 {
        self.processes.iter().map(|p| p.cow_copies).sum()
    }
}

/// Keeps the final records the kernel sent before dropping them from its maps.
#[derive(Default)]
pub struct Collector {
    exited: Vec<ProcStats>,
    /// How many of `exited` earlier reports included.
    reported: usize,
    /// Entries taken from PROCS for processes that had exited (see `Health::exited_in_table`).
    swept: u64,
    ended: BTreeMap<(u32, u32, u64), ForkRecord>,
}

impl Collector {
    /// Drops the final records kept so far: a long-running reader that has
    /// folded them into its own totals keeps memory bounded this way.
    pub fn forget(&mut self) {
        self.exited.clear();
        self.reported = 0;
        self.ended.clear();
    }

    /// Takes every record waiting in the ring buffer.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the programs write whole `Event`s; read_unaligned copes with the ring's alignment.
            let event: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            // SAFETY: `kind` says which union member the program wrote.
            match event.kind {
                event_kind::PROC_EXIT => self.exited.push(unsafe { event.payload.proc }),
                event_kind::FORK_END => {
                    let f = unsafe { event.payload.fork };
                    self.ended.insert((f.parent, f.child, f.start_ns), f);
                }
                _ => {}
            }
        }
    }

    /// Everything counted so far: final records plus the live map entries,
    /// each process once. An exiting process sends its final record and then
    /// leaves PROCS, while this reads: the ring is read before and after the
    /// map, and `merge` drops a live entry that a final record stands for.
    pub fn report(&mut self, loaded: &mut Loaded, ring: &mut RingBuf<MapData>, duration_s: f64) -> Result<Report> {
        self.drain(ring);
        let before = self.exited.len();
        let live = live_procs(loaded)?;
        let live_forks = live_forks(loaded)?;
        self.drain(ring);
        let gone: Vec<u32> = live.keys().copied().filter(|&tgid| has_exited(tgid)).collect();
        if !gone.is_empty() {
            // Their exit ran before /proc said so: a final record sent is in the ring now.
            self.drain(ring);
        }
        let mut live = merge(&self.exited[self.reported..before], &self.exited[before..], live);
        self.sweep(loaded, &mut live, &gone)?;
        self.reported = self.exited.len();
        let mut processes: Vec<Process> = self.exited.iter().map(|s| process(s, true)).collect();
        processes.extend(live.values().map(|s| process(s, false)));
        processes.sort_by_key(|p| p.pid);
        // A fork's final record is newer than its live entry.
        let mut forks = live_forks;
        forks.extend(self.ended.iter().map(|(k, f)| (*k, *f)));
        let mut forks: Vec<Fork> = forks.values().map(fork).collect();
        forks.sort_by_key(|f| f.start_ns);
        Ok(Report {
            schema_version: SCHEMA_VERSION,
            duration_s,
            tracing_path: loaded.path(),
            tracing_path_text: loaded.path().map(|p| p.name().to_string()).unwrap_or_default(),
            processes,
            forks,
            health: Health { exited_in_table: self.swept, ..health(loaded)? },
            stacks: None,
        })
    }

    /// Takes the entries of processes that exited without a final record
    /// (the ring was full, or they had exited before tracing began) from
    /// PROCS: their counts are final, and they would fill the table.
    fn sweep(&mut self, loaded: &mut Loaded, live: &mut BTreeMap<u32, ProcStats>, gone: &[u32]) -> Result<()> {
        for tgid in gone {
            let Some(stats) = live.remove(tgid) else { continue };
            // Already gone: the exit probe deleted it after sending its final
            // record, which the ring has not handed over yet (an earlier
            // reservation on another CPU holds it back). That record counts it.
            if !removed_or_gone(loaded.procs()?.remove(tgid)).context("removing an exited process from PROCS")? {
                continue;
            }
            self.exited.push(stats);
            self.swept += 1;
        }
        Ok(())
    }
}

/// Whether this delete removed the entry (true) or found it already gone
/// (false). aya reports a missing key as the syscall's ENOENT, not as
/// `KeyNotFound`.
fn removed_or_gone(result: Result<(), aya::maps::MapError>) -> Result<bool, aya::maps::MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the process has exited: gone from /proc, or a zombie (a leader
/// whose threads still run is a zombie too, but not alone).
fn has_exited(tgid: u32) -> bool {
    match procfs::process::Process::new(tgid as i32).and_then(|p| p.stat()) {
        Ok(stat) => matches!(stat.state, 'X' | 'x') || (stat.state == 'Z' && stat.num_threads <= 1),
        Err(procfs::ProcError::NotFound(_)) => true,
        Err(_) => false,
    }
}

/// PROCS by tgid. Keyed, because an entry deleted under the iteration makes
/// the kernel start it again from the first key: entries come twice.
fn live_procs(loaded: &mut Loaded) -> Result<BTreeMap<u32, ProcStats>> {
    let mut live = BTreeMap::new();
    for entry in loaded.procs()?.iter() {
        let (tgid, stats) = entry.context("reading PROCS")?;
        live.insert(tgid, stats);
    }
    Ok(live)
}

fn live_forks(loaded: &Loaded) -> Result<BTreeMap<(u32, u32, u64), ForkRecord>> {
    let map: HashMap<&MapData, u64, ForkRecord> =
        HashMap::try_from(loaded.ebpf.map("FORKS").context("no FORKS map")?)?;
    let mut live = BTreeMap::new();
    for entry in map.iter() {
        let (_, f) = entry.context("reading FORKS")?;
        live.insert((f.parent, f.child, f.start_ns), f);
    }
    Ok(live)
}

/// The live entries no final record stands for. `earlier`: final records
/// read before the map (since the last report); their process may not have
/// left the map yet, and its entry then holds the very same counts (a pid
/// used again by a newer process does not). `later`: final records read
/// after the map: their process was in it, with counts up to its read.
fn merge(earlier: &[ProcStats], later: &[ProcStats], mut live: BTreeMap<u32, ProcStats>) -> BTreeMap<u32, ProcStats> {
    for done in earlier {
        if live.get(&done.tgid).is_some_and(|s| same_counts(s, done)) {
            live.remove(&done.tgid);
        }
    }
    for done in later {
        live.remove(&done.tgid);
    }
    live
}

/// The parent too: a short program run again and again makes the same
/// counts each time, but a newer process with its pid seldom has its parent.
fn same_counts(a: &ProcStats, b: &ProcStats) -> bool {
    (a.ppid, a.comm, a.faults, a.wp_faults, a.file_copies, a.zero_fills, a.copies_by_order)
        == (b.ppid, b.comm, b.faults, b.wp_faults, b.file_copies, b.zero_fills, b.copies_by_order)
}

fn process(s: &ProcStats, exited: bool) -> Process {
    let mut ppid = s.ppid;
    if ppid == 0 && !exited {
        ppid = procfs::process::Process::new(s.tgid as i32)
            .and_then(|p| p.stat())
            .map(|st| st.ppid as u32)
            .unwrap_or(0);
    }
    let page = crate::kernel::page_size();
    let copies_by_size = (0..ORDERS)
        .filter(|&o| s.copies_by_order[o] > 0)
        .map(|o| (page << o, s.copies_by_order[o]))
        .collect();
    Process {
        pid: s.tgid,
        ppid,
        comm: comm_string(&s.comm),
        cow_copies: s.cow_copies(),
        cow_bytes: s.cow_bytes(page.trailing_zeros()),
        file_copies: s.file_copies,
        wp_reuse: s.wp_faults.saturating_sub(s.cow_copies() + s.zero_fills),
        wp_faults: s.wp_faults,
        zero_fills: s.zero_fills,
        faults: s.faults,
        vma_misses: s.vma_misses,
        copies_by_size,
        exited,
    }
}

fn fork(f: &ForkRecord) -> Fork {
    Fork {
        parent: f.parent,
        child: f.child,
        start_ns: f.start_ns,
        end_ns: (f.end_ns != 0).then_some(f.end_ns),
        end_reason: match f.end_reason {
            end_reason::CHILD_EXIT => "child_exit",
            end_reason::CHILD_EXEC => "child_exec",
            end_reason::PARENT_EXIT => "parent_exit",
            end_reason::PARENT_EXEC => "parent_exec",
            _ => "live",
        },
        parent_copies: f.parent_copies,
        child_copies: f.child_copies,
        parent_bytes: f.parent_bytes,
        child_bytes: f.child_bytes,
    }
}

fn health(loaded: &Loaded) -> Result<Health> {
    let map: aya::maps::Array<&MapData, u64> =
        aya::maps::Array::try_from(loaded.ebpf.map("COUNTERS").context("no COUNTERS map")?)?;
    let get = |i: u32| map.get(&i, 0).unwrap_or(0);
    Ok(Health {
        procs_table_full: get(counter::PROCS_FULL),
        forks_table_full: get(counter::FORKS_FULL),
        pending_table_full: get(counter::PENDING_FULL),
        ring_full: get(counter::RING_FULL),
        unattributed_copies: get(counter::UNATTRIBUTED),
        dropped_stacks: get(counter::STACKS_DROPPED),
        dropped_addresses: get(counter::ADDRESSES_DROPPED),
        exited_in_table: 0,
    })
}

/// Bytes as people read them: 4.0 KiB, 2.0 MiB.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The stable token for a tracing path, as in the JSON report.
pub fn path_token(path: Option<Path>) -> &'static str {
    match path {
        Some(Path::BtfTracepoint) => "btf_tracepoint",
        Some(Path::RawTracepoint) => "raw_tracepoint",
        None => "none",
    }
}

/// Text another user controls (a process name) made safe for a terminal, as
/// ps does: control characters and bidirectional overrides become escapes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || bidi => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The report as tables.
pub fn print(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let mut procs = comfy_table::Table::new();
    procs.load_preset(comfy_table::presets::NOTHING).set_header([
        "PID", "PPID", "COMM", "COW_COPIES", "COW_BYTES", "BY_SIZE", "WP_REUSE", "ZERO_FILLS", "FAULTS",
    ]);
    for p in &report.processes {
        let sizes: Vec<String> = p.copies_by_size.iter().map(|(s, n)| format!("{n}x{}", human(*s))).collect();
        procs.add_row([
            p.pid.to_string(),
            p.ppid.to_string(),
            format!("{}{}", escape(&p.comm), if p.exited { "" } else { " (live)" }),
            p.cow_copies.to_string(),
            human(p.cow_bytes),
            sizes.join(" "),
            p.wp_reuse.to_string(),
            p.zero_fills.to_string(),
            p.faults.to_string(),
        ]);
    }
    writeln!(out, "{procs}")?;
    if !report.forks.is_empty() {
        let mut forks = comfy_table::Table::new();
        forks.load_preset(comfy_table::presets::NOTHING).set_header([
            "PARENT", "CHILD", "SHARED_FOR", "ENDED_BY", "PARENT_COPIES", "CHILD_COPIES", "COPIED",
        ]);
        for f in &report.forks {
            let shared = f.end_ns.map(|e| format!("{:.3}s", (e.saturating_sub(f.start_ns)) as f64 / 1e9));
            forks.add_row([
                f.parent.to_string(),
                f.child.to_string(),
                shared.unwrap_or_else(|| "-".into()),
                f.end_reason.to_string(),
                f.parent_copies.to_string(),
                f.child_copies.to_string(),
                human(f.parent_bytes + f.child_bytes),
            ]);
        }
        writeln!(out, "\n{forks}")?;
    }
    writeln!(
        out,
        "\ntotal: {} copies, {} copied, in {:.1}s ({})",
        report.total_cow_copies(),
        human(report.total_cow_bytes()),
        report.duration_s,
        report.tracing_path_text
    )?;
    let h = &report.health;
    if h.procs_table_full + h.forks_table_full + h.pending_table_full + h.ring_full > 0 {
        writeln!(
            out,
            "warning: tables full, counts incomplete: procs {} forks {} pending {} ring {}",
            h.procs_table_full, h.forks_table_full, h.pending_table_full, h.ring_full
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_an_entry_already_gone_is_not_an_error() {
        let gone = |errno| {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        // Gone: the exit probe took it, and its final record will count it.
        assert!(!removed_or_gone(Err(gone(libc::ENOENT))).unwrap());
        assert!(!removed_or_gone(Err(aya::maps::MapError::KeyNotFound)).unwrap());
        assert!(removed_or_gone(Err(gone(libc::EPERM))).is_err());
        assert!(removed_or_gone(Ok(())).unwrap());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(2 << 20), "2.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(1023), "1023 B");
        // Beyond TiB the unit stays TiB.
        assert_eq!(human(1 << 50), "1024.0 TiB");
    }

    #[test]
    fn names_cannot_drive_the_terminal() {
        assert_eq!(escape("bash"), "bash");
        assert_eq!(escape("\x1b[2J\x1b[31mEVIL\r"), "\\x1b[2J\\x1b[31mEVIL\\x0d");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("caf\u{e9}"), "caf\u{e9}");
        assert_eq!(escape("\u{202e}txt\u{85}"), "\\u{202e}txt\\u{85}");
        assert_eq!(escape("\x7f\u{80}"), "\\x7f\\u{80}");
    }

    #[test]
    fn reuses_exclude_copies_and_zero_fills() {
        let mut s = ProcStats::new(7, 1, *b"proc\0\0\0\0\0\0\0\0\0\0\0\0");
        s.wp_faults = 100;
        s.zero_fills = 10;
        s.copies_by_order[0] = 58;
        s.copies_by_order[9] = 2;
        let p = process(&s, true);
        assert_eq!(p.wp_reuse, 30);
        assert_eq!(p.comm, "proc");
        assert_eq!(p.copies_by_size.get(&4096), Some(&58));
        assert_eq!(p.copies_by_size.get(&(2 << 20)), Some(&2));
        assert_eq!(p.cow_copies, 60);
        assert_eq!(p.cow_bytes, 58 * 4096 + 2 * (2 << 20));
    }

    #[test]
    fn a_live_process_without_a_parent_gets_it_from_proc() {
        let me = std::process::id();
        let parent = nix::unistd::getppid().as_raw() as u32;
        assert_eq!(process(&ProcStats::new(me, 0, [0; 16]), false).ppid, parent);
        // Known parents are kept; an exited process is not looked up (its pid may be reused).
        assert_eq!(process(&ProcStats::new(me, 4242, [0; 16]), false).ppid, 4242);
        assert_eq!(process(&ProcStats::new(me, 0, [0; 16]), true).ppid, 0);
    }

    #[test]
    fn forget_drops_the_final_records() {
        let mut c = Collector::default();
        c.exited.push(ProcStats::new(7, 1, [0; 16]));
        c.ended.insert((10, 11, 1), record(2, end_reason::CHILD_EXIT));
        c.forget();
        assert!(c.exited.is_empty() && c.ended.is_empty());
    }

    fn copying(tgid: u32, pages: u64) -> ProcStats {
        let mut s = ProcStats::new(tgid, 1, *b"w\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        s.copies_by_order[0] = pages;
        s
    }

    #[test]
    fn a_final_record_read_before_its_entry_left_the_map_counts_once() {
        let live = [(7, copying(7, 5)), (8, copying(8, 3))].into();
        let kept = merge(&[copying(7, 5)], &[], live);
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [8]);
    }

    #[test]
    fn a_final_record_read_after_the_map_replaces_the_entry_read_there() {
        // The entry was read with 5 copies; the process copied 2 more and exited.
        let kept = merge(&[], &[copying(7, 7)], [(7, copying(7, 5))].into());
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn a_pid_used_again_keeps_the_newer_process() {
        // pid 7 exited with 5 copies; a newer process got pid 7 and copied 1.
        let kept = merge(&[copying(7, 5)], &[], [(7, copying(7, 1))].into());
        assert_eq!(kept.get(&7).map(|s| s.copies_by_order[0]), Some(1));
    }

    #[test]
    fn a_pid_used_again_by_another_parents_child_with_the_same_counts_is_kept() {
        // pid 7 (a child of 1) exited with 5 copies; a child of 2 got pid 7 and copied 5 too.
        let newer = ProcStats { ppid: 2, ..copying(7, 5) };
        let kept = merge(&[copying(7, 5)], &[], [(7, newer)].into());
        assert_eq!(kept.get(&7).map(|s| s.ppid), Some(2));
    }

    fn record(end_ns: u64, end_reason: u32) -> ForkRecord {
        ForkRecord {
            parent: 10,
            child: 11,
            start_ns: 1_000_000_000,
            end_ns,
            parent_copies: 3,
            child_copies: 2,
            parent_bytes: 3 << 12,
            child_bytes: 2 << 12,
            older: 0,
            newer: 0,
            up: 0,
            holders: 0,
            end_reason,
            _pad: 0,
        }
    }

    #[test]
    fn fork_records_name_their_end() {
        let live = fork(&record(0, end_reason::LIVE));
        assert_eq!((live.end_ns, live.end_reason), (None, "live"));
        let names = [
            (end_reason::CHILD_EXIT, "child_exit"),
            (end_reason::CHILD_EXEC, "child_exec"),
            (end_reason::PARENT_EXIT, "parent_exit"),
            (end_reason::PARENT_EXEC, "parent_exec"),
        ];
        for (reason, name) in names {
            let f = fork(&record(3_500_000_000, reason));
            assert_eq!((f.end_ns, f.end_reason), (Some(3_500_000_000), name));
            assert_eq!((f.parent, f.child, f.start_ns), (10, 11, 1_000_000_000));
            assert_eq!((f.parent_copies, f.child_copies, f.parent_bytes, f.child_bytes), (3, 2, 3 << 12, 2 << 12));
        }
    }

    fn sample_report(health: Health) -> Report {
        let mut s = ProcStats::new(7, 1, *b"wr\x1bter\0\0\0\0\0\0\0\0\0\0");
        (s.wp_faults, s.zero_fills, s.faults) = (9, 1, 40);
        s.copies_by_order[0] = 5;
        let mut other = ProcStats::new(8, 7, *b"child\0\0\0\0\0\0\0\0\0\0\0");
        other.copies_by_order[9] = 1;
        Report {
            schema_version: SCHEMA_VERSION,
            duration_s: 2.34,
            tracing_path: Some(Path::RawTracepoint),
            tracing_path_text: Path::RawTracepoint.name().to_string(),
            processes: vec![process(&s, true), process(&other, true)],
            forks: vec![fork(&record(3_500_000_000, end_reason::CHILD_EXIT)), fork(&record(0, end_reason::LIVE))],
            health,
            stacks: None,
        }
    }

    fn printed(report: &Report) -> String {
        let mut out = Vec::new();
        print(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn totals_add_every_process() {
        let report = sample_report(Health::default());
        assert_eq!(report.total_cow_copies(), 6);
        assert_eq!(report.total_cow_bytes(), (5 << 12) + (2 << 20));
    }

    #[test]
    fn tables_show_processes_forks_and_totals() {
        let text = printed(&sample_report(Health::default()));
        let row = |start: &str| text.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_default().to_string();
        let words = |line: String| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(words(row("7 ")), ["7", "1", "wr\\x1bter", "5", "20.0", "KiB", "5x4.0", "KiB", "3", "1", "40"]);
        assert_eq!(words(row("8 ")), ["8", "7", "child", "1", "2.0", "MiB", "1x2.0", "MiB", "0", "0", "0"]);
        assert_eq!(words(row("10 ")), ["10", "11", "2.500s", "child_exit", "3", "2", "20.0", "KiB"]);
        assert!(text.contains("PARENT") && text.contains("ENDED_BY"), "{text}");
        assert!(text.lines().any(|l| words(l.to_string()) == ["10", "11", "-", "live", "3", "2", "20.0", "KiB"]), "{text}");
        assert!(text.contains("\ntotal: 6 copies, 2.0 MiB copied, in 2.3s (raw tracepoints)\n"), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn full_tables_are_warned_about() {
        for field in 0..4 {
            let mut health = Health::default();
            *[&mut health.procs_table_full, &mut health.forks_table_full, &mut health.pending_table_full, &mut health.ring_full][field] = 1;
            let text = printed(&sample_report(health));
            assert!(text.contains("warning: tables full, counts incomplete"), "{field}: {text}");
        }
        // Two full tables warn too (the counts are added, not subtracted).
        for pair in [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]] {
            let [procs_table_full, forks_table_full, pending_table_full, ring_full] = pair;
            let health = Health { procs_table_full, forks_table_full, pending_table_full, ring_full, ..Health::default() };
            let want = format!("procs {procs_table_full} forks {forks_table_full} pending {pending_table_full} ring {ring_full}");
            assert!(printed(&sample_report(health)).contains(&want), "{want}");
        }
        let mut quiet = sample_report(Health { unattributed_copies: 9, ..Health::default() });
        quiet.forks.clear();
        let text = printed(&quiet);
        assert!(!text.contains("warning") && !text.contains("PARENT"), "{text}");
    }

    #[test]
    fn path_tokens_are_stable() {
        assert_eq!(path_token(Some(Path::BtfTracepoint)), "btf_tracepoint");
        assert_eq!(path_token(Some(Path::RawTracepoint)), "raw_tracepoint");
        assert_eq!(path_token(None), "none");
    }
}
