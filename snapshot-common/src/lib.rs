//! Types shared by the eBPF programs and the user side. Every type is `#[repr(C)]`
//! with explicit padding so both sides agree on the layout byte for byte.
#![no_std]

/// Page orders tracked per copy: order 0 is one base page (4 KiB on x86-64),
/// 9 a 2 MiB huge page, 18 a 1 GiB one.
pub const ORDERS: usize = 19;

/// Counters for one traced process (thread group), kept in the `PROCS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub tgid: u32,
    pub ppid: u32,
    pub comm: [u8; 16],
    /// Where a copy in this address space is charged: a fork id (its key in
    /// `FORKS`) with [`CHILD_ROLE`] set when this process is that fork's child;
    /// 0 when nothing is shared. Updated at fork, exit and exec, so the copy
    /// path reads it in one lookup.
    pub target: u64,
    /// The fork that made this process (while this process holds its pages), or 0.
    pub origin: u64,
    /// The newest live fork this process made: head of its list of live forks.
    pub newest_fork: u64,
    /// For a `CLONE_VM` child (vfork, posix_spawn): the tgid whose address
    /// space it uses, whose `target` its copies go to; else 0.
    pub mm_owner: u32,
    pub _pad: u32,
    /// Every user-mode page fault.
    pub faults: u64,
    /// Writes to a present page: the COW candidates.
    pub wp_faults: u64,
    /// Copies of page-cache pages in private file mappings: made with or
    /// without a fork, so never charged to one and not in `cow_copies`.
    pub file_copies: u64,
    /// Writes that replaced the shared zero page with a fresh zeroed page.
    pub zero_fills: u64,
    /// Kept for the report's layout: always 0 since no mapping is looked up.
    pub vma_misses: u64,
    /// Copies by page order (see [`ORDERS`]): the pages the kernel copied
    /// (a new page allocated, or a hugetlb page flushed, inside the write
    /// fault). The totals are summed here, not kept by the probes: two fewer
    /// atomic adds per copy.
    pub copies_by_order: [u64; ORDERS],
}

impl ProcStats {
    /// Pages copied, of any size. A copy taken back (it was page cache) is
    /// added as -1 (wrapping) to its order, so the sum wraps too.
    pub fn cow_copies(&self) -> u64 {
        self.copies_by_order
            .iter()
            .fold(0, |sum, &n| sum.wrapping_add(n))
    }

    /// Bytes copied, with base pages of `1 << page_shift` bytes.
    pub fn cow_bytes(&self, page_shift: u32) -> u64 {
        (0..ORDERS).fold(0, |sum, o| {
            sum.wrapping_add(self.copies_by_order[o] << (page_shift as usize + o))
        })
    }

    /// Zeroed counters for a process to start tracing.
    pub const fn new(tgid: u32, ppid: u32, comm: [u8; 16]) -> Self {
        ProcStats {
            tgid,
            ppid,
            comm,
            target: 0,
            origin: 0,
            newest_fork: 0,
            mm_owner: 0,
            _pad: 0,
            faults: 0,
            wp_faults: 0,
            file_copies: 0,
            zero_fills: 0,
            vma_misses: 0,
            copies_by_order: [0; ORDERS],
        }
    }
}

/// Set in [`ProcStats::target`] when the process is the fork's child. Fork
/// ids (their `start_ns`, made even) never have it.
pub const CHILD_ROLE: u64 = 1;

/// One fork of a traced process, kept in `FORKS` under its id (its start time,
/// made even and unique) while any process still holds the pages it shared.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub parent: u32,
    pub child: u32,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) of the fork.
    pub start_ns: u64,
    /// When the sharing ended; 0 while it lasts.
    pub end_ns: u64,
    pub parent_copies: u64,
    pub child_copies: u64,
    pub parent_bytes: u64,
    pub child_bytes: u64,
    /// The parent's next older and next newer live forks (ids), or 0.
    pub older: u64,
    pub newer: u64,
    /// The fork that made the parent, when the parent still held its pages:
    /// this fork's child holds those pages too.
    pub up: u64,
    /// Live processes holding this fork's pages: its child while it neither
    /// exited nor exec'd, plus one per fork of the child whose holders are not
    /// all gone. The sharing ends when this reaches 0 (or the parent leaves).
    pub holders: u64,
    pub end_reason: u32,
    pub _pad: u32,
}

