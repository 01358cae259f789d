//! Address spaces of traced processes, read from /proc/PID/maps while they
//! live and kept after they exit, so copies and stacks still resolve; and
//! the files they map, held from then on for their symbols.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use procfs::process::{MMapPath, Process};

/// One mapping of an address space.
#[derive(Clone, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// File offset of `start` (file-backed mappings).
    pub offset: u64,
    /// `[heap]`, `[stack]`, `[anon START-END]` (an unnamed anonymous region),
    /// `[anon:NAME]` (one named by prctl `PR_SET_VMA_ANON_NAME`), a file's
    /// path, or another pseudo-path.
    pub name: String,
    /// The file behind the mapping, for symbols.
    pub file: Option<PathBuf>,
    /// The mapped file's device (major, minor) and inode: the path's owner
    /// may have put another file there since.
    pub dev: (i32, i32),
    pub inode: u64,
    /// Mapped executable: where stack frames point, the files to hold.
    pub code: bool,
}

/// A mapped file by device (major, minor) and inode: the same file under
/// any path, and never another file put at a path later.
pub type FileId = ((i32, i32), u64);

impl Region {
    pub fn id(&self) -> FileId {
        (self.dev, self.inode)
    }
}

/// Sorted regions of one address space.
#[derive(Clone, Debug, Default)]
pub struct Layout(Vec<Region>);

impl Layout {
    /// The live layout of `pid`, or None once it has gone (or may not be read).
    pub fn read(pid: u32) -> Option<Layout> {
        let maps = Process::new(i32::try_from(pid).ok()?).and_then(|p| p.maps()).ok()?;
        let mut regions: Vec<Region> = maps.into_iter().map(region).collect();
        if regions.is_empty() {
            return None; // a zombie: its address space is gone already
        }
        regions.sort_by_key(|r| r.start);
        Some(Layout(regions))
    }

    pub fn find(&self, address: u64) -> Option<&Region> {
        let i = self.0.partition_point(|r| r.start <= address);
        self.0[..i].last().filter(|r| address < r.end)
    }
}

pub(super) fn region(map: procfs::process::MemoryMap) -> Region {
    let (start, end) = map.address;
    let (name, file) = match map.pathname {
        MMapPath::Path(path) => (path.display().to_string(), Some(path)),
        MMapPath::Heap => ("[heap]".into(), None),
        MMapPath::Stack => ("[stack]".into(), None),
        MMapPath::TStack(_) => ("[thread stack]".into(), None),
        // Each region on its own row: a process's arenas, buffers and
        // mmap'd tables are told apart by where they are.
        MMapPath::Anonymous => (format!("[anon {start:x}-{end:x}]"), None),
        MMapPath::Vdso => ("[vdso]".into(), None),
        MMapPath::Other(other) => (format!("[{other}]"), None),
        other => (format!("{other:?}"), None),
    };
    let code = map.perms.contains(procfs::process::MMPermissions::EXECUTE);
    Region { start, end, offset: map.offset, name, file, dev: map.dev, inode: map.inode, code }
}

/// Layouts by tgid: read on first sight, read again when an address misses,
/// kept when the process is gone; and the files they map.
#[derive(Default)]
pub struct Cache {
    layouts: HashMap<u32, Layout>,
    /// Each mapped file, held from the first live process seen mapping it,
    /// so its symbols are read after that process exited, after the file was
    /// deleted or replaced, and in another mount namespace. None: it could
    /// not be (or was not a regular file).
    files: HashMap<FileId, Option<File>>,
}

impl Cache {
    /// The region holding `address` in `tgid`, reading its maps again when
    /// the cached layout does not have it (the process mapped more since).
    pub fn resolve(&mut self, tgid: u32, address: u64) -> Option<&Region> {
        let hit = self.layouts.get(&tgid).is_some_and(|l| l.find(address).is_some());
        if !hit && let Some(layout) = Layout::read(tgid) {
            self.insert(tgid, layout);
        }
        self.layouts.get(&tgid)?.find(address)
    }

    /// The last layout seen of `tgid`, if any.
    pub fn get(&self, tgid: u32) -> Option<&Layout> {
        self.layouts.get(&tgid)
    }

    /// Reads `tgid`'s layout now if it was never read (before it exits).
    pub fn remember(&mut self, tgid: u32) {
        if !self.layouts.contains_key(&tgid) && let Some(layout) = Layout::read(tgid) {
            self.insert(tgid, layout);
        }
    }

    /// The file `region` maps, if it was held.
    pub fn file(&self, region: &Region) -> Option<&File> {
        self.files.get(&region.id())?.as_ref()
    }

    fn insert(&mut self, tgid: u32, layout: Layout) {
        // Only code: a frame points nowhere else, and each held file is an fd.
        for region in layout.0.iter().filter(|r| r.code && r.file.is_some()) {
            self.files.entry(region.id()).or_insert_with(|| hold(tgid, region));
        }
        self.layouts.insert(tgid, layout);
    }
}

/// Takes hold of the file `region` of the live process `pid` maps: through
/// /proc/PID/map_files, which is the mapped file itself (deleted, replaced,
/// or in another mount namespace), else through its path. Neither path is
/// trusted: the hold is `O_PATH` (no driver's open runs, so a path its owner
/// made lead to a device or FIFO opens nothing as root) and is kept only if
/// it is the regular file that was mapped (same device and inode). blazesym
/// opens it through /proc/self/fd.
pub(super) fn hold(pid: u32, region: &Region) -> Option<File> {
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", region.start, region.end);
    let mapped = |f: &File| is_mapped_file(f, region);
    open_path(Path::new(&link), 0)
        .filter(mapped)
        .or_else(|| open_path(region.file.as_ref()?, libc::O_NOFOLLOW).filter(mapped))
}

fn open_path(path: &Path, flags: i32) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | flags).open(path).ok()
}

fn is_mapped_file(file: &File, region: &Region) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = file.metadata() else { return false };
    let dev = (libc::major(meta.dev()) as i32, libc::minor(meta.dev()) as i32);
    meta.is_file() && meta.ino() == region.inode && dev == region.dev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_region_of_an_address_in_our_own_layout() {
        let layout = Layout::read(std::process::id()).expect("own maps");
        let on_heap = Box::new(7u64);
        let here = finds_the_region_of_an_address_in_our_own_layout as *const () as u64;
        let code = layout.find(here).expect("code mapping");
        assert!(code.file.is_some(), "code comes from a file: {code:?}");
        let heap = layout.find(&*on_heap as *const u64 as u64).expect("heap mapping");
        assert!(heap.file.is_none(), "{heap:?}");
        assert!(layout.find(0).is_none());
    }

    #[test]
    fn anonymous_regions_are_named_each_by_range_or_by_their_prctl_name() {
        use procfs::FromBufRead;
        let maps = "7f0000000000-7f0000200000 rw-p 00000000 00:00 0 \n\
                    7f0000400000-7f0000401000 rw-p 00000000 00:00 0 [anon:jemalloc]\n\
                    7f0000500000-7f0000501000 rw-p 00000000 00:00 0 [heap]\n";
        let maps = procfs::process::MemoryMaps::from_buf_read(maps.as_bytes()).expect("maps");
        let names: Vec<String> = maps.into_iter().map(|m| region(m).name).collect();
        assert_eq!(names, ["[anon 7f0000000000-7f0000200000]", "[anon:jemalloc]", "[heap]"]);
    }
}
