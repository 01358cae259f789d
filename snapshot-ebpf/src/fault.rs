//! `exceptions:page_fault_user` (x86): every user page fault, at its entry.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use snapshot_common::ProcStats;

use crate::{
    kernel::{current_task_btf, finished_faults_of},
    maps::{NOT_PRESENT, PENDING, Pending, WRITE_PROTECT, add, count, proc_stats},
};

/// x86 page fault error code: the page was present (a protection fault) ...
const PF_PROT: u64 = 1 << 0;
/// ... and the access was a write.
const PF_WRITE: u64 = 1 << 1;
/// x86-64 user addresses lie below the canonical-address hole (57-bit with
/// 5-level paging: this bound covers both).
const USER_END: u64 = 1 << 56;

/// `(unsigned long address, struct pt_regs *regs, unsigned long error_code)`
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> u32 {
    on_fault(ctx.arg(0), ctx.arg(2));
    0
}

/// The same for kernels without BTF tracepoints.
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user_raw(ctx: RawTracePointContext) -> i32 {
    on_fault(ctx.arg(0), ctx.arg(2));
    0
}

/// Faults the kernel takes on user memory (copy_to_user in read(), say):
/// same arguments. Faults on kernel addresses are none of our business.
#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: BtfTracePointContext) -> u32 {
    let address: u64 = ctx.arg(0);
    if address < USER_END {
        on_fault(address, ctx.arg(2));
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel_raw(ctx: RawTracePointContext) -> i32 {
    let address: u64 = ctx.arg(0);
    if address < USER_END {
        on_fault(address, ctx.arg(2));
    }
    0
}

#[inline(always)]
fn on_fault(address: u64, error_code: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(stats) = proc_stats(tgid) else { return };
    unsafe { add(&raw mut (*stats).faults, 1) };
    // Other faults need not end an earlier mark (the kernel counted that
    // fault as finished, which `mm_page_alloc` checks), only settle it.
    let kind = match error_code & (PF_PROT | PF_WRITE) {
        k if k == PF_PROT | PF_WRITE => WRITE_PROTECT,
        PF_WRITE => NOT_PRESENT,
        _ => {
            if let Some(pending) = PENDING.current(false) {
                settle(stats, pending);
            }
            return;
        }
    };
    if kind == WRITE_PROTECT {
        unsafe { add(&raw mut (*stats).wp_faults, 1) };
    }
    // Replaces the mark of an earlier fault that reused its page.
    let task = current_task_btf();
    let Some(pending) = PENDING.of(task, true) else {
        count(snapshot_common::counter::PENDING_FULL);
        return;
    };
    settle(stats, pending);
    unsafe {
        (*pending).address = address;
        (*pending).faults = finished_faults_of(task);
        (*pending).kind = kind;
        (*pending).copied = 0;
        (*pending).last.bytes = 0;
    }
}

/// Counts what the thread's previous fault was, once it is over (its hugetlb
/// copy, if any, was counted at its flush, inside the fault):
/// - a file copy if it was a not-present write that allocated a page and
///   mapped it as anonymous (`MM_ANONPAGES`) without a swap-in: the private
///   copy of a page-cache page (`do_cow_fault`).
#[inline(always)]
pub fn settle(stats: *mut ProcStats, pending: *mut Pending) {
    unsafe {
        if (*pending).flushed != 0 {
            (*pending).flushed = 0;
            (*pending).address = 0;
        }
        if (*pending).kind == NOT_PRESENT && (*pending).copied != 0 {
            if (*pending).anon != 0 && (*pending).swap == 0 {
                add(&raw mut (*stats).file_copies, 1);
            }
            (*pending).copied = 0;
        }
    }
}