/// Why a fork's sharing ended.
pub mod end_reason {
    pub const LIVE: u32 = 0;
    pub const CHILD_EXIT: u32 = 1;
    pub const CHILD_EXEC: u32 = 2;
    pub const PARENT_EXIT: u32 = 3;
    pub const PARENT_EXEC: u32 = 4;
}

/// Load-time settings handed to the programs as one global (`CONFIG`). Offsets
/// come from the running kernel's BTF, since aya-ebpf has no CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Trace every process, not only those in `PROCS`.
    pub trace_all: u32,
    /// Non-zero when `comm` below selects processes by name at exec.
    pub match_comm: u32,
    pub comm: [u8; 16],
    /// `sched_process_exit` has a `group_dead` argument (Linux 6.16+).
    pub exit_has_group_dead: u32,
    pub page_shift: u32,
    /// gfp bits of a user page allocation (___GFP_*_BIT from BTF).
    pub gfp_highmem: u32,
    pub gfp_movable: u32,
    pub gfp_zero: u32,
    pub gfp_write: u32,
    pub gfp_noretry: u32,
    pub task_tgid: u32,
    pub task_mm: u32,
    /// `task_struct.min_flt`; `maj_flt` follows it.
    pub task_min_flt: u32,
    /// 0 when the kernel has no hugetlb.
    pub mm_hugetlb_usage: u32,
    /// Page order of the default hugetlb page size (9: 2 MiB).
    pub huge_order: u32,
    /// `TLB_LOCAL_MM_SHOOTDOWN` of `enum tlb_flush_reason`.
    pub tlb_local_mm_shootdown: u32,
    /// `TLB_REMOTE_SEND_IPI`: traced by the flushing task itself when other
    /// CPUs run its mm, before any of them (or it) flushes.
    pub tlb_remote_send_ipi: u32,
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SWAPENTS`, `MM_SHMEMPAGES` of the
    /// mm counters `rss_stat` reports.
    pub mm_filepages: u32,
    pub mm_anonpages: u32,
    pub mm_swapents: u32,
    pub mm_shmempages: u32,
    /// Non-zero with `--stacks`: record each copy's user stack and address.
    pub stacks: u32,
    /// `task_struct.flags`: PF_EXITING marks a task inside do_exit.
    pub task_flags: u32,
}

/// Indexes into the `COUNTERS` array: whole-run health counters.
pub mod counter {
    /// A new process could not be added: `PROCS` was full.
    pub const PROCS_FULL: u32 = 0;
    /// A fork could not be recorded: `FORKS` was full.
    pub const FORKS_FULL: u32 = 1;
    /// A write fault could not be remembered: no memory for `PENDING` task storage.
    pub const PENDING_FULL: u32 = 2;
    /// A final record of an exited process or ended fork found the ring buffer full.
    pub const RING_FULL: u32 = 3;
    /// Copies in processes with no live fork (private file pages, for one).
    pub const UNATTRIBUTED: u32 = 4;
    /// `--stacks`: a copy whose stack could not be kept (stack or count map full).
    pub const STACKS_DROPPED: u32 = 5;
    /// `--stacks`: a copy whose address found the address ring full.
    pub const ADDRESSES_DROPPED: u32 = 6;
    pub const LEN: u32 = 7;
}

/// Tag of a record sent on the `EVENTS` ring buffer.
pub mod event_kind {
    pub const PROC_EXIT: u32 = 1;
    pub const FORK_END: u32 = 2;
}

/// Final record of an exited process or an ended fork. The user side keeps
/// these, because the kernel maps drop them to stay bounded.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub kind: u32,
    pub _pad: u32,
    pub payload: EventPayload,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union EventPayload {
    pub proc: ProcStats,
    pub fork: ForkRecord,
}

/// `--stacks`: copies counted per process and user stack (`STACK_COPIES` key).
/// `stack_id` is the id in the `STACKS` map, or negative when the kernel
/// could not walk the stack (the error).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub stack_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackCount {
    pub copies: u64,
    pub bytes: u64,
}

/// `--stacks`: one copy's address, sent on the `COPY_ADDRS` ring so the user
/// side can find its mapping while the process lives. A copy taken back
/// (the page was page cache after all) is sent again with `copies` = -1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CopyAddr {
    pub tgid: u32,
    pub copies: i32,
    pub address: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers without padding.
    unsafe impl aya::Pod for super::StackKey {}
    unsafe impl aya::Pod for super::StackCount {}
    // SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding.
    unsafe impl aya::Pod for super::ProcStats {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::Config {}
}
