//! Least privilege: the traced command runs as the user who asked for it, and
//! snapshot drops every capability once its programs are attached and its
//! maps open. Reading maps and the ring buffer through their file descriptors
//! needs no capability (checked on Linux 6.18: see the README).
use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};

/// An identity for the traced command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Who the command runs as: `-u USER`, else the user who ran sudo, else
/// unchanged (None).
pub fn command_identity(user: Option<&str>) -> Result<Option<Identity>> {
    let wanted = match user {
        Some(name) => Some(lookup(name)?),
        None => sudo_invoker()?,
    };
    // Already that user: nothing to change (and nothing to drop to).
    Ok(wanted.filter(|id| !is_current(id)))
}

/// Our own uid and gid: running as it changes nothing.
fn is_current(id: &Identity) -> bool {
    id.uid == Uid::current().as_raw() && id.gid == Gid::current().as_raw()
}

fn lookup(name: &str) -> Result<Identity> {
    let user = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    }
    .with_context(|| format!("-u {name}: looking up the user"))?;
    let Some(user) = user else { bail!("-u {name}: no such user") };
    identity(&user)
}

fn identity(user: &User) -> Result<Identity> {
    let name = std::ffi::CString::new(user.name.as_bytes()).context("user name contains a NUL byte")?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .with_context(|| format!("listing the groups of {}", user.name))?;
    Ok(Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw(), groups: groups.iter().map(|g| g.as_raw()).collect() })
}

/// SUDO_UID and SUDO_GID, as sudo sets them for root's command. SUDO_UID
/// alone (a wrapper that sets only it) still drops to that user, with the
/// user's own group: keeping root there would be the unsafe guess.
fn sudo_invoker() -> Result<Option<Identity>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    sudo_identity(std::env::var_os("SUDO_UID"), std::env::var_os("SUDO_GID"))
}

/// The identity SUDO_UID and SUDO_GID name (separate from the environment for the tests).
fn sudo_identity(uid: Option<std::ffi::OsString>, gid: Option<std::ffi::OsString>) -> Result<Option<Identity>> {
    let Some(uid) = uid else { return Ok(None) };
    let number = |name: &str, value: &std::ffi::OsStr| {
        value.to_str().and_then(|v| v.parse::<u32>().ok()).with_context(|| format!("{name}={value:?} is not a number"))
    };
    let uid = number("SUDO_UID", &uid)?;
    let gid = gid.map(|gid| number("SUDO_GID", &gid)).transpose()?;
    match (User::from_uid(Uid::from_raw(uid)).ok().flatten(), gid) {
        (Some(user), gid) => Ok(Some(Identity { gid: gid.unwrap_or(user.gid.as_raw()), ..identity(&user)? })),
        (None, Some(gid)) => Ok(Some(Identity { uid, gid, groups: vec![gid] })),
        (None, None) => bail!("SUDO_UID={uid} names no user and SUDO_GID is not set: give the user with -u"),
    }
}

