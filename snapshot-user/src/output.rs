//! Where reports go. Destinations are opened before tracing starts, so a bad
//! path fails at once instead of after the command ran, and every write and
//! flush is checked: a full disk is an error, never a silent empty file.
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

pub enum Sink {
    Stdout,
    Stderr,
    File(File, PathBuf),
}

impl Sink {
    /// `-` is stdout; any other path is created (or truncated) now.
    pub fn open(path: Option<&Path>, default: Sink) -> Result<Sink> {
        match path {
            None => Ok(default),
            Some(p) if p == Path::new("-") => Ok(Sink::Stdout),
            Some(p) => {
                let file = create(p).with_context(|| format!("cannot write {}", p.display()))?;
                Ok(Sink::File(file, p.to_path_buf()))
            }
        }
    }

    /// Writes what `body` produces, flushed, with the destination named in any error.
    pub fn write(&mut self, body: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
        let result = match self {
            Sink::Stdout => write_all(&mut io::stdout().lock(), body),
            Sink::Stderr => write_all(&mut io::stderr().lock(), body),
            // A regular file is synced so that a full disk shows now, not at close.
            Sink::File(file, _) => write_all(file, body).and_then(|()| sync_if_regular(file)),
        };
        result.with_context(|| format!("writing {}", self.name()))
    }

    fn name(&self) -> String {
        match self {
            Sink::Stdout => "stdout".into(),
            Sink::Stderr => "stderr".into(),
            Sink::File(_, path) => path.display().to_string(),
        }
    }
}

fn write_all(out: &mut dyn Write, body: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut buffered = BufWriter::new(out);
    body(&mut buffered)?;
    buffered.flush()
}

fn sync_if_regular(file: &File) -> io::Result<()> {
    if file.metadata()?.is_file() { file.sync_data() } else { Ok(()) }
}

/// A note for the person watching, on stderr. Never panics: when stderr is
/// gone there is no one to tell.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "snapshot: {text}");
}

/// Creates (or truncates) a report file that root may be asked to write in a shared directory such as /tmp.
/// A path that does not exist yet is created exclusively without following links, so a link planted after
/// the check is refused. An existing link is followed only as the kernel's `fs.protected_symlinks` would
/// (a host may have it off): not in a sticky world-writable directory when neither we nor the directory's
/// owner own the link. `/dev/stdout` and the like stay usable.
pub fn create(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            options.create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
        Ok(meta) if meta.file_type().is_symlink() => {
            refuse_planted_link(path, &meta)?;
            options.create(true).truncate(true);
        }
        Ok(_) => {
            options.truncate(true).custom_flags(libc::O_NOFOLLOW);
        }
    }
    options.open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn refuse_planted_link(path: &Path, link: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_meta = std::fs::metadata(dir).with_context(|| format!("cannot look at {}", dir.display()))?;
    let shared = dir_meta.mode() & 0o1002 == 0o1002;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if shared && link.uid() != me && link.uid() != dir_meta.uid() {
        bail!(
            "refusing to write through {}: a symbolic link owned by uid {} in the shared directory {} \
             (another user could point it at any file); remove it or choose another path",
            path.display(),
            link.uid(),
            dir.display()
        );
    }
    Ok(())
}
