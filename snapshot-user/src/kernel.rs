//! What the running kernel offers: BTF field offsets for the eBPF programs,
//! capabilities, and the features `snapshot check` reports.
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use fallible_iterator::FallibleIterator as _;
use snapshot_common::Config;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel tracepoints the programs attach to, the eBPF module holding
/// each, and what it needs from the kernel. Each is attached as a BTF
/// tracepoint (tp_btf, Linux 5.5+) or, failing that, a raw tracepoint (4.17+);
/// neither needs tracefs. They attach in this order: the exit probe, which
/// removes a process's entry, before any probe that makes one, so no process
/// gets an entry whose exit goes unseen (a leak under `--all`). Both paths
/// also need kernel BTF and Linux 5.11+: the copy path keeps its per-thread
/// mark in task-local storage and reads task fields through
/// `bpf_get_current_task_btf` (offsets from this module's `config`).
pub const PROBES: &[(&str, &str, &str)] = &[
    ("sched_process_exit", "exit.rs", "sched tracepoint; group_dead argument (6.16+) when present"),
    ("page_fault_user", "fault.rs", "x86 exceptions tracepoint"),
    ("page_fault_kernel", "fault.rs", "x86 exceptions tracepoint (kernel-mode faults on user memory)"),
    ("mm_page_alloc", "alloc.rs", "kmem tracepoint"),
    ("sched_process_fork", "fork.rs", "sched tracepoint"),
    ("sched_process_exec", "exec.rs", "sched tracepoint"),
    ("tlb_flush", "tlb.rs", "x86 tlb tracepoint: a hugetlb write fault that copies flushes"),
    ("rss_stat", "rss.rs", "kmem tracepoint: a copy of a page-cache page moves it from the file counters"),
];

/// Reads the running kernel's BTF and fills in the offsets the programs need.
pub fn config() -> Result<Config> {
    let btf = Btf::from_file(VMLINUX_BTF)
        .with_context(|| format!("cannot read kernel BTF at {VMLINUX_BTF} (needs CONFIG_DEBUG_INFO_BTF)"))?;
    let counter = |name: &str| enum_value(&btf, name).with_context(|| format!("kernel BTF: no mm counter {name}"));
    let off = |s: &str, f: &str| field_offset(&btf, s, f).with_context(|| format!("kernel BTF: {s}.{f}"));
    Ok(Config {
        exit_has_group_dead: u32::from(tracepoint_args(&btf, "sched_process_exit")? >= 2),
        page_shift: page_size().trailing_zeros(),
        gfp_highmem: enum_value(&btf, "___GFP_HIGHMEM_BIT").unwrap_or(1),
        gfp_movable: enum_value(&btf, "___GFP_MOVABLE_BIT").unwrap_or(3),
        gfp_zero: enum_value(&btf, "___GFP_ZERO_BIT").unwrap_or(8),
        gfp_write: enum_value(&btf, "___GFP_WRITE_BIT").unwrap_or(12),
        gfp_noretry: enum_value(&btf, "___GFP_NORETRY_BIT").unwrap_or(16),
        task_tgid: off("task_struct", "tgid")?,
        task_mm: off("task_struct", "mm")?,
        task_min_flt: fault_counters(&btf)?,
        task_flags: off("task_struct", "flags")?,
        mm_hugetlb_usage: field_offset(&btf, "mm_struct", "hugetlb_usage").unwrap_or(0),
        huge_order: huge_order()?,
        tlb_local_mm_shootdown: enum_value(&btf, "TLB_LOCAL_MM_SHOOTDOWN")
            .context("kernel BTF: enum tlb_flush_reason has no TLB_LOCAL_MM_SHOOTDOWN")?,
        tlb_remote_send_ipi: enum_value(&btf, "TLB_REMOTE_SEND_IPI")
            .context("kernel BTF: enum tlb_flush_reason has no TLB_REMOTE_SEND_IPI")?,
        mm_filepages: counter("MM_FILEPAGES")?,
        mm_anonpages: counter("MM_ANONPAGES")?,
        mm_swapents: counter("MM_SWAPENTS")?,
        mm_shmempages: counter("MM_SHMEMPAGES")?,
        ..Config::default()
    })
}

