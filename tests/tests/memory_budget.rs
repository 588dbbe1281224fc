//! What tables hold in memory stays within `block_cache_size`, however many tables there are: their index
//! and filter blocks are charged to the block cache, and read again from the tables when evicted.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use cairn_engine::{Db, Durability, WriteBatch};

fn value(i: u32) -> Vec<u8> {
    format!("value-{i:08}-{}", "v".repeat((i % 60) as usize)).into_bytes()
}

#[test]
fn many_tables_keep_their_index_and_filter_within_the_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 32 << 10;
    let db = Db::builder()
        .durability(Durability::None)
        .memtable_size(128 << 10)
        .table_size(64 << 10)
        .block_cache_size(budget)
        .open(dir.path())
        .unwrap();
    let n = 40_000u32;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut batch = WriteBatch::new();
        for &i in chunk {
            // Out of order: 7919 is prime to n, so this visits every key once.
            let k = (u64::from(i) * 7919 % u64::from(n)) as u32;
            batch.put(format!("key-{k:08}"), value(k));
        }
        db.write(batch).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let stats = db.stats();
    // Each table's index and filter take about 12 KiB: together several times the budget.
    assert!(stats.table_count() >= 4, "{} tables", stats.table_count());
    // Every key, twice over: index and filter blocks evicted by other tables' are read again.
    for round in 0..2 {
        for i in (0..n).step_by(7) {
            let got = db.get(format!("key-{i:08}")).unwrap();
            assert_eq!(got, Some(value(i)), "round {round} key {i}");
        }
        assert_eq!(db.get("key-absent").unwrap(), None);
        let stats = db.stats();
        assert!(stats.cache_bytes <= budget as u64, "{} bytes cached of {budget}", stats.cache_bytes);
        assert!(stats.cache_index_filter_bytes > 0);
        assert!(stats.cache_index_filter_bytes <= stats.cache_bytes);
    }
    assert_eq!(db.verify().unwrap(), u64::from(n));
}
