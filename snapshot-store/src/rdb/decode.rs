//! RDB reader: checks everything, reports the byte offset of the first problem, and hands
//! each string key to the caller. Anything the store cannot hold is an error, never skipped.

use super::{crc64, lzf, op};
use std::io::Read;

/// What went wrong and where (byte offset of the field that is wrong or cut short).
#[derive(Debug)]
pub struct Error {
    pub offset: u64,
    pub msg: String,
}

pub struct Summary {
    pub version: u32,
    pub keys: u64,
}

type Res<T> = Result<T, Error>;

/// One string key: name, value, expiry in Unix ms.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8], &[u8], Option<i64>) -> Result<(), String>;

struct Src<R> {
    r: R,
    off: u64,
    size: u64,
    crc: crc64::Crc64,
    lzf: Vec<u8>,
}

enum Len {
    Plain(u64),
    /// A special string encoding (the low 6 bits of an `11xxxxxx` byte).
    Enc(u8),
}

fn fail<T>(offset: u64, msg: impl Into<String>) -> Res<T> {
    Err(Error {
        offset,
        msg: msg.into(),
    })
}

impl<R: Read> Src<R> {
    fn take(&mut self, out: &mut [u8], what: &str) -> Res<()> {
        let at = self.off;
        if self.off + out.len() as u64 > self.size {
            return fail(at, format!("truncated file: {what} runs past the end"));
        }
        if let Err(e) = self.r.read_exact(out) {
            return fail(at, format!("read error in {what}: {e}"));
        }
        self.crc.update(out);
        self.off += out.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Res<[u8; N]> {
        let mut b = [0u8; N];
        self.take(&mut b, what)?;
        Ok(b)
    }

    fn byte(&mut self, what: &str) -> Res<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn len_or_enc(&mut self, what: &str) -> Res<Len> {
        let at = self.off;
        let b = self.byte(what)?;
        Ok(Len::Plain(match b >> 6 {
            0 => u64::from(b & 0x3f),
            1 => u64::from(b & 0x3f) << 8 | u64::from(self.byte(what)?),
            3 => return Ok(Len::Enc(b & 0x3f)),
            _ if b == op::LEN_32 => u64::from(u32::from_be_bytes(self.array(what)?)),
            _ if b == op::LEN_64 => u64::from_be_bytes(self.array(what)?),
            _ => return fail(at, format!("bad length encoding 0x{b:02x} in {what}")),
        }))
    }

    fn len(&mut self, what: &str) -> Res<u64> {
        let at = self.off;
        match self.len_or_enc(what)? {
            Len::Plain(n) => Ok(n),
            Len::Enc(_) => fail(at, format!("{what} is a string encoding, not a length")),
        }
    }

    /// A length for data that follows, checked against the file's size before any allocation.
    fn fitting_len(&mut self, what: &str) -> Res<usize> {
        let at = self.off;
        let n = self.len(what)?;
        if n > self.size - self.off {
            return fail(
                at,
                format!("truncated file: {what} of {n} bytes runs past the end"),
            );
        }
        Ok(n as usize)
    }

    /// A string in any encoding Redis writes, into `out`.
    fn string(&mut self, out: &mut Vec<u8>, what: &str) -> Res<()> {
        let at = self.off;
        let int: i64 = match self.len_or_enc(what)? {
            Len::Plain(n) => return self.raw(out, n, at, what),
            Len::Enc(op::INT8) => i8::from_le_bytes(self.array(what)?).into(),
            Len::Enc(op::INT16) => i16::from_le_bytes(self.array(what)?).into(),
            Len::Enc(op::INT32) => i32::from_le_bytes(self.array(what)?).into(),
            Len::Enc(op::LZF) => return self.lzf_string(out, what),
            Len::Enc(e) => return fail(at, format!("unknown string encoding {e} in {what}")),
        };
        out.clear();
        out.extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
        Ok(())
    }

    /// `n` bytes as they are; `at` is where their length starts.
    fn raw(&mut self, out: &mut Vec<u8>, n: u64, at: u64, what: &str) -> Res<()> {
        if n > self.size - self.off {
            return fail(
                at,
                format!("truncated file: {what} of {n} bytes runs past the end"),
            );
        }
        out.resize(n as usize, 0);
        self.take(out, what)
    }

    fn lzf_string(&mut self, out: &mut Vec<u8>, what: &str) -> Res<()> {
        let clen = self.fitting_len(&format!("compressed {what}"))?;
        let at = self.off;
        let ulen = self.len(&format!("{what} length"))?;
        // One 3-byte LZF reference yields at most 264 bytes: a larger claim is corrupt (and
        // must not make us allocate it).
        if ulen > clen as u64 * 88 {
            return fail(at, format!("corrupt LZF {what}: {ulen} bytes from {clen}"));
        }
        let mut c = std::mem::take(&mut self.lzf);
        c.resize(clen, 0);
        let at = self.off;
        let r = self.take(&mut c, what);
        let r = r.and_then(|()| {
            lzf::decompress(&c, ulen as usize, out).or_else(|e| fail(at, format!("{e} in {what}")))
        });
        self.lzf = c;
        r
    }
}

/// Redis's name for a value type byte, for errors.
fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        1 | 10 | 14 | 18 => "list",
        2 | 11 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 => "hash",
        6 | 7 => "module",
        15 | 19 => "stream",
        _ => return None,
    })
}

