//! `sched:sched_process_fork`: a traced process made a new process or thread.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use snapshot_common::{ForkRecord, counter};

use crate::{
    kernel::task,
    maps::{FORKS, count, new_proc, proc_stats},
};

/// `(struct task_struct *parent, struct task_struct *child)`, in the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    on_fork(ctx.arg(0), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork_raw(ctx: RawTracePointContext) -> i32 {
    on_fork(ctx.arg(0), ctx.arg(1));
    0
}

#[inline(always)]
fn on_fork(parent: *const u8, child: *const u8) {
    let (Some(p), Some(c)) = (task(parent), task(child)) else { return };
    // A new thread shares the thread group: not a fork.
    if c.tgid == p.tgid || p.mm == 0 {
        return;
    }
    let Some(pstats) = proc_stats(p.tgid) else { return };
    if new_proc(c.tgid, p.tgid).is_none() {
        return;
    }
    // CLONE_VM without CLONE_THREAD (vfork, posix_spawn) shares the address
    // space itself: nothing is copied on write.
    if c.mm == p.mm {
        return;
    }
    let record = ForkRecord {
        parent: p.tgid,
        child: c.tgid,
        start_ns: unsafe { bpf_ktime_get_ns() },
        end_ns: 0,
        parent_copies: 0,
        child_copies: 0,
        parent_bytes: 0,
        child_bytes: 0,
        prev: unsafe { (*pstats).newest_fork },
        end_reason: 0,
    };
    if FORKS.insert(c.tgid, record, 0).is_err() {
        count(counter::FORKS_FULL);
        return;
    }
    unsafe { (*pstats).newest_fork = c.tgid };
}
