//! `kmem:rss_stat`: one of a process's page counters moved. Inside a write
//! fault that copied a page, `MM_FILEPAGES` or `MM_SHMEMPAGES` moving means the
//! page copied was page cache (a private file or memfd mapping): a file copy,
//! which happens with or without a fork, not a COW copy. Inside a not-present
//! write, `MM_ANONPAGES` and `MM_SWAPENTS` tell a file copy from a swap-in.
//! Fires machine-wide: for a task with no pending write fault, one pointer test.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    kernel::{cfg, current_task_btf, finished_faults_of},
    maps::{PENDING, PROCS, WRITE_PROTECT, file_copy_after_all},
};

/// `(struct mm_struct *mm, int member)`
#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat(ctx: BtfTracePointContext) -> u32 {
    on_rss(ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn rss_stat_raw(ctx: RawTracePointContext) -> i32 {
    on_rss(ctx.arg(1));
    0
}

#[inline(always)]
fn on_rss(member: u64) {
    let task = current_task_btf();
    let Some(pending) = PENDING.of(task, false) else { return };
    if unsafe { (*pending).copied } == 0 || finished_faults_of(task) != unsafe { (*pending).faults } {
        return;
    }
    let member = member as u32;
    let (anon, swap) = (cfg!(mm_anonpages), cfg!(mm_swapents));
    let (file, shmem) = (cfg!(mm_filepages), cfg!(mm_shmempages));
    unsafe {
        if (*pending).kind != WRITE_PROTECT {
            if member == anon {
                (*pending).anon = 1;
            } else if member == swap {
                (*pending).swap = 1;
            }
            return;
        }
        if member != file && member != shmem {
            return;
        }
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if let Some(stats) = PROCS.get_ptr_mut(tgid) {
            file_copy_after_all(stats, pending, (*pending).copied - 1, (*pending).charged);
        }
        (*pending).copied = 0;
    }
}