/// Reads a whole RDB file of `size` bytes from `r`, calling `sink` for every string key.
pub fn decode<R: Read>(r: R, size: u64, sink: Sink) -> Res<Summary> {
    let mut s = Src {
        r,
        off: 0,
        size,
        crc: crc64::digest(),
        lzf: Vec::new(),
    };
    let magic: [u8; 5] = s.array("header")?;
    if &magic != op::MAGIC {
        return fail(0, "bad magic (not an RDB file)");
    }
    let ver: [u8; 4] = s.array("RDB version")?;
    let version = std::str::from_utf8(&ver)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| (1..=op::VERSION).contains(v));
    let Some(version) = version else {
        let v = ver.escape_ascii();
        return fail(
            5,
            format!(
                "unsupported RDB version \"{v}\" (this build reads 1 to {})",
                op::VERSION
            ),
        );
    };
    let keys = records(&mut s, sink)?;
    if version >= 5 {
        let computed = s.crc.clone().finalize();
        let at = s.off;
        let stored = u64::from_le_bytes(s.array("checksum")?);
        // Zero means the writer had `rdbchecksum no`; Redis accepts that too.
        if stored != 0 && stored != computed {
            return fail(
                at,
                format!("checksum mismatch: stored {stored:016x}, computed {computed:016x}"),
            );
        }
    }
    if s.off != s.size {
        return fail(s.off, "trailing bytes after the end of the RDB data");
    }
    Ok(Summary { version, keys })
}

/// The records up to and including EOF; returns the number of keys.
fn records<R: Read>(s: &mut Src<R>, sink: Sink) -> Res<u64> {
    let (mut key, mut val) = (Vec::new(), Vec::new());
    let mut db = 0;
    let mut expire = None;
    let mut n = 0;
    loop {
        let at = s.off;
        match s.byte("opcode")? {
            op::EOF => return Ok(n),
            op::EXPIRETIME_MS => expire = Some(i64::from_le_bytes(s.array("expiry")?)),
            op::EXPIRETIME => {
                expire = Some(i64::from(i32::from_le_bytes(s.array("expiry")?)) * 1000)
            }
            op::FREQ => drop(s.byte("LFU frequency")?),
            op::IDLE => drop(s.len("LRU idle time")?),
            op::AUX => {
                s.string(&mut key, "aux field name")?;
                s.string(&mut val, "aux field value")?;
            }
            op::SELECTDB => db = s.len("database number")?,
            op::RESIZEDB => drop((s.len("database size")?, s.len("expires size")?)),
            op::MODULE_AUX => {
                let id = s.len("module id")?;
                return fail(
                    at,
                    format!(
                        "module data of module {} (the store has no modules)",
                        module_name(id)
                    ),
                );
            }
            op::FUNCTION2 | op::FUNCTION_PRE_GA => {
                return fail(at, "a function library (the store runs no functions)");
            }
            op::TYPE_STRING => {
                s.string(&mut key, "key")?;
                s.string(&mut val, "value")?;
                if db != 0 {
                    let k = key.escape_ascii();
                    return fail(
                        at,
                        format!("key \"{k}\" is in database {db}; the store has database 0 only"),
                    );
                }
                sink(&key, &val, expire.take()).or_else(|e| fail(at, e))?;
                n += 1;
            }
            t => return not_a_string(s, at, t, &mut key),
        }
    }
}

fn not_a_string<R: Read>(s: &mut Src<R>, at: u64, t: u8, key: &mut Vec<u8>) -> Res<u64> {
    let Some(name) = type_name(t) else {
        return fail(at, format!("unknown record type 0x{t:02x}"));
    };
    s.string(key, "key")?;
    let k = key.escape_ascii();
    let what = if t == 7 {
        format!(
            "a value of module type {}",
            module_name(s.len("module id")?)
        )
    } else {
        format!("a {name} (RDB type {t})")
    };
    fail(
        at,
        format!("key \"{k}\" holds {what}; the store holds strings only"),
    )
}