/// Drops every capability but `keep`, from every set, so neither this
/// process nor anything it forks or execs gets them back.
pub fn drop_capabilities(keep: &[Capability]) -> Result<()> {
    // Only what we have: asking to keep more fails (a kernel older than a
    // capability, or file capabilities granting only some).
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let keep: CapsHashSet = keep.iter().copied().filter(|c| permitted.contains(c)).collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP, about to go.
    // Without it (granted only CAP_BPF and CAP_PERFMON) no_new_privs below
    // is what keeps an exec from gaining capabilities.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).context("reading capabilities")? {
        for cap in caps::read(None, CapSet::Bounding).context("reading the capability bounding set")? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .with_context(|| format!("dropping {cap} from the bounding set"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("dropping effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("dropping permitted capabilities")?;
    // SAFETY: prctl with these arguments only sets a flag on this thread.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    Ok(())
}

/// What snapshot keeps while tracing: CAP_KILL to pass signals on to a
/// command that runs as another user, and CAP_BPF where the kernel wants it
/// to read maps.
pub fn kept_while_tracing(command_as_other_user: bool) -> Vec<Capability> {
    let mut keep = kept_to_read_maps();
    if command_as_other_user {
        keep.push(Capability::CAP_KILL);
    }
    keep
}

/// `--stacks` reads /proc/PID/maps and the mapped files of processes that
/// may belong to other users, and holds those files through
/// /proc/PID/map_files (CAP_CHECKPOINT_RESTORE).
pub fn kept_to_read_processes() -> Vec<Capability> {
    vec![Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH, Capability::CAP_CHECKPOINT_RESTORE]
}

/// Nothing since Linux 6.5; CAP_BPF before, unless unprivileged BPF is allowed.
pub fn kept_to_read_maps() -> Vec<Capability> {
    if crate::kernel::map_reads_need_cap_bpf() { vec![Capability::CAP_BPF] } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_and_uid() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("0").unwrap(), root);
        let err = lookup("no-such-user-here").unwrap_err().to_string();
        assert!(err.contains("no such user"), "{err}");
    }

    fn sudo(uid: Option<&str>, gid: Option<&str>) -> Result<Option<Identity>> {
        sudo_identity(uid.map(Into::into), gid.map(Into::into))
    }

    #[test]
    fn sudo_names_the_invoker() {
        let nobody = lookup("nobody").unwrap();
        assert_eq!(nobody.uid, 65534);
        assert_eq!(sudo(None, Some("0")).unwrap(), None);
        assert_eq!(sudo(Some("65534"), None).unwrap(), Some(nobody.clone()));
        // SUDO_GID wins over the user's own group.
        assert_eq!(sudo(Some("65534"), Some("100")).unwrap(), Some(Identity { gid: 100, ..nobody }));
        // A uid with no user: the numbers alone, or an error without a group.
        let bare = Identity { uid: 4_000_000, gid: 4_000_001, groups: vec![4_000_001] };
        assert_eq!(sudo(Some("4000000"), Some("4000001")).unwrap(), Some(bare));
        let err = sudo(Some("4000000"), None).unwrap_err().to_string();
        assert!(err.contains("names no user and SUDO_GID is not set"), "{err}");
        assert!(sudo(Some("me"), None).unwrap_err().to_string().contains("SUDO_UID=\"me\" is not a number"));
        assert!(sudo(Some("65534"), Some("x")).unwrap_err().to_string().contains("SUDO_GID=\"x\" is not a number"));
    }

    #[test]
    fn the_current_identity_needs_no_change() {
        let me = Uid::current().as_raw();
        let other = if me == 65534 { "0" } else { "65534" };
        // Asked for ourselves (same uid and gid): nothing to change.
        if Gid::current() == User::from_uid(Uid::current()).unwrap().unwrap().gid {
            assert_eq!(command_identity(Some(&me.to_string())).unwrap(), None);
        }
        let wanted = command_identity(Some(other)).unwrap().expect("another user is a change");
        assert_eq!(wanted, lookup(other).unwrap());
        let (uid, gid) = (me, Gid::current().as_raw());
        assert!(is_current(&Identity { uid, gid, groups: Vec::new() }));
        // Our uid with another group (sudo -g) is a change, and so is another uid with our group.
        assert!(!is_current(&Identity { uid, gid: gid + 1, groups: Vec::new() }));
        assert!(!is_current(&Identity { uid: uid + 1, gid, groups: Vec::new() }));
    }

    /// Runs `test` (one of the ignored tests below) in a process of its own,
    /// with `env`, and returns its stdout: dropping capabilities is for good.
    fn in_own_process(test: &str, env: &[(&str, &str)]) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SNAPSHOT_TEST_CHILD", "1")
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn needs_root(test: &str) -> bool {
        if Uid::effective().is_root() {
            return true;
        }
        assert!(std::env::var_os("CI").is_none(), "{test} needs root");
        eprintln!("{test}: needs root, skipped");
        false
    }

    #[test]
    fn every_capability_but_the_kept_ones_goes() {
        if !needs_root("every_capability_but_the_kept_ones_goes") {
            return;
        }
        let out = in_own_process("privilege::tests::drop_here", &[]);
        let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_string();
        let kill = format!("{:016x}", 1u64 << 5);
        assert_eq!(field("CapEff:"), kill, "{out}");
        assert_eq!(field("CapPrm:"), kill, "{out}");
        assert_eq!(field("CapBnd:"), kill, "{out}");
        assert_eq!((field("CapInh:"), field("CapAmb:")), ("0".repeat(16), "0".repeat(16)), "{out}");
        assert_eq!(field("NoNewPrivs:"), "1", "{out}");
    }

    #[test]
    fn without_cap_setpcap_the_rest_still_goes() {
        if !needs_root("without_cap_setpcap_the_rest_still_goes") {
            return;
        }
        let out = in_own_process("privilege::tests::drop_without_setpcap_here", &[]);
        let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_string();
        let kill = format!("{:016x}", 1u64 << 5);
        assert_eq!((field("CapEff:"), field("CapPrm:")), (kill.clone(), kill), "{out}");
        assert_eq!(field("NoNewPrivs:"), "1", "{out}");
    }

    #[test]
    #[ignore = "run by without_cap_setpcap_the_rest_still_goes in a process of its own"]
    fn drop_without_setpcap_here() {
        assert!(std::env::var_os("SNAPSHOT_TEST_CHILD").is_some(), "only in a process of its own");
        // As when granted only some capabilities (setcap, or a unit's CapabilityBoundingSet).
        caps::drop(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap();
        caps::drop(None, CapSet::Permitted, Capability::CAP_SETPCAP).unwrap();
        drop_capabilities(&[Capability::CAP_KILL]).unwrap();
        print!("{}", std::fs::read_to_string("/proc/thread-self/status").unwrap());
    }

    #[test]
    #[ignore = "run by every_capability_but_the_kept_ones_goes in a process of its own"]
    fn drop_here() {
        assert!(std::env::var_os("SNAPSHOT_TEST_CHILD").is_some(), "only in a process of its own");
        drop_capabilities(&[Capability::CAP_KILL]).unwrap();
        // Capabilities belong to threads: this one's.
        print!("{}", std::fs::read_to_string("/proc/thread-self/status").unwrap());
    }

    #[test]
    fn root_started_by_sudo_runs_the_command_as_the_invoker() {
        if !needs_root("root_started_by_sudo_runs_the_command_as_the_invoker") {
            return;
        }
        let out = in_own_process("privilege::tests::identity_here", &[("SUDO_UID", "65534"), ("SUDO_GID", "100")]);
        assert!(out.contains("identity: Some(Identity { uid: 65534, gid: 100,"), "{out}");
        let out = in_own_process("privilege::tests::identity_here", &[]);
        assert!(out.contains("identity: None"), "{out}");
    }

    #[test]
    #[ignore = "run by root_started_by_sudo_runs_the_command_as_the_invoker in a process of its own"]
    fn identity_here() {
        assert!(std::env::var_os("SNAPSHOT_TEST_CHILD").is_some(), "only in a process of its own");
        println!("identity: {:?}", command_identity(None).unwrap());
    }

    #[test]
    fn signals_need_cap_kill_only_for_another_user() {
        assert!(kept_while_tracing(true).contains(&Capability::CAP_KILL));
        assert!(!kept_while_tracing(false).contains(&Capability::CAP_KILL));
        assert_eq!(kept_while_tracing(false), kept_to_read_maps());
    }
}
