//! `sched:sched_process_fork`: a traced process made a new process or thread.
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    kernel::task,
    maps::{new_proc, proc_stats, start_fork},
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
    let Some(cstats) = new_proc(c.tgid, p.tgid) else { return };
    // CLONE_VM without CLONE_THREAD (vfork, posix_spawn) shares the address
    // space itself: its copies are charged like those of the process whose
    // address space it is.
    if c.mm == p.mm {
        let owner = unsafe { (*pstats).mm_owner };
        unsafe { (*cstats).mm_owner = if owner != 0 { owner } else { p.tgid } };
        return;
    }
    let Some(target) = start_fork(p.tgid, pstats, c.tgid) else { return };
    unsafe {
        (*cstats).origin = target & !snapshot_common::CHILD_ROLE;
        (*cstats).target = target;
    }
}
