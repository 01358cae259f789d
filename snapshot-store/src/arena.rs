//! The dataset's memory: an mmap-backed arena whose pages are of the size `--pages` asks for.
//!
//! Everything the dataset owns (records = key + value + header, and the hash table's bucket
//! array) is carved out of mappings made here, so the page size that fork()'s copy-on-write
//! works in is the one chosen: 4 KiB pages (THP explicitly refused), transparent huge pages
//! (madvise on 2 MiB-aligned chunks) or hugetlbfs pages (MAP_HUGETLB).
//!
//! Small blocks come from 2 MiB chunks by bumping a pointer; freed blocks go on a per-size-class
//! free list (the link lives in the freed block itself). Blocks bigger than half a chunk get a
//! mapping of their own. Dropping the arena unmaps everything, which is how FLUSHALL frees a
//! dataset without writing to (and so copying) any page a snapshot child still shares.

use anyhow::{Context, Result, bail};
use std::ptr;

/// Size of one chunk; also the huge page size used for thp/hugetlb.
pub const CHUNK: usize = 2 << 20;
const HUGE_2MB_FLAG: libc::c_int = 21 << libc::MAP_HUGE_SHIFT;
const SMALL_MAX: usize = CHUNK / 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PagesMode {
    /// Plain 4 KiB pages (transparent huge pages disabled for the dataset).
    #[value(name = "4k")]
    Small,
    /// Transparent huge pages: madvise(MADV_HUGEPAGE) on 2 MiB-aligned chunks.
    Thp,
    /// hugetlbfs pages (MAP_HUGETLB, 2 MiB); needs reserved pages in /proc/sys/vm/nr_hugepages.
    Hugetlb,
}

impl PagesMode {
    pub fn name(self) -> &'static str {
        match self {
            PagesMode::Small => "4k",
            PagesMode::Thp => "thp",
            PagesMode::Hugetlb => "hugetlb",
        }
    }
}

/// Allocation failure: the only cause a client can see (mmap refused).
#[derive(Debug)]
pub struct Oom;

struct Mapping {
    addr: usize,
    len: usize,
}

pub struct Arena {
    mode: PagesMode,
    maps: Vec<Mapping>,
    bump: usize,
    bump_end: usize,
    free: Vec<*mut u8>,
    live: usize,
    mapped: usize,
    /// While a fork child shares the memory (redirect strategy): the ranges mapped at the fork,
    /// sorted. Blocks are then carved only from memory mapped after it, and small frees wait in
    /// `deferred` (a free-list link written into a freed block would copy its page).
    frozen: Option<Vec<(usize, usize)>>,
    /// Redirect strategy: allocate only from new memory and hold small frees.
    redirect: bool,
    deferred: Vec<(*mut u8, usize)>,
}

/// Size classes: 16-byte steps up to 512, then 4 steps per power of two up to SMALL_MAX.
fn class_of(size: usize) -> (usize, usize) {
    if size <= 512 {
        let c = size.max(16).div_ceil(16);
        return (c - 1, c * 16);
    }
    let p = usize::BITS - 1 - (size - 1).leading_zeros(); // 2^p < size <= 2^(p+1)
    let base = 1usize << p;
    let step = base / 4;
    let k = (size - base).div_ceil(step); // 1..=4
    let idx = 32 + (p as usize - 9) * 4 + (k - 1);
    (idx, base + k * step)
}

const NCLASSES: usize = 32 + 4 * 12;

impl Arena {
    /// Makes an arena; for hugetlb, checks right away that huge pages can be had.
    pub fn new(mode: PagesMode) -> Result<Arena> {
        if mode == PagesMode::Thp {
            let path = "/sys/kernel/mm/transparent_hugepage/enabled";
            if let Ok(s) = std::fs::read_to_string(path)
                && s.contains("[never]")
            {
                bail!("--pages thp: transparent huge pages are disabled ({path} says [never])");
            }
        }
        let mut a = Arena::empty(mode);
        if mode == PagesMode::Hugetlb {
            // Probe now so a machine without reserved huge pages fails at start, not on a SET.
            a.new_chunk().map_err(|_| {
                anyhow::anyhow!(
                    "--pages hugetlb: no 2 MiB huge page could be mapped; reserve some first, e.g. \
                     `echo 512 > /proc/sys/vm/nr_hugepages` (now {})",
                    std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
                        .unwrap_or_default()
                        .trim()
                )
            })?;
        }
        Ok(a)
    }

