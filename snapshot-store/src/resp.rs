//! RESP2 request framing and reply encoding.
//!
//! Hand-rolled rather than taken from a crate (redis-protocol was considered) for two reasons:
//! clients must get Redis's exact protocol error texts ("Protocol error: invalid multibulk
//! length", ...) and inline commands, which RESP crates don't give; and the hot path wants zero
//! copies: a parsed command is a list of byte ranges into the client's input buffer, and replies
//! are appended to the client's one output buffer. Both are covered by the integration tests.

/// Redis's limits: 1M arguments, 512 MB per bulk string, 64 KiB per inline command.
const MAX_MULTIBULK: i64 = 1024 * 1024;
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_INLINE: usize = 64 * 1024;

pub enum Parse {
    /// A command was framed; its arguments are in the `args` vector; this many bytes were used.
    Done(usize),
    Incomplete,
    /// Protocol error text (without "-ERR "); the connection must be closed after replying.
    Error(String),
}

/// Frames one command from `buf`, filling `args` with (start, end) ranges into `buf`.
pub fn parse(buf: &[u8], args: &mut Vec<(usize, usize)>) -> Parse {
    args.clear();
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    if buf[0] != b'*' {
        return parse_inline(buf, args);
    }
    let Some((n, mut pos)) = read_line_int(buf, 1) else {
        return if buf.len() > MAX_INLINE {
            Parse::Error("Protocol error: too big mbulk count string".into())
        } else if line_end(buf, 1).is_some() {
            Parse::Error("Protocol error: invalid multibulk length".into())
        } else {
            Parse::Incomplete
        };
    };
    if n > MAX_MULTIBULK {
        return Parse::Error("Protocol error: invalid multibulk length".into());
    }
    for _ in 0..n.max(0) {
        if pos >= buf.len() {
            return Parse::Incomplete;
        }
        if buf[pos] != b'$' {
            return Parse::Error(format!(
                "Protocol error: expected '$', got '{}'",
                char::from(buf[pos]).escape_default()
            ));
        }
        let Some((len, p)) = read_line_int(buf, pos + 1) else {
            return if line_end(buf, pos + 1).is_some() {
                Parse::Error("Protocol error: invalid bulk length".into())
            } else if buf.len() - pos > MAX_INLINE {
                Parse::Error("Protocol error: too big bulk count string".into())
            } else {
                Parse::Incomplete
            };
        };
        if !(0..=MAX_BULK).contains(&len) {
            return Parse::Error("Protocol error: invalid bulk length".into());
        }
        let end = p + len as usize;
        if buf.len() < end + 2 {
            return Parse::Incomplete;
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Parse::Error("Protocol error: bulk string not terminated by CRLF".into());
        }
        args.push((p, end));
        pos = end + 2;
    }
    Parse::Done(pos)
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    memchr_nl(&buf[from.min(buf.len())..]).map(|i| from + i)
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Reads "<int>\r\n" at `from`; returns the value and the position after the CRLF.
/// None if the line is incomplete or not a valid integer (the caller tells which).
fn read_line_int(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut i = from;
    let mut neg = false;
    if i < buf.len() && buf[i] == b'-' {
        neg = true;
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < buf.len() && buf[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((buf[i] - b'0') as i64)?;
        i += 1;
    }
    if i == start || i + 1 >= buf.len() || buf[i] != b'\r' || buf[i + 1] != b'\n' {
        return None;
    }
    Some((if neg { -v } else { v }, i + 2))
}

fn parse_inline(buf: &[u8], args: &mut Vec<(usize, usize)>) -> Parse {
    let Some(nl) = memchr_nl(buf) else {
        return if buf.len() > MAX_INLINE {
            Parse::Error("Protocol error: too big inline request".into())
        } else {
            Parse::Incomplete
        };
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut i = 0;
    while i < line_end {
        while i < line_end && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line_end {
            break;
        }
        if buf[i] == b'"' || buf[i] == b'\'' {
            let q = buf[i];
            let s = i + 1;
            let Some(e) = buf[s..line_end].iter().position(|&c| c == q) else {
                return Parse::Error("Protocol error: unbalanced quotes in request".into());
            };
            args.push((s, s + e));
            i = s + e + 1;
        } else {
            let s = i;
            while i < line_end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            args.push((s, i));
        }
    }
    Parse::Done(nl + 1)
}

// ---- replies ----

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}
/// `msg` includes the error code, e.g. "ERR syntax error".
pub fn err(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend_from_slice(msg.as_bytes());
    out.extend_from_slice(b"\r\n");
}
pub fn int(out: &mut Vec<u8>, v: i64) {
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.extend_from_slice(b"\r\n");
}
pub fn bulk(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(v.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
}
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}
pub fn array_len(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibulk_and_inline() {
        let mut a = Vec::new();
        let b = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1";
        match parse(b, &mut a) {
            Parse::Done(n) => assert_eq!(n, b.len() - 2),
            _ => panic!(),
        }
        assert_eq!(&b[a[0].0..a[0].1], b"GET");
        assert!(matches!(parse(&b[..10], &mut a), Parse::Incomplete));
        assert!(matches!(parse(b"*x\r\n", &mut a), Parse::Error(_)));
        assert!(matches!(parse(b"*1\r\n+x\r\n", &mut a), Parse::Error(_)));
        match parse(b"set a 'b c'\r\n", &mut a) {
            Parse::Done(_) => assert_eq!(a.len(), 3),
            _ => panic!(),
        }
    }
}
