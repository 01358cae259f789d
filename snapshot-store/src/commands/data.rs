//! Commands on the keyspace that need more than a line: SET, INCR*, FLUSHALL, SCAN, EXPIRE,
//! DEBUG POPULATE.

use super::{Args, NOT_INT, OOM, SYNTAX, State, lossy, parse_int, subcommand_err};
use crate::glob;
use crate::resp;
use crate::table::Expire;

/// SET's expiry option: which argument holds the time, and how to read it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

pub(super) fn set(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    let mut exp: Option<(Unit, usize)> = None;
    let mut i = 3;
    while i < args.len() {
        let unit = [
            ("ex", Unit::Ex),
            ("px", Unit::Px),
            ("exat", Unit::ExAt),
            ("pxat", Unit::PxAt),
        ]
        .into_iter()
        .find(|(w, _)| args.is(i, w))
        .map(|(_, u)| u);
        if args.is(i, "nx") && !xx {
            nx = true;
        } else if args.is(i, "xx") && !nx {
            xx = true;
        } else if args.is(i, "get") {
            get = true;
        } else if args.is(i, "keepttl") && exp.is_none() {
            keep = true;
        } else if let Some(u) = unit
            // Like Redis: the same option again is allowed (the last one wins), another is not.
            && exp.is_none_or(|(e, _)| e == u)
            && !keep
            && i + 1 < args.len()
        {
            exp = Some((u, i + 1));
            i += 1;
        } else {
            return resp::err(out, SYNTAX);
        }
        i += 1;
    }
    let exp = match exp {
        None => None,
        Some((unit, at)) => match set_expiry(unit, args.get(at), now) {
            Ok(t) => Some(t),
            Err(e) => return resp::err(out, e),
        },
    };
    let key = args.get(1);
    let mark = out.len();
    let exists = if get {
        match st.table.get(key, now) {
            Some(v) => {
                resp::bulk(out, v);
                true
            }
            None => {
                resp::nil(out);
                false
            }
        }
    } else if nx || xx {
        st.table.contains(key, now)
    } else {
        false
    };
    if (nx && exists) || (xx && !exists) {
        if !get {
            resp::nil(out);
        }
        return;
    }
    let e = match (exp, keep) {
        (Some(at), _) => Expire::At(at),
        (None, true) => Expire::Keep,
        _ => Expire::Clear,
    };
    if st.table.set(key, args.get(2), e, now).is_err() {
        out.truncate(mark);
        return resp::err(out, OOM);
    }
    st.persist.dirty += 1;
    if !get {
        resp::ok(out);
    }
}

/// The absolute expiry (Unix ms) of SET's EX/PX/EXAT/PXAT argument, checked as Redis does.
fn set_expiry(unit: Unit, arg: &[u8], now: i64) -> Result<i64, &'static str> {
    const BAD: &str = "ERR invalid expire time in 'set' command";
    let v = parse_int(arg).ok_or(NOT_INT)?;
    if v <= 0 {
        return Err(BAD);
    }
    let ms = match unit {
        Unit::Ex | Unit::ExAt => v.checked_mul(1000).ok_or(BAD)?,
        Unit::Px | Unit::PxAt => v,
    };
    match unit {
        Unit::Ex | Unit::Px => now.checked_add(ms).ok_or(BAD),
        Unit::ExAt | Unit::PxAt => Ok(ms),
    }
}

pub(super) fn incr_by(st: &mut State, key: &[u8], delta: Option<i64>, out: &mut Vec<u8>, now: i64) {
    let Some(delta) = delta else {
        return resp::err(out, NOT_INT);
    };
    let cur = match st.table.get(key, now) {
        None => 0,
        Some(v) => match parse_int(v) {
            Some(n) => n,
            None => return resp::err(out, NOT_INT),
        },
    };
    let Some(new) = cur.checked_add(delta) else {
        return resp::err(out, "ERR increment or decrement would overflow");
    };
    let mut b = itoa::Buffer::new();
    if st
        .table
        .set(key, b.format(new).as_bytes(), Expire::Keep, now)
        .is_err()
    {
        return resp::err(out, OOM);
    }
    st.persist.dirty += 1;
    resp::int(out, new);
}

pub(super) fn flushall(st: &mut State, args: &Args, out: &mut Vec<u8>) {
    if args.len() > 2 || (args.len() == 2 && !args.is(1, "async") && !args.is(1, "sync")) {
        return resp::err(out, SYNTAX);
    }
    // A running fork save would write keys that are gone: stop it, as Redis does. The old table
    // is then dropped whole (its mappings unmapped) instead of being freed key by key.
    st.persist.dirty += st.table.len() as u64;
    let empty = st.table.empty_like();
    let old = std::mem::replace(&mut st.table, empty);
    // A forkless save can finish from the old table; unless FLUSHALL saves the empty dataset
    // now (then the older snapshot must not land after it).
    let old = if st.persist.save_points.is_empty() {
        st.persist.forkless_adopt(old)
    } else {
        Some(old)
    };
    if old.is_some() {
        st.persist.kill_child(&mut st.table, &st.registry);
    }
    drop(old);
    if !st.persist.save_points.is_empty() {
        // Redis saves the now-empty dataset right away so a restart can't resurrect the keys.
        if let Err(e) = st.persist.save(&st.table) {
            crate::log(&format!("FLUSHALL: saving the empty dataset failed: {e:#}"));
        }
    }
    st.persist.dirty += 1;
    resp::ok(out);
}

