//! The RDB trailer checksum: CRC-64 with the Jones polynomial, reflected, init 0, no final xor
//! (Redis's src/crc64.c), computed by the `crc` crate's catalogued CRC_64_REDIS.

use crc::{CRC_64_REDIS, Crc, Digest, Table};

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

pub type Crc64 = Digest<'static, u64, Table<16>>;

pub fn digest() -> Crc64 {
    CRC64.digest()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_redis_check_value() {
        // Redis's crc64.c self-test: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
        let mut d = super::digest();
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xe9c6d914c4b8d9ca);
    }
}
