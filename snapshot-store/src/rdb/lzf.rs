//! LZF, the compression Redis applies to long strings in RDB files (`rdbcompression yes`).
//! The only crate for it is deprecated, so this is a small implementation of the format:
//! a control byte `000LLLLL` starts L+1 literal bytes; `LLLOOOOO [EXTRA] OOOOOOOO` copies
//! LLL+2 bytes (LLL = 7: 9 + EXTRA) from 1 + OOOOO:OOOOOOOO bytes back in the output.

const HASH_LOG: u32 = 14;
const MAX_LIT: usize = 32;
const MAX_OFF: usize = 1 << 13;
/// Longest back reference: 7 + 255 + 2 bytes.
const MAX_REF: usize = (1 << 8) + (1 << 3);

fn hash(b: &[u8]) -> usize {
    let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_LOG)) as usize
}

fn literals(out: &mut Vec<u8>, lit: &[u8]) {
    for run in lit.chunks(MAX_LIT) {
        out.push((run.len() - 1) as u8);
        out.extend_from_slice(run);
    }
}

/// Compresses `input` into `out` (cleared first). None if the result would be longer than
/// `max` bytes: the caller then stores the string as it is, like Redis. `table` is scratch
/// space kept between calls.
pub fn compress(
    input: &[u8],
    out: &mut Vec<u8>,
    table: &mut Vec<u32>,
    max: usize,
) -> Option<usize> {
    out.clear();
    if input.len() >= u32::MAX as usize {
        return None;
    }
    // Entries left from earlier inputs are only candidates: each is bounds-checked and its
    // bytes compared, so the table needs no clearing between calls (as in liblzf).
    table.resize(1 << HASH_LOG, u32::MAX);
    let (mut ip, mut lit) = (0, 0);
    while ip + 2 < input.len() {
        let h = hash(&input[ip..]);
        let cand = table[h] as usize;
        table[h] = ip as u32;
        let ok = cand < ip && ip - cand <= MAX_OFF && input[cand..cand + 3] == input[ip..ip + 3];
        if !ok {
            ip += 1;
            continue;
        }
        let limit = (input.len() - ip).min(MAX_REF);
        let mut len = 3;
        while len < limit && input[cand + len] == input[ip + len] {
            len += 1;
        }
        literals(out, &input[lit..ip]);
        let off = ip - cand - 1;
        let l = len - 2;
        if l < 7 {
            out.push(((l << 5) | (off >> 8)) as u8);
        } else {
            out.push(((7 << 5) | (off >> 8)) as u8);
            out.push((l - 7) as u8);
        }
        out.push(off as u8);
        ip += len;
        lit = ip;
        if out.len() > max {
            return None;
        }
    }
    literals(out, &input[lit..]);
    (out.len() <= max).then_some(out.len())
}

/// Decompresses `input` into `out`, which must come out exactly `len` bytes long.
pub fn decompress(input: &[u8], len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    // `len` comes from the file: reserve only a bounded part up front, so a damaged length
    // fails on the data rather than on a huge allocation.
    out.reserve(len.min(1 << 24));
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            if ip + n > input.len() || out.len() + n > len {
                return Err("LZF literal run past the end of its data".into());
            }
            out.extend_from_slice(&input[ip..ip + n]);
            ip += n;
            continue;
        }
        let mut n = ctrl >> 5;
        if n == 7 {
            n += *input.get(ip).ok_or("LZF back reference cut short")? as usize;
            ip += 1;
        }
        n += 2;
        let low = *input.get(ip).ok_or("LZF back reference cut short")? as usize;
        ip += 1;
        let back = ((ctrl & 0x1f) << 8 | low) + 1;
        if back > out.len() || out.len() + n > len {
            return Err("LZF back reference outside its data".into());
        }
        let start = out.len() - back;
        for i in 0..n {
            out.push(out[start + i]);
        }
    }
    if out.len() != len {
        return Err(format!(
            "LZF data gives {} bytes, its header says {len}",
            out.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t` is shared between calls, as in the encoder: stale entries must not matter.
    fn round_trip(data: &[u8], t: &mut Vec<u32>) -> Option<usize> {
        let (mut c, mut d) = (Vec::new(), Vec::new());
        let n = compress(data, &mut c, t, data.len() + data.len() / 16 + 64)?;
        decompress(&c, data.len(), &mut d).unwrap();
        assert_eq!(d, data);
        Some(n)
    }

    #[test]
    fn round_trips_and_compresses() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let random: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let t = &mut Vec::new();
        round_trip(&random, t).unwrap();
        let text = b"abcabcabc hello hello hello ".repeat(4000);
        assert!(round_trip(&text, t).unwrap() < text.len() / 10);
        let zeros = vec![0u8; 70_000];
        assert!(round_trip(&zeros, t).unwrap() < 1000);
        for n in 0..70 {
            round_trip(&text[..n], t);
            round_trip(&random[n..2 * n], t);
        }
    }

    #[test]
    fn refuses_output_over_max() {
        let (mut c, mut t) = (Vec::new(), Vec::new());
        assert_eq!(
            compress(b"abcdefghijklmnopqrstuvwxyz", &mut c, &mut t, 22),
            None
        );
    }

    #[test]
    fn rejects_bad_input() {
        let mut d = Vec::new();
        assert!(
            decompress(&[0x20, 0x05], 10, &mut d).is_err(),
            "reference before start"
        );
        assert!(
            decompress(&[0x05, b'a'], 6, &mut d).is_err(),
            "literal cut short"
        );
        assert!(
            decompress(&[0x01, b'a', b'b'], 3, &mut d).is_err(),
            "length mismatch"
        );
        assert!(
            decompress(&[0xe0], 10, &mut d).is_err(),
            "reference cut short"
        );
    }
}
