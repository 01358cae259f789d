//! `--stacks`: which code made the copies (user stacks the kernel counted per
//! process and stack) and which memory they were in (each copy's address,
//! resolved against /proc/PID/maps while the process lives).
mod flame;
mod procmaps;
mod symbols;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::PathBuf,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap};
use clap::Args;
use serde::Serialize;
use snapshot_common::{CopyAddr, StackCount, StackKey};

use crate::{
    loader::Loaded,
    output::Sink,
    report::{Report, escape, human},
};
use procmaps::{Cache, Layout};

/// Code paths kept in the JSON report.
const TOP_PATHS: usize = 20;
/// Mappings listed per process; the rest are summed in one row, so a
/// process with thousands of regions stays readable.
const TOP_MAPPINGS: usize = 12;

#[derive(Args, Debug, Default, Clone)]
pub struct StackArgs {
    /// Record the user stack and the address of every copy: the report gains
    /// the top code paths and copies by mapping. Whole stacks need frame
    /// pointers in the traced program (see the README).
    #[arg(long)]
    pub stacks: bool,
    /// Write the copies' stacks to PATH in folded form (flamegraph.pl,
    /// inferno), weighted by copied bytes. Implies --stacks.
    #[arg(long, value_name = "PATH")]
    pub folded: Option<PathBuf>,
    /// Write an SVG flame graph of the copies to PATH, weighted by copied
    /// bytes. Implies --stacks.
    #[arg(long, value_name = "PATH")]
    pub flamegraph: Option<PathBuf>,
    /// Print copies and bytes per mapping of each process after the report.
    /// Implies --stacks.
    #[arg(long)]
    pub by_mapping: bool,
}

impl StackArgs {
    pub fn enabled(&self) -> bool {
        self.stacks || self.folded.is_some() || self.flamegraph.is_some() || self.by_mapping
    }
}

/// The files `--folded` and `--flamegraph` name, opened before tracing.
pub struct Outputs {
    folded: Option<Sink>,
    svg: Option<Sink>,
    by_mapping: bool,
}

impl Outputs {
    pub fn open(args: &StackArgs) -> Result<Outputs> {
        let open = |p: &Option<PathBuf>, what| {
            p.as_deref().map(|p| Sink::open(Some(p), Sink::Stdout)).transpose().context(what)
        };
        Ok(Outputs {
            folded: open(&args.folded, "--folded")?,
            svg: open(&args.flamegraph, "--flamegraph")?,
            by_mapping: args.by_mapping,
        })
    }

    /// Writes the folded stacks, the SVG and the `--by-mapping` table (to `table`).
    pub fn write(&mut self, stacks: &StacksReport, table: &mut Sink) -> Result<()> {
        let lines = flame::folded(&stacks.paths);
        if let Some(out) = &mut self.folded {
            out.write(|w| flame::write_folded(&lines, w))?;
        }
        if let Some(out) = &mut self.svg {
            out.write(|w| flame::write_svg(&lines, w))?;
        }
        if self.by_mapping {
            table.write(|w| print_by_mapping(stacks, w))?;
        }
        Ok(())
    }
}

/// Copies made through one code path of one process.
#[derive(Serialize, Clone, Debug)]
pub struct CodePath {
    pub pid: u32,
    pub comm: String,
    pub copies: u64,
    pub bytes: u64,
    /// Function names, innermost (the copying instruction) first.
    pub frames: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MappingCopies {
    /// `[heap]`, `[stack]`, `[anon START-END]`, `[anon:NAME]`, a file's path,
    /// `[unknown]`, or `[N other mappings]` (those past the top ones).
    pub mapping: String,
    pub copies: u64,
    pub bytes: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct ProcessMappings {
    pub pid: u32,
    pub comm: String,
    pub copies: u64,
    pub bytes: u64,
    /// Most bytes first.
    pub mappings: Vec<MappingCopies>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct StacksReport {
    /// The code paths that copied most bytes, most first.
    pub top_paths: Vec<CodePath>,
    pub by_mapping: Vec<ProcessMappings>,
    /// `by_mapping` before the rows past the top ones were summed: what
    /// adds up the same mapping across processes (`snapshot run`).
    #[serde(skip)]
    pub all_mappings: Vec<ProcessMappings>,
    /// Every code path, for the folded stacks and the flame graph.
    #[serde(skip)]
    pub paths: Vec<CodePath>,
}

/// Copies and bytes, which a copy taken back lowers.
type Tally = (i64, i64);

/// Resolves copy addresses to mappings as they arrive.
#[derive(Default)]
pub struct Recorder {
    layouts: Cache,
    mapped: BTreeMap<(u32, String), Tally>,
    /// Addresses of processes gone before their maps could be read: resolved
    /// at the end in the layout of their nearest known ancestor, which a
    /// forked child shares until it maps more.
    orphans: HashMap<u32, Vec<(u64, Tally)>>,
    /// Kept across reports: `snapshot run` asks for one every interval.
    names: symbols::Names,
}

impl Recorder {
    /// Takes every address waiting in the ring.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<CopyAddr>() {
                continue;
            }
            // SAFETY: the programs write whole `CopyAddr`s; read_unaligned copes with the ring's alignment.
            let c: CopyAddr = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let tally = (i64::from(c.copies), i64::from(c.copies) * c.bytes as i64);
            match self.layouts.resolve(c.tgid, c.address) {
                Some(region) => add(self.mapped.entry((c.tgid, region.name.clone())).or_default(), tally),
                None => self.orphans.entry(c.tgid).or_default().push((c.address, tally)),
            }
        }
    }

