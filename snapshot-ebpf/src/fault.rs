//! `exceptions:page_fault_user` (x86): every user page fault, at its entry.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf, generated::bpf_find_vma,
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use snapshot_common::ProcStats;

use crate::{
    kernel::{cfg, finished_faults, read},
    maps::{PENDING, add, count, proc_stats, record_copy, target},
};

/// x86 page fault error code: the page was present (a protection fault) ...
const PF_PROT: u64 = 1 << 0;
/// ... and the access was a write.
const PF_WRITE: u64 = 1 << 1;
/// x86-64 user addresses lie below the canonical-address hole (57-bit with
/// 5-level paging: this bound covers both).
const USER_END: u64 = 1 << 56;
/// `vm_flags` bit, unchanged since Linux 2.6.
const VM_HUGETLB: u64 = 0x0040_0000;

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
    // Other faults need not end an earlier mark: that fault was counted as
    // finished, which `mm_page_alloc` checks.
    if error_code & (PF_PROT | PF_WRITE) != PF_PROT | PF_WRITE {
        return;
    }
    unsafe { add(&raw mut (*stats).wp_faults, 1) };
    if maps_hugetlb() && hugetlb_fault(stats, address) {
        return;
    }
    // Replaces the mark of an earlier fault that reused its page.
    match PENDING.current(true) {
        Some(pending) => unsafe {
            (*pending).address = address;
            (*pending).faults = finished_faults();
        },
        None => count(snapshot_common::counter::PENDING_FULL),
    }
}

/// Does the current process map any hugetlb page (`mm->hugetlb_usage`)?
/// Only then is the VMA looked up: `bpf_find_vma` costs a tree walk and an
/// mmap_lock trylock on every write fault, and other copies need no VMA.
#[inline(always)]
fn maps_hugetlb() -> bool {
    let offset = cfg!(mm_hugetlb_usage);
    if offset == 0 {
        return false; // a kernel without hugetlb
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Some(mm) = read::<*const u8>(task, cfg!(task_mm)) else { return false };
    read::<i64>(mm, offset).is_some_and(|pages| pages > 0)
}

/// Handles a write fault in a hugetlb mapping; false for other mappings.
#[inline(always)]
fn hugetlb_fault(stats: *mut ProcStats, address: u64) -> bool {
    let mut vma = Vma::default();
    let found = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            address,
            read_vma as *mut c_void,
            &raw mut vma as *mut c_void,
            0,
        )
    } == 0;
    if !found {
        // mmap_lock was busy: left to the allocation check, which sees no hugetlb copy.
        unsafe { add(&raw mut (*stats).vma_misses, 1) };
        return false;
    }
    if vma.flags & VM_HUGETLB == 0 {
        return false;
    }
    // Pool pages: no allocation to observe. The kernel copies unless it is
    // the only mapper, i.e. unless no fork relative shares the page.
    if target(stats) != 0 {
        record_copy(stats, vma.huge_order);
    }
    true
}

#[derive(Default)]
#[repr(C)]
struct Vma {
    flags: u64,
    /// Page order of a hugetlb mapping (its hstate's order).
    huge_order: u32,
}

/// `bpf_find_vma` callback: copies what the fault needs out of the VMA.
extern "C" fn read_vma(_task: *mut c_void, vma: *mut c_void, out: *mut Vma) -> i64 {
    let vma = vma as *const u8;
    let flags: u64 = read(vma, cfg!(vma_flags)).unwrap_or(0);
    let huge_order = if flags & VM_HUGETLB != 0 { hugetlb_order(vma) } else { 0 };
    unsafe {
        (*out).flags = flags;
        (*out).huge_order = huge_order;
    }
    0
}

/// vma->vm_file->f_inode->i_sb->s_fs_info (hugetlbfs_sb_info)->hstate->order.
#[inline(always)]
fn hugetlb_order(vma: *const u8) -> u32 {
    let order = || -> Option<u32> {
        let file: *const u8 = read(vma, cfg!(vma_file))?;
        let inode: *const u8 = read(file, cfg!(file_inode))?;
        let sb: *const u8 = read(inode, cfg!(inode_sb))?;
        let info: *const u8 = read(sb, cfg!(sb_fs_info))?;
        let hstate: *const u8 = read(info, cfg!(hugetlbfs_sb_hstate))?;
        read(hstate, cfg!(hstate_order))
    };
    // Unknown: assume the x86-64 default huge page, 2 MiB (order 9).
    order().unwrap_or(9)
}
