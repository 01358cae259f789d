//! Maps, and the bookkeeping every probe shares: finding a process's counters,
//! recording a copy against the fork that caused it, ending a fork.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{btf_map, map},
    maps::{Array, HashMap, RingBuf},
};
use snapshot_common::{CHILD_ROLE, Event, ForkRecord, ORDERS, ProcStats, counter, end_reason, event_kind};

use crate::{
    kernel::{cfg, current_exiting},
    task_storage::TaskStorage,
};

/// Traced processes by tgid. An entry is removed when its process exits
/// (after its final record goes to `EVENTS`), so the map stays bounded.
#[map]
pub static PROCS: HashMap<u32, ProcStats> = HashMap::with_max_entries(32768, 0);

/// Forks of traced processes, by fork id; removed when no process holds
/// their pages any more.
#[map]
pub static FORKS: HashMap<u64, ForkRecord> = HashMap::with_max_entries(32768, 0);

/// Live forks of one process ended at once when it exits or execs; more are
/// left to end when their children leave.
const MAX_LIVE_FORKS: u32 = 256;
/// Generations of forks without exec whose sharing ends at one exit.
const MAX_DEPTH: u32 = 32;
/// `bpf_map_update_elem` flag: fail if the key exists.
const BPF_NOEXIST: u64 = 1;

/// Per thread: its write fault still waiting for a copy. Task storage, not a
/// hash: `mm_page_alloc` checks it on every allocation of the machine, and
/// for a task that never faulted under tracing that check is one pointer test.
#[btf_map]
pub static PENDING: TaskStorage<Pending> = TaskStorage::new();

/// A write fault that may copy a page.
#[repr(C)]
pub struct Pending {
    /// The faulting address, or 0 when no fault is pending.
    pub address: u64,
    /// The thread's finished faults (`min_flt + maj_flt`) when this one
    /// began: the kernel counts a fault when it is done, so a different
    /// count at an allocation means the fault is over, on any kind of task
    /// (io-wq workers and kernel threads on a user mm make no syscalls that
    /// could end the mark).
    pub faults: u64,
    /// The fault flushed a TLB entry before any allocation: a hugetlb copy,
    /// unless a 4 KiB copy (after a THP split) still allocates.
    pub flushed: u32,
    /// [`WRITE_PROTECT`] or [`NOT_PRESENT`]: which write fault this is.
    pub kind: u32,
    /// Page order + 1 of the copy this fault made (write-protect) or of the
    /// page it allocated (not present); 0 for none yet.
    pub copied: u32,
    /// The target the write-protect copy was charged to (0: none), so it can
    /// be taken back when the copied page turns out to be page cache.
    pub charged: u64,
    /// Not-present write: the fault moved `MM_ANONPAGES` / `MM_SWAPENTS`.
    pub anon: u32,
    pub swap: u32,
    /// `--stacks`: the copy this fault recorded, for a take-back.
    pub last: crate::stacks::LastCopy,
}

/// A write to a present page: a COW candidate.
pub const WRITE_PROTECT: u32 = 1;
/// A write to a page not mapped yet: in a private file mapping, a copy of
/// the page-cache page (`do_cow_fault`).
pub const NOT_PRESENT: u32 = 2;

/// Health counters, indexed by `snapshot_common::counter`.
#[map]
pub static COUNTERS: Array<u64> = Array::with_max_entries(counter::LEN, 0);

/// Final records of exited processes and ended forks.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // Threads of one process fault on several CPUs at once. The BPF target
    // has atomic add but no compare-and-swap, so core's AtomicU64 lacks
    // fetch_add: the intrinsic compiles to BPF_ATOMIC_ADD.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Atomically takes one from `*p`, returning the value before: two holders
/// leaving at once on two CPUs must see exactly one zero. The build targets
/// the generic BPF CPU, where LLVM only emits atomic adds without a result;
/// the kernel has the fetching form since 5.12, so it is written out.
#[inline(always)]
pub fn fetch_sub(p: *mut u64) -> u64 {
    let mut v: u64 = u64::MAX;
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
        );
    }
    v
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        add(p, 1);
    }
}

/// Counters of a traced process; under `--all`, created on first sight,
/// but not for an exiting task: its entry would outlive the process.
#[inline(always)]
pub fn proc_stats(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        return Some(p);
    }
    if cfg!(trace_all) == 0 || tgid == 0 || current_exiting() {
        return None;
    }
    new_proc(tgid, 0)
}

/// Starts counting for `tgid`, named after the current task.
#[inline(always)]
pub fn new_proc(tgid: u32, ppid: u32) -> Option<*mut ProcStats> {
    let stats = ProcStats::new(tgid, ppid, bpf_get_current_comm().unwrap_or([0; 16]));
    if PROCS.insert(tgid, stats, 0).is_err() {
        count(counter::PROCS_FULL);
        return None;
    }
    PROCS.get_ptr_mut(tgid)
}

