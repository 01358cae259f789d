//! Builds the eBPF programs (crate snapshot-ebpf) and leaves the object in OUT_DIR,
//! where `include_bytes_aligned!` embeds it into the `snapshot` binary.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../snapshot-common/src");
    let package = aya_build::Package {
        name: "snapshot-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshot-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
