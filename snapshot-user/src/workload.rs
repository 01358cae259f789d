//! `snapshot workload`: a real forking program whose copies are known. It
//! maps memory, forks, writes one byte per page, and measures which pages the
//! kernel really copied from /proc/self/pagemap: a written page whose frame
//! number changed was copied. Tests compare the tracer with this.
use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::FileExt,
    process::ExitCode,
    ptr::NonNull,
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CpuSet, sched_getcpu, sched_setaffinity},
    sys::{
        mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap, mmap_anonymous},
        wait::waitpid,
    },
    unistd::{ForkResult, Pid, fork},
};
use serde::Serialize;

use crate::cli::{Memory, Scenario, WorkloadArgs, Writer};

const HUGE: usize = 2 << 20;

#[derive(Serialize)]
pub struct Truth {
    pub pid: u32,
    pub memory: Memory,
    pub scenario: Scenario,
    /// Size of each written page: a base page, or a huge page for hugetlb.
    pub page_size: usize,
    pub pages_written: usize,
    /// Bytes of the region backed by transparent huge pages before the first fork.
    pub thp_bytes: u64,
    pub forks: Vec<ForkTruth>,
}

#[derive(Serialize)]
pub struct ForkTruth {
    pub child: u32,
    /// Written pages whose frame changed in the parent.
    pub parent_copied: usize,
    /// Written pages whose frame changed in the child.
    pub child_copied: usize,
}

