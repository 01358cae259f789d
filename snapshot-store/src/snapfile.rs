//! The snapshot file: writing it safely and loading it. Its format is RDB ([`crate::rdb`]).
//!
//! The writer creates `temp-<pid>.rdb` (a fresh inode, never through a link, mode 0600), writes
//! it with an fdatasync every 32 MB, fsyncs it, renames it over the snapshot and fsyncs the
//! directory, so the snapshot path always holds a complete file. The loader checks everything
//! and reports the byte offset of the first problem; the caller never serves a partial load.

use crate::rdb;
use crate::table::{Expire, Table};
use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Called every 1024 records with the count written so far (progress / COW sampling).
pub type Progress<'a> = &'a mut dyn FnMut(u64);

pub fn temp_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("temp-{pid}.rdb"))
}

/// Removes the temp files of saves that died with their process (a server killed mid-save:
/// its child dies too, by PDEATHSIG, and leaves `temp-<pid>.rdb`; a forkless save's thread dies
/// with the server and leaves `temp-<pid>-forkless-<n>.rdb`). A file whose pid is still
/// a live process is left alone: another server may be saving into the same directory.
/// Returns the names removed.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("temp-")?.strip_suffix(".rdb"))
            .and_then(temp_pid)
            .filter(|&p| p > 0)
        else {
            continue;
        };
        if !process_alive(pid) {
            // unlink never follows a link, so a planted symlink is removed, not its target.
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing stale {}", e.path().display()))?;
            removed.push(name.to_string_lossy().into_owned());
        }
    }
    Ok(removed)
}

/// The pid in a temp file's name: `<pid>` (a fork child's) or `<pid>-forkless-<n>` (a forkless
/// save's); None for any other name, which is left alone.
fn temp_pid(rest: &str) -> Option<libc::pid_t> {
    let pid = match rest.split_once("-forkless-") {
        Some((pid, n)) if n.parse::<u64>().is_ok() => pid,
        Some(_) => return None,
        None => rest,
    };
    pid.parse().ok()
}

