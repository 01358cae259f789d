//! Maps, and the bookkeeping every probe shares: finding a process's counters,
//! recording a copy against the fork that caused it, ending a fork.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{btf_map, map},
    maps::{Array, HashMap, RingBuf},
};
use snapshot_common::{Event, ForkRecord, ORDERS, ProcStats, counter, event_kind};

use crate::{kernel::cfg, task_storage::TaskStorage};

/// Traced processes by tgid. An entry is removed when its process exits
/// (after its final record goes to `EVENTS`), so the map stays bounded.
#[map]
pub static PROCS: HashMap<u32, ProcStats> = HashMap::with_max_entries(32768, 0);

/// Forks of traced processes, by child tgid; removed when the child exits.
#[map]
pub static FORKS: HashMap<u32, ForkRecord> = HashMap::with_max_entries(32768, 0);

/// Per thread: the address of its write fault still waiting for a copy, or 0.
/// Task storage, not a hash: `mm_page_alloc` and `sys_enter` check it on
/// every allocation and syscall of the machine, and for a task that never
/// faulted under tracing that check is one pointer test.
#[btf_map]
pub static PENDING: TaskStorage<u64> = TaskStorage::new();

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

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        add(p, 1);
    }
}

/// Counters of a traced process; under `--all`, created on first sight.
#[inline(always)]
pub fn proc_stats(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        return Some(p);
    }
    if cfg!(trace_all) == 0 || tgid == 0 {
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
/// newest live fork that shares it.
#[inline(always)]
pub fn record_copy(tgid: u32, stats: *mut ProcStats, order: u32) {
    let bytes = 1u64 << (cfg!(page_shift) + order);
    let slot = if (order as usize) < ORDERS { order as usize } else { ORDERS - 1 };
    unsafe {
        add(&raw mut (*stats).cow_copies, 1);
        add(&raw mut (*stats).cow_bytes, bytes);
        add(&raw mut (*stats).copies_by_order[slot], 1);
    }
    if !charge_fork(tgid, stats, bytes) {
        count(counter::UNATTRIBUTED);
    }
}

/// The fork a copy belongs to: the process's own fork while it still shares
/// with its parent (true: the copy is the child's), else the newest live fork
/// it made (false: the parent's), else none.
#[inline(always)]
pub fn live_fork(tgid: u32, stats: *mut ProcStats) -> Option<(*mut ForkRecord, bool)> {
    if let Some(f) = FORKS.get_ptr_mut(tgid) {
        if unsafe { (*f).end_ns } == 0 {
            return Some((f, true));
        }
    }
    let mut key = unsafe { (*stats).newest_fork };
    for _ in 0..8 {
        if key == 0 {
            break;
        }
        let f = FORKS.get_ptr_mut(key)?;
        unsafe {
            if (*f).end_ns == 0 && (*f).parent == tgid {
                return Some((f, false));
            }
            key = (*f).prev;
        }
    }
    None
}

#[inline(always)]
fn charge_fork(tgid: u32, stats: *mut ProcStats, bytes: u64) -> bool {
    let Some((f, is_child)) = live_fork(tgid, stats) else { return false };
    unsafe {
        if is_child {
            add(&raw mut (*f).child_copies, 1);
            add(&raw mut (*f).child_bytes, bytes);
        } else {
            add(&raw mut (*f).parent_copies, 1);
            add(&raw mut (*f).parent_bytes, bytes);
        }
    }
    true
}

/// Marks the fork of `child` ended and sends its final record.
#[inline(always)]
pub fn end_fork(child: u32, reason: u32) {
    let Some(f) = FORKS.get_ptr_mut(child) else { return };
    unsafe {
        if (*f).end_ns != 0 {
            return;
        }
        (*f).end_ns = bpf_ktime_get_ns();
        (*f).end_reason = reason;
    }
    send_fork(f);
}

/// Ends every live fork `parent` made (it exited or exec'd: its children
/// are now the only owners of the pages they shared).
#[inline(always)]
pub fn end_forks_of(parent: u32, stats: *mut ProcStats, reason: u32) {
    let mut key = unsafe { (*stats).newest_fork };
    for _ in 0..16 {
        if key == 0 {
            break;
        }
        let Some(f) = FORKS.get_ptr(key) else { break };
        let (owner, prev) = unsafe { ((*f).parent, (*f).prev) };
        if owner == parent {
            end_fork(key, reason);
        }
        key = prev;
    }
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