    /// An arena that has mapped nothing yet (and so cannot fail to be made).
    pub fn empty(mode: PagesMode) -> Arena {
        Arena {
            mode,
            maps: Vec::new(),
            bump: 0,
            bump_end: 0,
            free: vec![ptr::null_mut(); NCLASSES],
            live: 0,
            mapped: 0,
            frozen: None,
            redirect: false,
            deferred: Vec::new(),
        }
    }

    /// A fork child now shares every page mapped so far (remembered, see [`Arena::shared`]).
    /// With `redirect`, allocate only from new mappings and hold small frees until
    /// [`Arena::thaw`].
    pub fn freeze(&mut self, redirect: bool) {
        let mut r = self.ranges();
        r.sort_unstable();
        self.frozen = Some(r);
        self.redirect = redirect;
        if redirect {
            // The current chunk's used part is shared: the next small block starts a new chunk.
            self.bump = self.bump_end;
        }
    }

    /// The child is gone: the held frees go to the free lists (the pages are private again).
    pub fn thaw(&mut self) {
        self.frozen = None;
        self.redirect = false;
        for (p, size) in std::mem::take(&mut self.deferred) {
            let (c, _) = class_of(size);
            // SAFETY: a dead small block of this arena, at least 16 bytes.
            unsafe { *(p as *mut *mut u8) = self.free[c] };
            self.free[c] = p;
        }
    }

    /// True if `p` lies in memory a fork child shares (mapped before [`Arena::freeze`]).
    pub fn shared(&self, p: usize) -> bool {
        let Some(r) = &self.frozen else { return false };
        let i = r.partition_point(|&(s, _)| s <= p);
        i > 0 && p < r[i - 1].1
    }

    pub fn mode(&self) -> PagesMode {
        self.mode
    }
    /// Bytes handed out and not freed.
    pub fn live_bytes(&self) -> usize {
        self.live
    }
    /// Bytes mapped (live + free lists + unused chunk tails).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped
    }
    /// Address ranges of all mappings, to check their page size in /proc/self/smaps.
    pub fn ranges(&self) -> Vec<(usize, usize)> {
        self.maps.iter().map(|m| (m.addr, m.addr + m.len)).collect()
    }

    fn map(&mut self, len: usize) -> Result<usize, Oom> {
        // SAFETY: anonymous private mappings with no address hint; results are checked.
        unsafe {
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let addr = match self.mode {
                PagesMode::Small => {
                    let p = libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0);
                    if p == libc::MAP_FAILED {
                        return Err(Oom);
                    }
                    // THP "always" would silently give 2 MiB pages; 4k means 4k.
                    libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
                    p as usize
                }
                PagesMode::Thp => {
                    // Over-map, then trim to a 2 MiB-aligned range: THP only backs aligned ranges.
                    let over = len + CHUNK;
                    let p = libc::mmap(ptr::null_mut(), over, prot, flags, -1, 0);
                    if p == libc::MAP_FAILED {
                        return Err(Oom);
                    }
                    let start = p as usize;
                    let aligned = (start + CHUNK - 1) & !(CHUNK - 1);
                    if aligned > start {
                        libc::munmap(p, aligned - start);
                    }
                    let tail = start + over - (aligned + len);
                    if tail > 0 {
                        libc::munmap((aligned + len) as *mut _, tail);
                    }
                    libc::madvise(aligned as *mut _, len, libc::MADV_HUGEPAGE);
                    aligned
                }
                PagesMode::Hugetlb => {
                    let p = libc::mmap(
                        ptr::null_mut(),
                        len,
                        prot,
                        flags | libc::MAP_HUGETLB | HUGE_2MB_FLAG,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        return Err(Oom);
                    }
                    p as usize
                }
            };
            self.maps.push(Mapping { addr, len });
            self.mapped += len;
            Ok(addr)
        }
    }

    fn new_chunk(&mut self) -> Result<(), Oom> {
        let a = self.map(CHUNK)?;
        self.bump = a;
        self.bump_end = a + CHUNK;
        Ok(())
    }

    fn round_large(&self, size: usize) -> usize {
        let page = if self.mode == PagesMode::Small {
            4096
        } else {
            CHUNK
        };
        size.div_ceil(page) * page
    }

    /// Size actually reserved for a request of `size` bytes (what `free` must be given back).
    pub fn usable_size(&self, size: usize) -> usize {
        if size > SMALL_MAX {
            self.round_large(size)
        } else {
            class_of(size).1
        }
    }

    /// Allocates `size` bytes, 16-byte aligned. Large blocks are zeroed (fresh mappings).
    pub fn alloc(&mut self, size: usize) -> Result<*mut u8, Oom> {
        if size > SMALL_MAX {
            let len = self.round_large(size);
            let a = self.map(len)?;
            self.live += len;
            return Ok(a as *mut u8);
        }
        let (c, csize) = class_of(size);
        let head = self.free[c];
        if !head.is_null() && !self.redirect {
            // SAFETY: a freed block of this class holds the next free block's address.
            self.free[c] = unsafe { *(head as *mut *mut u8) };
            self.live += csize;
            return Ok(head);
        }
        if self.bump_end - self.bump < csize {
            self.new_chunk()?;
        }
        let p = self.bump as *mut u8;
        self.bump += csize;
        self.live += csize;
        Ok(p)
    }

    /// Frees a block from `alloc(size)`.
    ///
    /// # Safety
    /// `p` must come from this arena's `alloc` with the same `size`, and not be used after.
    pub unsafe fn free(&mut self, p: *mut u8, size: usize) {
        if size > SMALL_MAX {
            let len = self.round_large(size);
            if let Some(i) = self.maps.iter().position(|m| m.addr == p as usize) {
                let m = self.maps.swap_remove(i);
                // SAFETY: the mapping was made by `map` and nothing refers to it any more.
                unsafe { libc::munmap(m.addr as *mut _, m.len) };
                self.mapped -= m.len;
            }
            self.live -= len;
            return;
        }
        let (c, csize) = class_of(size);
        if self.redirect {
            self.deferred.push((p, size));
            self.live -= csize;
            return;
        }
        // SAFETY: caller guarantees the block is ours and dead; blocks are >= 16 bytes.
        unsafe { *(p as *mut *mut u8) = self.free[c] };
        self.free[c] = p;
        self.live -= csize;
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for m in &self.maps {
            // SAFETY: every mapping was made by `map`; the arena's owner is being dropped.
            unsafe { libc::munmap(m.addr as *mut _, m.len) };
        }
    }
}

