//! Hash maps keyed by ids this process or the daemon hands out (connection,
//! listener, socket and request numbers): a multiply-fold hash instead of
//! the standard library's SipHash, which cost ~20 % of redis-server's
//! instructions under the shim (three map lookups per request). The keys are
//! never chosen by a network peer, so flooding one bucket is not a threat
//! these maps must resist.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher: each integer written is mixed in with one 64×64→128-bit
/// multiply, folded.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl IdHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        let p = ((self.0 ^ v) as u128).wrapping_mul(K as u128);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.mix(v as u64);
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.mix(v as u64);
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(v as u64);
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }

    #[inline]
    fn write_i32(&mut self, v: i32) {
        self.mix(v as u32 as u64);
    }
}

/// A `HashMap` with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // The bucket index is the low bits, the control byte the top 7:
        // 4096 sequential ids must fill a 4096-bucket table's low 12 bits
        // and the top 7 bits nearly evenly.
        let b = BuildHasherDefault::<IdHasher>::default();
        let mut low = vec![0u32; 4096];
        let mut top = [0u32; 128];
        for id in 0..4096u32 {
            let h = b.hash_one(id);
            low[(h & 4095) as usize] += 1;
            top[(h >> 57) as usize] += 1;
        }
        let empty = low.iter().filter(|&&n| n == 0).count();
        // A random hash leaves ~e^-1 = 37 % of the buckets empty.
        assert!(
            empty < 4096 * 45 / 100,
            "{empty} of 4096 low-bit buckets empty"
        );
        assert!(
            top.iter().all(|&n| n > 8 && n < 64),
            "top bits uneven: {top:?}"
        );
    }

    #[test]
    fn map_works_with_u32_and_u64_keys() {
        let mut m: IdMap<u64, u32> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert(i << 20, i as u32);
        }
        assert!((0..10_000u64).all(|i| m[&(i << 20)] == i as u32));
        let mut n: IdMap<u32, ()> = IdMap::default();
        n.insert(7, ());
        assert!(n.contains_key(&7) && !n.contains_key(&8));
    }
}
