//! Function names for user stack frames, with blazesym, from the files the
//! frames point into (so processes that have exited resolve too).
use std::collections::HashMap;

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source::{Elf, Source}};

use std::os::fd::AsRawFd as _;

use super::procmaps::{Layout, Region};

/// A mapped file by device (major, minor) and inode: the same file under
/// any path, and never another file put at a path later.
type FileId = ((i32, i32), u64);

pub struct Names {
    symbolizer: Symbolizer,
    /// Each mapped file opened once (None: it could not be, or was not the
    /// mapped file); its fd stays open, so blazesym parses it once too.
    files: HashMap<FileId, Option<std::fs::File>>,
    /// (file, file offset) → name, so a frame shared by many stacks is looked up once.
    cache: HashMap<(FileId, u64), String>,
}

impl Default for Names {
    fn default() -> Names {
        Names { symbolizer: Symbolizer::new(), files: HashMap::new(), cache: HashMap::new() }
    }
}

impl Names {

    /// Names of `ips` (innermost first) in the address space `layout`.
    pub fn frames(&mut self, layout: Option<&Layout>, ips: &[u64]) -> Vec<String> {
        ips.iter()
            .enumerate()
            .map(|(depth, &ip)| {
                // A caller's frame holds the return address: the call is the byte before.
                let ip = if depth == 0 { ip } else { ip.saturating_sub(1) };
                self.frame(layout, ip)
            })
            .collect()
    }

    fn frame(&mut self, layout: Option<&Layout>, ip: u64) -> String {
        let Some(region) = layout.and_then(|l| l.find(ip)) else { return format!("[unknown] {ip:#x}") };
        let Some(file) = &region.file else { return region.name.clone() };
        let offset = ip - region.start + region.offset;
        let key = ((region.dev, region.inode), offset);
        if let Some(name) = self.cache.get(&key) {
            return name.clone();
        }
        let name = self.lookup(region, offset).unwrap_or_else(|| format!("[{}+{offset:#x}]", base_name(file)));
        self.cache.insert(key, name.clone());
        name
    }

    fn lookup(&mut self, region: &Region, offset: u64) -> Option<String> {
        // Read through an fd checked to be the mapped file, never the path
        // itself: its owner could have made it a link, a FIFO or another file.
        let file = self.files.entry((region.dev, region.inode)).or_insert_with(|| mapped_file(region)).as_ref()?;
        let source = Source::Elf(Elf::new(format!("/proc/self/fd/{}", file.as_raw_fd())));
        let found = self.symbolizer.symbolize(&source, Input::FileOffset(&[offset])).ok()?;
        match found.into_iter().next()? {
            Symbolized::Sym(sym) => Some(sym.name.into_owned()),
            Symbolized::Unknown(_) => None,
        }
    }

    /// Files opened so far (each once).
    #[cfg(test)]
    fn opened(&self) -> usize {
        self.files.values().filter(|f| f.is_some()).count()
    }
}

/// Takes hold of the region's path without following a link, and keeps it
/// only if it is the regular file that was mapped (same device and inode).
/// The hold is `O_PATH`: it runs no driver's open, so a path its owner made
/// lead (through a linked directory) to a device or a FIFO opens nothing as
/// root; blazesym opens the checked file through `/proc/self/fd`.
fn mapped_file(region: &Region) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let path = region.file.as_ref()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let dev = (libc::major(meta.dev()) as i32, libc::minor(meta.dev()) as i32);
    (meta.is_file() && meta.ino() == region.inode && dev == region.dev).then_some(file)
}

fn base_name(file: &std::path::Path) -> String {
    file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt as _;

    use super::*;

    /// This test binary's own code mapping, from /proc/self/maps.
    fn own_code() -> Region {
        let maps = procfs::process::Process::myself().unwrap().maps().unwrap();
        let exe = std::env::current_exe().unwrap();
        let map = maps.into_iter().find(|m| matches!(&m.pathname, procfs::process::MMapPath::Path(p) if *p == exe)).unwrap();
        super::super::procmaps::region(map)
    }

    #[test]
    fn only_the_mapped_file_itself_is_read() {
        let code = own_code();
        assert!(mapped_file(&code).is_some(), "{code:?}");
        // Another file now at the path (another inode): not read.
        assert!(mapped_file(&Region { inode: code.inode + 1, ..code.clone() }).is_none());
        // A link at the path: not followed.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(code.file.as_ref().unwrap(), &link).unwrap();
        assert!(mapped_file(&Region { file: Some(link), ..code }).is_none());
    }

    /// Open events on `path` seen by inotify while `f` runs.
    fn opens_during(path: &std::path::Path, f: impl FnOnce()) -> usize {
        use std::os::unix::ffi::OsStrExt as _;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls on an fd this test owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0 && libc::inotify_add_watch(fd, c_path.as_ptr(), libc::IN_OPEN) >= 0);
            f();
            let mut buf = [0u8; 4096];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            // Each event is a header (no name: the watch is on the file itself).
            usize::try_from(n).map_or(0, |n| n / size_of::<libc::inotify_event>())
        }
    }

    #[test]
    fn a_path_leading_to_a_fifo_or_device_is_never_opened() {
        let code = own_code();
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        let region = Region { file: Some(fifo.clone()), ..code.clone() };
        // The watch itself works: a plain open is seen.
        let plain = || drop(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo));
        assert_eq!(opens_during(&fifo, plain), 1);
        assert_eq!(opens_during(&fifo, || assert!(mapped_file(&region).is_none())), 0, "the FIFO was opened");
        // A regular file is held, and blazesym can still read it.
        let mut names = Names::default();
        let here = a_path_leading_to_a_fifo_or_device_is_never_opened as *const () as u64;
        let layout = Layout::read(std::process::id()).expect("own maps");
        let frames = names.frames(Some(&layout), &[here]);
        assert!(frames[0].contains("a_path_leading_to_a_fifo_or_device_is_never_opened"), "{frames:?}");
    }

    #[test]
    fn each_file_is_opened_once_for_all_its_frames() {
        // Our own layout: the executable is mapped in several regions, one file.
        let layout = Layout::read(std::process::id()).expect("own maps");
        let here = each_file_is_opened_once_for_all_its_frames as *const () as u64;
        let other = only_the_mapped_file_itself_is_read as *const () as u64;
        let mut names = Names::default();
        let frames = names.frames(Some(&layout), &[here, other + 1, here + 2]);
        assert!(frames[0].contains("each_file_is_opened_once_for_all_its_frames"), "{frames:?}");
        assert!(frames[1].contains("only_the_mapped_file_itself_is_read"), "{frames:?}");
        assert_eq!(names.opened(), 1);
        assert_eq!(names.files.len(), 1);
    }
}