/// Counts one copied page of `1 << order` base pages and charges it to the
/// fork its address space currently charges (`ProcStats::target`).
#[inline(always)]
pub fn record_copy(stats: *mut ProcStats, order: u32) -> u64 {
    let bytes = 1u64 << (cfg!(page_shift) + order);
    let slot = if (order as usize) < ORDERS { order as usize } else { ORDERS - 1 };
    // `cow_copies` and `cow_bytes` are summed from this in user space.
    unsafe { add(&raw mut (*stats).copies_by_order[slot], 1) };
    let target = target(stats);
    if charge_fork(target, bytes, 1) {
        return target;
    }
    count(counter::UNATTRIBUTED);
    0
}

/// Takes back a copy counted by [`record_copy`] (charged to `charged`):
/// the page copied was page cache, which a private file mapping copies with
/// or without a fork. It is a file copy instead.
#[inline(always)]
pub fn file_copy_after_all(stats: *mut ProcStats, pending: *mut Pending, order: u32, charged: u64) {
    uncount_copy(stats, pending, order, charged);
    unsafe { add(&raw mut (*stats).file_copies, 1) };
}

/// Takes back a copy counted by [`record_copy`] and charged to `charged`,
/// made in the current thread's fault `pending`.
#[inline(always)]
pub fn uncount_copy(stats: *mut ProcStats, pending: *mut Pending, order: u32, charged: u64) {
    let bytes = 1u64 << (cfg!(page_shift) + order);
    let slot = if (order as usize) < ORDERS { order as usize } else { ORDERS - 1 };
    unsafe {
        add(&raw mut (*stats).copies_by_order[slot], u64::MAX);
        crate::stacks::take_back(pending, (*stats).tgid, bytes);
    }
    if !charge_fork(charged, bytes.wrapping_neg(), u64::MAX) {
        if let Some(p) = COUNTERS.get_ptr_mut(counter::UNATTRIBUTED) {
            add(p, u64::MAX);
        }
    }
}

/// The charge target of a process's address space: its own, or for a
/// `CLONE_VM` child the one of the process whose address space it uses.
#[inline(always)]
pub fn target(stats: *const ProcStats) -> u64 {
    let owner = unsafe { (*stats).mm_owner };
    if owner == 0 {
        return unsafe { (*stats).target };
    }
    PROCS.get_ptr(owner).map_or(0, |o| unsafe { (*o).target })
}

#[inline(always)]
fn charge_fork(target: u64, bytes: u64, copies: u64) -> bool {
    if target == 0 {
        return false;
    }
    let Some(f) = FORKS.get_ptr_mut(target & !CHILD_ROLE) else { return false };
    unsafe {
        if (*f).end_ns != 0 {
            return false; // ended on another CPU a moment ago
        }
        if target & CHILD_ROLE != 0 {
            add(&raw mut (*f).child_copies, copies);
            add(&raw mut (*f).child_bytes, bytes);
        } else {
            add(&raw mut (*f).parent_copies, copies);
            add(&raw mut (*f).parent_bytes, bytes);
        }
    }
    true
}

/// Records a fork of `parent` (counters `pstats`) whose child `child` got
/// its own copy of the address space; returns the child's charge target.
#[inline(always)]
pub fn start_fork(parent: u32, pstats: *mut ProcStats, child: u32) -> Option<u64> {
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let up = unsafe { (*pstats).origin };
    let older = unsafe { (*pstats).newest_fork };
    let record = ForkRecord {
        parent,
        child,
        start_ns,
        end_ns: 0,
        parent_copies: 0,
        child_copies: 0,
        parent_bytes: 0,
        child_bytes: 0,
        older,
        newer: 0,
        up,
        holders: 1,
        end_reason: end_reason::LIVE,
        _pad: 0,
    };
    // The id is the start time made even (the odd bit is CHILD_ROLE); two
    // forks in the same nanosecond on two CPUs take the next id.
    let mut id = start_ns & !CHILD_ROLE;
    if FORKS.insert(id, record, BPF_NOEXIST).is_err() {
        id += 2;
        if FORKS.insert(id, record, BPF_NOEXIST).is_err() {
            count(counter::FORKS_FULL);
            return None;
        }
    }
    // The child holds the pages the parent got from its own fork too.
    if up != 0 {
        if let Some(u) = FORKS.get_ptr_mut(up) {
            unsafe { add(&raw mut (*u).holders, 1) };
        }
    }
    if older != 0 {
        if let Some(o) = FORKS.get_ptr_mut(older) {
            unsafe { (*o).newer = id };
        }
    }
    unsafe {
        (*pstats).newest_fork = id;
        (*pstats).target = id;
    }
    Some(id | CHILD_ROLE)
}

