//! Command table and implementations, with Redis's replies and error texts.

mod admin;
mod data;

pub use admin::{ShutdownSave, prepare_shutdown};
use admin::{auth, client, config};
use data::{debug, expire, flushall, incr_by, scan, set};

use crate::info;
use crate::persist::Persist;
use crate::resp;
use crate::table::{Expire, Table, now_ms};
use crate::{InfoSource, PagesMode};

/// Everything the commands act on; owned by the event-loop thread.
pub struct State {
    pub table: Table,
    pub mode: PagesMode,
    pub persist: Persist,
    pub stats: Stats,
    pub latency: crate::latency::Latency,
    pub requirepass: Option<String>,
    pub debug_mode: crate::DebugMode,
    pub port: u16,
    pub bind: String,
    pub tracer: Option<Box<dyn InfoSource>>,
    pub registry: mio::Registry,
    /// Set by SHUTDOWN (after its save succeeded): the loop exits.
    pub shutdown: bool,
    pub connected_clients: usize,
    /// Bytes of pending replies past which a client is disconnected (0: no limit).
    pub output_limit: u64,
    /// Clients disconnected at that limit (INFO client_output_buffer_limit_disconnections).
    pub output_limit_disconnections: u64,
}

pub struct Stats {
    pub total_commands: u64,
    pub total_connections: u64,
    pub start: std::time::Instant,
    ops_samples: [u64; 16],
    ops_idx: usize,
    ops_last_cmds: u64,
    ops_last_t: std::time::Instant,
}

impl Stats {
    pub fn new() -> Stats {
        let now = std::time::Instant::now();
        Stats {
            total_commands: 0,
            total_connections: 0,
            start: now,
            ops_samples: [0; 16],
            ops_idx: 0,
            ops_last_cmds: 0,
            ops_last_t: now,
        }
    }
    /// Called from the cron: one sample of the command rate.
    pub fn sample_ops(&mut self) {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.ops_last_t).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let ops = self.total_commands.saturating_sub(self.ops_last_cmds) as f64 / dt;
        self.ops_samples[self.ops_idx % 16] = ops as u64;
        self.ops_idx += 1;
        self.ops_last_cmds = self.total_commands;
        self.ops_last_t = now;
    }
    /// CONFIG RESETSTAT: counters back to zero, rate sampling restarted with them.
    pub fn reset(&mut self) {
        let start = self.start;
        *self = Stats::new();
        self.start = start;
    }
    pub fn ops_per_sec(&self) -> u64 {
        self.ops_samples.iter().sum::<u64>() / 16
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-connection state the commands can change.
#[derive(Default)]
pub struct Conn {
    pub authed: bool,
    /// The peer is on a loopback address (for `enable-debug-command local`).
    pub local: bool,
    pub name: Option<Vec<u8>>,
    /// Close once the output is written (QUIT, protocol error).
    pub close: bool,
}

/// A command's arguments: ranges into the client's input buffer (no copies).
pub struct Args<'a> {
    pub buf: &'a [u8],
    pub r: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.r.len()
    }
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.r[i];
        &self.buf[s..e]
    }
    fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

