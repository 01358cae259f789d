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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn written(sink: &mut Sink, text: &str) -> Result<()> {
        sink.write(|out| out.write_all(text.as_bytes()))
    }

    #[test]
    fn dash_is_stdout_and_none_the_default() {
        assert!(matches!(Sink::open(None, Sink::Stderr).unwrap(), Sink::Stderr));
        assert!(matches!(Sink::open(Some(Path::new("-")), Sink::Stderr).unwrap(), Sink::Stdout));
        assert_eq!(Sink::Stdout.name(), "stdout");
        assert_eq!(Sink::Stderr.name(), "stderr");
    }

    #[test]
    fn files_are_created_new_or_truncated_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report");
        let mut sink = Sink::open(Some(&path), Sink::Stderr).unwrap();
        written(&mut sink, "first report\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first report\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let mut again = Sink::open(Some(&path), Sink::Stderr).unwrap();
        written(&mut again, "2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
        let missing = dir.path().join("no/such/dir");
        let err = format!("{:#}", Sink::open(Some(&missing), Sink::Stderr).err().unwrap());
        assert!(err.starts_with(&format!("cannot write {}", missing.display())), "{err}");
        // A path through a file: the look fails before any open.
        let through = path.join("x");
        let err = format!("{:#}", create(&through).unwrap_err());
        assert!(err.starts_with(&format!("cannot look at {}", through.display())), "{err}");
    }

    #[test]
    fn a_full_device_is_an_error_that_names_it() {
        let mut sink = Sink::open(Some(Path::new("/dev/full")), Sink::Stderr).unwrap();
        let err = format!("{:#}", written(&mut sink, "report\n").unwrap_err());
        assert!(err.starts_with("writing /dev/full") && err.contains("No space left"), "{err}");
    }

    #[test]
    fn links_planted_by_others_in_shared_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let shared = dir.path().join("tmp");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = shared.join("report");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // Our own link is followed, as the kernel's protected_symlinks would.
        written(&mut Sink::open(Some(&link), Sink::Stderr).unwrap(), "mine").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        if !nix::unistd::Uid::effective().is_root() {
            // Only root can give the link to another user; CI runs as root, so it must not skip there.
            assert!(std::env::var_os("CI").is_none(), "needs root");
            eprintln!("links_planted_by_others_in_shared_directories_are_refused: the other-user half needs root, skipped");
            return;
        }
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let err = format!("{:#}", create(&link).unwrap_err());
        assert!(err.contains("refusing to write through") && err.contains("uid 65534"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        // The same link in a directory that is not world-writable and sticky is followed.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        create(&link).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        // Owned by the directory's owner (not us): followed too.
        std::os::unix::fs::chown(&shared, Some(65534), None).unwrap();
        create(&link).unwrap();
        // Another user's regular file there is no link: truncated and written, never followed.
        std::os::unix::fs::chown(&shared, Some(0), None).unwrap();
        let theirs = shared.join("theirs");
        std::fs::write(&theirs, "old").unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        written(&mut Sink::open(Some(&theirs), Sink::Stderr).unwrap(), "new").unwrap();
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "new");
    }
}
