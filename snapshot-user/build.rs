//! Builds the eBPF programs (crate snapshot-ebpf) and leaves the object in OUT_DIR,
//! where `include_bytes_aligned!` embeds it into the `snapshot` binary.
use anyhow::Context as _;

/// Names the one nightly the eBPF crate builds with (`cargo xtask` installs it).
const TOOLCHAIN_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshot-ebpf/rust-toolchain");

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../snapshot-common/src");
    println!("cargo:rerun-if-changed={TOOLCHAIN_FILE}");
    let text = std::fs::read_to_string(TOOLCHAIN_FILE).with_context(|| format!("reading {TOOLCHAIN_FILE}"))?;
    let nightly = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{TOOLCHAIN_FILE} names no toolchain"))?;
    let package = aya_build::Package {
        name: "snapshot-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshot-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(nightly))
}