macro_rules! commands {
    ($($id:ident = $name:literal, $arity:literal;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Cmd { $($id,)* }
        /// (lowercase name, Redis arity: n = exactly n args incl. the name, -n = at least n)
        const SPECS: &[(&str, i32)] = &[$(($name, $arity),)*];
        fn lookup(upper: &[u8]) -> Option<Cmd> {
            $(if upper.eq_ignore_ascii_case($name.as_bytes()) { return Some(Cmd::$id); })*
            None
        }
    };
}

commands! {
    GET = "get", 2;
    SET = "set", -3;
    PING = "ping", -1;
    ECHO = "echo", 2;
    AUTH = "auth", -2;
    SELECT = "select", 2;
    DEL = "del", -2;
    EXISTS = "exists", -2;
    INCR = "incr", 2;
    INCRBY = "incrby", 3;
    DECR = "decr", 2;
    DECRBY = "decrby", 3;
    MSET = "mset", -3;
    MGET = "mget", -2;
    DBSIZE = "dbsize", 1;
    FLUSHALL = "flushall", -1;
    FLUSHDB = "flushdb", -1;
    SCAN = "scan", -2;
    TTL = "ttl", 2;
    PTTL = "pttl", 2;
    EXPIRE = "expire", -3;
    PERSIST = "persist", 2;
    BGSAVE = "bgsave", -1;
    SAVE = "save", 1;
    LASTSAVE = "lastsave", 1;
    INFO = "info", -1;
    CONFIG = "config", -2;
    DEBUG = "debug", -2;
    COMMAND = "command", -1;
    CLIENT = "client", -2;
    QUIT = "quit", -1;
    SHUTDOWN = "shutdown", -1;
}

impl Cmd {
    /// Commands that change the dataset (Redis's `write` flag).
    fn writes(self) -> bool {
        use Cmd::*;
        const WRITES: &[Cmd] = &[
            SET, DEL, INCR, INCRBY, DECR, DECRBY, MSET, FLUSHALL, FLUSHDB, EXPIRE, PERSIST,
        ];
        WRITES.contains(&self)
    }
}

pub fn cmd_name(id: usize) -> &'static str {
    SPECS.get(id).map_or("unknown", |s| s.0)
}

/// Resolves a command name (any case) without allocating.
pub fn resolve(name: &[u8]) -> Option<Cmd> {
    lookup(name)
}

pub(crate) fn lossy(b: &[u8]) -> String {
    // Error replies are one line: no CR/LF may leak into them.
    String::from_utf8_lossy(b).replace(['\r', '\n'], " ")
}

fn unknown_command(args: &Args, out: &mut Vec<u8>) {
    let mut list = String::new();
    for i in 1..args.len() {
        if list.len() >= 128 {
            break;
        }
        let a = lossy(args.get(i));
        let room = 128usize.saturating_sub(list.len());
        list.push('\'');
        list.push_str(&a.chars().take(room).collect::<String>());
        list.push_str("' ");
    }
    let name: String = lossy(args.get(0)).chars().take(128).collect();
    resp::err(
        out,
        &format!("ERR unknown command '{name}', with args beginning with: {list}"),
    );
}

