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
    _pad: u32,
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
        Table::with_arena(Arena::empty(self.arena.mode()))
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
                if r.hash == h && r.key() == key {
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
            let r = &mut **link;
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

    /// # Safety
    /// `link` must point at a live record's link in this table.
    unsafe fn unlink_free(&mut self, link: *mut *mut Rec) {
        // SAFETY: per the contract.
        unsafe {
            let r = *link;
            *link = (*r).next;
            if (*r).expire_ms != 0 {
                self.expires -= 1;
            }
            let cap = (*r).cap as usize;
            self.arena.free(r as *mut u8, cap);
        }
        self.len -= 1;
    }

    /// Inserts or replaces. The value is written in place when it fits the old block.
    pub fn set(&mut self, key: &[u8], val: &[u8], exp: Expire, now: i64) -> Result<(), Oom> {
        let (link, h) = self.live_link(key, now);
        let need = HDR + key.len() + val.len();
        // SAFETY: link (when not null) is a valid link; new blocks are big enough for `need`.
        unsafe {
            if !link.is_null() {
                let r = *link;
                let old_exp = (*r).expire_ms;
                let new_exp = match exp {
                    Expire::Clear => 0,
                    Expire::Keep => old_exp,
                    Expire::At(t) => t,
                };
                let cap = (*r).cap as usize;
                // In place if it fits and would not strand most of a big block.
                if need <= cap && (cap <= 256 || need >= cap / 2) {
                    ptr::copy_nonoverlapping(
                        val.as_ptr(),
                        (r as *mut u8).add(HDR + key.len()),
                        val.len(),
                    );
                    (*r).vlen = val.len() as u32;
                } else {
                    let nr = self.new_rec(key, val, h)?;
                    (*nr).next = (*r).next;
                    *link = nr;
                    self.arena.free(r as *mut u8, (*r).cap as usize);
                }
                let r = *link;
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
            *b = nr;
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
                _pad: 0,
            });
            ptr::copy_nonoverlapping(key.as_ptr(), p.add(HDR), key.len());
            ptr::copy_nonoverlapping(val.as_ptr(), p.add(HDR + key.len()), val.len());
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
                f(rr.key(), rr.val(), rr.expire_ms)?;
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
                if !rr.expired(now) {
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
            // SAFETY: valid links; unlink_free keeps `link` pointing at the next record.
            unsafe {
                while !(*link).is_null() {
                    if (**link).expired(now) {
                        self.unlink_free(link);
                        removed += 1;
                    } else {
                        link = &mut (**link).next;
                    }
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
        let mut n = 0;
        let mut c = 0;
        loop {
            c = t.scan(c, 100, 1, |_| n += 1);
            if c == 0 {
                break;
            }
        }
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
