//! Shared helpers of Cairn's integration tests (the tests themselves are in `tests/`).

/// The value the kill test's child writes for commit `n`: recognisably its own, of varying length.
pub fn value(n: u64) -> Vec<u8> {
    let mut v = format!("value-{n}-").into_bytes();
    v.resize(20 + (n % 300) as usize, (n % 251) as u8);
    v
}

/// The README's Rust examples, compiled by `cargo test --doc` so they keep working as written (they write
/// to `./data`, so they are compiled, not run).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;