/// Redis's 9-character module type name, packed into the top 54 bits of a module id.
fn module_name(id: u64) -> String {
    const CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..9)
        .map(|i| CHARS[(id >> (64 - 6 * (i + 1)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::encode::Encoder;

    /// Magic and version, `body`, EOF and, from version 5 on, the checksum field.
    fn file(version: &str, body: &[u8], checksum: Option<u64>) -> Vec<u8> {
        let mut out = format!("REDIS{version}").into_bytes();
        out.extend_from_slice(body);
        out.push(op::EOF);
        if let Some(c) = checksum {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    fn with_crc(mut f: Vec<u8>) -> Vec<u8> {
        let mut d = crc64::digest();
        d.update(&f[..f.len() - 8]);
        let n = f.len();
        f[n - 8..].copy_from_slice(&d.finalize().to_le_bytes());
        f
    }

    type Key = (Vec<u8>, Vec<u8>, Option<i64>);

    fn read(f: &[u8]) -> Res<Vec<Key>> {
        let mut got = Vec::new();
        let mut sink = |k: &[u8], v: &[u8], e: Option<i64>| {
            got.push((k.to_vec(), v.to_vec(), e));
            Ok(())
        };
        decode(f, f.len() as u64, &mut sink)?;
        Ok(got)
    }

    #[test]
    fn seconds_expiry_lru_lfu_and_long_lengths() {
        let mut body = vec![op::SELECTDB, 0, op::RESIZEDB, 2, 1];
        body.extend_from_slice(&[op::EXPIRETIME, 0x10, 0x27, 0, 0, op::IDLE, 0x40, 0x80]);
        body.extend_from_slice(&[op::TYPE_STRING, 1, b'a', op::LEN_64, 0, 0, 0, 0, 0, 0, 0, 2]);
        body.extend_from_slice(b"xy");
        body.extend_from_slice(&[op::FREQ, 5, op::TYPE_STRING, op::LEN_32, 0, 0, 0, 1, b'b']);
        body.extend_from_slice(&[0xC2, 0xff, 0xff, 0xff, 0x7f]);
        let want = vec![
            (b"a".to_vec(), b"xy".to_vec(), Some(10_000_000)),
            (b"b".to_vec(), b"2147483647".to_vec(), None),
        ];
        assert_eq!(read(&with_crc(file("0010", &body, Some(0)))).unwrap(), want);
        // A zero checksum means "not computed" (rdbchecksum no), as in Redis.
        assert_eq!(read(&file("0010", &body, Some(0))).unwrap(), want);
        // Before version 5 there is no checksum.
        assert_eq!(read(&file("0004", &body, None)).unwrap(), want);
    }

    #[test]
    fn module_data_is_refused_with_the_module_name() {
        // Id of module type "mymodule1", encoding version 2: 9 six-bit characters, then 10 bits.
        let chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let id = b"mymodule1".iter().fold(0u64, |id, c| {
            id << 6 | chars.iter().position(|x| x == c).unwrap() as u64
        }) << 10
            | 2;
        let mut body = vec![op::MODULE_AUX, op::LEN_64];
        body.extend_from_slice(&id.to_be_bytes());
        let e = read(&with_crc(file("0010", &body, Some(0)))).unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(e.msg.contains("module mymodule1"), "{}", e.msg);

        let mut body = vec![7, 1, b'k', op::LEN_64];
        body.extend_from_slice(&id.to_be_bytes());
        let e = read(&with_crc(file("0010", &body, Some(0)))).unwrap_err();
        assert!(
            e.msg
                .contains("key \"k\" holds a value of module type mymodule1"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn round_trip_through_the_encoder() {
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(64);
        let mut e = Encoder::new(&mut out, &mut buf, true);
        e.header(&[("redis-ver", "7.0.15")]).unwrap();
        e.select_db(0, 2, 1).unwrap();
        let long = b"long value ".repeat(100);
        e.string_key(b"k1", &long, Some(1234)).unwrap();
        e.string_key(b"-7", b"", None).unwrap();
        e.finish().unwrap();
        let want = vec![
            (b"k1".to_vec(), long, Some(1234)),
            (b"-7".to_vec(), Vec::new(), None),
        ];
        assert_eq!(read(&out).unwrap(), want);
    }
}
