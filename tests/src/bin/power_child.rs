//! Writer process of the FUSE power-loss test (`tests/tests/power_loss.rs`): commits durably to a database
//! on the fault-injecting file system and prints `ack N` after each acknowledged commit, until the power is
//! cut (every request then fails, and it exits) or it is killed.
//!
//! Usage: `power_child DIR START`. Commit `N` (from `START` on) is `power_workload::ops(N)`. Tiny
//! memtables, tables and manifest limit keep flushes, compactions, WAL switches and manifest rewrites
//! going all the time.

use std::io::Write;
use std::sync::Arc;

use cairn_engine::{Db, Durability, LeveledPolicy, WriteBatch};

#[path = "../power_workload.rs"]
mod power_workload;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(start)) = (args.next(), args.next()) else {
        eprintln!("usage: power_child DIR START");
        std::process::exit(2);
    };
    let start: u64 = start.parse().unwrap_or(0);
    let db = match Db::builder()
        .durability(Durability::Immediate)
        .memtable_size(16 * 1024)
        .table_size(16 * 1024)
        .block_size(1024)
        .max_manifest_size(4 * 1024)
        .compaction_policy(Arc::new(LeveledPolicy::new(2, 64 * 1024, 4)))
        .open(&dir)
    {
        Ok(db) => db,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "open").and_then(|()| out.flush());
    for n in start.. {
        let mut batch = WriteBatch::new();
        for (key, value) in power_workload::ops(n) {
            match value {
                Some(v) => batch.put(key, v),
                None => batch.delete(key),
            };
        }
        if let Err(e) = db.write(batch) {
            eprintln!("commit {n}: {e}");
            std::process::exit(1);
        }
        if writeln!(out, "ack {n}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    }
}
