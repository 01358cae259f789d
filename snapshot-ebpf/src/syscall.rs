//! `raw_syscalls:sys_enter`: a thread entering a syscall has finished its
//! last page fault. A write fault still pending then copied nothing (the page
//! was reused), and must not claim a page this syscall allocates (page cache
//! for a write(), say). Fires machine-wide: for a task that never faulted
//! under tracing, one pointer test.
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::maps::PENDING;

/// `(struct pt_regs *regs, long id)`
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(_ctx: BtfTracePointContext) -> u32 {
    on_syscall();
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(_ctx: RawTracePointContext) -> i32 {
    on_syscall();
    0
}

#[inline(always)]
fn on_syscall() {
    if let Some(pending) = PENDING.current(false) {
        unsafe { *pending = 0 };
    }
}
