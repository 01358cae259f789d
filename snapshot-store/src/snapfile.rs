//! The snapshot file format, its writer and its loader.
//!
//! ```text
//! header   "SNAPSTOR" (8) | version u32 LE (=1) | flags u32 LE (=0)
//! record   0x01 | expire_ms i64 LE (0 = none) | key_len u32 LE | key | val_len u32 LE | value
//! end      0xFF | record count u64 LE
//! trailer  CRC-32 (IEEE, crc32fast) u32 LE over every byte before it
//! ```
//! The writer writes `temp-<pid>.snap`, fsyncs it, renames it over the snapshot and fsyncs the
//! directory, so the snapshot path always holds a complete file. The loader checks everything
//! and reports the byte offset of the first problem; the caller never serves a partial load.

use crate::table::{Expire, Table};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SNAPSTOR";
const VERSION: u32 = 1;
const TAG_REC: u8 = 0x01;
const TAG_END: u8 = 0xFF;

/// Called every 1024 records with the count written so far (progress / COW sampling).
pub type Progress<'a> = &'a mut dyn FnMut(u64);

pub fn temp_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("temp-{pid}.snap"))
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

/// Writes to the file, with an fdatasync every [`FSYNC_EVERY`] bytes.
struct SyncingFile {
    file: File,
    unsynced: u64,
}

impl SyncingFile {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.file.write_all(b)?;
        self.unsynced += b.len() as u64;
        if self.unsynced >= FSYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

struct CrcWriter<'a> {
    file: SyncingFile,
    buf: &'a mut Vec<u8>,
    crc: crc32fast::Hasher,
}

