//! Where the workspace and its build output are, asked of cargo at run time
//! (a moved checkout, CARGO_TARGET_DIR and build.target-dir all count).
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Workspace {
    pub fn find() -> Result<Workspace> {
        let out = Command::new(crate::cargo_program())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        parse(&out.stdout)
    }

    /// The `snapshot` binary a build with this profile leaves.
    pub fn binary(&self, release: bool) -> PathBuf {
        self.target.join(if release { "release" } else { "debug" }).join("snapshot")
    }

    /// bpf-linker and the other build tools xtask installs.
    pub fn tools(&self) -> PathBuf {
        self.target.join("tools")
    }
}

fn parse(metadata: &[u8]) -> Result<Workspace> {
    let json: serde_json::Value = serde_json::from_slice(metadata).context("parsing cargo metadata")?;
    let path = |key: &str| {
        json[key].as_str().map(PathBuf::from).with_context(|| format!("cargo metadata has no {key}"))
    };
    Ok(Workspace { root: path("workspace_root")?, target: path("target_directory")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_cargo_metadata() {
        let json = br#"{"packages":[],"workspace_root":"/src/snap","target_directory":"/cache/t","version":1}"#;
        let ws = parse(json).unwrap();
        assert_eq!(ws.root, PathBuf::from("/src/snap"));
        assert_eq!(ws.binary(true), PathBuf::from("/cache/t/release/snapshot"));
        assert_eq!(ws.binary(false), PathBuf::from("/cache/t/debug/snapshot"));
        assert_eq!(ws.tools(), PathBuf::from("/cache/t/tools"));
        assert!(parse(br#"{"workspace_root":"/x"}"#).is_err());
    }

    /// The real cargo, with CARGO_TARGET_DIR set, names that directory.
    #[test]
    fn cargo_target_dir_is_honoured() {
        let dir = std::env::temp_dir().join(format!("xtask-target-{}", std::process::id()));
        let out = Command::new(crate::cargo_program())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .env("CARGO_TARGET_DIR", &dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ws = parse(&out.stdout).unwrap();
        assert_eq!(ws.target, dir);
        assert!(ws.root.join("xtask").join("Cargo.toml").is_file(), "{}", ws.root.display());
    }
}
