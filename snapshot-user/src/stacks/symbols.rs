//! Function names for user stack frames, with blazesym, from the files the
//! frames point into (held since the process was seen live, so processes
//! that have exited resolve too).
use std::{collections::HashMap, os::fd::AsRawFd as _};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

use super::procmaps::{Cache, FileId, Layout, Region};

pub struct Names {
    symbolizer: Symbolizer,
    /// (file, file offset) → name, so a frame shared by many stacks is looked up once.
    cache: HashMap<(FileId, u64), String>,
}

impl Default for Names {
    fn default() -> Names {
        Names { symbolizer: Symbolizer::new(), cache: HashMap::new() }
    }
}

impl Names {
    /// Names of `ips` (innermost first) in the address space `layout`,
    /// from the files `files` holds.
    pub fn frames(&mut self, files: &Cache, layout: Option<&Layout>, ips: &[u64]) -> Vec<String> {
        ips.iter()
            .enumerate()
            .map(|(depth, &ip)| {
                // A caller's frame holds the return address: the call is the byte before.
                let ip = if depth == 0 { ip } else { ip.saturating_sub(1) };
                self.frame(files, layout, ip)
            })
            .collect()
    }

    fn frame(&mut self, files: &Cache, layout: Option<&Layout>, ip: u64) -> String {
        let Some(region) = layout.and_then(|l| l.find(ip)) else { return format!("[unknown] {ip:#x}") };
        let Some(file) = &region.file else { return region.name.clone() };
        let offset = ip - region.start + region.offset;
        let key = (region.id(), offset);
        if let Some(name) = self.cache.get(&key) {
            return name.clone();
        }
        let name = self.lookup(files, region, offset).unwrap_or_else(|| format!("[{}+{offset:#x}]", base_name(file)));
        self.cache.insert(key, name.clone());
        name
    }

    fn lookup(&mut self, files: &Cache, region: &Region, offset: u64) -> Option<String> {
        // Read through the fd held, never the path: its owner could have
        // made it a link, a FIFO or another file since.
        let file = files.file(region)?;
        let source = Source::Elf(Elf::new(format!("/proc/self/fd/{}", file.as_raw_fd())));
        let found = self.symbolizer.symbolize(&source, Input::FileOffset(&[offset])).ok()?;
        match found.into_iter().next()? {
            Symbolized::Sym(sym) => Some(sym.name.into_owned()),
            Symbolized::Unknown(_) => None,
        }
    }
}

fn base_name(file: &std::path::Path) -> String {
    file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt as _;

    use super::{super::procmaps::hold, *};

    /// This test binary's own code mapping, from /proc/self/maps.
    fn own_code() -> Region {
        let maps = procfs::process::Process::myself().unwrap().maps().unwrap();
        let exe = std::env::current_exe().unwrap();
        let map = maps.into_iter().find(|m| matches!(&m.pathname, procfs::process::MMapPath::Path(p) if *p == exe)).unwrap();
        super::super::procmaps::region(map)
    }

    /// No process has this pid: only the region's path is left to try.
    const GONE: u32 = u32::MAX;

    #[test]
    fn only_the_mapped_file_itself_is_read() {
        let code = own_code();
        assert!(hold(GONE, &code).is_some(), "{code:?}");
        // Another file now at the path (another inode): not read.
        assert!(hold(GONE, &Region { inode: code.inode + 1, ..code.clone() }).is_none());
        // A link at the path: not followed.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(code.file.as_ref().unwrap(), &link).unwrap();
        assert!(hold(GONE, &Region { file: Some(link), ..code }).is_none());
    }

    /// /proc/PID/map_files needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN).
    fn may_read_map_files() -> bool {
        use caps::{CapSet, Capability};
        let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
        let ok = has(Capability::CAP_CHECKPOINT_RESTORE) || has(Capability::CAP_SYS_ADMIN);
        if !ok {
            eprintln!("skipped: /proc/PID/map_files needs root");
        }
        ok
    }

    #[test]
    fn a_deleted_file_is_held_through_the_live_process() {
        if may_read_map_files() {
            deleted_file_is_held();
        }
    }

    fn deleted_file_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, [1u8; 4096]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd as _;
        // SAFETY: a private read-only mapping of a file this test made, never unmapped (the test ends).
        let map = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        assert_ne!(map, libc::MAP_FAILED);
        std::fs::remove_file(&path).unwrap();
        let layout = Layout::read(std::process::id()).expect("own maps");
        let region = layout.find(map as u64).expect("the mapping").clone();
        assert!(region.name.ends_with("(deleted)"), "{region:?}");
        assert!(hold(GONE, &region).is_none(), "the path is gone");
        assert!(hold(std::process::id(), &region).is_some(), "map_files has it: {region:?}");
    }

    /// As `snapshot trace --stacks` runs once it dropped what it need not
    /// keep: a file deleted since it was mapped is still held.
    #[test]
    fn a_deleted_file_is_held_with_the_capabilities_trace_keeps() {
        if !may_read_map_files() {
            return;
        }
        // Capabilities are per thread: a thread of its own drops them.
        std::thread::spawn(|| {
            crate::privilege::drop_capabilities(&crate::privilege::kept_to_read_processes()).unwrap();
            deleted_file_is_held();
        })
        .join()
        .unwrap();
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
        assert_eq!(opens_during(&fifo, || assert!(hold(GONE, &region).is_none())), 0, "the FIFO was opened");
    }

    #[test]
    fn each_file_is_held_once_for_all_its_frames() {
        // Our own layout: the executable is mapped in several regions, one file.
        let mut files = Cache::default();
        let here = each_file_is_held_once_for_all_its_frames as *const () as u64;
        let other = only_the_mapped_file_itself_is_read as *const () as u64;
        files.remember(std::process::id());
        let layout = files.get(std::process::id()).expect("own maps").clone();
        let code = layout.find(here).expect("code").clone();
        let mut names = Names::default();
        let frames = names.frames(&files, Some(&layout), &[here, other + 1, here + 2]);
        assert!(frames[0].contains("each_file_is_held_once_for_all_its_frames"), "{frames:?}");
        assert!(frames[1].contains("only_the_mapped_file_itself_is_read"), "{frames:?}");
        assert!(files.file(&code).is_some(), "{code:?}");
    }
}
