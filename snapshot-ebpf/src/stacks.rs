//! `--stacks`: who made each copy. The user stack of the copying thread
//! (the kernel walks frame pointers) is counted per process and stack id in
//! `STACK_COPIES`; the faulting address goes to the user side on `COPY_ADDRS`,
//! which finds its mapping in /proc/PID/maps while the process lives.
//! Without `--stacks` every call here returns after one global read, and the
//! loader shrinks the maps to one entry.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    macros::map,
    maps::{HashMap, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
};
use snapshot_common::{CopyAddr, StackCount, StackKey, counter};

use crate::{
    kernel::cfg,
    maps::{COUNTERS, Pending, add, count},
};

/// User stacks by id. Sized by the loader (`--stacks`) or one entry.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// Copies and bytes per (tgid, stack id).
#[map]
pub static STACK_COPIES: HashMap<StackKey, StackCount> = HashMap::with_max_entries(32768, 0);

/// Each copy's address (see [`CopyAddr`]).
#[map]
pub static COPY_ADDRS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// The copy a thread's pending fault recorded, kept in that thread's
/// [`Pending`] so a copy taken back later in the same fault (page cache after
/// all, a THP split) is taken back from its own stack. A per-CPU record would
/// name another thread's copy once the fault slept, was preempted or moved
/// to another CPU between the copy and the take-back.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct LastCopy {
    pub address: u64,
    /// 0 once taken back (or when the fault recorded none).
    pub bytes: u64,
    pub stack_id: i32,
    _pad: u32,
}

const BPF_NOEXIST: u64 = 1;
const EFAULT: i32 = 14;

/// A copy of `bytes` at `address` by the current thread of `tgid`, made in
/// the fault `pending` describes.
#[inline(always)]
pub fn on_copy<C: StackIdContext>(ctx: &C, pending: *mut Pending, tgid: u32, address: u64, bytes: u64) {
    if cfg!(stacks) == 0 {
        return;
    }
    let stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(e) => e.min(-1),
    };
    let key = StackKey { tgid, stack_id };
    if !count_stack(&key, 1, bytes) || lost(stack_id) {
        count(counter::STACKS_DROPPED);
    }
    send(tgid, address, 1, bytes);
    unsafe { (*pending).last = LastCopy { address, bytes, stack_id, _pad: 0 } };
}

/// The copy the current thread of `tgid` recorded in its pending fault was
/// not one after all.
#[inline(always)]
pub fn take_back(pending: *mut Pending, tgid: u32, bytes: u64) {
    if cfg!(stacks) == 0 {
        return;
    }
    let last = unsafe { (*pending).last };
    if last.bytes != bytes {
        return;
    }
    unsafe { (*pending).last.bytes = 0 };
    count_stack(&StackKey { tgid, stack_id: last.stack_id }, u64::MAX, bytes.wrapping_neg());
    if lost(last.stack_id)
        && let Some(p) = COUNTERS.get_ptr_mut(counter::STACKS_DROPPED)
    {
        add(p, u64::MAX);
    }
    send(tgid, last.address, -1, bytes);
}

/// The kernel had the stack but could not keep it: its bucket holds another
/// stack (EEXIST) or the table is full (ENOMEM). A task with no user stack
/// (EFAULT) lost nothing.
#[inline(always)]
fn lost(stack_id: i32) -> bool {
    stack_id < 0 && stack_id != -EFAULT
}

#[inline(always)]
fn count_stack(key: &StackKey, copies: u64, bytes: u64) -> bool {
    let mut entry = STACK_COPIES.get_ptr_mut(key);
    if entry.is_none() {
        // Another CPU may insert it first: then the lookup below finds it.
        let _ = STACK_COPIES.insert(key, &StackCount::default(), BPF_NOEXIST);
        entry = STACK_COPIES.get_ptr_mut(key);
    }
    let Some(c) = entry else { return false };
    unsafe {
        add(&raw mut (*c).copies, copies);
        add(&raw mut (*c).bytes, bytes);
    }
    true
}

#[inline(always)]
fn send(tgid: u32, address: u64, copies: i32, bytes: u64) {
    let record = CopyAddr { tgid, copies, address, bytes };
    if COPY_ADDRS.output::<CopyAddr>(&record, 0).is_err() {
        count(counter::ADDRESSES_DROPPED);
    }
}
