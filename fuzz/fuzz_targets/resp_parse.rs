//! The RESP parser on arbitrary bytes, fed whole and then in two pieces (a request split
//! across reads must frame exactly as when it arrives at once): never a panic, and every
//! framed argument lies inside the bytes consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_store::resp::{Parse, Parser};

/// Frames commands until the input is used up or incomplete; returns what was framed.
fn frame_all(input: &[u8], split: usize, authed: bool) -> Vec<Result<Vec<Vec<u8>>, String>> {
    let mut buf = input[..split].to_vec();
    let mut rest = &input[split..];
    let mut p = Parser::default();
    let mut framed = Vec::new();
    loop {
        match p.parse(&mut buf, authed) {
            Parse::Done(n) => {
                assert!(n > 0 && n <= buf.len(), "consumed {n} of {}", buf.len());
                let args = p
                    .args
                    .iter()
                    .map(|&(s, e)| {
                        assert!(s <= e && e <= n, "argument {s}..{e} outside 0..{n}");
                        buf[s..e].to_vec()
                    })
                    .collect();
                framed.push(Ok(args));
                buf.drain(..n);
            }
            Parse::Error(msg) => {
                framed.push(Err(msg));
                return framed;
            }
            Parse::Incomplete if rest.is_empty() => return framed,
            Parse::Incomplete => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let authed = first & 1 == 0;
    let whole = frame_all(input, input.len(), authed);
    let split = (first as usize >> 1) % (input.len() + 1);
    assert_eq!(frame_all(input, split, authed), whole, "split at {split}");
});
