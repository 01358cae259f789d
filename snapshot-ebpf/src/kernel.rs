//! Reads of kernel memory at offsets the user side found in the running
//! kernel's BTF (aya-ebpf has no CO-RE relocations).
use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel};
use snapshot_common::Config;

/// Filled in at load time by `EbpfLoader::set_global("CONFIG", ..)`.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    trace_all: 0,
    match_comm: 0,
    comm: [0; 16],
    exit_has_group_dead: 0,
    page_shift: 12,
    gfp_highmem: 0,
    gfp_movable: 0,
    gfp_zero: 0,
    gfp_write: 0,
    gfp_noretry: 0,
    task_tgid: 0,
    task_mm: 0,
    task_min_flt: 0,
    mm_hugetlb_usage: 0,
    huge_order: 9,
    tlb_local_mm_shootdown: 3,
    tlb_remote_send_ipi: 4,
    mm_filepages: 0,
    mm_anonpages: 1,
    mm_swapents: 2,
    mm_shmempages: 3,
    stacks: 0,
    task_flags: 0,
};

/// One field of the config. The volatile read stops the compiler from folding
/// the zero defaults above into the code.
macro_rules! cfg_get {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::kernel::config().$field) }
    };
}
pub(crate) use cfg_get as cfg;

pub fn config() -> &'static Config {
    &CONFIG
}

/// `*(T *)(base + offset)`, or `None` when the read faults.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// The tgid and mm of a `task_struct`.
pub struct Task {
    pub tgid: u32,
    pub mm: u64,
}

pub fn task(task: *const u8) -> Option<Task> {
    Some(Task {
        tgid: read(task, cfg!(task_tgid))?,
        mm: read(task, cfg!(task_mm))?,
    })
}

/// The current task (for [`read`]).
#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { aya_ebpf::helpers::bpf_get_current_task() as *const u8 }
}

/// PF_EXITING of `task_struct.flags` (include/linux/sched.h), set as do_exit starts.
const PF_EXITING: u32 = 0x4;

/// Whether the current thread is exiting. Its process's exit may already have
/// been recorded while mm_release still writes to user memory (the
/// clear_child_tid store can be a copy-on-write fault).
#[inline(always)]
pub fn current_exiting() -> bool {
    let task = current_task();
    read::<u32>(task, cfg!(task_flags)).is_some_and(|flags| flags & PF_EXITING != 0)
}

/// The current task as a BTF pointer. The verifier checks each read through
/// it against the kernel's own layout (the offsets come from `CONFIG`, frozen
/// read-only data whose values it sees), so a field read is one load, not a
/// `bpf_probe_read_kernel` call: the copy path reads three such fields.
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// `*(T *)(base + offset)` through a BTF pointer. A fault (a NULL `mm` of a
/// kernel thread) reads 0: the JIT guards such loads.
#[inline(always)]
fn field<T>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) }
}

/// Faults `task` (a BTF pointer) finished: `min_flt + maj_flt`, which the
/// kernel bumps at the end of each fault it handled (`mm_account_fault`).
#[inline(always)]
pub fn finished_faults_of(task: *const u8) -> u64 {
    // maj_flt follows min_flt (the loader checks).
    let offset = cfg!(task_min_flt);
    field::<u64>(task, offset).wrapping_add(field::<u64>(task, offset + 8))
}

/// Does `task`'s process (a BTF pointer) map any hugetlb page
/// (`mm->hugetlb_usage`)? Only then can a write fault copy without allocating.
#[inline(always)]
pub fn maps_hugetlb(task: *const u8) -> bool {
    let offset = cfg!(mm_hugetlb_usage);
    if offset == 0 {
        return false; // a kernel without hugetlb
    }
    let mm: *const u8 = field(task, cfg!(task_mm));
    !mm.is_null() && field::<i64>(mm, offset) > 0
}
