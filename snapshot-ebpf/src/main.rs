//! eBPF side of `snapshot`: counts copy-on-write copies per process, per fork
//! and per page size. One module per probe; `FEATURES` in the user crate's
//! `kernel` module lists which kernel feature each one needs.
//!
//! How a copy is recognised (Linux x86-64, checked on 6.18):
//! - `page_fault_user` fires at the entry of every user fault. A write to a
//!   present page (`error_code & 3 == 3`) is a write-protect fault: a copy
//!   candidate, not a copy. The kernel may reuse the page (nobody else maps it).
//! - When it does copy (`wp_page_copy`, inlined into `do_wp_page`), it
//!   allocates the new page from the page allocator inside that fault, which
//!   fires `mm_page_alloc` on the same thread with user-page gfp flags. So a
//!   copy is a pending write fault followed by such an allocation.
//! - The pending mark ends with its fault: it keeps the thread's count of
//!   finished faults, which the kernel bumps when a fault is done, so a page
//!   allocated after the fault is never taken for its copy. Kernel-mode faults on
//!   user addresses (`page_fault_kernel`: copy_to_user into a shared buffer)
//!   copy too, and are watched like user ones.
//! - hugetlb pages come from a pool, not the page allocator: a write fault in
//!   a process that maps hugetlb pages copies when it flushes the TLB
//!   (`tlb_flush`) and allocates nothing; it is counted when the fault is over.
//! - Each copy is charged to one fork, kept in the process record
//!   (`ProcStats::target`) and moved at fork, exit and exec.
#![no_std]
#![no_main]
#![feature(core_intrinsics, asm_experimental_arch)]
#![allow(internal_features)]

mod alloc;
mod exec;
mod exit;
mod fault;
mod fork;
mod kernel;
mod maps;
mod probe;
mod rss;
mod stacks;
mod task_storage;
mod tlb;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