pub fn run(args: &WorkloadArgs) -> Result<ExitCode> {
    pin_to_this_cpu()?;
    let region = Region::map(args.memory, args.pages)?;
    let thp_bytes = region.thp_bytes();
    let sink = match &args.file_writes {
        Some(dir) => Some(tempfile_in(dir)?),
        None => None,
    };
    let zero = match args.writer {
        Writer::Read => Some(File::open("/dev/zero").context("opening /dev/zero")?),
        Writer::Store => None,
    };
    let region = Region { measure: !args.no_pagemap, sink, zero, ..region };
    let forks = (0..args.forks).map(|_| one_fork(&region, args.scenario)).collect::<Result<_>>()?;
    let truth = Truth {
        pid: std::process::id(),
        memory: args.memory,
        scenario: args.scenario,
        page_size: region.page,
        pages_written: args.pages,
        thp_bytes,
        forks,
    };
    let json = serde_json::to_string_pretty(&truth)?;
    match &args.truth {
        Some(path) => crate::output::create(path)
            .and_then(|mut f| f.write_all(json.as_bytes()).with_context(|| format!("writing {}", path.display())))?,
        None => println!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps this process, and the children it forks, on the CPU it runs on.
///
/// A freshly faulted page waits in a per-CPU batch (the kernel's lru_add folio
/// batch, up to 31 pages) that holds a reference to it, and a write fault
/// reuses a page only when nobody else holds one; it drains only its own CPU's
/// batch. Populating on one CPU and writing on another after the child exited
/// elsewhere copied the last 1 to 30 pages populated in a quarter to a half of
/// the runs; on one CPU (the child's exit and the fault drain that batch) 0 in
/// 500. Pinned, the copies the ground truth sees are the fork's.
fn pin_to_this_cpu() -> Result<()> {
    let cpu = sched_getcpu().context("sched_getcpu")?;
    let mut set = CpuSet::new();
    set.set(cpu).context("CPU number out of range")?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning the workload to CPU {cpu}"))
}

/// The written memory: `pages` pages of `page` bytes at `base`.
struct Region {
    base: NonNull<u8>,
    page: usize,
    pages: usize,
    /// Read pagemap around the writes (the ground truth); off for benchmarks.
    measure: bool,
    /// Keeps a file mapping's file open.
    _file: Option<File>,
    /// Gets 4 KiB written after each page write (`--file-writes`).
    sink: Option<File>,
    /// With `--writer read`, the kernel writes the pages from /dev/zero.
    zero: Option<File>,
}

impl Region {
    fn map(memory: Memory, pages: usize) -> Result<Self> {
        let page = if memory == Memory::Hugetlb { HUGE } else { crate::kernel::page_size() as usize };
        let len = std::num::NonZeroUsize::new(pages * page).context("--pages must be > 0")?;
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let mut file = None;
        // SAFETY: fresh mappings nothing else refers to.
        let base = unsafe {
            match memory {
                Memory::Private => mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE)?,
                Memory::Shared => mmap_anonymous(None, len, rw, MapFlags::MAP_SHARED)?,
                Memory::Hugetlb => mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE | MapFlags::MAP_HUGETLB)
                    .context("no free hugetlb pages: reserve some with `echo N > /proc/sys/vm/nr_hugepages`")?,
                Memory::Thp => thp_region(len.get())?,
                Memory::ThpHugetlb => {
                    hugetlb_page()?;
                    thp_region(len.get())?
                }
                Memory::File => {
                    let f = filled_file(len.get())?;
                    let p = mmap(None, len, rw, MapFlags::MAP_PRIVATE, &f, 0)?;
                    file = Some(f);
                    p
                }
            }
        };
        let region = Region { base: base.cast(), page, pages, measure: true, _file: file, sink: None, zero: None };
        region.populate(memory);
        Ok(region)
    }

    /// Faults every page in before the fork, so the writes after it hit
    /// present pages (file pages read-only, from the page cache).
    fn populate(&self, memory: Memory) {
        for i in 0..self.pages * self.page / 4096 {
            let p = unsafe { self.base.as_ptr().add(i * 4096) };
            // SAFETY: inside the mapping.
            unsafe {
                if memory == Memory::File {
                    std::ptr::read_volatile(p);
                } else {
                    std::ptr::write_volatile(p, 1);
                }
            }
        }
    }

    fn write_all(&self, value: u8) -> Result<()> {
        let block = [value; 4096];
        for i in 0..self.pages {
            // SAFETY: inside the mapping.
            let page = unsafe { self.base.as_ptr().add(i * self.page) };
            match self.zero.as_ref() {
                // SAFETY: one byte inside the mapping.
                Some(mut zero) => std::io::Read::read_exact(&mut zero, unsafe { std::slice::from_raw_parts_mut(page, 1) })
                    .context("reading /dev/zero")?,
                None => unsafe { std::ptr::write_volatile(page, value) },
            }
            if let Some(mut sink) = self.sink.as_ref() {
                sink.write_all(&block).context("--file-writes")?;
            }
        }
        Ok(())
    }

    /// Frame number of each written page, from /proc/self/pagemap (root only).
    fn frames(&self) -> Result<Vec<u64>> {
        let pagemap = File::open("/proc/self/pagemap").context("opening /proc/self/pagemap")?;
        let mut entry = [0u8; 8];
        (0..self.pages)
            .map(|i| {
                let vpn = (self.base.as_ptr() as usize + i * self.page) / 4096;
                pagemap.read_exact_at(&mut entry, vpn as u64 * 8).context("reading /proc/self/pagemap")?;
                let frame = u64::from_le_bytes(entry) & ((1 << 55) - 1);
                if frame == 0 {
                    bail!("/proc/self/pagemap shows no frame numbers: needs root (CAP_SYS_ADMIN)");
                }
                Ok(frame)
            })
            .collect()
    }

    /// Writes every page and counts those whose frame changed (0 when not measuring).
    fn write_and_count(&self, value: u8) -> Result<usize> {
        if !self.measure {
            self.write_all(value)?;
            return Ok(0);
        }
        let before = self.frames()?;
        self.write_all(value)?;
        let after = self.frames()?;
        Ok(before.iter().zip(&after).filter(|(b, a)| b != a).count())
    }

    fn thp_bytes(&self) -> u64 {
        let start = self.base.as_ptr() as u64;
        let end = start + (self.pages * self.page) as u64;
        let Ok(maps) = procfs::process::Process::myself().and_then(|p| p.smaps()) else { return 0 };
        maps.iter()
            .filter(|m| m.address.0 < end && m.address.1 > start)
            .filter_map(|m| m.extension.map.get("AnonHugePages").copied())
            .sum()
    }
}