/// Page size really backing the arena, read from /proc/self/smaps (not from the flag).
#[derive(Debug, Default)]
pub struct PageReport {
    /// Largest KernelPageSize seen on the arena's mappings, or 2 MiB if THP backs any of it.
    pub page_size: u64,
    /// "4k", "thp" or "hugetlb", as observed.
    pub observed: &'static str,
    pub anon_huge_bytes: u64,
    pub hugetlb_bytes: u64,
    pub rss_bytes: u64,
}

pub fn page_report(ranges: &[(usize, usize)]) -> Result<PageReport> {
    let maps = procfs::process::Process::myself()
        .and_then(|p| p.smaps())
        .context("reading /proc/self/smaps")?;
    let mut r = PageReport {
        page_size: 4096,
        observed: "4k",
        ..Default::default()
    };
    let in_arena = |m: &procfs::process::MemoryMap| {
        let (s, e) = (m.address.0 as usize, m.address.1 as usize);
        ranges.iter().any(|&(a, b)| a < e && s < b)
    };
    for m in maps.iter().filter(|m| in_arena(m)) {
        let get = |key: &str| m.extension.map.get(key).copied().unwrap_or(0);
        if get("KernelPageSize") > 4096 {
            r.page_size = r.page_size.max(get("KernelPageSize"));
            r.observed = "hugetlb";
        }
        r.anon_huge_bytes += get("AnonHugePages");
        r.hugetlb_bytes += get("Private_Hugetlb") + get("Shared_Hugetlb");
        r.rss_bytes += get("Rss");
    }
    if r.observed != "hugetlb" && r.anon_huge_bytes > 0 {
        r.observed = "thp";
        r.page_size = CHUNK as u64;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes() {
        let mut last = 0;
        for s in 1..=SMALL_MAX {
            let (c, cs) = class_of(s);
            assert!(cs >= s && c < NCLASSES, "size {s} class {c} {cs}");
            assert!(c >= last);
            last = c;
        }
    }

    #[test]
    fn alloc_free_reuse() {
        let mut a = Arena::new(PagesMode::Small).unwrap();
        let p = a.alloc(100).unwrap();
        unsafe { a.free(p, 100) };
        let q = a.alloc(110).unwrap();
        assert_eq!(p, q);
        let big = a.alloc(5 << 20).unwrap();
        unsafe { a.free(big, 5 << 20) };
        assert_eq!(a.live_bytes(), a.usable_size(110));
    }
}
