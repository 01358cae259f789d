//! RDB, the snapshot format of Redis 7.0 (RDB version 10): the store writes what BGSAVE writes
//! and loads what redis-server writes. Only string keys exist in the store; loading anything
//! else is an error naming the key and its type.
//!
//! [`encode`] writes to any `std::io::Write`, [`decode`] reads any `std::io::Read`; the file
//! handling (temp file, fsync, rename) stays in [`crate::snapfile`].

pub mod crc64;
pub mod decode;
pub mod encode;
pub mod lzf;

use crate::table::Table;
use std::io::{self, Write};

/// Opcodes, value types and encodings (Redis's src/rdb.h).
pub mod op {
    pub const MAGIC: &[u8; 5] = b"REDIS";
    pub const VERSION: u32 = 10;
    pub const TYPE_STRING: u8 = 0;
    pub const FUNCTION_PRE_GA: u8 = 0xF6;
    pub const FUNCTION2: u8 = 0xF5;
    pub const MODULE_AUX: u8 = 0xF7;
    pub const IDLE: u8 = 0xF8;
    pub const FREQ: u8 = 0xF9;
    pub const AUX: u8 = 0xFA;
    pub const RESIZEDB: u8 = 0xFB;
    pub const EXPIRETIME_MS: u8 = 0xFC;
    pub const EXPIRETIME: u8 = 0xFD;
    pub const SELECTDB: u8 = 0xFE;
    pub const EOF: u8 = 0xFF;
    pub const LEN_32: u8 = 0x80;
    pub const LEN_64: u8 = 0x81;
    /// String encodings: the low 6 bits after a `11` length prefix.
    pub const INT8: u8 = 0;
    pub const INT16: u8 = 1;
    pub const INT32: u8 = 2;
    pub const LZF: u8 = 3;
    pub const ENC_INT8: u8 = 0xC0 | INT8;
    pub const ENC_INT16: u8 = 0xC0 | INT16;
    pub const ENC_INT32: u8 = 0xC0 | INT32;
    pub const ENC_LZF: u8 = 0xC0 | LZF;
}

/// The Redis release whose RDB this is, for tools that read the `redis-ver` aux field.
pub const REDIS_VER: &str = "7.0.15";

pub struct SaveInfo {
    /// `rdbcompression`: LZF-compress strings longer than 20 bytes.
    pub compress: bool,
    /// Unix seconds (the `ctime` aux field).
    pub ctime: i64,
    /// Bytes of the dataset (the `used-mem` aux field).
    pub used_mem: u64,
}

/// Writes the whole table as an RDB file to `out`, `progress` every 1024 keys.
/// Returns the number of keys and the flushed writer.
pub fn write_table<W: Write>(
    table: &Table,
    out: W,
    buf: &mut Vec<u8>,
    info: &SaveInfo,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(u64, W)> {
    let counts = (table.len() as u64, table.expires() as u64);
    write_with(out, buf, info, counts, |e| {
        let mut n = 0;
        table.for_each(|k, v, exp| -> io::Result<()> {
            e.string_key(k, v, (exp != 0).then_some(exp))?;
            n += 1;
            if n % 1024 == 0 {
                progress(n);
            }
            Ok(())
        })?;
        Ok(n)
    })
}

/// Writes an RDB file whose keys `body` encodes (returning how many); `counts` are the
/// (keys, keys with an expiry) of the RESIZEDB hint. Returns the key count and the writer.
pub fn write_with<W: Write>(
    out: W,
    buf: &mut Vec<u8>,
    info: &SaveInfo,
    counts: (u64, u64),
    body: impl FnOnce(&mut encode::Encoder<W>) -> io::Result<u64>,
) -> io::Result<(u64, W)> {
    let mut e = encode::Encoder::new(out, buf, info.compress);
    let ctime = info.ctime.to_string();
    let used = info.used_mem.to_string();
    e.header(&[
        ("redis-ver", REDIS_VER),
        ("redis-bits", "64"),
        ("ctime", &ctime),
        ("used-mem", &used),
        ("aof-base", "0"),
    ])?;
    // Like Redis, an empty database is not written at all.
    if counts.0 > 0 {
        e.select_db(0, counts.0, counts.1)?;
    }
    let n = body(&mut e)?;
    Ok((n, e.finish()?))
}
