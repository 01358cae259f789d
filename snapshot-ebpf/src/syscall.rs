//! `raw_syscalls:sys_enter`: a thread entering a syscall has finished its
//! last page fault. A write fault still pending then copied nothing (the page
//! was reused), and must not claim a page this syscall allocates (page cache
//! for a write(), say). Fires machine-wide: the common path is one failed
//! hash lookup.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
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
    let pid_tgid = bpf_get_current_pid_tgid();
    if unsafe { PENDING.get(pid_tgid) }.is_some() {
        let _ = PENDING.remove(pid_tgid);
    }
}
