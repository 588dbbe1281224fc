//! The bloom filter of a table, over user keys.
//!
//! Layout: `bits[m bytes] | probes u8`. For a key, `h = xxh3_64(user_key)`, `h1 = h as u32`,
//! `h2 = (h >> 32) as u32`; probe `i` (0-based) tests bit `(h1 + i * h2) mod (8 m)` (computed in u64), where
//! bit `b` is `bits[b / 8] >> (b % 8) & 1`.

#![deny(clippy::indexing_slicing)]

/// The `k` bits a key with `hash` tests, `(h1 + i * h2) mod nbits`, stepped: probe `i + 1` is probe `i`
/// plus `h2 mod nbits`, less `nbits` past the end. Two divisions per key instead of one per probe (a
/// division is some 40 cycles, and a read tests the filter of each table it passes).
fn probes(hash: u64, k: u8, nbits: u64) -> impl Iterator<Item = u64> {
    let h1 = u64::from(hash as u32);
    let step = (hash >> 32) % nbits;
    let mut bit = h1 % nbits;
    (0..k).map(move |_| {
        let this = bit;
        bit += step;
        if bit >= nbits {
            bit -= nbits;
        }
        this
    })
}

/// Builds a filter for `hashes` (one per distinct user key) at `bits_per_key`.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let k = ((f64::from(bits_per_key) * 0.69) as u8).clamp(1, 30);
    let nbytes = (hashes.len() * bits_per_key as usize).div_ceil(8).max(8);
    let nbits = nbytes as u64 * 8;
    let mut out = vec![0u8; nbytes + 1];
    for &h in hashes {
        for bit in probes(h, k, nbits) {
            if let Some(byte) = out.get_mut((bit / 8) as usize) {
                *byte |= 1 << (bit % 8);
            }
        }
    }
    if let Some(last) = out.last_mut() {
        *last = k;
    }
    out
}

/// Whether a key with `hash` may be in the set the filter was built from; a filter that is malformed
/// answers "maybe".
pub(crate) fn may_contain(filter: &[u8], hash: u64) -> bool {
    let Some((&k, bits)) = filter.split_last() else { return true };
    if bits.is_empty() || k == 0 || k > 30 {
        return true;
    }
    let nbits = bits.len() as u64 * 8;
    probes(hash, k, nbits).all(|bit| bits.get((bit / 8) as usize).is_some_and(|b| b >> (bit % 8) & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::key_hash;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let hashes: Vec<u64> = (0..10_000u32).map(|i| key_hash(&i.to_le_bytes())).collect();
        let f = build(&hashes, 10);
        assert!(hashes.iter().all(|h| may_contain(&f, *h)));
        let fp = (10_000..20_000u32).filter(|i| may_contain(&f, key_hash(&i.to_le_bytes()))).count();
        assert!(fp < 300, "false positive rate {fp}/10000");
        assert!(may_contain(&[], 1));
    }

    #[test]
    fn stepped_probes_are_the_documented_bits() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for nbytes in [8u64, 9, 1000, 125_003, 1 << 20] {
            for _ in 0..2000 {
                h = h.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ nbytes;
                let nbits = nbytes * 8;
                let (h1, h2) = (u64::from(h as u32), h >> 32);
                let documented: Vec<u64> = (0..30u64).map(|i| (h1 + i * h2) % nbits).collect();
                assert_eq!(probes(h, 30, nbits).collect::<Vec<_>>(), documented, "hash {h:#x}, {nbits} bits");
            }
        }
    }
}
