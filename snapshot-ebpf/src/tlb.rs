//! `tlb:tlb_flush`: a CPU flushed TLB entries. A hugetlb write fault that
//! copies unmaps the shared page and flushes it, inside the fault; one that
//! reuses the page only makes it writable, with no flush. Pool pages never
//! pass through the page allocator, so this flush is the copy's only trace.
//! Fires machine-wide (once per copy of any size): for a process that maps no
//! hugetlb page, three loads and no helper call.
//! Known gap (x86): with INVLPGB (AMD, Linux 6.15+) a process on three or
//! more CPUs gets broadcast flushes, which may not reach this tracepoint at
//! all (not seen: no such CPU here).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, tracing::StackIdContext},
};

use crate::{
    kernel::{cfg, current_task_btf, finished_faults_of, maps_hugetlb},
    maps::{PENDING, PROCS, WRITE_PROTECT, record_copy},
    stacks,
};

/// `(int reason, unsigned long pages)`
#[btf_tracepoint(function = "tlb_flush")]
pub fn tlb_flush(ctx: BtfTracePointContext) -> u32 {
    on_flush(&ctx, ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "tlb_flush")]
pub fn tlb_flush_raw(ctx: RawTracePointContext) -> i32 {
    on_flush(&ctx, ctx.arg(0));
    0
}

#[inline(always)]
fn on_flush<C: StackIdContext>(ctx: &C, reason: u64) {
    // Only a flush the current task asked for on its own mm: a shootdown
    // IPI or a task switch runs in whatever task the CPU was running. With
    // other CPUs on the mm, the task first traces sending its IPIs: an IPI
    // from another thread's flush can do this flush's work before the local
    // one, which then finds its TLB up to date and traces nothing.
    let reason = reason as u32;
    if reason != cfg!(tlb_local_mm_shootdown) && reason != cfg!(tlb_remote_send_ipi) {
        return;
    }
    // Three loads, before the task-storage lookup: most flushes are of
    // processes with no hugetlb page, where no copy can hide in a flush.
    let task = current_task_btf();
    if !maps_hugetlb(task) {
        return;
    }
    let Some(pending) = PENDING.of(task, false) else { return };
    let order = cfg!(huge_order);
    let bytes = 1u64 << (cfg!(page_shift) + order);
    unsafe {
        // A 4 KiB copy allocated (and cleared `address`) before its flush.
        if (*pending).address == 0 || (*pending).kind != WRITE_PROTECT || (*pending).flushed != 0 {
            return;
        }
        if finished_faults_of(task) != (*pending).faults {
            return;
        }
        // Charged now, inside the fault, while the fork whose sharing made the
        // copy surely still lives (counted later, a last copy could find it
        // ended). A 4 KiB allocation later in the same fault (a THP split)
        // takes it back.
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let Some(stats) = PROCS.get_ptr_mut(tgid) else { return };
        (*pending).flushed = 1;
        (*pending).charged = record_copy(stats, order);
        stacks::on_copy(ctx, pending, tgid, (*pending).address, bytes);
    }
}
