//! Reserves hugetlb pages for a run and gives them back after it.
use anyhow::{Context, Result, bail};

const NR: &str = "/proc/sys/vm/nr_hugepages";

/// Puts nr_hugepages back to what it was when dropped.
pub struct Reservation {
    old: u64,
}

fn read() -> Result<u64> {
    let text = std::fs::read_to_string(NR).with_context(|| format!("reading {NR}"))?;
    text.trim().parse().with_context(|| format!("{NR}: not a number: {text:?}"))
}

/// Adds `pages` huge pages to the pool; fails with the reason when the
/// kernel cannot (memory too fragmented, too little, no permission).
pub fn reserve(pages: u64) -> Result<Reservation> {
    let old = read()?;
    let want = old + pages;
    std::fs::write(NR, want.to_string())
        .with_context(|| format!("reserving {pages} huge pages: writing {want} to {NR} (needs root)"))?;
    let reservation = Reservation { old };
    let got = read()?;
    if got < want {
        bail!(
            "the kernel reserved only {} of the {pages} huge pages --pages hugetlb needs (memory too small or \
             fragmented): use fewer --keys, or reserve them at boot (hugepages= on the kernel command line)",
            got.saturating_sub(old)
        );
    }
    Ok(reservation)
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NR, self.old.to_string()) {
            eprintln!("snapshot: could not give back the huge pages: writing {} to {NR}: {e}", self.old);
        }
    }
}

/// Huge pages for a dataset and its worst-case copies: every page of it
/// copied once while a child lives, plus chunks in use and a margin.
pub fn pages_for(keys: u64, value_size: usize) -> u64 {
    // Record: 40-byte header, the 16-byte key, the value, size-class slack; and an 8-byte bucket.
    let bytes = keys * (value_size as u64 + 40 + 16 + 64 + 16);
    let pages = bytes.div_ceil(2 << 20);
    2 * pages + 16
}
