//! The keyspace: a chained hash table whose buckets and records all live in the [`Arena`].
//!
//! A record is one block: header (chain link, hash, expiry, lengths) then key then value.
//! Chaining (rather than open addressing) lets the load factor go above 1 without failing,
//! which is what allows growth to be *deferred* while a snapshot child lives: a resize
//! rewrites the bucket array and the link of every record, i.e. dirties every page of the
//! dataset, and with a child sharing those pages that is a copy of the whole dataset.
//! So while `resize_blocked` is set the table lets chains get longer, up to
//! [`FORCE_RESIZE_RATIO`] keys per bucket (past that, lookups cost more than the copy); the
//! pending resize happens when the child has been reaped.

use crate::arena::{Arena, Oom, PagesMode};
use anyhow::Result;
use std::hash::BuildHasher;
use std::ptr;

#[repr(C)]
struct Rec {
    next: *mut Rec,
    hash: u64,
    /// Absolute expiry in Unix milliseconds; 0 = none.
    expire_ms: i64,
    klen: u32,
    vlen: u32,
    /// Bytes reserved for this block (to free it and to know if a new value fits in place).
    cap: u32,
    /// Forkless save generation this record was handled in (saved, or born after its start).
    epoch: u32,
}

const HDR: usize = std::mem::size_of::<Rec>();
const MIN_BUCKETS: usize = 16;
/// Keys per bucket past which the table grows even while a child lives (Redis's
/// `dict_force_resize_ratio`): chains that long cost more than the copy a resize causes.
pub const FORCE_RESIZE_RATIO: usize = 5;

/// Expiry to apply when setting a value.
#[derive(Clone, Copy)]
pub enum Expire {
    /// Remove any expiry (plain SET).
    Clear,
    /// Keep the current expiry (INCR, SET KEEPTTL).
    Keep,
    /// Absolute Unix ms.
    At(i64),
}

pub struct Table {
    arena: Arena,
    buckets: *mut *mut Rec,
    nbuckets: usize,
    len: usize,
    expires: usize,
    hasher: foldhash::fast::RandomState,
    resize_blocked: bool,
    expire_cursor: usize,
    /// Resizes done while blocked, past [`FORCE_RESIZE_RATIO`].
    forced_resizes: u64,
    /// Copy-before-write state while a forkless save runs.
    cow: Option<CowSave>,
    /// Generation of the last forkless save (records carry the one that handled them).
    save_epoch: u32,
    /// What a write does to a record a fork child shares (see [`CowStrategy`]).
    pub strategy: CowStrategy,
    /// Shared pages written since the fork (each is one page the kernel copied).
    fork_pages: Option<ForkPages>,
    /// The figures of the last fork, once its child ended.
    pub last_fork_pages: (u64, u64),
    /// Redirect strategy: records a child shares that are dead (deleted, or replaced by a newer
    /// version at the head of their chain) but still linked, so that unlinking them writes no
    /// shared page. Lookups skip them; they are unlinked and freed when the child ends.
    shadowed: std::collections::HashSet<usize>,
}

/// `--cow-strategy`: what a write does to a record that sits in memory a fork child shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CowStrategy {
    /// Write it where it is (as Redis does): the kernel copies its page.
    Inplace,
    /// Write a new version into memory allocated after the fork and point the index at it;
    /// the old one is freed when the child ends. Only the index link is written in shared memory.
    Redirect,
}

impl CowStrategy {
    pub fn name(self) -> &'static str {
        match self {
            CowStrategy::Inplace => "inplace",
            CowStrategy::Redirect => "redirect",
        }
    }
}

/// Distinct shared pages the parent wrote while a child lived, split by what they hold.
#[derive(Default)]
struct ForkPages {
    index: std::collections::HashSet<usize>,
    records: std::collections::HashSet<usize>,
}

/// A forkless save in progress: every record present at its start is copied out exactly once,
/// either by the walk (in bucket order) or, if it is about to change first, just before.
struct CowSave {
    epoch: u32,
    /// Next bucket the walk visits; back to 0 after a resize (handled records are skipped).
    cursor: usize,
    /// Copied records not yet handed to the writer ([`push_raw`] format).
    out: Vec<u8>,
    /// Bytes of records copied because they were about to change (the price of exactness).
    early_bytes: u64,
    early_keys: u64,
}

/// One copied record: key length, value length (u32 LE), expiry (i64 LE, 0 = none), key, value.
fn push_raw(out: &mut Vec<u8>, r: &Rec) {
    out.extend_from_slice(&r.klen.to_le_bytes());
    out.extend_from_slice(&r.vlen.to_le_bytes());
    out.extend_from_slice(&r.expire_ms.to_le_bytes());
    out.extend_from_slice(r.key());
    out.extend_from_slice(r.val());
}

