//! Loads the embedded eBPF object into the kernel and attaches its programs.
use anyhow::{Context, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{BtfTracePoint, FEntry, RawTracePoint},
};
use snapshot_common::ProcStats;

use crate::kernel::{self, PROBES};

/// The object built from crate snapshot-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/snapshot"));

/// How a probe got attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    BtfTracepoint,
    RawTracepoint,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::BtfTracepoint => "BTF tracepoints (tp_btf)",
            Path::RawTracepoint => "raw tracepoints",
        }
    }
}

/// Which processes to count.
#[derive(Default)]
pub struct Selection {
    pub all: bool,
    pub comm: Option<String>,
    /// `--stacks`: record each copy's user stack and address.
    pub stacks: bool,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    /// Per probe, how it was attached (or why it failed).
    pub attached: Vec<(&'static str, Result<Path, String>)>,
}

impl Loaded {
    /// The path every probe took, when they all agree.
    pub fn path(&self) -> Option<Path> {
        let first = self.attached.first()?.1.clone().ok()?;
        self.attached.iter().all(|(_, r)| r.as_ref().ok() == Some(&first)).then_some(first)
    }

    pub fn failures(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect()
    }

    pub fn procs(&mut self) -> Result<HashMap<&mut MapData, u32, ProcStats>> {
        let map = self.ebpf.map_mut("PROCS").context("eBPF object has no PROCS map")?;
        Ok(HashMap::try_from(map)?)
    }
}

/// Loads and attaches everything; a probe that fails to attach is reported
/// in `attached`, not as an error, so `check` can show it.
pub fn load(selection: &Selection) -> Result<Loaded> {
    kernel::Caps::current()?.require_tracing()?;
    let mut config = kernel::config()?;
    config.trace_all = u32::from(selection.all);
    if let Some(name) = &selection.comm {
        config.match_comm = 1;
        config.comm = comm_bytes(name)?;
    }
    config.stacks = u32::from(selection.stacks);
    let mut loader = EbpfLoader::new();
    if !selection.stacks {
        // The programs never touch them: keep them from holding memory.
        loader.map_max_entries("STACKS", 1).map_max_entries("STACK_COPIES", 1).map_max_entries("COPY_ADDRS", 4096);
    }
    loader
        .override_global("CONFIG", &config, true)
        // PENDING is task storage, which aya creates but cannot read: it need not.
        .allow_unsupported_maps();
    if let Some(entries) = procs_table_size()? {
        loader.map_max_entries("PROCS", entries);
    }
    if let Some(bytes) = ring_size()? {
        loader.map_max_entries("EVENTS", bytes);
    }
    let mut ebpf = loader.load(OBJECT).context("loading the eBPF programs into the kernel")?;
    let btf = Btf::from_sys_fs().ok();
    let attached = PROBES
        .iter()
        .map(|(name, _, _)| (*name, attach(&mut ebpf, name, btf.as_ref()).map_err(|e| format!("{e:#}"))))
        .collect();
    Ok(Loaded { ebpf, attached })
}

/// `SNAPSHOT_RING_BYTES=N` shrinks the final records' ring (4 MiB) so tests
/// can fill it and see lost records handled.
fn ring_size() -> Result<Option<u32>> {
    let Some(value) = std::env::var_os("SNAPSHOT_RING_BYTES") else { return Ok(None) };
    let text = value.to_string_lossy();
    let page = crate::kernel::page_size();
    match text.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && u64::from(n) >= page => Ok(Some(n)),
        _ => Err(anyhow!("SNAPSHOT_RING_BYTES={text}: expected a power of two of at least {page} bytes")),
    }
}

/// `SNAPSHOT_PROCS_TABLE=N` shrinks the process table (32768 entries) so
/// tests can fill it with a few hundred processes and see the loss counted.
fn procs_table_size() -> Result<Option<u32>> {
    let Some(value) = std::env::var_os("SNAPSHOT_PROCS_TABLE") else { return Ok(None) };
    let text = value.to_string_lossy();
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(anyhow!("SNAPSHOT_PROCS_TABLE={text}: expected a number of entries above 0")),
    }
}

/// Like `load`, but every probe must attach.
pub fn load_all(selection: &Selection) -> Result<Loaded> {
    let loaded = load(selection)?;
    let failures = loaded.failures();
    if !failures.is_empty() {
        return Err(anyhow!("cannot attach: {}", failures.join("; ")));
    }
    Ok(loaded)
}

/// tp_btf first; raw tracepoints for kernels without BTF tracepoints.
/// `SNAPSHOT_ATTACH=raw` skips tp_btf, so tests can check the fallback.
fn attach(ebpf: &mut Ebpf, name: &str, btf: Option<&Btf>) -> Result<Path> {
    let btf = btf.filter(|_| std::env::var_os("SNAPSHOT_ATTACH").is_none_or(|v| v != "raw"));
    let btf_error = match btf {
        Some(btf) => match attach_btf(ebpf, name, btf) {
            Ok(()) => return Ok(Path::BtfTracepoint),
            Err(e) => e,
        },
        None => anyhow!("no kernel BTF"),
    };
    attach_raw(ebpf, name)
        .map(|()| Path::RawTracepoint)
        .map_err(|raw| anyhow!("tp_btf: {btf_error:#}; raw tracepoint: {raw:#}"))
}

fn attach_btf(ebpf: &mut Ebpf, name: &str, btf: &Btf) -> Result<()> {
    let prog: &mut BtfTracePoint = ebpf.program_mut(name).context("missing program")?.try_into()?;
    prog.load(name, btf)?;
    prog.attach()?;
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let raw_name = format!("{name}_raw");
    let prog: &mut RawTracePoint = ebpf.program_mut(&raw_name).context("missing program")?.try_into()?;
    prog.load()?;
    prog.attach(name)?;
    Ok(())
}

/// Loads the empty fentry program: does this kernel have BPF trampolines?
pub fn try_fentry(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs()?;
    let prog: &mut FEntry = ebpf.program_mut("fentry_probe").context("missing program")?.try_into()?;
    prog.load("do_wp_page", &btf)?;
    Ok(())
}

/// A comm as the kernel keeps it: at most 15 bytes and a NUL.
pub fn comm_bytes(name: &str) -> Result<[u8; 16]> {
    if name.is_empty() {
        return Err(anyhow!("--comm needs a process name"));
    }
    // The kernel keeps only the first 15 bytes of a name, as `ps` shows.
    let bytes = &name.as_bytes()[..name.len().min(15)];
    let mut comm = [0; 16];
    comm[..bytes.len()].copy_from_slice(bytes);
    Ok(comm)
}

pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_truncated_like_the_kernel_does() {
        let comm = comm_bytes("a-very-long-process-name").unwrap();
        assert_eq!(comm_string(&comm), "a-very-long-pro");
        assert_eq!(comm[15], 0);
        assert!(comm_bytes("").is_err());
    }
}
