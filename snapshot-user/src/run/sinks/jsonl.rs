//! JSON Lines: the setting, one object per interval, one per snapshot, one at the end.
use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Setting, Sink};
use crate::run::{
    compare::Comparison,
    sample::{End, Sample, Summary},
};

pub struct Jsonl {
    out: BufWriter<File>,
    path: String,
}

impl Jsonl {
    pub fn create(path: &Path) -> Result<Jsonl> {
        let file = crate::output::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Jsonl { out: BufWriter::new(file), path: path.display().to_string() })
    }

    /// One object per line, flushed, so a reader can follow the file live.
    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value).with_context(|| format!("writing {}", self.path))?;
        self.out.write_all(b"\n").and_then(|()| self.out.flush()).with_context(|| format!("writing {}", self.path))
    }
}

impl Sink for Jsonl {
    fn begin(&mut self, setting: &Setting) -> Result<()> {
        self.line(setting)
    }
    fn compare(&mut self, comparison: &Comparison) -> Result<()> {
        self.line(comparison)
    }
    fn interval(&mut self, sample: &Sample) -> Result<()> {
        self.line(sample)
    }
    fn snapshot(&mut self, summary: &Summary) -> Result<()> {
        self.line(summary)
    }
    fn end(&mut self, end: &End, _: &[Summary]) -> Result<()> {
        self.line(end)
    }
}