/// A process stops holding the pages of the fork that made it (it exited or
/// exec'd). A fork whose last holder left ends, and stops holding the fork
/// above it, and so on up.
#[inline(always)]
pub fn release(origin: u64, reason: u32) {
    let mut id = origin;
    for _ in 0..MAX_DEPTH {
        if id == 0 {
            return;
        }
        let Some(f) = FORKS.get_ptr_mut(id) else { return };
        let left = unsafe { fetch_sub(&raw mut (*f).holders) } - 1;
        if left != 0 {
            return;
        }
        end_fork(id, f, reason);
        let up = unsafe { (*f).up };
        let _ = FORKS.remove(id);
        id = up;
    }
}

/// Ends the sharing of fork `id`: unlinks it from its parent's live forks,
/// moves the targets that pointed at it, sends its final record.
#[inline(always)]
fn end_fork(id: u64, f: *mut ForkRecord, reason: u32) {
    unsafe {
        if (*f).end_ns != 0 {
            return;
        }
        (*f).end_ns = bpf_ktime_get_ns();
        (*f).end_reason = reason;
        if let Some(p) = PROCS.get_ptr_mut((*f).parent) {
            if (*p).newest_fork != 0 {
                unlink(p, id, f);
            }
        }
        clear_child_target((*f).child, id);
    }
    send_fork(f);
}

/// The child's copies no longer go to fork `id`, if they did (its tgid may
/// belong to a new process by now: the target tells).
#[inline(always)]
fn clear_child_target(child: u32, id: u64) {
    if let Some(c) = PROCS.get_ptr_mut(child) {
        unsafe {
            if (*c).target == id | CHILD_ROLE {
                (*c).target = 0;
            }
        }
    }
}

/// Takes fork `id` out of its parent's list of live forks; the parent's
/// target becomes its newest live fork, else the fork that made it.
#[inline(always)]
fn unlink(p: *mut ProcStats, id: u64, f: *const ForkRecord) {
    unsafe {
        let (older, newer) = ((*f).older, (*f).newer);
        if newer != 0 {
            if let Some(n) = FORKS.get_ptr_mut(newer) {
                (*n).older = older;
            }
        } else if (*p).newest_fork == id {
            (*p).newest_fork = older;
        }
        if older != 0 {
            if let Some(o) = FORKS.get_ptr_mut(older) {
                (*o).newer = newer;
            }
        }
        if (*p).target == id {
            (*p).target = fallback_target(p);
        }
    }
}

/// The most recent live sharing event of a process's address space.
#[inline(always)]
fn fallback_target(p: *const ProcStats) -> u64 {
    let (newest, origin) = unsafe { ((*p).newest_fork, (*p).origin) };
    if newest != 0 {
        return newest;
    }
    match FORKS.get_ptr(origin) {
        Some(f) if origin != 0 && unsafe { (*f).end_ns } == 0 => origin | CHILD_ROLE,
        _ => 0,
    }
}

/// The process left its address space (exit or exec): every live fork it
/// made ends at once, and it stops holding the pages of the fork that made it.
#[inline(always)]
pub fn leave(stats: *mut ProcStats, parent_reason: u32, child_reason: u32) {
    let mut id = unsafe { (*stats).newest_fork };
    unsafe {
        (*stats).newest_fork = 0;
        (*stats).target = 0;
    }
    for _ in 0..MAX_LIVE_FORKS {
        if id == 0 {
            break;
        }
        let Some(f) = FORKS.get_ptr_mut(id) else { break };
        let older = unsafe { (*f).older };
        end_fork(id, f, parent_reason);
        id = older;
    }
    let origin = unsafe { (*stats).origin };
    unsafe { (*stats).origin = 0 };
    release(origin, child_reason);
}

fn send_fork(f: *const ForkRecord) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(counter::RING_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).kind = event_kind::FORK_END;
        (*ev)._pad = 0;
        core::ptr::copy_nonoverlapping(f, &raw mut (*ev).payload.fork, 1);
    }
    entry.submit(0);
}

/// Sends the final counters of an exited process. Returns false when the ring
/// is full, so the caller keeps the entry for the user side to read.
pub fn send_proc(p: *const ProcStats) -> bool {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(counter::RING_FULL);
        return false;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).kind = event_kind::PROC_EXIT;
        (*ev)._pad = 0;
        core::ptr::copy_nonoverlapping(p, &raw mut (*ev).payload.proc, 1);
    }
    entry.submit(0);
    true
}
