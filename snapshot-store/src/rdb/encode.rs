//! RDB writer. Writes to any `std::io::Write` through a caller-owned staging buffer and keeps
//! the CRC-64 of everything written, which `finish` appends as the trailer.

use super::{crc64, lzf, op};
use std::io::{self, Write};

pub struct Encoder<'b, W: Write> {
    out: W,
    buf: &'b mut Vec<u8>,
    crc: crc64::Crc64,
    compress: bool,
    lzf_out: Vec<u8>,
    lzf_table: Vec<u32>,
}

/// The integer a string is stored as, if Redis would store it so: the canonical decimal
/// form (no sign on zero, no leading zeros) of a number that fits 32 bits.
pub fn as_int(s: &[u8]) -> Option<i32> {
    if s.is_empty() || s.len() > 11 {
        return None;
    }
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == s.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

impl<'b, W: Write> Encoder<'b, W> {
    /// `buf` is the staging buffer: its capacity is the write size (the fork child reuses
    /// the one the parent reserved).
    pub fn new(out: W, buf: &'b mut Vec<u8>, compress: bool) -> Self {
        buf.clear();
        Encoder {
            out,
            buf,
            crc: crc64::digest(),
            compress,
            lzf_out: Vec::new(),
            lzf_table: Vec::new(),
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        if self.buf.len() + b.len() > self.buf.capacity() {
            self.flush_buf()?;
            if b.len() > self.buf.capacity() {
                self.crc.update(b);
                return self.out.write_all(b);
            }
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.crc.update(self.buf);
        self.out.write_all(self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn len(&mut self, n: u64) -> io::Result<()> {
        if n < 1 << 6 {
            self.put(&[n as u8])
        } else if n < 1 << 14 {
            self.put(&[0x40 | (n >> 8) as u8, n as u8])
        } else if let Ok(n) = u32::try_from(n) {
            self.put(&[op::LEN_32])?;
            self.put(&n.to_be_bytes())
        } else {
            self.put(&[op::LEN_64])?;
            self.put(&n.to_be_bytes())
        }
    }

    /// A string the way Redis's rdbSaveRawString stores it: as an integer if it is one,
    /// LZF-compressed if longer than 20 bytes and that saves at least 4, else as it is.
    pub fn string(&mut self, s: &[u8]) -> io::Result<()> {
        if let Some(i) = as_int(s) {
            return if let Ok(b) = i8::try_from(i) {
                self.put(&[op::ENC_INT8, b as u8])
            } else if let Ok(h) = i16::try_from(i) {
                self.put(&[op::ENC_INT16])?;
                self.put(&h.to_le_bytes())
            } else {
                self.put(&[op::ENC_INT32])?;
                self.put(&i.to_le_bytes())
            };
        }
        if self.compress && s.len() > 20 {
            let mut out = std::mem::take(&mut self.lzf_out);
            let r = match lzf::compress(s, &mut out, &mut self.lzf_table, s.len() - 4) {
                Some(n) => self.compressed(&out[..n], s.len()),
                None => self.raw(s),
            };
            self.lzf_out = out;
            return r;
        }
        self.raw(s)
    }

    fn raw(&mut self, s: &[u8]) -> io::Result<()> {
        self.len(s.len() as u64)?;
        self.put(s)
    }

    fn compressed(&mut self, c: &[u8], orig: usize) -> io::Result<()> {
        self.put(&[op::ENC_LZF])?;
        self.len(c.len() as u64)?;
        self.len(orig as u64)?;
        self.put(c)
    }

    /// Magic and version, then the aux fields (name, value).
    pub fn header(&mut self, aux: &[(&str, &str)]) -> io::Result<()> {
        self.put(op::MAGIC)?;
        self.put(format!("{:04}", op::VERSION).as_bytes())?;
        for (k, v) in aux {
            self.put(&[op::AUX])?;
            self.string(k.as_bytes())?;
            self.string(v.as_bytes())?;
        }
        Ok(())
    }

    /// SELECTDB and RESIZEDB: the keys that follow belong to database `db`.
    pub fn select_db(&mut self, db: u64, keys: u64, expires: u64) -> io::Result<()> {
        self.put(&[op::SELECTDB])?;
        self.len(db)?;
        self.put(&[op::RESIZEDB])?;
        self.len(keys)?;
        self.len(expires)
    }

    /// One string key, with its expiry (Unix ms) if it has one.
    pub fn string_key(&mut self, key: &[u8], val: &[u8], expire_ms: Option<i64>) -> io::Result<()> {
        if let Some(at) = expire_ms {
            self.put(&[op::EXPIRETIME_MS])?;
            self.put(&at.to_le_bytes())?;
        }
        self.put(&[op::TYPE_STRING])?;
        self.string(key)?;
        self.string(val)
    }

    /// EOF and the checksum trailer; returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[op::EOF])?;
        self.flush_buf()?;
        let crc = self.crc.finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut Encoder<&mut Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(16);
        let mut e = Encoder::new(&mut out, &mut buf, true);
        f(&mut e).unwrap();
        e.flush_buf().unwrap();
        drop(e);
        out
    }

    #[test]
    fn integers_as_redis_stores_them() {
        assert_eq!(as_int(b"0"), Some(0));
        assert_eq!(as_int(b"-2147483648"), Some(i32::MIN));
        for not in [
            &b"-0"[..],
            b"007",
            b"+1",
            b" 1",
            b"2147483648",
            b"",
            b"-",
            b"1a",
        ] {
            assert_eq!(as_int(not), None, "{not:?}");
        }
        assert_eq!(encoded(|e| e.string(b"-128")), [0xC0, 0x80]);
        assert_eq!(encoded(|e| e.string(b"128")), [0xC1, 0x80, 0x00]);
        assert_eq!(encoded(|e| e.string(b"32768")), [0xC2, 0x00, 0x80, 0, 0]);
        assert_eq!(encoded(|e| e.string(b"007")), [3, b'0', b'0', b'7']);
    }

    #[test]
    fn length_encodings() {
        assert_eq!(encoded(|e| e.len(63)), [63]);
        assert_eq!(encoded(|e| e.len(64)), [0x40, 64]);
        assert_eq!(encoded(|e| e.len(16383)), [0x7F, 0xFF]);
        assert_eq!(encoded(|e| e.len(16384)), [0x80, 0, 0, 0x40, 0]);
        assert_eq!(encoded(|e| e.len(1 << 32)), [0x81, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn long_repetitive_strings_are_compressed() {
        let v = b"x".repeat(1000);
        let out = encoded(|e| e.string(&v));
        assert_eq!(out[0], 0xC3);
        assert!(out.len() < 100, "{}", out.len());
    }
}