impl CrcWriter<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + b.len() > self.buf.capacity() {
            self.flush()?;
            if b.len() > self.buf.capacity() {
                self.crc.update(b);
                return self.file.write_all(b);
            }
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.crc.update(self.buf);
        self.file.write_all(self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// Writes the table to `dir/temp-<pid>.snap` then renames it to `dest`.
/// `buf` is a preallocated buffer (the fork child must not depend on the parent's allocations).
/// On error the temp file is removed and `dest` is untouched.
pub fn write(
    table: &Table,
    dir: &Path,
    dest: &Path,
    buf: &mut Vec<u8>,
    progress: Progress,
) -> Result<u64> {
    let tmp = temp_path(dir, std::process::id());
    let r = write_inner(table, &tmp, dest, dir, buf, progress);
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
    progress: Progress,
) -> Result<u64> {
    let file = create_temp(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    buf.clear();
    let mut w = CrcWriter {
        file: SyncingFile { file, unsynced: 0 },
        buf,
        crc: crc32fast::Hasher::new(),
    };
    let mut n: u64 = 0;
    let io =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
    w.put(MAGIC).map_err(io)?;
    w.put(&VERSION.to_le_bytes()).map_err(io)?;
    w.put(&0u32.to_le_bytes()).map_err(io)?;
    table.for_each(|k, v, exp| -> Result<()> {
        let mut hdr = [0u8; 13];
        hdr[0] = TAG_REC;
        hdr[1..9].copy_from_slice(&exp.to_le_bytes());
        hdr[9..13].copy_from_slice(&(k.len() as u32).to_le_bytes());
        w.put(&hdr).map_err(io)?;
        w.put(k).map_err(io)?;
        w.put(&(v.len() as u32).to_le_bytes()).map_err(io)?;
        w.put(v).map_err(io)?;
        n += 1;
        if n.is_multiple_of(1024) {
            progress(n);
        }
        Ok(())
    })?;
    w.put(&[TAG_END]).map_err(io)?;
    w.put(&n.to_le_bytes()).map_err(io)?;
    w.flush().map_err(io)?;
    let crc = w.crc.clone().finalize();
    w.file.write_all(&crc.to_le_bytes()).map_err(io)?;
    w.file.file.sync_all().map_err(io)?;
    drop(w);
    std::fs::rename(tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of directory {}", dir.display()))?;
    Ok(n)
}

/// Reader that tracks the offset and the CRC of everything read.
struct Src<R> {
    r: R,
    off: u64,
    crc: crc32fast::Hasher,
    size: u64,
    path: PathBuf,
}

impl<R: Read> Src<R> {
    fn fail(&self, at: u64, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "snapshot {}: {} at byte offset {} (file is {} bytes)",
            self.path.display(),
            what,
            at,
            self.size
        )
    }
    fn take(&mut self, out: &mut [u8], what: &str) -> Result<()> {
        let at = self.off;
        if self.off + out.len() as u64 > self.size {
            return Err(self.fail(at, format!("truncated file: {what} runs past the end")));
        }
        self.r
            .read_exact(out)
            .map_err(|e| self.fail(at, format!("read error in {what}: {e}")))?;
        self.crc.update(out);
        self.off += out.len() as u64;
        Ok(())
    }
    /// A length-prefixed field of record `n`, checked against the file's size
    /// before anything is allocated for it.
    fn bytes(&mut self, out: &mut Vec<u8>, what: &str, n: u64) -> Result<()> {
        let at = self.off;
        let len = self.u32(&format!("{what} length"))? as u64;
        if self.off + len > self.size {
            return Err(self.fail(
                at,
                format!("truncated file: {what} length {len} of record {n} runs past the end"),
            ));
        }
        out.resize(len as usize, 0);
        self.take(out, what)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.take(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Loads `path` into `table`. Ok(None) if there is no file. Expired records are dropped.
pub fn load(path: &Path, table: &mut Table, now: i64) -> Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening snapshot {}", path.display())),
    };
    let size = file
        .metadata()
        .with_context(|| format!("stat of snapshot {}", path.display()))?
        .len();
    let mut s = Src {
        r: std::io::BufReader::with_capacity(1 << 20, file),
        off: 0,
        crc: crc32fast::Hasher::new(),
        size,
        path: path.to_path_buf(),
    };
    let mut magic = [0u8; 8];
    s.take(&mut magic, "header")?;
    if &magic != MAGIC {
        return Err(s.fail(0, "bad magic (not a snapshot-store snapshot)"));
    }
    let v = s.u32("header version")?;
    if v != VERSION {
        return Err(s.fail(
            8,
            format!("unsupported version {v} (this build reads {VERSION})"),
        ));
    }
    s.u32("header flags")?;
    let mut n: u64 = 0;
    let mut key = Vec::new();
    let mut val = Vec::new();
    loop {
        let at = s.off;
        let mut tag = [0u8];
        s.take(&mut tag, "record tag")?;
        match tag[0] {
            TAG_REC => {}
            TAG_END => break,
            t => return Err(s.fail(at, format!("unknown record tag 0x{t:02x} (record {n})"))),
        }
        let exp = s.u64("expiry")? as i64;
        s.bytes(&mut key, "key", n)?;
        s.bytes(&mut val, "value", n)?;
        n += 1;
        if exp != 0 && exp <= now {
            continue;
        }
        let e = if exp == 0 {
            Expire::Clear
        } else {
            Expire::At(exp)
        };
        table
            .set(&key, &val, e, now)
            .map_err(|_| anyhow::anyhow!("out of memory loading snapshot {}", path.display()))?;
    }
    let at = s.off;
    let count = s.u64("record count")?;
    if count != n {
        return Err(s.fail(
            at,
            format!("record count says {count} but {n} records were read"),
        ));
    }
    let computed = s.crc.clone().finalize();
    let at = s.off;
    let stored = s.u32("checksum")?;
    if stored != computed {
        return Err(s.fail(
            at,
            format!("checksum mismatch: stored {stored:08x}, computed {computed:08x}"),
        ));
    }
    if s.off != s.size {
        return Err(s.fail(s.off, "trailing bytes after the checksum"));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::PagesMode;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d.snap");
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
            write(&t, dir.path(), &dest, &mut buf, &mut |_| {}).unwrap(),
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
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&dest, &bytes).unwrap();
        let e = load(&dest, &mut Table::new(PagesMode::Small).unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
