//! Shared helpers for Cairn's benchmarks: reproducible keys and values.
//!
//! Every benchmark draws its data from a [`StdRng`] seeded with a fixed number, so two runs (or two
//! machines) measure the same keys in the same order. Keys are uniformly random bytes, so inserts land
//! all over the key space; values are random too, so compression cannot shrink them.
//!
//! ```
//! let mut data = cairn_bench::DataGen::new(42, 24, 150);
//! let keys = data.keys(3);
//! assert_eq!(keys.len(), 3);
//! assert_eq!(keys[0].len(), 24);
//! assert_eq!(data.value().len(), 150);
//! ```

pub mod compare;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// The seed the benchmarks use unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x00ca_1a17;

/// A seeded source of random keys and values of fixed sizes.
#[derive(Debug, Clone)]
pub struct DataGen {
    rng: StdRng,
    key_len: usize,
    value_len: usize,
}

impl DataGen {
    /// A generator of `key_len`-byte keys and `value_len`-byte values, reproducible from `seed`.
    pub fn new(seed: u64, key_len: usize, value_len: usize) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), key_len, value_len }
    }

    /// A random key.
    pub fn key(&mut self) -> Vec<u8> {
        let mut key = vec![0; self.key_len];
        self.rng.fill_bytes(&mut key);
        key
    }

    /// `n` random keys.
    pub fn keys(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| self.key()).collect()
    }

    /// A random value.
    pub fn value(&mut self) -> Vec<u8> {
        let mut value = vec![0; self.value_len];
        self.rng.fill_bytes(&mut value);
        value
    }

    /// A random index below `n`, for picking one of `n` known keys.
    pub fn index(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n)
    }
}
