//! Child process of the kill test (`tests/tests/kill.rs`): writes durable commits to a database and
//! prints `ack N` after each one is acknowledged, until it is killed.
//!
//! Usage: `crash_child DIR START`. Commit `N` (from `START` on) puts key `k{N:08}` = `value(N)` and, every
//! fifth commit, atomically a batch of `b{N:08}/0..4`. Small memtables keep flushes and compactions going.

use std::io::Write;
use std::sync::Arc;

use cairn_engine::{Db, Durability, LeveledPolicy, WriteBatch};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(start)) = (args.next(), args.next()) else {
        eprintln!("usage: crash_child DIR START");
        std::process::exit(2);
    };
    let start: u64 = start.parse().unwrap_or(0);
    let db = match Db::builder()
        .durability(Durability::Immediate)
        .memtable_size(64 * 1024)
        .table_size(64 * 1024)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 256 * 1024, 4)))
        .open(&dir)
    {
        Ok(db) => db,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for n in start.. {
        let result = if n % 5 == 0 {
            let mut batch = WriteBatch::new();
            for i in 0..5 {
                batch.put(format!("b{n:08}/{i}"), cairn_tests::value(n));
            }
            batch.put(format!("k{n:08}"), cairn_tests::value(n));
            db.write(batch)
        } else {
            db.put(format!("k{n:08}"), cairn_tests::value(n))
        };
        if let Err(e) = result {
            eprintln!("commit {n}: {e}");
            std::process::exit(1);
        }
        if writeln!(out, "ack {n}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    }
}
