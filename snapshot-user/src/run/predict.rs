//! How much extra memory a fork snapshot will need, before it is measured.
//!
//! # The model
//! While a snapshot child lives, the first write to each page the two
//! processes still share makes the kernel copy that page; later writes to it
//! copy nothing. So the extra memory is (pages written at least once during
//! the snapshot) × (page size), and the question is how many distinct pages
//! `n` writes touch.
//!
//! - Layout: the dataset was loaded in key order, so key `i`'s record (header,
//!   key, value: `record` bytes, measured as used_memory / keys) sits at byte
//!   `i × record` of the dataset; it spans one page or two. A write rewrites
//!   the record in place (header and value), so it touches each page the record
//!   spans.
//! - Page `j` is touched by one write with probability `q_j`, the sum over the
//!   keys on it of the key's probability (uniform: 1/keys; Zipf: rank^-s / H,
//!   with ranks scattered over keys as the load generator does).
//! - After `n` independent writes, page `j` was touched with probability
//!   `1 - (1 - q_j)^n ≈ 1 - exp(-n q_j)`; the expected copied bytes are
//!   `page × Σ_j (1 - exp(-n q_j))`.
//! - Sequential writes touch `n × record / page + 1` pages, at most all of them.
//! - An insert (`--insert-ratio`) writes a new record into memory allocated
//!   after the fork (no copy) and the head of one bucket of the hash table:
//!   the bucket array's pages are touched uniformly, so `m` inserts copy
//!   `B (1 - exp(-m / B))` of its `B` pages. (A resize while the child lives,
//!   `--resize-during-snapshot`, rewrites everything: not modelled.)
//! - `n` = write rate × expected duration. The expected duration is the save's
//!   elapsed time divided by its progress (keys saved / keys) once it has
//!   progressed, else the previous snapshot's duration, else the dataset size
//!   at [`ASSUMED_SAVE_RATE`].
//!
//! Not modelled: the hash table's pages (an in-place SET does not write them),
//! the child's own allocations (its write buffer: small), and servers whose
//! SET allocates a new value elsewhere (Redis: a write can then touch two or
//! three pages), for which the prediction is low.
use super::{args::Dist, load::key_of_rank};

/// Bytes per second a save is assumed to write before any was measured.
pub const ASSUMED_SAVE_RATE: f64 = 500e6;

pub struct Model {
    page: u64,
    dist: Dist,
    record: f64,
    pages: u64,
    /// Per page: probability that one write touches it (not for sequential).
    touch: Vec<f64>,
    /// Share of the writes that insert new keys, and the bucket array's pages.
    insert_ratio: f64,
    bucket_pages: f64,
}

impl Model {
    pub fn new(keys: u64, record: f64, page: u64, dist: Dist, zipf_s: f64) -> Model {
        let record = record.max(1.0);
        let pages = ((keys as f64 * record) / page as f64).ceil().max(1.0) as u64;
        let touch = match dist {
            Dist::Sequential => Vec::new(),
            Dist::Uniform => spread(keys, record, page, pages, |_| 1.0 / keys as f64),
            Dist::Zipf => {
                let h: f64 = (1..=keys).map(|r| (r as f64).powf(-zipf_s)).sum();
                let mut by_key = vec![0.0; keys as usize];
                for rank in 0..keys {
                    by_key[key_of_rank(rank, keys) as usize] = ((rank + 1) as f64).powf(-zipf_s) / h;
                }
                spread(keys, record, page, pages, |k| by_key[k as usize])
            }
        };
        Model { page, dist, record, pages, touch, insert_ratio: 0.0, bucket_pages: 0.0 }
    }

    /// Inserts: `ratio` of the writes add keys to a table of `buckets` 8-byte buckets.
    pub fn with_inserts(mut self, ratio: f64, buckets: u64) -> Model {
        self.insert_ratio = ratio;
        self.set_buckets(buckets);
        self
    }

    /// The table's size at a fork (it grows between snapshots).
    pub fn set_buckets(&mut self, buckets: u64) {
        self.bucket_pages = (buckets as f64 * 8.0 / self.page as f64).ceil().max(1.0);
    }

    /// Expected bytes copied after `writes` writes while the child lives.
    pub fn copied_bytes(&self, writes: f64) -> f64 {
        let inserts = writes.max(0.0) * self.insert_ratio;
        let writes = writes.max(0.0) - inserts;
        let buckets = if inserts > 0.0 { -self.bucket_pages * (-inserts / self.bucket_pages).exp_m1() } else { 0.0 };
        let pages = buckets + match self.dist {
            Dist::Sequential if writes == 0.0 => 0.0,
            Dist::Sequential => (writes * self.record / self.page as f64 + 1.0).min(self.pages as f64),
            _ => self.touch.iter().map(|q| -(-writes * q).exp_m1()).sum(),
        };
        pages * self.page as f64
    }

