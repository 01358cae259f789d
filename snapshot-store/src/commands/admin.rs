//! Server and connection commands: AUTH, CONFIG, CLIENT, SHUTDOWN.

use super::{Args, Conn, SYNTAX, State, lossy, subcommand_arity_err, subcommand_err};
use crate::glob;
use crate::persist;
use crate::resp;

pub(super) fn auth(st: &mut State, conn: &mut Conn, args: &Args, out: &mut Vec<u8>) {
    if args.len() > 3 {
        return resp::err(out, SYNTAX);
    }
    let (user, given) = if args.len() == 2 {
        (&b"default"[..], args.get(1))
    } else {
        (args.get(1), args.get(2))
    };
    let ok = match st.requirepass.as_deref() {
        // The default user has no password: any password is right for it, as in Redis.
        None if args.len() == 2 => {
            return resp::err(
                out,
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        None => user == b"default",
        Some(pass) => user == b"default" && same_secret(given, pass.as_bytes()),
    };
    if ok {
        conn.authed = true;
        resp::ok(out);
    } else {
        resp::err(
            out,
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
    }
}

/// Compares in time independent of where the inputs differ (and of their lengths, which are
/// hidden by hashing both first, as Redis does).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn config_params(st: &State) -> Vec<(&'static str, String)> {
    vec![
        ("save", persist::format_save(&st.persist.save_points)),
        ("appendonly", "no".into()),
        ("dir", st.persist.dir.display().to_string()),
        ("dbfilename", st.persist.dbfilename.clone()),
        ("rdbcompression", yes_no(st.persist.rdbcompression).into()),
        (
            "default-bgsave-method",
            st.persist.default_method.name().into(),
        ),
        (
            "rdb-key-save-delay",
            st.persist.key_save_delay_us.to_string(),
        ),
        (
            "rdb-child-starts-stopped",
            yes_no(st.persist.child_starts_stopped).into(),
        ),
        (
            "stop-writes-on-bgsave-error",
            yes_no(st.persist.stop_writes_on_bgsave_error).into(),
        ),
        (
            "client-output-buffer-limit",
            format!("normal {} 0 0", st.output_limit),
        ),
        ("port", st.port.to_string()),
        ("bind", st.bind.clone()),
        ("databases", "1".into()),
        ("requirepass", st.requirepass.clone().unwrap_or_default()),
        ("dataset-pages", st.mode.name().into()),
        ("enable-debug-command", st.debug_mode.name().into()),
    ]
}

/// `normal <hard> 0 0` (Redis's syntax; the soft limit and its seconds must be 0 here).
fn parse_output_limit(s: &str) -> Option<u64> {
    match s.split_ascii_whitespace().collect::<Vec<_>>()[..] {
        [class, hard, "0", "0"] if class.eq_ignore_ascii_case("normal") => hard.parse().ok(),
        _ => None,
    }
}

pub(super) fn config(st: &mut State, args: &Args, out: &mut Vec<u8>) {
    if args.is(1, "get") && args.len() >= 3 {
        let params = config_params(st);
        let hits: Vec<_> = params
            .iter()
            .filter(|(name, _)| {
                (2..args.len())
                    .any(|i| glob::matches(&args.get(i).to_ascii_lowercase(), name.as_bytes()))
            })
            .collect();
        resp::array_len(out, hits.len() * 2);
        for (k, v) in hits {
            resp::bulk(out, k.as_bytes());
            resp::bulk(out, v.as_bytes());
        }
    } else if args.is(1, "set") && args.len() >= 4 && args.len().is_multiple_of(2) {
        for i in (2..args.len()).step_by(2) {
            let name = lossy(args.get(i));
            let value = std::str::from_utf8(args.get(i + 1)).ok();
            // Redis's reasons for a refused value.
            let (set, why) = if args.is(i, "save") {
                let p = value.and_then(|s| persist::parse_save(s).ok());
                (
                    p.map(|p| st.persist.save_points = p),
                    "Invalid save parameters",
                )
            } else if args.is(i, "rdbcompression") {
                let b = value.and_then(|s| crate::parse_yes_no(s).ok());
                (
                    b.map(|b| st.persist.rdbcompression = b),
                    "argument must be 'yes' or 'no'",
                )
            } else if args.is(i, "default-bgsave-method") {
                let m = crate::method::Method::parse(args.get(i + 1));
                (
                    m.map(|m| st.persist.default_method = m),
                    "argument must be 'fork' or 'forkless'",
                )
            } else if args.is(i, "rdb-key-save-delay") {
                let d = value.and_then(|s| s.parse::<u64>().ok());
                (
                    d.map(|d| st.persist.key_save_delay_us = d),
                    "argument must be a number of microseconds",
                )
            } else if args.is(i, "rdb-child-starts-stopped") {
                let b = value.and_then(|s| crate::parse_yes_no(s).ok());
                (
                    b.map(|b| st.persist.child_starts_stopped = b),
                    "argument must be 'yes' or 'no'",
                )
            } else if args.is(i, "stop-writes-on-bgsave-error") {
                let b = value.and_then(|s| crate::parse_yes_no(s).ok());
                (
                    b.map(|b| st.persist.stop_writes_on_bgsave_error = b),
                    "argument must be 'yes' or 'no'",
                )
            } else if args.is(i, "client-output-buffer-limit") {
                let l = value.and_then(parse_output_limit);
                (
                    l.map(|l| st.output_limit = l),
                    "only the class 'normal' with a hard limit in bytes and no soft limit is supported",
                )
            } else {
                return resp::err(
                    out,
                    &format!("ERR Unknown option or number of arguments for CONFIG SET - '{name}'"),
                );
            };
            if set.is_none() {
                return resp::err(
                    out,
                    &format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                    ),
                );
            }
        }
        resp::ok(out);
    } else if args.is(1, "resetstat") && args.len() == 2 {
        st.stats.reset();
        st.latency = Default::default();
        resp::ok(out);
    } else if args.is(1, "get") || args.is(1, "set") {
        subcommand_arity_err(args, "config", out);
    } else {
        subcommand_err(args, "CONFIG", out);
    }
}

pub(super) fn client(_st: &mut State, conn: &mut Conn, args: &Args, out: &mut Vec<u8>) {
    if args.is(1, "setname") && args.len() == 3 {
        let name = args.get(2);
        if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
            return resp::err(
                out,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        }
        conn.name = if name.is_empty() {
            None
        } else {
            Some(name.to_vec())
        };
        resp::ok(out);
    } else if args.is(1, "getname") && args.len() == 2 {
        match &conn.name {
            Some(n) => resp::bulk(out, n),
            None => resp::nil(out),
        }
    } else if args.is(1, "setname") || args.is(1, "getname") {
        subcommand_arity_err(args, "client", out);
    } else {
        subcommand_err(args, "CLIENT", out);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSave {
    /// Save if a save policy is configured (SHUTDOWN, SIGTERM, SIGINT).
    Default,
    Yes,
    No,
}

/// Stops a running child and saves synchronously if asked to; an Err means "don't exit".
pub fn prepare_shutdown(st: &mut State, mode: ShutdownSave) -> anyhow::Result<()> {
    crate::log("User requested shutdown...");
    st.persist.kill_child(&mut st.table, &st.registry);
    let save = match mode {
        ShutdownSave::Default => !st.persist.save_points.is_empty(),
        ShutdownSave::Yes => true,
        ShutdownSave::No => false,
    };
    if save {
        crate::log("Saving the final snapshot before exiting.");
        if let Err(e) = st.persist.save(&st.table) {
            crate::log(&format!("Error trying to save the DB, can't exit: {e:#}"));
            return Err(e);
        }
    }
    Ok(())
}
