//! How long a failed job waits before its next attempt.

use serde::{Deserialize, Serialize};

/// The wait after failed attempt `n`: `constant_ms + unit_ms × nᵉˣᵖᵒⁿᵉⁿᵗ`, capped at `max_ms`, plus a jitter
/// of up to `jitter` times that (so that jobs failing together do not retry together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// Added to every wait. Default: 15,000 (15 s).
    pub constant_ms: i64,
    /// The unit of the growing part. Default: 1,000 (1 s).
    pub unit_ms: i64,
    /// The attempt's power. Default: 4.
    pub exponent: u32,
    /// Longest wait before jitter. Default: 7 days.
    pub max_ms: i64,
    /// Share of the wait added at random, 0 to 1. Default: 0.1.
    pub jitter: f64,
}

impl Default for Backoff {
    /// Oban's: attempt⁴ + 15 s, plus up to 10% jitter.
    fn default() -> Self {
        Self { constant_ms: 15_000, unit_ms: 1_000, exponent: 4, max_ms: 7 * 24 * 3600 * 1000, jitter: 0.1 }
    }
}

impl Backoff {
    /// Always `ms`, without jitter.
    pub fn fixed(ms: i64) -> Self {
        Self { constant_ms: ms, unit_ms: 0, exponent: 0, max_ms: ms, jitter: 0.0 }
    }

    /// The wait after failed attempt `attempt`, jittered by `seed` (any value: a hash of the job and the
    /// attempt).
    pub fn delay_ms(&self, attempt: u32, seed: u64) -> i64 {
        let grow = (attempt as f64).powi(self.exponent.min(64) as i32) * self.unit_ms.max(0) as f64;
        let base = (self.constant_ms.max(0) as f64 + grow).min(self.max_ms.max(0) as f64);
        // A fraction in [0, 1) from the seed's top 53 bits.
        let fraction = (xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
        (base + base * self.jitter.clamp(0.0, 1.0) * fraction) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_grows_as_oban_s_with_bounded_jitter() {
        let b = Backoff::default();
        for (attempt, base) in [(1u32, 16_000i64), (2, 31_000), (3, 96_000), (10, 10_015_000)] {
            for seed in 0..50 {
                let d = b.delay_ms(attempt, seed);
                assert!((base..=base + base / 10).contains(&d), "attempt {attempt}: {d}");
            }
        }
        assert_ne!(b.delay_ms(3, 1), b.delay_ms(3, 2), "jittered");
        assert_eq!(Backoff::fixed(500).delay_ms(9, 4), 500);
        assert!(b.delay_ms(1000, 0) <= b.max_ms + b.max_ms / 10, "capped");
    }
}
