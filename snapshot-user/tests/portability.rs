//! The README's promise about where the built binary runs: x86-64 Linux with
//! glibc >= 2.34 and libgcc_s, nothing else. Read from the binary itself
//! (objdump's dynamic section and symbol versions), so a new dependency that
//! needs a newer glibc or another shared library fails here first.
use std::process::Command;

const SNAPSHOT: &str = env!("CARGO_BIN_EXE_snapshot");

/// What the README states the binary needs.
const LIBRARIES: &[&str] = &["libgcc_s.so.1", "libm.so.6", "libc.so.6", "ld-linux-x86-64.so.2"];
const NEWEST_GLIBC: (u32, u32) = (2, 34);

fn objdump(flag: &str) -> String {
    let out = Command::new("objdump").args([flag, SNAPSHOT]).output().expect("objdump (package binutils)");
    assert!(out.status.success(), "objdump {flag}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("objdump output")
}

#[test]
fn needs_only_the_shared_libraries_the_readme_names() {
    let dynamic = objdump("-p");
    let needed: Vec<&str> = dynamic.lines().filter_map(|l| l.trim().strip_prefix("NEEDED")).map(str::trim).collect();
    assert!(needed.contains(&"libc.so.6"), "{dynamic}");
    for lib in &needed {
        assert!(LIBRARIES.contains(lib), "the binary needs {lib}, which the README does not name");
    }
}

#[test]
fn needs_no_glibc_newer_than_the_readme_says() {
    let symbols = objdump("-T");
    let versions: Vec<(u32, u32)> = symbols
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let mut parts = v.split('.').map(|p| p.parse::<u32>());
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .collect();
    assert!(!versions.is_empty(), "no GLIBC symbol versions found:\n{symbols}");
    let newest = versions.iter().max().copied().unwrap_or_default();
    assert!(newest <= NEWEST_GLIBC, "the binary needs GLIBC_{}.{}; the README says {}.{}", newest.0, newest.1, NEWEST_GLIBC.0, NEWEST_GLIBC.1);
}
