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
//! - The pending mark ends at the thread's next fault or syscall, so a page a
//!   later syscall allocates is not taken for a copy. Kernel-mode faults on
//!   user addresses (`page_fault_kernel`: copy_to_user into a shared buffer)
//!   copy too, and are watched like user ones.
//! - hugetlb pages come from a pool, not the page allocator: a write fault in a
//!   `VM_HUGETLB` mapping copies while a fork relative still shares it.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod alloc;
mod exec;
mod exit;
mod fault;
mod fork;
mod kernel;
mod maps;
mod probe;
mod syscall;
mod task_storage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