/// A copied record, as the forkless writer reads it back.
pub struct Copied<'a> {
    pub key: &'a [u8],
    pub val: &'a [u8],
    /// Absolute Unix ms; 0 = none.
    pub expire_ms: i64,
}

/// Splits the first record off a buffer of [`push_raw`] records; returns it and the rest.
pub fn pop_raw(b: &[u8]) -> Option<(Copied<'_>, &[u8])> {
    let klen = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let vlen = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let expire_ms = i64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    let key = b.get(16..16 + klen)?;
    let val = b.get(16 + klen..16 + klen + vlen)?;
    Some((
        Copied {
            key,
            val,
            expire_ms,
        },
        &b[16 + klen + vlen..],
    ))
}

// SAFETY: the table owns its arena and all pointers point into it; it is used from one thread
// at a time (the event loop's), moving it between threads is fine.
unsafe impl Send for Table {}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Rec {
    fn key(&self) -> &[u8] {
        // SAFETY: the key follows the header inside the same block.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Rec as *const u8).add(HDR),
                self.klen as usize,
            )
        }
    }
    fn val(&self) -> &[u8] {
        // SAFETY: the value follows the key inside the same block.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Rec as *const u8).add(HDR + self.klen as usize),
                self.vlen as usize,
            )
        }
    }
    fn expired(&self, now: i64) -> bool {
        self.expire_ms != 0 && self.expire_ms <= now
    }
}

impl Table {
    /// A new empty table; checks that the page mode can be had (see [`Arena::new`]).
    pub fn new(mode: PagesMode) -> Result<Table> {
        Ok(Table::with_arena(Arena::new(mode)?))
    }

    /// An empty table of the same page mode, mapping nothing yet, so it cannot fail: FLUSHALL
    /// swaps it in and the old table's memory is unmapped as a whole (not written to).
    pub fn empty_like(&self) -> Table {
        let mut t = Table::with_arena(Arena::empty(self.arena.mode()));
        t.strategy = self.strategy;
        t
    }

    /// An empty table has no bucket array (nbuckets == 0); the first insert makes one.
    fn with_arena(arena: Arena) -> Table {
        Table {
            arena,
            buckets: ptr::null_mut(),
            nbuckets: 0,
            len: 0,
            expires: 0,
            hasher: foldhash::fast::RandomState::default(),
            resize_blocked: false,
            expire_cursor: 0,
            forced_resizes: 0,
            cow: None,
            save_epoch: 0,
            strategy: CowStrategy::Inplace,
            fork_pages: None,
            last_fork_pages: (0, 0),
            shadowed: std::collections::HashSet::new(),
        }
    }

    /// A fork child now shares the dataset: no resize, and with [`CowStrategy::Redirect`]
    /// new versions go to memory mapped from now on.
    pub fn fork_begin(&mut self) {
        let _ = self.set_resize_blocked(true);
        self.arena.freeze(self.strategy == CowStrategy::Redirect);
        self.fork_pages = Some(ForkPages::default());
    }

    /// The child is gone: held frees are released and a pending resize happens.
    pub fn fork_end(&mut self) {
        for r in std::mem::take(&mut self.shadowed) {
            // SAFETY: a dead record still linked in its chain; unlinked and freed once.
            unsafe { self.unlink_shadowed(r as *mut Rec) };
        }
        self.arena.thaw();
        if let Some(p) = self.fork_pages.take() {
            self.last_fork_pages = (p.index.len() as u64, p.records.len() as u64);
        }
        let _ = self.set_resize_blocked(false);
    }

    /// (index pages, record pages) written in shared memory since the fork, so far.
    pub fn fork_pages(&self) -> (u64, u64) {
        self.fork_pages.as_ref().map_or(self.last_fork_pages, |p| {
            (p.index.len() as u64, p.records.len() as u64)
        })
    }

    /// Notes a write of `len` bytes at `p` (a bucket slot or record) while a child lives.
    fn wrote(&mut self, p: *const u8, len: usize) {
        let Some(fp) = self.fork_pages.as_mut() else {
            return;
        };
        let (a, b) = (p as usize, p as usize + len.max(1) - 1);
        let in_index = self.nbuckets > 0
            && a >= self.buckets as usize
            && a < self.buckets as usize + self.nbuckets * 8;
        let set = if in_index {
            &mut fp.index
        } else {
            &mut fp.records
        };
        // Only pages mapped before the fork are shared (and copied when first written).
        for page in (a >> 12)..=(b >> 12) {
            if self.arena.shared(page << 12) {
                set.insert(page);
            }
        }
    }

