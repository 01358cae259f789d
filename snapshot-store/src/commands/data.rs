//! Commands on the keyspace that need more than a line: SET, INCR*, FLUSHALL, SCAN, EXPIRE,
//! DEBUG POPULATE.

use super::{Args, NOT_INT, OOM, SYNTAX, State, lossy, parse_int, subcommand_err};
use crate::glob;
use crate::resp;
use crate::table::Expire;

pub(super) fn set(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    let mut exp: Option<i64> = None;
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "nx") && !xx {
            nx = true;
        } else if args.is(i, "xx") && !nx {
            xx = true;
        } else if args.is(i, "get") {
            get = true;
        } else if args.is(i, "keepttl") && exp.is_none() {
            keep = true;
        } else if (args.is(i, "ex") || args.is(i, "px"))
            && exp.is_none()
            && !keep
            && i + 1 < args.len()
        {
            let Some(v) = parse_int(args.get(i + 1)) else {
                return resp::err(out, NOT_INT);
            };
            let ms = if args.is(i, "ex") {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            match ms.and_then(|m| if m > 0 { now.checked_add(m) } else { None }) {
                Some(at) => exp = Some(at),
                None => return resp::err(out, "ERR invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return resp::err(out, SYNTAX);
        }
        i += 1;
    }
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
    // A running save would write keys that are gone: stop it, as Redis does. The old table is
    // then dropped whole (its mappings unmapped) instead of being freed key by key.
    st.persist.kill_child(&mut st.table, &st.registry);
    st.persist.dirty += st.table.len() as u64;
    st.table = st.table.empty_like();
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
    let Some(cursor) = std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
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

pub(super) fn expire(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    let Some(secs) = parse_int(args.get(2)) else {
        return resp::err(out, NOT_INT);
    };
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
    if (nx && (xx || gt || lt)) || (gt && lt) {
        return resp::err(
            out,
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        );
    }
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

/// The parameters CONFIG GET knows (name, current value).
pub(super) fn debug(st: &mut State, args: &Args, out: &mut Vec<u8>, now: i64) {
    if !args.is(1, "populate") || !(3..=5).contains(&args.len()) {
        return subcommand_err(args, "DEBUG", out);
    }
    let count = match parse_int(args.get(2)) {
        None => return resp::err(out, NOT_INT),
        Some(c) if c < 0 => return resp::err(out, "ERR value is out of range, must be positive"),
        Some(c) => c as u64,
    };
    let prefix: &[u8] = if args.len() >= 4 { args.get(3) } else { b"key" };
    let size = if args.len() == 5 {
        match parse_int(args.get(4)) {
            Some(s) if s >= 0 => Some(s as usize),
            _ => return resp::err(out, NOT_INT),
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