pub(super) fn scan(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    let Some(cursor) = parse_cursor(args.get(1)) else {
        return resp::err(out, "ERR invalid cursor");
    };
    let mut count = 10usize;
    let mut pat: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return resp::err(out, SYNTAX);
        }
        if args.is(i, "count") {
            match parse_int(args.get(i + 1)) {
                None => return resp::err(out, NOT_INT),
                Some(c) if c < 1 => return resp::err(out, SYNTAX),
                Some(c) => count = c as usize,
            }
        } else if args.is(i, "match") {
            pat = Some(args.get(i + 1));
        } else if args.is(i, "type") {
            // Every value is a string here.
            if !args.is(i + 1, "string") {
                count = 0;
            }
        } else {
            return resp::err(out, SYNTAX);
        }
        i += 2;
    }
    let mut body = Vec::new();
    let mut n = 0;
    let next = st.table.scan(cursor, count.max(1), now, |k| {
        if count > 0 && pat.is_none_or(|p| glob::matches(p, k)) {
            resp::bulk(&mut body, k);
            n += 1;
        }
    });
    resp::array_len(out, 2);
    resp::bulk(out, itoa::Buffer::new().format(next).as_bytes());
    resp::array_len(out, n);
    out.extend_from_slice(&body);
}

/// A cursor as C's strtoul reads it (Redis uses it): optional sign, digits, and a minus
/// wraps around ("-1" is the largest cursor); no spaces, nothing after, no overflow.
fn parse_cursor(b: &[u8]) -> Option<u64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

pub(super) fn expire(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..args.len() {
        match args.get(i).to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                return resp::err(
                    out,
                    &format!("ERR Unsupported option {}", lossy(args.get(i))),
                );
            }
        }
    }
    // Redis checks the options (these two messages in this order) before the time.
    if nx && (xx || gt || lt) {
        return resp::err(
            out,
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        );
    }
    if gt && lt {
        return resp::err(
            out,
            "ERR GT and LT options at the same time are not compatible",
        );
    }
    let Some(secs) = parse_int(args.get(2)) else {
        return resp::err(out, NOT_INT);
    };
    let Some(at) = secs.checked_mul(1000).and_then(|ms| now.checked_add(ms)) else {
        return resp::err(out, "ERR invalid expire time in 'expire' command");
    };
    let key = args.get(1);
    let Some(cur) = st.table.expire_at(key, now) else {
        return resp::int(out, 0);
    };
    // cur == 0 means no expiry, i.e. infinite.
    let skip = (nx && cur != 0)
        || (xx && cur == 0)
        || (gt && (cur == 0 || at <= cur))
        || (lt && cur != 0 && at >= cur);
    if skip {
        return resp::int(out, 0);
    }
    if at <= now {
        st.table.del(key, now);
    } else {
        st.table.set_expire(key, at, now);
    }
    st.persist.dirty += 1;
    resp::int(out, 1);
}

/// Upper bounds of DEBUG POPULATE's arguments: a value no bigger than a client could send
/// (proto-max-bulk-len), and a key count whose bucket array can be mapped.
const POPULATE_MAX_SIZE: i64 = 512 * 1024 * 1024;
const POPULATE_MAX_KEYS: i64 = 1 << 32;

/// DEBUG POPULATE <count> [prefix] [size], with Redis's keys and values.
pub(super) fn debug(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    if !args.is(1, "populate") || !(3..=5).contains(&args.len()) {
        return subcommand_err(args, "DEBUG", out);
    }
    const NEG: &str = "ERR value is out of range, must be positive";
    // Redis's getPositiveLong...OrReply gives one message for both failures.
    let count = match parse_int(args.get(2)) {
        None => return resp::err(out, NEG),
        Some(c) if c < 0 => return resp::err(out, NEG),
        Some(c) if c > POPULATE_MAX_KEYS => {
            return resp::err(out, "ERR DEBUG POPULATE: at most 4294967296 keys at a time");
        }
        Some(c) => c as u64,
    };
    let prefix: &[u8] = if args.len() >= 4 { args.get(3) } else { b"key" };
    let size = if args.len() == 5 {
        match parse_int(args.get(4)) {
            None => return resp::err(out, NEG),
            Some(s) if s < 0 => return resp::err(out, NEG),
            Some(s) if s > POPULATE_MAX_SIZE => {
                return resp::err(
                    out,
                    "ERR DEBUG POPULATE: the value size is at most 536870912 bytes",
                );
            }
            // 0, like no size: Redis's plain "value:<j>".
            Some(0) => None,
            Some(s) => Some(s as usize),
        }
    } else {
        None
    };
    st.table.reserve(count as usize);
    let mut key = Vec::with_capacity(prefix.len() + 21);
    let mut val = Vec::with_capacity(size.unwrap_or(0).max(32));
    let mut nb = itoa::Buffer::new();
    for j in 0..count {
        let num = nb.format(j).as_bytes();
        key.clear();
        key.extend_from_slice(prefix);
        key.push(b':');
        key.extend_from_slice(num);
        if st.table.contains(&key, now) {
            continue;
        }
        // Redis's values: "value:<j>", cut or zero-padded to `size` when given.
        val.clear();
        val.extend_from_slice(b"value:");
        val.extend_from_slice(num);
        if let Some(s) = size {
            val.resize(s, 0);
        }
        if st.table.set(&key, &val, Expire::Clear, now).is_err() {
            return resp::err(out, OOM);
        }
    }
    resp::ok(out);
}