/// A process that exists and is not a zombie (a zombie writes nothing more; an unreaped one
/// may stay so for long under an init that does not reap).
fn process_alive(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Bytes written between two fdatasync() calls while a snapshot is written, like Redis's
/// `rdb-save-incremental-fsync`: the dirty page cache stays small, so the final fsync (and a
/// FLUSHALL or SHUTDOWN waiting behind it) is short.
pub const FSYNC_EVERY: u64 = 32 << 20;

/// The temp file: a fresh inode only (O_EXCL), never through a symlink (O_NOFOLLOW), readable
/// by us alone (0600). A stale file of the same name (a killed child's, or a planted one) is
/// unlinked first (unlink never follows links); if it comes back, the save fails.
fn create_temp(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// The temp file, with an fdatasync every [`FSYNC_EVERY`] bytes written.
struct SyncingFile {
    file: File,
    unsynced: u64,
}

impl std::io::Write for SyncingFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(b)?;
        self.unsynced += n as u64;
        if self.unsynced >= FSYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the table to `dir/temp-<pid>.rdb` then renames it to `dest`; `compress` is
/// Redis's `rdbcompression`.
/// `buf` is a preallocated buffer (the fork child must not depend on the parent's allocations).
/// On error the temp file is removed and `dest` is untouched.
pub fn write(
    table: &Table,
    dir: &Path,
    dest: &Path,
    buf: &mut Vec<u8>,
    compress: bool,
    progress: Progress,
) -> Result<u64> {
    let tmp = temp_path(dir, std::process::id());
    let r = write_inner(table, &tmp, dest, dir, buf, compress, progress);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn write_inner(
    table: &Table,
    tmp: &Path,
    dest: &Path,
    dir: &Path,
    buf: &mut Vec<u8>,
    compress: bool,
    progress: Progress,
) -> Result<u64> {
    let info = rdb::SaveInfo {
        compress,
        ctime: crate::table::now_ms() / 1000,
        used_mem: table.arena().live_bytes() as u64,
    };
    let n = write_temp(tmp, open_temp(tmp)?, |file| {
        let (n, file) = rdb::write_table(table, file, buf, &info, progress)?;
        Ok((n, file))
    })?;
    publish(tmp, dest, dir)?;
    Ok(n)
}

/// The temp file a save writes to, fsynced every [`FSYNC_EVERY`] bytes.
pub struct TempFile(SyncingFile);

impl std::io::Write for TempFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Creates `tmp` (private, never following a link) for a save to write into.
pub fn open_temp(tmp: &Path) -> Result<TempFile> {
    let file = create_temp(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(TempFile(SyncingFile { file, unsynced: 0 }))
}

/// Lets `body` write the snapshot into the temp file `tmp` and fsyncs it. Returns what `body`
/// counted. The caller removes `tmp` on error.
pub fn write_temp(
    tmp: &Path,
    file: TempFile,
    body: impl FnOnce(TempFile) -> std::io::Result<(u64, TempFile)>,
) -> Result<u64> {
    let io =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
    let (n, file) = body(file).map_err(io)?;
    file.0.file.sync_all().map_err(io)?;
    Ok(n)
}

/// Renames a complete temp file over the snapshot and fsyncs the directory.
pub fn publish(tmp: &Path, dest: &Path, dir: &Path) -> Result<()> {
    std::fs::rename(tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of directory {}", dir.display()))?;
    Ok(())
}

/// Opens the snapshot to load, None if there is none. In a world-writable (sticky) directory
/// another user may have created the name first: a link is not followed and a file that is not
/// ours is refused. Never blocks on a FIFO, and refuses anything but a regular file.
fn open_snapshot(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let ctx = || format!("opening snapshot {}", path.display());
    let shared = path
        .parent()
        .and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| m.mode() & 0o002 != 0);
    let nofollow = if shared { libc::O_NOFOLLOW } else { 0 };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | nofollow)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => anyhow::bail!(
            "snapshot {} is a symbolic link in a world-writable directory: refusing to follow it",
            path.display()
        ),
        Err(e) => return Err(e).with_context(ctx),
    };
    let m = file.metadata().with_context(ctx)?;
    if !m.is_file() {
        anyhow::bail!("snapshot {} is not a regular file", path.display());
    }
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if shared && m.uid() != me {
        anyhow::bail!(
            "snapshot {} is owned by uid {}, not by this user, in a world-writable directory: \
             refusing to load what another user could have planted",
            path.display(),
            m.uid()
        );
    }
    Ok(Some(file))
}

/// Loads `path` into `table`. Ok(None) if there is no file. Expired keys are dropped.
/// Returns the number of keys in the file.
pub fn load(path: &Path, table: &mut Table, now: i64) -> Result<Option<u64>> {
    let Some(file) = open_snapshot(path)? else {
        return Ok(None);
    };
    let size = file
        .metadata()
        .with_context(|| format!("stat of snapshot {}", path.display()))?
        .len();
    let mut put = |k: &[u8], v: &[u8], exp: Option<i64>| -> Result<(), String> {
        if table.contains(k, now) {
            return Err(format!("duplicate key \"{}\"", k.escape_ascii()));
        }
        let e = match exp {
            Some(at) if at <= now => return Ok(()),
            Some(at) => Expire::At(at),
            None => Expire::Clear,
        };
        table
            .set(k, v, e, now)
            .map_err(|_| "out of memory for the dataset".to_string())
    };
    let r = std::io::BufReader::with_capacity(1 << 20, file);
    let sum = rdb::decode::decode(r, size, &mut put).map_err(|e| {
        anyhow::anyhow!(
            "snapshot {}: {} at byte offset {} (file is {size} bytes)",
            path.display(),
            e.msg,
            e.offset
        )
    })?;
    Ok(Some(sum.keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::PagesMode;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d.rdb");
        let mut t = Table::new(PagesMode::Small).unwrap();
        for i in 0..5000 {
            t.set(
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                Expire::Clear,
                1,
            )
            .unwrap();
        }
        let mut buf = Vec::with_capacity(4096);
        assert_eq!(
            write(&t, dir.path(), &dest, &mut buf, true, &mut |_| {}).unwrap(),
            5000
        );
        let mut t2 = Table::new(PagesMode::Small).unwrap();
        assert_eq!(load(&dest, &mut t2, 1).unwrap(), Some(5000));
        assert_eq!(t2.get(b"k42", 1), Some(&b"v42"[..]));

        let mut bytes = std::fs::read(&dest).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&dest, &bytes).unwrap();
        let e = load(&dest, &mut Table::new(PagesMode::Small).unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset"), "{e}");
        bytes[100] ^= 1;
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&dest, &bytes).unwrap();
        let e = load(&dest, &mut Table::new(PagesMode::Small).unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
