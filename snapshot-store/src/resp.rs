//! RESP2 request framing and reply encoding.
//!
//! Hand-rolled rather than taken from a crate (redis-protocol was considered) for two reasons:
//! clients must get Redis's exact protocol error texts ("Protocol error: invalid multibulk
//! length", ...) and inline commands, which RESP crates don't give; and the hot path wants zero
//! copies: a parsed command is a list of byte ranges into the client's input buffer, and replies
//! are appended to the client's one output buffer. Both are covered by the integration tests.

/// Redis's limits: INT_MAX arguments, 512 MB per bulk string (proto-max-bulk-len), 64 KiB
/// per inline command or length line; before AUTH (when a password is set) 10 arguments and
/// 16 KiB per bulk, so an unauthenticated client can't make the server buffer much.
const MAX_MULTIBULK: i64 = i32::MAX as i64;
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_INLINE: usize = 64 * 1024;
const UNAUTH_MULTIBULK: i64 = 10;
const UNAUTH_BULK: i64 = 16 * 1024;

pub enum Parse {
    /// A command was framed; its arguments are in [`Parser::args`]; this many bytes were used.
    Done(usize),
    Incomplete,
    /// Protocol error text (without "-ERR "); the connection must be closed after replying.
    Error(String),
}

/// Frames commands. A multibulk received in pieces is resumed where the last call stopped,
/// so a request trickling in over many reads is scanned once, not once per read.
#[derive(Default)]
pub struct Parser {
    /// (start, end) ranges of the arguments, relative to the start of the command.
    pub args: Vec<(usize, usize)>,
    /// Arguments of the multibulk in progress (0: none in progress).
    want: usize,
    /// Where parsing resumes, relative to the start of the command.
    pos: usize,
}

enum Line {
    Int(i64, usize),
    Incomplete,
    Invalid,
    TooBig,
}

/// Reads "<int>\r\n" at `from` with Redis's strict integer syntax; Int carries the position
/// after the CRLF.
fn read_line_int(buf: &[u8], from: usize) -> Line {
    let rest = &buf[from.min(buf.len())..];
    let Some(cr) = rest.iter().position(|&c| c == b'\r') else {
        return if rest.len() > MAX_INLINE {
            Line::TooBig
        } else {
            Line::Incomplete
        };
    };
    if cr + 2 > rest.len() {
        return Line::Incomplete;
    }
    match crate::commands::parse_int(&rest[..cr]) {
        Some(v) => Line::Int(v, from + cr + 2),
        None => Line::Invalid,
    }
}

impl Parser {
    /// Frames one command at the start of `buf`. `authed`: false applies the limits that hold
    /// before AUTH.
    pub fn parse(&mut self, buf: &mut [u8], authed: bool) -> Parse {
        if self.want == 0 {
            self.args.clear();
            self.pos = 0;
            if buf.is_empty() {
                return Parse::Incomplete;
            }
            if buf[0] != b'*' {
                return parse_inline(buf, &mut self.args);
            }
            let n = match read_line_int(buf, 1) {
                Line::Int(n, p) => {
                    self.pos = p;
                    n
                }
                Line::Incomplete => return Parse::Incomplete,
                Line::TooBig => return proto_err("too big mbulk count string"),
                Line::Invalid => return proto_err("invalid multibulk length"),
            };
            if n > MAX_MULTIBULK {
                return proto_err("invalid multibulk length");
            }
            if n > UNAUTH_MULTIBULK && !authed {
                return proto_err("unauthenticated multibulk length");
            }
            if n <= 0 {
                return Parse::Done(self.pos);
            }
            self.want = n as usize;
        }
        let r = self.bulks(buf, authed);
        if !matches!(r, Parse::Incomplete) {
            self.want = 0;
        }
        r
    }

    /// Reads the bulk strings of the multibulk in progress, from `self.pos`.
    fn bulks(&mut self, buf: &[u8], authed: bool) -> Parse {
        while self.args.len() < self.want {
            let pos = self.pos;
            if pos >= buf.len() {
                return Parse::Incomplete;
            }
            if buf[pos] != b'$' {
                return Parse::Error(format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(buf[pos]).escape_default()
                ));
            }
            let (len, p) = match read_line_int(buf, pos + 1) {
                Line::Int(len, p) => (len, p),
                Line::Incomplete => return Parse::Incomplete,
                Line::TooBig => return proto_err("too big bulk count string"),
                Line::Invalid => return proto_err("invalid bulk length"),
            };
            if !(0..=MAX_BULK).contains(&len) {
                return proto_err("invalid bulk length");
            }
            if len > UNAUTH_BULK && !authed {
                return proto_err("unauthenticated bulk length");
            }
            let end = p + len as usize;
            if buf.len() < end + 2 {
                return Parse::Incomplete;
            }
            // Like Redis, the two bytes after the data are taken as its CRLF unseen.
            self.args.push((p, end));
            self.pos = end + 2;
        }
        Parse::Done(self.pos)
    }
}

