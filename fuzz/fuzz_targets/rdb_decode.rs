//! The RDB loader on arbitrary bytes: it must return Ok or an error whose offset lies inside
//! the file, never panic, hang or allocate what the file merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_store::rdb::decode;

fuzz_target!(|data: &[u8]| {
    let mut keys = 0u64;
    let mut sink = |_k: &[u8], _v: &[u8], _exp: Option<i64>| {
        keys += 1;
        Ok(())
    };
    match decode::decode(data, data.len() as u64, &mut sink) {
        Ok(s) => assert_eq!(s.keys, keys, "summary counts every key handed out"),
        Err(e) => assert!(e.offset <= data.len() as u64, "error offset past the end: {e:?}"),
    }
});