/// Redis's strict integer syntax (no '+', no leading zeros, no spaces).
pub fn parse_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = if b[0] == b'-' {
        (true, &b[1..])
    } else {
        (false, b)
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = (c - b'0') as i64;
        v = if neg {
            v.checked_mul(10)?.checked_sub(d)?
        } else {
            v.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(v)
}

pub(crate) const NOT_INT: &str = "ERR value is not an integer or out of range";
pub(crate) const SYNTAX: &str = "ERR syntax error";
const DEBUG_REFUSED: &str = "ERR DEBUG command not allowed. If the enable-debug-command option is \
    set to \"local\", you can run it from a local connection, otherwise you need to set this option \
    in the configuration file, and then restart the server.";
const MISCONF: &str = "MISCONF Redis is configured to save RDB snapshots, but it's currently \
    unable to persist to disk. Commands that may modify the data set are disabled, because this \
    instance is configured to report errors during writes if RDB snapshotting fails \
    (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.";
pub(crate) const OOM: &str = "OOM command not allowed: the dataset arena could not map more memory";

/// Executes one command; returns its id (for latency accounting) if it was a known command.
pub fn execute(st: &mut State, conn: &mut Conn, args: &Args, out: &mut Vec<u8>) -> Option<usize> {
    let Some(cmd) = resolve(args.get(0)) else {
        // Redis answers this before checking AUTH (only commands it knows need it).
        unknown_command(args, out);
        return None;
    };
    let (name, arity) = SPECS[cmd as usize];
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        resp::err(
            out,
            &format!("ERR wrong number of arguments for '{name}' command"),
        );
        return Some(cmd as usize);
    }
    if st.requirepass.is_some() && !conn.authed && !matches!(cmd, Cmd::AUTH | Cmd::QUIT) {
        resp::err(out, "NOAUTH Authentication required.");
        return Some(cmd as usize);
    }
    if cmd == Cmd::DEBUG && !st.debug_mode.allows(conn.local) {
        resp::err(out, DEBUG_REFUSED);
        return Some(cmd as usize);
    }
    // Redis refuses PING too, so a health check sees the failing disk.
    if (cmd.writes() || cmd == Cmd::PING) && st.persist.writes_refused() {
        resp::err(out, MISCONF);
        return Some(cmd as usize);
    }
    let now = now_ms();
    match cmd {
        Cmd::GET => match st.table.get(args.get(1), now) {
            Some(v) => resp::bulk(out, v),
            None => resp::nil(out),
        },
        Cmd::SET => set(st, args, out, now),
        Cmd::PING => match args.len() {
            1 => resp::simple(out, "PONG"),
            2 => resp::bulk(out, args.get(1)),
            _ => resp::err(out, "ERR wrong number of arguments for 'ping' command"),
        },
        Cmd::ECHO => resp::bulk(out, args.get(1)),
        Cmd::AUTH => auth(st, conn, args, out),
        Cmd::SELECT => match parse_int(args.get(1)) {
            None => resp::err(out, NOT_INT),
            Some(0) => resp::ok(out),
            Some(_) => resp::err(out, "ERR DB index is out of range"),
        },
        Cmd::DEL => {
            let mut c = 0;
            for i in 1..args.len() {
                c += st.table.del(args.get(i), now) as i64;
            }
            st.persist.dirty += c as u64;
            resp::int(out, c);
        }
        Cmd::EXISTS => {
            let mut c = 0;
            for i in 1..args.len() {
                c += st.table.contains(args.get(i), now) as i64;
            }
            resp::int(out, c);
        }
        Cmd::INCR => incr_by(st, args.get(1), Some(1), out, now),
        Cmd::DECR => incr_by(st, args.get(1), Some(-1), out, now),
        Cmd::INCRBY => incr_by(st, args.get(1), parse_int(args.get(2)), out, now),
        Cmd::DECRBY => match parse_int(args.get(2)) {
            None => resp::err(out, NOT_INT),
            Some(i64::MIN) => resp::err(out, "ERR decrement would overflow"),
            Some(d) => incr_by(st, args.get(1), Some(-d), out, now),
        },
        Cmd::MSET => {
            if args.len() % 2 != 1 {
                resp::err(out, "ERR wrong number of arguments for 'mset' command");
            } else {
                for i in (1..args.len()).step_by(2) {
                    if st
                        .table
                        .set(args.get(i), args.get(i + 1), Expire::Clear, now)
                        .is_err()
                    {
                        resp::err(out, OOM);
                        return Some(cmd as usize);
                    }
                    st.persist.dirty += 1;
                }
                resp::ok(out);
            }
        }
        Cmd::MGET => {
            resp::array_len(out, args.len() - 1);
            for i in 1..args.len() {
                match st.table.get(args.get(i), now) {
                    Some(v) => resp::bulk(out, v),
                    None => resp::nil(out),
                }
            }
        }
        Cmd::DBSIZE => resp::int(out, st.table.len() as i64),
        Cmd::FLUSHALL | Cmd::FLUSHDB => flushall(st, args, out),
        Cmd::SCAN => scan(st, args, out, now),
        Cmd::TTL | Cmd::PTTL => match st.table.expire_at(args.get(1), now) {
            None => resp::int(out, -2),
            Some(0) => resp::int(out, -1),
            Some(at) => {
                let ms = (at - now).max(0);
                resp::int(
                    out,
                    if cmd == Cmd::TTL {
                        (ms + 500) / 1000
                    } else {
                        ms
                    },
                );
            }
        },
        Cmd::EXPIRE => expire(st, args, out, now),
        Cmd::PERSIST => {
            let had = st.table.expire_at(args.get(1), now).is_some_and(|t| t != 0);
            if had {
                st.table.set_expire(args.get(1), 0, now);
                st.persist.dirty += 1;
            }
            resp::int(out, had as i64);
        }
        Cmd::BGSAVE => {
            // BGSAVE [SCHEDULE | FORK | FORKLESS] (Valkey's method argument).
            let method = match args.len() {
                1 => Some(st.persist.default_method),
                2 if args.is(1, "schedule") => Some(st.persist.default_method),
                2 => crate::method::Method::parse(args.get(1)),
                _ => None,
            };
            if let Some(method) = method {
                match st.persist.bgsave_with(method, &mut st.table, &st.registry) {
                    Ok(()) => resp::simple(out, "Background saving started"),
                    Err(e) => resp::err(out, &e),
                }
            } else {
                resp::err(out, SYNTAX);
            }
        }
        Cmd::SAVE => {
            if st.persist.child_alive() {
                resp::err(out, "ERR Background save already in progress");
            } else {
                match st.persist.save(&st.table) {
                    Ok(()) => resp::ok(out),
                    Err(e) => {
                        crate::log(&format!("SAVE failed: {e:#}"));
                        resp::err(out, &format!("ERR {}", lossy(format!("{e:#}").as_bytes())));
                    }
                }
            }
        }
        Cmd::LASTSAVE => resp::int(out, st.persist.lastsave),
        Cmd::INFO => {
            let sections: Vec<String> = (1..args.len())
                .map(|i| String::from_utf8_lossy(args.get(i)).to_ascii_lowercase())
                .collect();
            let text = info::render(st, &sections);
            resp::bulk(out, text.as_bytes());
        }
        Cmd::CONFIG => config(st, args, out),
        Cmd::DEBUG => debug(st, args, out, now),
        Cmd::COMMAND => {
            if args.len() == 1 || args.is(1, "docs") || args.is(1, "info") {
                resp::array_len(out, 0);
            } else if args.is(1, "count") {
                resp::int(out, SPECS.len() as i64);
            } else {
                subcommand_err(args, "COMMAND", out);
            }
        }
        Cmd::CLIENT => client(st, conn, args, out),
        Cmd::QUIT => {
            resp::ok(out);
            conn.close = true;
        }
        Cmd::SHUTDOWN => {
            let mode = if args.len() == 1 {
                Some(ShutdownSave::Default)
            } else if args.len() == 2 && args.is(1, "nosave") {
                Some(ShutdownSave::No)
            } else if args.len() == 2 && args.is(1, "save") {
                Some(ShutdownSave::Yes)
            } else {
                None
            };
            match mode {
                None => resp::err(out, SYNTAX),
                Some(m) => match prepare_shutdown(st, m) {
                    Ok(()) => st.shutdown = true,
                    Err(_) => resp::err(out, "ERR Errors trying to SHUTDOWN. Check logs."),
                },
            }
        }
    }
    Some(cmd as usize)
}

/// Redis's arity error for a known subcommand: `'config|get'`, `'client|setname'`.
pub(crate) fn subcommand_arity_err(args: &Args, cmd: &str, out: &mut Vec<u8>) {
    let sub = lossy(args.get(1)).to_ascii_lowercase();
    resp::err(
        out,
        &format!("ERR wrong number of arguments for '{cmd}|{sub}' command"),
    );
}

pub(crate) fn subcommand_err(args: &Args, cmd: &str, out: &mut Vec<u8>) {
    resp::err(
        out,
        &format!(
            "ERR unknown subcommand '{}'. Try {cmd} HELP.",
            lossy(args.get(1)).chars().take(128).collect::<String>()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ints_and_names() {
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"012"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert!(resolve(b"gEt") == Some(Cmd::GET));
        assert!(resolve(b"nope").is_none());
    }
}