    /// Writes `*link = to`, noting the write.
    ///
    /// # Safety
    /// `link` must be a bucket slot or a record's `next` field in this table.
    unsafe fn set_link(&mut self, link: *mut *mut Rec, to: *mut Rec) {
        self.wrote(link as *const u8, 8);
        // SAFETY: per the contract.
        unsafe { *link = to };
    }

    /// With [`CowStrategy::Redirect`], a record a fork child shares is replaced by a copy in
    /// new memory holding `val` (the old value if None) before it is changed. Returns the
    /// record to change (the same one otherwise).
    ///
    /// # Safety
    /// `link` must point at a live record's link in this table.
    unsafe fn redirect(
        &mut self,
        link: *mut *mut Rec,
        val: Option<&[u8]>,
    ) -> Result<*mut Rec, Oom> {
        // SAFETY: per the contract.
        unsafe {
            let r = *link;
            if self.strategy != CowStrategy::Redirect || !self.arena.shared(r as usize) {
                return Ok(r);
            }
            let val = val.unwrap_or((*r).val());
            let nr = self.new_rec((*r).key(), val, (*r).hash)?;
            (*nr).expire_ms = (*r).expire_ms;
            (*nr).epoch = (*r).epoch;
            self.replace(link, nr);
            Ok(nr)
        }
    }

    /// Puts `nr` (a new version of `*link`'s record) in its place. With the redirect strategy
    /// and a shared old record, only the bucket slot is written: `nr` goes to the head of the
    /// chain and the old record stays linked, shadowed, until the child ends.
    ///
    /// # Safety
    /// `link` must point at a live record's link; `nr` is a new record of the same key.
    unsafe fn replace(&mut self, link: *mut *mut Rec, nr: *mut Rec) {
        // SAFETY: per the contract.
        unsafe {
            let r = *link;
            let b = self.bucket((*r).hash);
            if self.shadows(r) && b != link {
                (*nr).next = *b;
                self.set_link(b, nr);
                self.shadowed.insert(r as usize);
            } else {
                (*nr).next = (*r).next;
                self.set_link(link, nr);
                self.arena.free(r as *mut u8, (*r).cap as usize);
            }
        }
    }

    /// Redirect strategy and a record a fork child shares: unlinking it would write shared memory.
    fn shadows(&self, r: *mut Rec) -> bool {
        self.strategy == CowStrategy::Redirect && self.arena.shared(r as usize)
    }

    fn is_shadowed(&self, r: *mut Rec) -> bool {
        !self.shadowed.is_empty() && self.shadowed.contains(&(r as usize))
    }

    /// # Safety
    /// `r` must be a shadowed record still linked in its chain.
    unsafe fn unlink_shadowed(&mut self, r: *mut Rec) {
        // SAFETY: per the contract; the chain is walked from its bucket to find r's link.
        unsafe {
            let mut link = self.bucket((*r).hash);
            while !(*link).is_null() && *link != r {
                link = &mut (**link).next;
            }
            if *link == r {
                *link = (*r).next;
                self.arena.free(r as *mut u8, (*r).cap as usize);
            }
        }
    }

    /// Starts copy-before-write for a forkless save: from now on every record present is
    /// copied out once, before it changes or when [`Table::walk_step`] reaches it.
    pub fn begin_cow(&mut self) {
        self.save_epoch = self.save_epoch.wrapping_add(1);
        if self.save_epoch == 0 {
            // After 2^32 saves old tags could match again: clear them (rare, one pass).
            self.save_epoch = 1;
            self.visit_mut(|r| r.epoch = 0);
        }
        self.cow = Some(CowSave {
            epoch: self.save_epoch,
            cursor: 0,
            out: Vec::new(),
            early_bytes: 0,
            early_keys: 0,
        });
    }

    /// Stops copy-before-write; returns (bytes, keys) copied early because of writes.
    pub fn end_cow(&mut self) -> (u64, u64) {
        self.cow
            .take()
            .map_or((0, 0), |c| (c.early_bytes, c.early_keys))
    }

    pub fn cow_active(&self) -> bool {
        self.cow.is_some()
    }

    /// Takes the records copied so far (to hand them to the writer).
    pub fn take_copied(&mut self) -> Vec<u8> {
        self.cow
            .as_mut()
            .map(|c| std::mem::take(&mut c.out))
            .unwrap_or_default()
    }

    /// Copies out not-yet-handled records of the next buckets until `budget` bytes are copied
    /// (or the table ends). Returns true once every bucket has been walked.
    pub fn walk_step(&mut self, budget: usize) -> bool {
        let Some(c) = self.cow.as_mut() else {
            return true;
        };
        let start = c.out.len();
        while c.cursor < self.nbuckets && c.out.len() - start < budget {
            // SAFETY: cursor < nbuckets; chains are valid records of this table.
            let mut r = unsafe { *self.buckets.add(c.cursor) };
            while !r.is_null() {
                // SAFETY: valid record, only this thread touches it.
                let rr = unsafe { &mut *r };
                if rr.epoch != c.epoch {
                    rr.epoch = c.epoch;
                    push_raw(&mut c.out, rr);
                }
                r = rr.next;
            }
            c.cursor += 1;
        }
        c.cursor >= self.nbuckets
    }

