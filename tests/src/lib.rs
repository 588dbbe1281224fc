//! Shared helpers of Cairn's integration tests (the tests themselves are in `tests/`).

/// The value the kill test's child writes for commit `n`: recognisably its own, of varying length.
pub fn value(n: u64) -> Vec<u8> {
    let mut v = format!("value-{n}-").into_bytes();
    v.resize(20 + (n % 300) as usize, (n % 251) as u8);
    v
}
