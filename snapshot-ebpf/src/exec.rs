//! `sched:sched_process_exec`: a process replaced its address space.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use snapshot_common::end_reason;

use crate::{
    kernel::cfg,
    maps::{PROCS, leave, new_proc},
};

/// `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, in `p`.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> u32 {
    on_exec();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(_ctx: RawTracePointContext) -> i32 {
    on_exec();
    0
}

#[inline(always)]
fn on_exec() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The comm is already the new program's here.
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let stats = match PROCS.get_ptr_mut(tgid) {
        Some(s) => s,
        None if cfg!(match_comm) != 0 && comm == cfg!(comm) => {
            let Some(s) = new_proc(tgid, 0) else { return };
            s
        }
        None => return,
    };
    unsafe {
        (*stats).comm = comm;
        // A CLONE_VM child now has an address space of its own.
        (*stats).mm_owner = 0;
    }
    // The old address space is gone: this process no longer holds its
    // parent's pages, nor shares with its children.
    leave(stats, end_reason::PARENT_EXEC, end_reason::CHILD_EXEC);
}
