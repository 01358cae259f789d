//! `sched:sched_process_exit`: a thread exits; with the last one, the process.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use snapshot_common::end_reason;

use crate::{
    kernel::cfg,
    fault::settle,
    maps::{PENDING, PROCS, leave, send_proc},
};

/// `(struct task_struct *p, bool group_dead)`; before Linux 6.16 only `p`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let group_dead: u64 = if cfg!(exit_has_group_dead) != 0 { ctx.arg(1) } else { 2 };
    on_exit(group_dead);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_raw(ctx: RawTracePointContext) -> i32 {
    let group_dead: u64 = if cfg!(exit_has_group_dead) != 0 { ctx.arg(1) } else { 2 };
    on_exit(group_dead);
    0
}

/// `group_dead`: 0 or 1 from the kernel, 2 when the kernel does not say.
#[inline(always)]
fn on_exit(group_dead: u64) {
    // The task's PENDING storage goes with the task.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(stats) = PROCS.get_ptr_mut(tgid) else { return };
    // The thread's last fault may have been a hugetlb copy.
    if let Some(pending) = PENDING.current(false) {
        settle(stats, pending);
    }
    // Without the argument, the leader's exit stands for the process's.
    let last = match group_dead {
        2 => pid_tgid as u32 == tgid,
        g => g & 0xff != 0,
    };
    if !last {
        return;
    }
    leave(stats, end_reason::PARENT_EXIT, end_reason::CHILD_EXIT);
    if send_proc(stats) {
        let _ = PROCS.remove(tgid);
    }
}