fn proto_err(what: &str) -> Parse {
    Parse::Error(format!("Protocol error: {what}"))
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// An inline (telnet-style) command, split with Redis's rules (sdssplitargs): double quotes
/// take \\n \\r \\t \\b \\a \\xHH and \\<c>, single quotes only \\', and a closing quote must be
/// followed by a space. Unescaping only shortens, so it is done in place and the arguments
/// stay ranges into `buf`.
fn parse_inline(buf: &mut [u8], args: &mut Vec<(usize, usize)>) -> Parse {
    let Some(nl) = memchr_nl(buf) else {
        return if buf.len() > MAX_INLINE {
            proto_err("too big inline request")
        } else {
            Parse::Incomplete
        };
    };
    let mut end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    // sdssplitargs works on a C string: a NUL ends the line.
    if let Some(z) = buf[..end].iter().position(|&c| c == 0) {
        end = z;
    }
    match split_args(&mut buf[..end], args) {
        Some(()) => Parse::Done(nl + 1),
        None => {
            args.clear();
            proto_err("unbalanced quotes in request")
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits `line` in place; None on unbalanced quotes.
fn split_args(line: &mut [u8], args: &mut Vec<(usize, usize)>) -> Option<()> {
    let n = line.len();
    let mut i = 0;
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(());
        }
        let start = i;
        let mut w = i;
        // Inside a word only these end it (sdssplitargs); \v and \f only between words.
        while i < n && !matches!(line[i], b' ' | b'\n' | b'\r' | b'\t') {
            match line[i] {
                q @ (b'"' | b'\'') => (i, w) = quoted(line, i + 1, w, q)?,
                c => {
                    line[w] = c;
                    w += 1;
                    i += 1;
                }
            }
        }
        args.push((start, w));
    }
}

/// Copies the quoted part starting at `i` (after the opening quote `q`) to `w`, unescaping;
/// returns the positions after the closing quote and after the copied bytes.
fn quoted(line: &mut [u8], mut i: usize, mut w: usize, q: u8) -> Option<(usize, usize)> {
    let n = line.len();
    let at = |line: &[u8], i: usize| line.get(i).copied();
    loop {
        let c = at(line, i)?; // the line ended inside the quotes
        let (byte, used) = if c == q {
            // The closing quote must end the word.
            if at(line, i + 1).is_some_and(|next| !is_space(next)) {
                return None;
            }
            return Some((i + 1, w));
        } else if c == b'\\' && q == b'"' && i + 1 < n {
            escape(line, i)
        } else if c == b'\\' && q == b'\'' && at(line, i + 1) == Some(b'\'') {
            (b'\'', 2)
        } else {
            (c, 1)
        };
        line[w] = byte;
        w += 1;
        i += used;
    }
}

/// A backslash escape inside double quotes at `i`: the byte it stands for and its length.
fn escape(line: &[u8], i: usize) -> (u8, usize) {
    let hex_at = |j: usize| line.get(j).and_then(|&c| (c as char).to_digit(16));
    if line[i + 1] == b'x'
        && let (Some(h), Some(l)) = (hex_at(i + 2), hex_at(i + 3))
    {
        return ((h * 16 + l) as u8, 4);
    }
    let b = match line[i + 1] {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        o => o,
    };
    (b, 2)
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

    fn parse(b: &[u8]) -> (Parse, Vec<Vec<u8>>) {
        let mut p = Parser::default();
        let mut b = b.to_vec();
        let r = p.parse(&mut b, true);
        let a = p.args.iter().map(|&(s, e)| b[s..e].to_vec()).collect();
        (r, a)
    }

    #[test]
    fn multibulk_and_inline() {
        let b = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1";
        let (r, a) = parse(b);
        assert!(matches!(r, Parse::Done(n) if n == b.len() - 2));
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        assert!(matches!(parse(&b[..10]).0, Parse::Incomplete));
        assert!(matches!(parse(b"*x\r\n").0, Parse::Error(_)));
        assert!(matches!(parse(b"*01\r\n").0, Parse::Error(_)));
        assert!(matches!(parse(b"*1\r\n$04\r\n").0, Parse::Error(_)));
        assert!(matches!(parse(b"*1\r\n+x\r\n").0, Parse::Error(_)));
        let (_, a) = parse(b"set a 'b c' \"x\\\"y\" \"\\x41\\n\"\r\n");
        assert_eq!(
            a,
            vec![
                b"set".to_vec(),
                b"a".to_vec(),
                b"b c".to_vec(),
                b"x\"y".to_vec(),
                b"A\n".to_vec()
            ]
        );
        assert!(matches!(parse(b"set \"a\"b\r\n").0, Parse::Error(_)));
    }

    #[test]
    fn resumes_a_partial_multibulk() {
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut p = Parser::default();
        let mut buf = Vec::new();
        for (i, &byte) in full.iter().enumerate() {
            buf.push(byte);
            let r = p.parse(&mut buf, true);
            if i + 1 < full.len() {
                assert!(matches!(r, Parse::Incomplete), "at {i}");
            } else {
                assert!(matches!(r, Parse::Done(n) if n == full.len()));
            }
        }
        assert_eq!(p.args.len(), 3);
        assert_eq!(&buf[p.args[2].0..p.args[2].1], b"hello");
    }

    #[test]
    fn limits_before_auth() {
        let mut p = Parser::default();
        let mut b = b"*11\r\n".to_vec();
        assert!(
            matches!(p.parse(&mut b, false), Parse::Error(e) if e.contains("unauthenticated multibulk"))
        );
        let mut b = b"*1\r\n$16385\r\n".to_vec();
        assert!(
            matches!(p.parse(&mut b, false), Parse::Error(e) if e.contains("unauthenticated bulk"))
        );
        let mut b = b"*1\r\n$16385\r\n".to_vec();
        assert!(matches!(p.parse(&mut b, true), Parse::Incomplete));
    }
}
