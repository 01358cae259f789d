//! Function names for user stack frames, with blazesym, from the files the
//! frames point into (so processes that have exited resolve too).
use std::{collections::HashMap, path::PathBuf};

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source::{Elf, Source}};

use super::procmaps::Layout;

pub struct Names {
    symbolizer: Symbolizer,
    /// (file, file offset) → name, so a frame shared by many stacks is looked up once.
    cache: HashMap<(PathBuf, u64), String>,
}

impl Names {
    pub fn new() -> Names {
        Names { symbolizer: Symbolizer::new(), cache: HashMap::new() }
    }

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
        let key = (file.clone(), offset);
        if let Some(name) = self.cache.get(&key) {
            return name.clone();
        }
        let name = self.lookup(file, offset).unwrap_or_else(|| format!("[{}+{offset:#x}]", base_name(file)));
        self.cache.insert(key, name.clone());
        name
    }

    fn lookup(&self, file: &PathBuf, offset: u64) -> Option<String> {
        let source = Source::Elf(Elf::new(file));
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
