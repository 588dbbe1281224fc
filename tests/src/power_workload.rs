//! The commits of the FUSE power-loss test's writer (`src/bin/power_child.rs`), shared with the test
//! (`tests/power_loss.rs`), which replays them into its model. Included by `#[path]` in both.

/// The operations of commit `n`, applied atomically: a put of `k{n}` and, every fifth commit, of
/// `b{n}/0..4`; every seventh (from the third on), a delete of `k{n-3}`. Every commit puts `k{n}`, so its
/// presence tells whether the commit landed.
pub fn ops(n: u64) -> Vec<(String, Option<Vec<u8>>)> {
    let mut ops = vec![(format!("k{n:08}"), Some(cairn_tests::value(n)))];
    if n.is_multiple_of(5) {
        for i in 0..5 {
            ops.push((format!("b{n:08}/{i}"), Some(cairn_tests::value(n))));
        }
    }
    if n % 7 == 3 {
        ops.push((format!("k{:08}", n - 3), None));
    }
    ops
}