    /// The code paths and mappings of everything recorded, named.
    pub fn finish(mut self, loaded: &Loaded, report: &Report) -> Result<StacksReport> {
        self.report(loaded, report)
    }

    /// The code paths and mappings of everything recorded so far, named.
    /// Addresses of processes gone before their maps were read are settled
    /// in their ancestor's layout now.
    pub fn report(&mut self, loaded: &Loaded, report: &Report) -> Result<StacksReport> {
        let parents: HashMap<u32, u32> = report.processes.iter().map(|p| (p.pid, p.ppid)).collect();
        let comms: HashMap<u32, String> = report.processes.iter().map(|p| (p.pid, p.comm.clone())).collect();
        for (tgid, addresses) in std::mem::take(&mut self.orphans) {
            for (address, tally) in addresses {
                let name = layout_of(&self.layouts, &parents, tgid)
                    .and_then(|l| l.find(address))
                    .map_or_else(|| "[unknown]".to_string(), |r| r.name.clone());
                add(self.mapped.entry((tgid, name)).or_default(), tally);
            }
        }
        let paths = self.paths(loaded, &parents, &comms)?;
        let mut top_paths = paths.clone();
        top_paths.truncate(TOP_PATHS);
        let all_mappings = self.by_mapping(&comms);
        let mut by_mapping = all_mappings.clone();
        by_mapping.iter_mut().for_each(|p| cap(&mut p.mappings, TOP_MAPPINGS));
        Ok(StacksReport { top_paths, by_mapping, all_mappings, paths })
    }

    /// Every (process, stack) the kernel counted, named and merged by name, most bytes first.
    fn paths(
        &mut self,
        loaded: &Loaded,
        parents: &HashMap<u32, u32>,
        comms: &HashMap<u32, String>,
    ) -> Result<Vec<CodePath>> {
        let counts: BpfHashMap<&MapData, StackKey, StackCount> =
            BpfHashMap::try_from(loaded.ebpf.map("STACK_COPIES").context("no STACK_COPIES map")?)?;
        let traces = StackTraceMap::try_from(loaded.ebpf.map("STACKS").context("no STACKS map")?)?;
        let mut merged: BTreeMap<(u32, Vec<String>), Tally> = BTreeMap::new();
        for entry in counts.iter() {
            let (key, count) = entry.context("reading STACK_COPIES")?;
            self.layouts.remember(key.tgid);
            let frames = match u32::try_from(key.stack_id) {
                Ok(id) => match traces.get(&id, 0) {
                    Ok(trace) => {
                        let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
                        self.names.frames(&self.layouts, layout_of(&self.layouts, parents, key.tgid), &ips)
                    }
                    Err(_) => vec!["[stack lost]".to_string()],
                },
                Err(_) => vec![lost_stack(key.stack_id)],
            };
            add(merged.entry((key.tgid, frames)).or_default(), (count.copies as i64, count.bytes as i64));
        }
        let mut paths: Vec<CodePath> = merged
            .into_iter()
            .filter(|(_, (copies, _))| *copies > 0)
            .map(|((pid, frames), (copies, bytes))| CodePath {
                pid,
                comm: comms.get(&pid).cloned().unwrap_or_default(),
                copies: copies as u64,
                bytes: bytes.max(0) as u64,
                frames,
            })
            .collect();
        paths.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pid.cmp(&b.pid)));
        Ok(paths)
    }

    /// Each process's copies by mapping, most bytes first, all rows.
    fn by_mapping(&self, comms: &HashMap<u32, String>) -> Vec<ProcessMappings> {
        let mut out: BTreeMap<u32, ProcessMappings> = BTreeMap::new();
        for (&(pid, ref mapping), &(copies, bytes)) in &self.mapped {
            if copies <= 0 {
                continue;
            }
            let p = out.entry(pid).or_insert_with(|| ProcessMappings {
                pid,
                comm: comms.get(&pid).cloned().unwrap_or_default(),
                copies: 0,
                bytes: 0,
                mappings: Vec::new(),
            });
            p.copies += copies as u64;
            p.bytes += bytes.max(0) as u64;
            p.mappings.push(MappingCopies { mapping: mapping.clone(), copies: copies as u64, bytes: bytes.max(0) as u64 });
        }
        let mut out: Vec<ProcessMappings> = out.into_values().collect();
        for p in &mut out {
            p.mappings.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.mapping.cmp(&b.mapping)));
        }
        out
    }
}