    /// Before a record changes or goes away: if a forkless save has not copied it yet, copy
    /// its current (pre-write) version now.
    fn before_write(&mut self, r: *mut Rec) {
        if let Some(c) = self.cow.as_mut() {
            // SAFETY: callers pass a live record of this table.
            let rr = unsafe { &mut *r };
            if rr.epoch != c.epoch {
                rr.epoch = c.epoch;
                let n = c.out.len();
                push_raw(&mut c.out, rr);
                c.early_bytes += (c.out.len() - n) as u64;
                c.early_keys += 1;
            }
        }
    }

    fn visit_mut(&mut self, mut f: impl FnMut(&mut Rec)) {
        for i in 0..self.nbuckets {
            // SAFETY: bucket array and chains are valid.
            let mut r = unsafe { *self.buckets.add(i) };
            while !r.is_null() {
                // SAFETY: valid record.
                let rr = unsafe { &mut *r };
                f(rr);
                r = rr.next;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn expires(&self) -> usize {
        self.expires
    }
    pub fn nbuckets(&self) -> usize {
        self.nbuckets
    }
    pub fn arena(&self) -> &Arena {
        &self.arena
    }
    /// Key count above which the bucket array grows (more while a child lives).
    pub fn grow_at(&self) -> usize {
        if self.resize_blocked {
            self.nbuckets * FORCE_RESIZE_RATIO
        } else {
            self.nbuckets
        }
    }
    pub fn forced_resizes(&self) -> u64 {
        self.forced_resizes
    }

    /// While a snapshot child lives: no resize (see the module comment).
    pub fn set_resize_blocked(&mut self, blocked: bool) -> Result<(), Oom> {
        self.resize_blocked = blocked;
        if !blocked {
            self.fit()?;
        }
        Ok(())
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn bucket(&self, h: u64) -> *mut *mut Rec {
        // SAFETY: index is masked into the bucket array.
        unsafe { self.buckets.add(h as usize & (self.nbuckets - 1)) }
    }

    /// Finds the link pointing at the record for `key` (or null).
    fn find(&self, key: &[u8], h: u64) -> *mut *mut Rec {
        if self.nbuckets == 0 {
            return ptr::null_mut();
        }
        let mut link = self.bucket(h);
        // SAFETY: links and records are valid arena memory owned by this table.
        unsafe {
            while !(*link).is_null() {
                let r = &**link;
                if r.hash == h && r.key() == key && !self.is_shadowed(*link) {
                    return link;
                }
                link = &mut (**link).next;
            }
        }
        ptr::null_mut()
    }

    /// Live record lookup; an expired record is removed on the way (lazy expiry).
    fn live_link(&mut self, key: &[u8], now: i64) -> (*mut *mut Rec, u64) {
        let h = self.hash(key);
        let link = self.find(key, h);
        if link.is_null() {
            return (link, h);
        }
        // SAFETY: `find` returned a valid link to a record.
        unsafe {
            if (**link).expired(now) {
                self.unlink_free(link);
                return (ptr::null_mut(), h);
            }
        }
        (link, h)
    }

    pub fn get(&mut self, key: &[u8], now: i64) -> Option<&[u8]> {
        let (link, _) = self.live_link(key, now);
        if link.is_null() {
            return None;
        }
        // SAFETY: valid record; the borrow is tied to &mut self.
        Some(unsafe { (**link).val() })
    }

    pub fn contains(&mut self, key: &[u8], now: i64) -> bool {
        !self.live_link(key, now).0.is_null()
    }

    /// Remaining expiry: None = no key, Some(0) = no expiry, Some(at_ms) otherwise.
    pub fn expire_at(&mut self, key: &[u8], now: i64) -> Option<i64> {
        let (link, _) = self.live_link(key, now);
        if link.is_null() {
            return None;
        }
        // SAFETY: valid record.
        Some(unsafe { (**link).expire_ms })
    }

    /// Sets the expiry of an existing key; false if there is none.
    pub fn set_expire(&mut self, key: &[u8], at_ms: i64, now: i64) -> bool {
        let (link, _) = self.live_link(key, now);
        if link.is_null() {
            return false;
        }
        // SAFETY: valid record.
        unsafe {
            self.before_write(*link);
            let Ok(r) = self.redirect(link, None) else {
                // No memory for a copy: write in place (the kernel copies the page).
                return self.set_expire_in_place(*link, at_ms);
            };
            self.set_expire_in_place(r, at_ms)
        }
    }

    /// # Safety
    /// `r` must be a live record of this table.
    unsafe fn set_expire_in_place(&mut self, r: *mut Rec, at_ms: i64) -> bool {
        self.wrote(r as *const u8, HDR);
        // SAFETY: per the contract.
        unsafe {
            let r = &mut *r;
            if r.expire_ms == 0 && at_ms != 0 {
                self.expires += 1;
            } else if r.expire_ms != 0 && at_ms == 0 {
                self.expires -= 1;
            }
            r.expire_ms = at_ms;
        }
        true
    }

    pub fn del(&mut self, key: &[u8], now: i64) -> bool {
        let (link, _) = self.live_link(key, now);
        if link.is_null() {
            return false;
        }
        // SAFETY: valid link.
        unsafe { self.unlink_free(link) };
        true
    }

    /// Removes a record. Returns false if it stays linked, shadowed (redirect strategy, shared
    /// with a fork child): then `link` still points at it.
    ///
    /// # Safety
    /// `link` must point at a live record's link in this table.
    unsafe fn unlink_free(&mut self, link: *mut *mut Rec) -> bool {
        self.len -= 1;
        // SAFETY: per the contract.
        unsafe {
            let r = *link;
            self.before_write(r);
            if (*r).expire_ms != 0 {
                self.expires -= 1;
            }
            if self.shadows(r) {
                self.shadowed.insert(r as usize);
                return false;
            }
            self.set_link(link, (*r).next);
            let cap = (*r).cap as usize;
            self.arena.free(r as *mut u8, cap);
        }
        true
    }

    /// Inserts or replaces. The value is written in place when it fits the old block.
    pub fn set(&mut self, key: &[u8], val: &[u8], exp: Expire, now: i64) -> Result<(), Oom> {
        let (link, h) = self.live_link(key, now);
        let need = HDR + key.len() + val.len();
        // SAFETY: link (when not null) is a valid link; new blocks are big enough for `need`.
        unsafe {
            if !link.is_null() {
                let r = *link;
                self.before_write(r);
                let old_exp = (*r).expire_ms;
                let new_exp = match exp {
                    Expire::Clear => 0,
                    Expire::Keep => old_exp,
                    Expire::At(t) => t,
                };
                let cap = (*r).cap as usize;
                // In place if it fits and would not strand most of a big block (and, with
                // the redirect strategy, if no fork child shares it).
                let r = if !self.shadows(r) && need <= cap && (cap <= 256 || need >= cap / 2) {
                    self.wrote(r as *const u8, need);
                    ptr::copy_nonoverlapping(
                        val.as_ptr(),
                        (r as *mut u8).add(HDR + key.len()),
                        val.len(),
                    );
                    (*r).vlen = val.len() as u32;
                    r
                } else {
                    let nr = self.new_rec(key, val, h)?;
                    (*nr).expire_ms = old_exp;
                    self.replace(link, nr);
                    nr
                };
                if (*r).expire_ms != new_exp {
                    self.wrote(r as *const u8, HDR);
                }
                (*r).expire_ms = new_exp;
                if old_exp == 0 && new_exp != 0 {
                    self.expires += 1;
                } else if old_exp != 0 && new_exp == 0 {
                    self.expires -= 1;
                }
                return Ok(());
            }
            if self.nbuckets == 0 {
                self.resize(MIN_BUCKETS)?;
            }
            let nr = self.new_rec(key, val, h)?;
            if let Expire::At(t) = exp {
                (*nr).expire_ms = t;
                self.expires += 1;
            }
            let b = self.bucket(h);
            (*nr).next = *b;
            self.set_link(b, nr);
        }
        self.len += 1;
        if self.len > self.grow_at() {
            // While blocked, grow straight to the size the keys need: the copy this causes
            // (every record's link is rewritten) is paid once, not once per doubling.
            let n = if self.resize_blocked {
                self.forced_resizes += 1;
                self.len.next_power_of_two()
            } else {
                self.nbuckets * 2
            };
            // Growth failing to map memory is not fatal: chains just get longer.
            let _ = self.resize(n);
        }
        Ok(())
    }

    fn new_rec(&mut self, key: &[u8], val: &[u8], h: u64) -> Result<*mut Rec, Oom> {
        let need = HDR + key.len() + val.len();
        let cap = self.arena.usable_size(need);
        // The header keeps lengths in 32 bits: refuse what would not fit rather than truncate.
        let (Ok(klen), Ok(vlen), Ok(cap32)) = (
            u32::try_from(key.len()),
            u32::try_from(val.len()),
            u32::try_from(cap),
        ) else {
            return Err(Oom);
        };
        let p = self.arena.alloc(need)?;
        // SAFETY: p has room for `need` bytes and is 16-byte aligned.
        unsafe {
            let r = p as *mut Rec;
            r.write(Rec {
                next: ptr::null_mut(),
                hash: h,
                expire_ms: 0,
                klen,
                vlen,
                cap: cap32,
                // Born during a forkless save: not part of its instant.
                epoch: self.cow.as_ref().map_or(0, |c| c.epoch),
            });
            ptr::copy_nonoverlapping(key.as_ptr(), p.add(HDR), key.len());
            ptr::copy_nonoverlapping(val.as_ptr(), p.add(HDR + key.len()), val.len());
            // A block reused from a free list may sit in a page a fork child shares.
            self.wrote(p, need);
            Ok(r)
        }
    }

    /// Makes room for `extra` more keys in one resize (bulk loads), unless blocked.
    pub fn reserve(&mut self, extra: usize) {
        // Clamped: a huge DEBUG POPULATE count must not ask for an absurd bucket array.
        let want = self
            .len
            .saturating_add(extra)
            .min(1 << 32)
            .next_power_of_two();
        if want > self.nbuckets && !self.resize_blocked {
            let _ = self.resize(want);
        }
    }

    /// Brings the bucket count back in line with the key count (after a child, or after deletes).
    pub fn fit(&mut self) -> Result<(), Oom> {
        if self.resize_blocked || self.nbuckets == 0 {
            return Ok(());
        }
        let mut n = self.nbuckets;
        while self.len > n {
            n *= 2;
        }
        while n > MIN_BUCKETS && self.len < n / 8 {
            n /= 2;
        }
        if n != self.nbuckets {
            self.resize(n)
        } else {
            Ok(())
        }
    }

    fn resize(&mut self, n: usize) -> Result<(), Oom> {
        let nb = alloc_buckets(&mut self.arena, n)?;
        // SAFETY: every record is re-linked into the new array exactly once; old array freed after.
        unsafe {
            for i in 0..self.nbuckets {
                let mut r = *self.buckets.add(i);
                while !r.is_null() {
                    let next = (*r).next;
                    let b = nb.add((*r).hash as usize & (n - 1));
                    (*r).next = *b;
                    *b = r;
                    r = next;
                }
            }
            if self.nbuckets > 0 {
                self.arena.free(self.buckets as *mut u8, self.nbuckets * 8);
            }
        }
        self.buckets = nb;
        self.nbuckets = n;
        if let Some(c) = self.cow.as_mut() {
            // A shrink moves records behind the cursor: walk again; handled ones are skipped.
            c.cursor = 0;
        }
        Ok(())
    }

    /// Visits every record (expired ones included; the loader drops those). Used by the saver.
    pub fn for_each<E>(
        &self,
        mut f: impl FnMut(&[u8], &[u8], i64) -> Result<(), E>,
    ) -> Result<(), E> {
        for i in 0..self.nbuckets {
            // SAFETY: bucket array and chains are valid.
            let mut r = unsafe { *self.buckets.add(i) };
            while !r.is_null() {
                // SAFETY: valid record.
                let rr = unsafe { &*r };
                if !self.is_shadowed(r) {
                    f(rr.key(), rr.val(), rr.expire_ms)?;
                }
                r = rr.next;
            }
        }
        Ok(())
    }

    /// One SCAN step: visits whole buckets from `cursor` until at least `count` keys were seen.
    /// Cursors advance in reversed-bit order, so a key present for the whole scan is returned
    /// even if the table is resized in between.
    pub fn scan(
        &mut self,
        mut cursor: u64,
        count: usize,
        now: i64,
        mut f: impl FnMut(&[u8]),
    ) -> u64 {
        if self.nbuckets == 0 {
            return 0;
        }
        let mask = (self.nbuckets - 1) as u64;
        let mut seen = 0;
        let mut steps = 0;
        loop {
            let i = (cursor & mask) as usize;
            // SAFETY: masked index; chains valid.
            let mut r = unsafe { *self.buckets.add(i) };
            while !r.is_null() {
                // SAFETY: valid record.
                let rr = unsafe { &*r };
                if !rr.expired(now) && !self.is_shadowed(r) {
                    f(rr.key());
                    seen += 1;
                }
                r = rr.next;
            }
            cursor |= !mask;
            cursor = cursor.reverse_bits().wrapping_add(1).reverse_bits();
            steps += 1;
            if cursor == 0 || seen >= count || steps >= count * 10 {
                return cursor;
            }
        }
    }

    /// Removes expired keys from the next slice of buckets (the active half of expiry).
    pub fn expire_step(&mut self, now: i64) -> usize {
        if self.expires == 0 {
            return 0;
        }
        // About 2% of the table per call: at 10 calls/s a full pass takes ~5 s.
        let buckets = (self.nbuckets / 50).clamp(256, 65536);
        let mut removed = 0;
        for _ in 0..buckets.min(self.nbuckets) {
            self.expire_cursor = (self.expire_cursor + 1) & (self.nbuckets - 1);
            let mut link = self.bucket(self.expire_cursor as u64);
            // SAFETY: valid links; unlink_free keeps `link` pointing at the next record, unless
            // it shadowed the record instead (then step over it).
            unsafe {
                while !(*link).is_null() {
                    let dead = self.is_shadowed(*link);
                    if !dead && (**link).expired(now) {
                        removed += 1;
                        if self.unlink_free(link) {
                            continue;
                        }
                    }
                    link = &mut (**link).next;
                }
            }
        }
        removed
    }
}

fn alloc_buckets(arena: &mut Arena, n: usize) -> Result<*mut *mut Rec, Oom> {
    let p = arena.alloc(n * 8)? as *mut *mut Rec;
    // SAFETY: n pointers of room; small-class blocks may be recycled, so zero them.
    unsafe { ptr::write_bytes(p, 0, n) };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys a full SCAN returns.
    fn scan_count(t: &mut Table) -> usize {
        let mut n = 0;
        let mut c = 0;
        loop {
            c = t.scan(c, 100, 1, |_| n += 1);
            if c == 0 {
                return n;
            }
        }
    }

    #[test]
    fn set_get_del_resize() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        for i in 0..10_000 {
            t.set(
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                Expire::Clear,
                1,
            )
            .unwrap();
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.nbuckets() >= 10_000);
        for i in 0..10_000 {
            assert_eq!(
                t.get(format!("k{i}").as_bytes(), 1),
                Some(format!("v{i}").as_bytes())
            );
        }
        t.set(b"k1", &[7u8; 3000], Expire::Clear, 1).unwrap();
        assert_eq!(t.get(b"k1", 1).map(|v| v.len()), Some(3000));
        assert!(t.del(b"k1", 1));
        assert!(!t.del(b"k1", 1));
        let n = scan_count(&mut t);
        assert_eq!(n, 9_999);
    }

    #[test]
    fn blocked_resize_waits() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        t.set_resize_blocked(true).unwrap();
        for i in 0..1000 {
            t.set(format!("k{i}").as_bytes(), b"v", Expire::Clear, 1)
                .unwrap();
        }
        // Forced growth past the ratio: 1000 keys need 1024 buckets, reached in two steps
        // (81 keys > 5 x 16 -> 128 buckets; 641 > 5 x 128 -> 1024).
        assert_eq!(t.nbuckets(), 1024);
        assert_eq!(t.forced_resizes(), 2);
        t.set_resize_blocked(false).unwrap();
        assert_eq!(t.nbuckets(), 1024);
        let mut t = Table::new(PagesMode::Small).unwrap();
        t.set_resize_blocked(true).unwrap();
        for i in 0..80 {
            t.set(format!("k{i}").as_bytes(), b"v", Expire::Clear, 1)
                .unwrap();
        }
        assert_eq!(t.nbuckets(), MIN_BUCKETS, "no growth up to the ratio");
        t.reserve(1000);
        assert_eq!(t.nbuckets(), MIN_BUCKETS, "no reserve while blocked");
        // The deferred growth, once unblocked: 80 keys need 128 buckets.
        t.set_resize_blocked(false).unwrap();
        assert_eq!(t.nbuckets(), 128);
    }

    #[test]
    fn reserve_and_fit() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        t.set(b"first", b"v", Expire::Clear, 1).unwrap();
        // One resize straight to the size asked for.
        t.reserve(1000);
        assert_eq!(t.nbuckets(), 1024, "1 + 1000 keys");
        t.reserve(1500);
        assert_eq!(t.nbuckets(), 2048, "1 + 1500 keys");
        let mut t = Table::new(PagesMode::Small).unwrap();
        for i in 0..1024 {
            t.set(format!("k{i}").as_bytes(), b"v", Expire::Clear, 1)
                .unwrap();
        }
        t.fit().unwrap();
        assert_eq!(t.nbuckets(), 1024, "exactly one key per bucket fits");
        // Shrinks while fewer than 1 key per 8 buckets: 100 keys end in 512 buckets.
        for i in 100..1024 {
            t.del(format!("k{i}").as_bytes(), 1);
        }
        t.set_resize_blocked(true).unwrap();
        t.fit().unwrap();
        assert_eq!(t.nbuckets(), 1024, "no shrink while a child lives");
        t.set_resize_blocked(false).unwrap();
        assert_eq!(t.nbuckets(), 512);
        // Exactly 1 key per 8 buckets stays.
        for i in 64..100 {
            t.del(format!("k{i}").as_bytes(), 1);
        }
        t.fit().unwrap();
        assert_eq!(t.nbuckets(), 512);
        for i in 0..64 {
            t.del(format!("k{i}").as_bytes(), 1);
        }
        t.fit().unwrap();
        assert_eq!(t.nbuckets(), MIN_BUCKETS, "never below the minimum");
        for i in 0..1000 {
            assert_eq!(t.get(format!("k{i}").as_bytes(), 1), None);
        }
    }

    /// Copy-before-write: what a forkless save collects is the table at `begin_cow`, whatever
    /// happens before the walk reaches a record (overwrites, deletes, expiry changes, inserts,
    /// and a shrink that moves records to buckets behind the walk's cursor).
    #[test]
    fn forkless_copies_the_start_instant() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        let mut want = std::collections::BTreeMap::new();
        for i in 0..3000 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            t.set(k.as_bytes(), v.as_bytes(), Expire::Clear, 1).unwrap();
            want.insert(k.into_bytes(), (v.into_bytes(), 0));
        }
        t.begin_cow();
        let mut got = std::collections::BTreeMap::new();
        let mut collect = |b: Vec<u8>| {
            let mut b = &b[..];
            while let Some((r, rest)) = pop_raw(b) {
                let old = got.insert(r.key.to_vec(), (r.val.to_vec(), r.expire_ms));
                assert!(old.is_none(), "copied twice");
                b = rest;
            }
        };
        let mut i = 0;
        loop {
            // A few writes between walk steps; new keys force resizes mid-walk.
            for _ in 0..20 {
                let k = format!("k{}", (i * 7919) % 6000);
                match i % 4 {
                    0 => t.set(k.as_bytes(), b"new", Expire::Clear, 1).unwrap(),
                    1 => {
                        t.del(k.as_bytes(), 1);
                    }
                    2 => {
                        t.set_expire(k.as_bytes(), 99, 1);
                    }
                    _ => t.set(k.as_bytes(), &[b'z'; 700], Expire::Keep, 1).unwrap(),
                }
                i += 1;
            }
            let done = t.walk_step(512);
            collect(t.take_copied());
            if done {
                break;
            }
            if i == 400 {
                // Most keys go, then the table shrinks: records move to buckets below the cursor.
                for j in (0..6000).filter(|j| j % 16 != 0) {
                    t.del(format!("k{j}").as_bytes(), 1);
                }
                let before = t.nbuckets();
                t.fit().unwrap();
                assert!(t.nbuckets() < before);
            }
        }
        t.end_cow();
        assert_eq!(got, want);
    }

    /// Redirect strategy during a (pretend) fork: the table answers as a plain map would, and
    /// overwrites, expiry changes and deletes of shared records write no shared record page.
    #[test]
    fn redirect_keeps_answers_and_spares_shared_records() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        t.strategy = CowStrategy::Redirect;
        let mut m = std::collections::BTreeMap::new();
        for i in 0..5000 {
            let k = format!("k{i}").into_bytes();
            t.set(&k, b"v0", Expire::Clear, 1).unwrap();
            m.insert(k, b"v0".to_vec());
        }
        t.fork_begin();
        for i in 0..20000u64 {
            let k = format!("k{}", (i * 7919) % 5000).into_bytes();
            match i % 5 {
                0 | 1 => {
                    let v = format!("v{i}").into_bytes();
                    t.set(&k, &v, Expire::Keep, 1).unwrap();
                    m.insert(k, v);
                }
                2 => {
                    assert_eq!(t.del(&k, 1), m.remove(&k).is_some());
                }
                3 => {
                    assert_eq!(t.set_expire(&k, 1 << 40, 1), m.contains_key(&k));
                }
                _ => assert_eq!(t.get(&k, 1), m.get(&k).map(|v| &v[..])),
            }
        }
        assert_eq!(t.len(), m.len());
        let (_, records) = t.fork_pages();
        assert_eq!(records, 0, "shared record pages written");
        let n = scan_count(&mut t);
        assert_eq!(n, m.len());
        t.fork_end();
        assert_eq!(t.len(), m.len());
        for (k, v) in &m {
            assert_eq!(t.get(k, 1), Some(&v[..]));
        }
        let mut all = 0;
        t.for_each(|_, _, _| -> Result<(), ()> {
            all += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            all,
            m.len(),
            "shadowed records unlinked when the child ends"
        );
    }

    #[test]
    fn expiry() {
        let mut t = Table::new(PagesMode::Small).unwrap();
        t.set(b"a", b"1", Expire::At(100), 50).unwrap();
        assert_eq!(t.expires(), 1);
        assert!(t.contains(b"a", 99));
        assert!(!t.contains(b"a", 100));
        assert_eq!(t.len(), 0);
        assert_eq!(t.expires(), 0);
    }
}