/// Page order of the default hugetlb page size (`Hugepagesize` in
/// /proc/meminfo); 9 (2 MiB) on a kernel without hugetlb.
fn huge_order() -> Result<u32> {
    let meminfo = <procfs::Meminfo as procfs::Current>::current().context("reading /proc/meminfo")?;
    let bytes = meminfo.hugepagesize.unwrap_or(2 << 20);
    Ok((bytes / page_size()).trailing_zeros())
}

/// `task_struct.min_flt`, which the programs read together with the
/// `maj_flt` that must follow it.
fn fault_counters(btf: &Btf) -> Result<u32> {
    let min = field_offset(btf, "task_struct", "min_flt").context("kernel BTF: task_struct.min_flt")?;
    let maj = field_offset(btf, "task_struct", "maj_flt").context("kernel BTF: task_struct.maj_flt")?;
    if maj != min + 8 {
        bail!("kernel BTF: task_struct.maj_flt at {maj} does not follow min_flt at {min}");
    }
    Ok(min)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Byte offset of `field` in `struct name`, looking inside anonymous
/// structs and unions (where recent kernels keep `vm_flags`).
fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32> {
    for ty in btf.resolve_types_by_name(name)? {
        if let Type::Struct(s) = ty {
            if let Some(bits) = member_bits(btf, &s, field)? {
                return Ok(bits / 8);
            }
        }
    }
    Err(anyhow!("no such field"))
}

fn member_bits(btf: &Btf, s: &btf_rs::Struct, field: &str) -> Result<Option<u32>> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            return Ok(Some(m.bit_offset()));
        }
        if name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = btf.resolve_chained_type(m)? {
                if let Some(bits) = member_bits(btf, &inner, field)? {
                    return Ok(Some(m.bit_offset() + bits));
                }
            }
        }
    }
    Ok(None)
}

/// Arguments of a BTF tracepoint, not counting the context pointer.
fn tracepoint_args(btf: &Btf, tracepoint: &str) -> Result<usize> {
    let name = format!("btf_trace_{tracepoint}");
    let Some(Type::Typedef(td)) = btf.resolve_types_by_name(&name)?.into_iter().next() else {
        bail!("kernel BTF has no tracepoint {tracepoint}");
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&td)? else { bail!("{name}: not a pointer") };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr)? else { bail!("{name}: not a function") };
    Ok(proto.parameters.len().saturating_sub(1))
}

/// Value of an enumerator such as `___GFP_ZERO_BIT`, searching every enum.
fn enum_value(btf: &Btf, name: &str) -> Option<u32> {
    let found = |ty: Type| match ty {
        Type::Enum(e) => e
            .members
            .iter()
            .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == name))
            .map(|m| m.val()),
        _ => None,
    };
    btf.type_iter().find_map(|ty| Ok(found(ty))).ok().flatten()
}

/// Capabilities that matter for loading and attaching the programs.
pub struct Caps {
    pub sys_admin: bool,
    pub bpf: bool,
    pub perfmon: bool,
}

impl Caps {
    pub fn current() -> Result<Self> {
        let status = procfs::process::Process::myself()
            .and_then(|p| p.status())
            .context("reading /proc/self/status")?;
        Ok(Caps::from_effective(status.capeff))
    }

    /// From a CapEff mask: CAP_SYS_ADMIN is bit 21, CAP_PERFMON 38, CAP_BPF 39.
    fn from_effective(eff: u64) -> Self {
        let has = |bit: u32| eff & (1 << bit) != 0;
        Caps { sys_admin: has(21), perfmon: has(38), bpf: has(39) }
    }

    /// Tracing needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN which implies both.
    pub fn can_trace(&self) -> bool {
        self.sys_admin || (self.bpf && self.perfmon)
    }

    /// A one-line error naming what is missing, or Ok.
    pub fn require_tracing(&self) -> Result<()> {
        if self.can_trace() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.bpf {
            missing.push("CAP_BPF");
        }
        if !self.perfmon {
            missing.push("CAP_PERFMON");
        }
        bail!(
            "not permitted to trace: missing {} (run as root, or grant CAP_BPF and CAP_PERFMON)",
            missing.join(" and ")
        )
    }
}

/// Whether every bpf() call, map reads included, needs CAP_BPF here: before
/// Linux 6.5 the unprivileged_bpf_disabled sysctl gated all commands, since
/// then only creating maps and loading programs.
pub fn map_reads_need_cap_bpf() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    reads_need_cap_bpf(&release, &disabled)
}