/// Keeps the first `top` of `mappings` (sorted, most bytes first) and sums
/// the rest into one row.
pub(crate) fn cap(mappings: &mut Vec<MappingCopies>, top: usize) {
    if mappings.len() <= top + 1 {
        return;
    }
    let rest = mappings.split_off(top);
    mappings.push(MappingCopies {
        mapping: format!("[{} other mappings]", rest.len()),
        copies: rest.iter().map(|m| m.copies).sum(),
        bytes: rest.iter().map(|m| m.bytes).sum(),
    });
}

fn add(t: &mut Tally, (copies, bytes): Tally) {
    t.0 += copies;
    t.1 += bytes;
}

/// The layout of `tgid`, else of its nearest ancestor whose layout was read.
fn layout_of<'a>(layouts: &'a Cache, parents: &HashMap<u32, u32>, tgid: u32) -> Option<&'a Layout> {
    let mut pid = tgid;
    for _ in 0..64 {
        if let Some(layout) = layouts.get(pid) {
            return Some(layout);
        }
        pid = *parents.get(&pid).filter(|&&p| p != 0)?;
    }
    None
}

/// Why the kernel kept no stack for a copy (`bpf_get_stackid`'s error).
fn lost_stack(error: i32) -> String {
    match -error {
        libc::EFAULT => "[no user stack]".into(),
        libc::EEXIST | libc::ENOMEM => "[stack table full]".into(),
        e => format!("[stack error {e}]"),
    }
}

/// The `--by-mapping` table.
pub fn print_by_mapping(stacks: &StacksReport, out: &mut dyn Write) -> std::io::Result<()> {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header(["PID", "COMM", "MAPPING", "COPIES", "COPIED"]);
    for p in &stacks.by_mapping {
        for m in &p.mappings {
            table.add_row([
                p.pid.to_string(),
                escape(&p.comm),
                escape(&m.mapping),
                m.copies.to_string(),
                human(m.bytes),
            ]);
        }
    }
    writeln!(out, "\ncopies by mapping:\n{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_of_regions_become_the_top_ones_and_one_row_for_the_rest() {
        let mut recorder = Recorder::default();
        for i in 0..3000u64 {
            let name = format!("[anon {:x}-{:x}]", i << 20, (i + 1) << 20);
            recorder.mapped.insert((7, name), (i as i64 + 1, (i as i64 + 1) * 4096));
        }
        recorder.mapped.insert((7, "[heap]".into()), (1, 4096));
        let mut by_mapping = recorder.by_mapping(&HashMap::new());
        cap(&mut by_mapping[0].mappings, TOP_MAPPINGS);
        let rows = &by_mapping[0].mappings;
        assert_eq!(rows.len(), TOP_MAPPINGS + 1);
        assert_eq!(rows[0].mapping, format!("[anon {:x}-{:x}]", 2999u64 << 20, 3000u64 << 20));
        assert_eq!(rows[TOP_MAPPINGS].mapping, format!("[{} other mappings]", 3001 - TOP_MAPPINGS));
        let copies: u64 = rows.iter().map(|m| m.copies).sum();
        assert_eq!(copies, 3000 * 3001 / 2 + 1);
        assert_eq!(copies, by_mapping[0].copies);
        assert_eq!(rows.iter().map(|m| m.bytes).sum::<u64>(), by_mapping[0].bytes);
    }

    #[test]
    fn a_single_row_past_the_top_keeps_its_name() {
        let mut rows: Vec<MappingCopies> = (0..=TOP_MAPPINGS)
            .map(|i| MappingCopies { mapping: format!("m{i}"), copies: 1, bytes: 4096 })
            .collect();
        cap(&mut rows, TOP_MAPPINGS);
        assert_eq!(rows.len(), TOP_MAPPINGS + 1);
        assert_eq!(rows[TOP_MAPPINGS].mapping, format!("m{TOP_MAPPINGS}"));
    }
}