/// A 2 MiB-aligned private region with MADV_HUGEPAGE.
/// One hugetlb page, written so the process maps it (`mm->hugetlb_usage`);
/// left mapped until the process exits.
unsafe fn hugetlb_page() -> Result<()> {
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let len = std::num::NonZeroUsize::new(HUGE).context("size")?;
    // SAFETY: a fresh mapping nothing else refers to.
    unsafe {
        let p = mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE | MapFlags::MAP_HUGETLB)
            .context("no free hugetlb page: reserve one with `echo N > /proc/sys/vm/nr_hugepages`")?;
        p.cast::<u8>().write_volatile(1);
    }
    Ok(())
}

unsafe fn thp_region(len: usize) -> Result<NonNull<std::ffi::c_void>> {
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let padded = std::num::NonZeroUsize::new(len + HUGE).context("size")?;
    // SAFETY: a fresh mapping; the aligned part stays inside it.
    unsafe {
        let raw = mmap_anonymous(None, padded, rw, MapFlags::MAP_PRIVATE)?;
        let aligned = (raw.as_ptr() as usize).next_multiple_of(HUGE);
        let p = NonNull::new(aligned as *mut std::ffi::c_void).context("null mapping")?;
        madvise(p, len, MmapAdvise::MADV_HUGEPAGE).context("madvise(MADV_HUGEPAGE)")?;
        Ok(p)
    }
}

fn filled_file(len: usize) -> Result<File> {
    let mut file = tempfile_in(&std::env::temp_dir())?;
    let chunk = vec![7u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).context("filling the mapped file")?;
        left -= n;
    }
    file.sync_all().context("syncing the mapped file")?;
    Ok(file)
}

/// An unnamed file in `dir` (O_TMPFILE: gone when closed).
fn tempfile_in(dir: &std::path::Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

use std::os::unix::fs::OpenOptionsExt as _;

/// Forks once and lets the scenario's writer write every page.
fn one_fork(region: &Region, scenario: Scenario) -> Result<ForkTruth> {
    let (release_read, release_write) = std::io::pipe().context("pipe")?;
    let (report_read, report_write) = std::io::pipe().context("pipe")?;
    // SAFETY: this program is single-threaded; the child only writes memory,
    // reads pagemap and exits.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop((release_write, report_read));
            child(region, scenario, release_read, report_write)
        }
        ForkResult::Parent { child } => {
            drop((release_read, report_write));
            let parent_copied = match scenario {
                Scenario::ParentWrites => region.write_and_count(2)?,
                Scenario::ChildExitsFirst => {
                    drop(release_write);
                    waitpid(child, None).context("waitpid")?;
                    return Ok(ForkTruth {
                        child: child.as_raw() as u32,
                        parent_copied: region.write_and_count(3)?,
                        child_copied: 0,
                    });
                }
                Scenario::ChildWrites => 0,
            };
            drop(release_write);
            let child_copied = read_count(report_read)?;
            waitpid(child, None).context("waitpid")?;
            Ok(ForkTruth { child: child.as_raw() as u32, parent_copied, child_copied })
        }
    }
}

fn child(region: &Region, scenario: Scenario, release: std::io::PipeReader, mut report: std::io::PipeWriter) -> ! {
    let copied = match scenario {
        Scenario::ChildWrites => region.write_and_count(4).unwrap_or(usize::MAX),
        _ => 0,
    };
    let _ = report.write_all(&(copied as u64).to_le_bytes());
    drop(report);
    // Stay alive (sharing every page) until the parent is done writing.
    let mut byte = [0u8; 1];
    let _ = std::io::Read::read(&mut &release, &mut byte);
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

fn read_count(mut pipe: std::io::PipeReader) -> Result<usize> {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut pipe, &mut bytes).context("the child died before reporting")?;
    let n = u64::from_le_bytes(bytes);
    if n == u64::MAX {
        bail!("the child could not read its pagemap");
    }
    Ok(n as usize)
}
