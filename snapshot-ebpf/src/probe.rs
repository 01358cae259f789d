//! Not a tracer: an empty fentry program that `snapshot check` loads to learn
//! whether this kernel has BPF trampolines (fentry/fexit).
use aya_ebpf::{macros::fentry, programs::FEntryContext};

#[fentry(function = "do_wp_page")]
pub fn fentry_probe(_ctx: FEntryContext) -> u32 {
    0
}
