//! Where reports go. Destinations are opened before tracing starts, so a bad
//! path fails at once instead of after the command ran, and every write and
//! flush is checked: a full disk is an error, never a silent empty file.
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

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
                let file = File::create(p).with_context(|| format!("cannot write {}", p.display()))?;
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
