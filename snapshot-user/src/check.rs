//! `snapshot check`: what the kernel offers, and a real load of the programs.
use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{Table, presets::NOTHING};

use crate::{
    kernel::{self, Caps, PROBES},
    loader::{self, Selection},
    output::{Sink, note},
};

pub fn run() -> Result<ExitCode> {
    let caps = Caps::current()?;
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(["FEATURE", "HERE", "DETAIL"]);
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let btf = std::path::Path::new(kernel::VMLINUX_BTF).exists();
    table.add_row(["kernel BTF", yes_no(btf), kernel::VMLINUX_BTF]);
    table.add_row([
        "tracefs",
        if kernel::tracefs_mounted() { "mounted" } else { "not mounted" },
        "not needed: BTF and raw tracepoints attach without it",
    ]);
    table.add_row(["kprobes", yes_no(kernel::has_kprobes()), "not used: no kprobe marks a copy better than the page allocator does"]);
    let hugepages = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    table.add_row(["hugetlb pages reserved", hugepages.trim(), "/proc/sys/vm/nr_hugepages"]);
    table.add_row(["THP mode", &kernel::thp_mode().unwrap_or_else(|| "unknown".into()), "/sys/kernel/mm/transparent_hugepage/enabled"]);
    let caps_text = format!(
        "CAP_SYS_ADMIN {} CAP_BPF {} CAP_PERFMON {}",
        yes_no(caps.sys_admin),
        yes_no(caps.bpf),
        yes_no(caps.perfmon)
    );
    table.add_row(["capabilities", yes_no(caps.can_trace()), &caps_text]);
    if let Some(map) = kernel::user_namespace() {
        table.add_row(["user namespace", "yes", &format!("uid_map {map}: capabilities here do not reach the kernel's BPF")]);
    }
    // The table shows what is there even when tracing is impossible.
    let loaded = caps.require_tracing().and_then(|()| loader::load(&Selection::default()));
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            table.add_row(["load programs", "FAILED", "see below"]);
            print(&table)?;
            note(&format!("cannot trace here: {}", crate::error_text(&error)));
            return Ok(ExitCode::FAILURE);
        }
    };
    let fentry = match loader::try_fentry(&mut loaded.ebpf) {
        Ok(()) => "yes".to_string(),
        // Keep the syscall's answer, drop the (empty) verifier log.
        Err(e) => format!("no: {}", format!("{e:#}").split(". Verifier").next().unwrap_or_default()),
    };
    table.add_row(["fentry/fexit", &fentry, "not used: wp_page_copy is inlined on many kernels"]);
    for ((name, result), (_, module, needs)) in loaded.attached.iter().zip(PROBES) {
        let (state, detail) = match result {
            Ok(path) => (path.name().to_string(), format!("{module}: {needs}")),
            Err(e) => ("FAILED".to_string(), e.clone()),
        };
        table.add_row([format!("probe {name}"), state, detail]);
    }
    print(&table)?;
    match loaded.path() {
        Some(path) => {
            Sink::Stdout.write(|out| writeln!(out, "\ntracing path: {}", path.name()))?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            note(&format!("cannot trace here: {}", loaded.failures().join("; ")));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print(table: &Table) -> Result<()> {
    Sink::Stdout.write(|out| writeln!(out, "{table}"))
}