fn reads_need_cap_bpf(release: &str, unprivileged_bpf_disabled: &str) -> bool {
    release_before(release, (6, 5)) && unprivileged_bpf_disabled.trim() != "0"
}

/// "6.4.0-150-generic" before (6, 5)? Unparsable releases count as old.
fn release_before(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => true,
    }
}

/// This process's uid_map when it runs in a user namespace other than the
/// initial one (whose map is the identity over all 2^32 ids).
pub fn user_namespace() -> Option<String> {
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    let map = map.split_whitespace().collect::<Vec<_>>().join(" ");
    (map != "0 0 4294967295").then_some(map)
}

/// How `/sys/kernel/mm/transparent_hugepage/enabled` is set: `always`, `madvise` or `never`.
pub fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

pub fn tracefs_mounted() -> bool {
    procfs::mounts()
        .map(|mounts| mounts.iter().any(|m| m.fs_vfstype == "tracefs"))
        .unwrap_or(false)
}

/// kprobes register a perf event source when the kernel has them.
pub fn has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btf() -> Btf {
        Btf::from_file(VMLINUX_BTF).expect("this machine has kernel BTF")
    }

    #[test]
    fn offsets_come_from_the_running_kernel() {
        let btf = btf();
        let pid = field_offset(&btf, "task_struct", "pid").unwrap();
        let tgid = field_offset(&btf, "task_struct", "tgid").unwrap();
        // pid_t pid; pid_t tgid; sit side by side in every kernel.
        assert_eq!(tgid, pid + 4);
        assert!(field_offset(&btf, "task_struct", "no_such_field").is_err());
    }

    #[test]
    fn fields_inside_anonymous_unions_are_found() {
        // vm_flags sits in an anonymous union on recent kernels.
        let offset = field_offset(&btf(), "vm_area_struct", "vm_flags").unwrap();
        assert!(offset > 0 && offset < 256, "{offset}");
        // struct page: flags (8 bytes), then an anonymous union whose first
        // member is an anonymous struct of lru (16 bytes) and mapping: the
        // offsets of the nesting levels add up (include/linux/mm_types.h, 64-bit).
        assert_eq!(field_offset(&btf(), "page", "mapping").unwrap(), 24);
        // mm_struct keeps its fields in an anonymous struct (for layout
        // randomisation): offsets inside it, within the ~1-2 KiB struct.
        let users = field_offset(&btf(), "mm_struct", "mm_users").unwrap();
        assert!(users > 0 && users < 4096, "{users}");
    }

    #[test]
    fn tracepoint_arity_and_gfp_bits() {
        let btf = btf();
        assert!(matches!(tracepoint_args(&btf, "sched_process_exit").unwrap(), 1 | 2));
        assert_eq!(tracepoint_args(&btf, "sched_process_fork").unwrap(), 2);
        assert!(tracepoint_args(&btf, "no_such_tracepoint").is_err());
        // Fallbacks for kernels whose BTF lacks the enum (before 6.8's
        // gfp_types.h); these bits have not moved since; BTF must agree.
        assert_eq!(enum_value(&btf, "___GFP_HIGHMEM_BIT").unwrap_or(1), 1);
        assert_eq!(enum_value(&btf, "___GFP_MOVABLE_BIT").unwrap_or(3), 3);
        assert_eq!(enum_value(&btf, "___GFP_ZERO_BIT").unwrap_or(8), 8);
        assert_eq!(enum_value(&btf, "___GFP_WRITE_BIT").unwrap_or(12), 12);
        assert_eq!(enum_value(&btf, "___GFP_NORETRY_BIT").unwrap_or(16), 16);
    }

    /// A `NAME: N kB` field of a /proc file, read here apart from procfs.
    fn kib(file: &str, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(file).unwrap();
        text.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
    }

    fn meminfo_kib(field: &str) -> Option<u64> {
        kib("/proc/meminfo", field)
    }

    #[test]
    fn config_holds_what_the_kernel_headers_say() {
        let c = config().unwrap();
        // Enumerators in include/linux/gfp_types.h, mm_types_task.h and
        // tlb_flush_reason: fixed positions for many releases.
        assert_eq!((c.gfp_highmem, c.gfp_movable, c.gfp_zero, c.gfp_write, c.gfp_noretry), (1, 3, 8, 12, 16));
        assert_eq!((c.mm_filepages, c.mm_anonpages, c.mm_swapents, c.mm_shmempages), (0, 1, 2, 3));
        assert_eq!((c.tlb_local_mm_shootdown, c.tlb_remote_send_ipi), (3, 4));
        // sched_process_exit gained group_dead in 6.16.
        let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
        assert_eq!(c.exit_has_group_dead == 1, !release_before(&release, (6, 16)), "{release}");
        let page_kib = kib("/proc/self/smaps", "KernelPageSize:").unwrap();
        assert_eq!(1u64 << c.page_shift, page_kib * 1024);
        let huge_kib = meminfo_kib("Hugepagesize:").unwrap_or(2048);
        assert_eq!(1u64 << (c.huge_order + c.page_shift), huge_kib * 1024);
        // tgid follows pid; mm and the fault counters sit further into task_struct.
        let btf = btf();
        assert_eq!(c.task_tgid, field_offset(&btf, "task_struct", "pid").unwrap() + 4);
        assert!(c.task_mm > 0 && c.task_min_flt > c.task_mm, "{} {}", c.task_mm, c.task_min_flt);
        assert_eq!(c.task_min_flt + 8, field_offset(&btf, "task_struct", "maj_flt").unwrap());
        // mm_struct.hugetlb_usage exists with hugetlb (5.17+).
        if meminfo_kib("Hugetlb:").is_some() {
            assert!(c.mm_hugetlb_usage > 0);
        }
    }

    #[test]
    fn kernel_releases_compare() {
        assert!(release_before("6.4.16-generic", (6, 5)));
        assert!(release_before("5.17.0", (6, 5)));
        assert!(!release_before("6.5.0-1-amd64", (6, 5)));
        assert!(!release_before("6.18.0", (6, 5)));
        assert!(release_before("weird", (6, 5)));
    }

    #[test]
    fn capabilities_come_from_their_bits() {
        let caps = |eff: u64| {
            let c = Caps::from_effective(eff);
            (c.sys_admin, c.bpf, c.perfmon)
        };
        assert_eq!(caps(0), (false, false, false));
        assert_eq!(caps(1 << 21), (true, false, false));
        assert_eq!(caps(1 << 39), (false, true, false));
        assert_eq!(caps(1 << 38), (false, false, true));
        assert_eq!(caps(!((1 << 21) | (1 << 38) | (1 << 39))), (false, false, false));
        // This process: the same as its CapEff line says.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
        let mine = Caps::current().unwrap();
        let want = Caps::from_effective(u64::from_str_radix(hex, 16).unwrap());
        assert_eq!((mine.sys_admin, mine.bpf, mine.perfmon), (want.sys_admin, want.bpf, want.perfmon));
    }

    #[test]
    fn map_reads_need_cap_bpf_only_before_6_5_with_the_sysctl_set() {
        assert!(reads_need_cap_bpf("6.4.0-150-generic\n", "2\n"));
        assert!(reads_need_cap_bpf("5.15.0", "1"));
        assert!(!reads_need_cap_bpf("6.4.0", "0\n"));
        assert!(!reads_need_cap_bpf("6.5.0", "2"));
        assert!(!reads_need_cap_bpf("6.18.44-fc", "1"));
        // The running kernel, from uname rather than /proc/sys.
        let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
        if !release_before(&release, (6, 5)) {
            assert!(!map_reads_need_cap_bpf(), "{release}");
        }
    }

    #[test]
    fn what_check_reports_matches_proc_and_sys() {
        // The initial user namespace maps every id to itself.
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        let initial = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        assert_eq!(user_namespace().is_none(), initial, "{map}");
        if let Ok(text) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
            let mode = thp_mode().unwrap();
            assert!(["always", "madvise", "never"].contains(&mode.as_str()), "{mode:?}");
            assert!(text.contains(&format!("[{mode}]")), "{text}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert_eq!(tracefs_mounted(), mounts.lines().any(|l| l.split(' ').nth(2) == Some("tracefs")));
        assert_eq!(has_kprobes(), std::fs::read_dir("/sys/bus/event_source/devices").unwrap().any(|e| e.unwrap().file_name() == "kprobe"));
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        let none = Caps { sys_admin: false, bpf: false, perfmon: true };
        let err = none.require_tracing().unwrap_err().to_string();
        assert!(err.contains("missing CAP_BPF (run as root"), "{err}");
        assert!(Caps { sys_admin: true, bpf: false, perfmon: false }.can_trace());
    }
}
