//! `kmem:mm_page_alloc`: every page the page allocator hands out.
//! It fires machine-wide, so the common path is a test of the gfp flags, then
//! one task-storage lookup that finds nothing.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, tracing::StackIdContext},
};

use crate::{
    kernel::{cfg, current_task_btf, finished_faults_of},
    maps::{NOT_PRESENT, PENDING, PROCS, add, record_copy, uncount_copy},
    stacks,
};

/// `(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)`
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: BtfTracePointContext) -> u32 {
    on_alloc(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn mm_page_alloc_raw(ctx: RawTracePointContext) -> i32 {
    on_alloc(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[inline(always)]
fn on_alloc<C: StackIdContext>(ctx: &C, page: u64, order: u64, gfp: u64) {
    // The flags first: most allocations of the machine (slab, page tables,
    // page cache) end here, before any helper call.
    if page == 0 {
        return;
    }
    // A user page is highmem + movable (GFP_HIGHUSER_MOVABLE); slab pages and
    // page tables the fault may also allocate are neither. Page-cache pages
    // for write() (__GFP_WRITE) and readahead (__GFP_NORETRY), which a
    // syscall may allocate after a kernel-mode fault, are never the copy
    // (the fault count below tells that too; this test is cheaper).
    let user = (1u64 << cfg!(gfp_highmem)) | (1u64 << cfg!(gfp_movable));
    let page_cache = (1u64 << cfg!(gfp_write)) | (1u64 << cfg!(gfp_noretry));
    if gfp & user != user || gfp & page_cache != 0 {
        return;
    }
    let task = current_task_btf();
    let Some(pending) = PENDING.of(task, false) else { return };
    if unsafe { (*pending).address } == 0 {
        return;
    }
    let zero = gfp & (1u64 << cfg!(gfp_zero)) != 0;
    let split;
    let address = unsafe { (*pending).address };
    unsafe {
        let done = finished_faults_of(task) != (*pending).faults;
        // The fault flushed, counted a hugetlb copy, and still allocates: a THP split.
        split = !done && (*pending).flushed != 0;
        (*pending).address = 0;
        (*pending).flushed = 0;
        if done {
            return; // the marked fault is over: this page is not its copy
        }
        if (*pending).kind == NOT_PRESENT {
            // The first page a not-present write allocates: a fresh zeroed
            // page, a swap-in, or the copy of a file page (`rss_stat` and
            // `settle` tell which once the fault is over).
            if !zero && order == 0 {
                (*pending).copied = 1;
                (*pending).anon = 0;
                (*pending).swap = 0;
            }
            return;
        }
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(stats) = PROCS.get_ptr_mut(tgid) else { return };
    if split {
        uncount_copy(stats, pending, cfg!(huge_order), unsafe { (*pending).charged });
    }
    if zero {
        // The write replaced the shared zero page: a fill, not a copy.
        unsafe { add(&raw mut (*stats).zero_fills, 1) };
        return;
    }
    let charged = record_copy(stats, order as u32);
    stacks::on_copy(ctx, pending, tgid, address, 1 << (cfg!(page_shift) + order as u32));
    // Kept until the fault is over: `rss_stat` may show the page was page cache.
    unsafe {
        (*pending).copied = order as u32 + 1;
        (*pending).charged = charged;
    }
}