    /// The dataset's size as the model lays it out.
    #[cfg(test)]
    pub fn dataset_bytes(&self) -> f64 {
        self.pages as f64 * self.page as f64
    }
}

/// Adds each key's probability to every page its record spans.
fn spread(keys: u64, record: f64, page: u64, pages: u64, p: impl Fn(u64) -> f64) -> Vec<f64> {
    let mut touch = vec![0.0; pages as usize];
    let page = page as f64;
    for k in 0..keys {
        let start = k as f64 * record;
        let first = (start / page) as usize;
        let last = (((start + record - 1.0) / page) as usize).min(touch.len() - 1);
        for t in &mut touch[first.min(last)..=last] {
            *t += p(k);
        }
    }
    touch
}

/// Expected seconds a save takes, from what is known so far.
pub fn expected_duration(elapsed: f64, progress: Option<f64>, previous: Option<f64>, dataset: f64) -> f64 {
    match (progress, previous) {
        (Some(f), _) if f >= 0.05 => elapsed / f.min(1.0),
        (_, Some(prev)) => prev.max(elapsed),
        _ => (dataset / ASSUMED_SAVE_RATE).max(elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_saturates_at_the_dataset() {
        let m = Model::new(10_000, 512.0, 4096, Dist::Uniform, 0.99);
        assert_eq!(m.copied_bytes(0.0), 0.0);
        // One write touches one page (8 records per page, none straddles).
        assert!((m.copied_bytes(1.0) - 4096.0).abs() < 4.0);
        assert!((m.copied_bytes(1e9) - m.dataset_bytes()).abs() < 1.0);
        // n writes over P pages: P (1 - e^(-n/P)).
        let p = 1250.0;
        let want = p * (1.0 - (-1000.0f64 / p).exp()) * 4096.0;
        assert!((m.copied_bytes(1000.0) - want).abs() / want < 1e-6);
    }

    #[test]
    fn zipf_touches_fewer_pages_than_uniform() {
        let u = Model::new(10_000, 600.0, 4096, Dist::Uniform, 0.99);
        let z = Model::new(10_000, 600.0, 4096, Dist::Zipf, 0.99);
        assert!(z.copied_bytes(2000.0) < u.copied_bytes(2000.0));
        assert!(z.copied_bytes(2000.0) > 0.0);
    }

    #[test]
    fn sequential_is_linear_until_full() {
        let m = Model::new(8_000, 512.0, 4096, Dist::Sequential, 0.99);
        assert_eq!(m.copied_bytes(80.0), 11.0 * 4096.0);
        assert_eq!(m.copied_bytes(1e6), m.dataset_bytes());
    }

    #[test]
    fn inserts_copy_bucket_pages_not_records() {
        let m = Model::new(10_000, 512.0, 4096, Dist::Uniform, 0.99).with_inserts(1.0, 16_384);
        // 16384 buckets x 8 B = 32 pages, all touched by many inserts; no record page.
        assert!((m.copied_bytes(1e6) - 32.0 * 4096.0).abs() < 1.0);
    }

    #[test]
    fn few_inserts_copy_a_share_of_the_bucket_pages() {
        // Half the writes insert: 16 inserts over 32 bucket pages touch 32 (1 - e^(-1/2)) of them.
        let m = Model::new(10_000, 512.0, 4096, Dist::Sequential, 0.99).with_inserts(0.5, 16_384);
        let buckets = 32.0 * -(-0.5f64).exp_m1();
        // The other 16 writes: 16 sequential 512-byte records, 3 pages.
        let want = (buckets + 3.0) * 4096.0;
        assert!((m.copied_bytes(32.0) - want).abs() < 1e-6, "{} {want}", m.copied_bytes(32.0));
    }

    #[test]
    fn no_writes_copy_nothing() {
        for dist in [Dist::Sequential, Dist::Uniform, Dist::Zipf] {
            assert_eq!(Model::new(1000, 512.0, 4096, dist, 0.99).copied_bytes(0.0), 0.0);
        }
    }

    #[test]
    fn records_count_on_every_page_they_span() {
        // 3000-byte records: key 1 spans pages 0 and 1, key 2 pages 1 and 2.
        assert_eq!(spread(3, 3000.0, 4096, 3, |_| 1.0), [2.0, 2.0, 1.0]);
        // 2048-byte records end on a page boundary: each sits on one page.
        assert_eq!(spread(4, 2048.0, 4096, 2, |_| 1.0), [2.0, 2.0]);
        // A record reaching past the last page (rounding) counts on the last page.
        assert_eq!(spread(3, 3000.0, 4096, 2, |_| 1.0), [2.0, 2.0]);
    }

    #[test]
    fn duration_from_progress_then_history() {
        assert_eq!(expected_duration(1.0, Some(0.25), Some(9.0), 0.0), 4.0);
        assert_eq!(expected_duration(1.0, Some(0.01), Some(9.0), 0.0), 9.0);
        assert_eq!(expected_duration(1.0, None, None, 1e9), 2.0);
    }
}
