//! `cairn compact`: a full compaction, reporting table bytes before and after.

use std::path::Path;
use std::time::Instant;

use super::{format, open_existing, Failure};

pub fn run(dir: &Path) -> Result<(), Failure> {
    let db = open_existing(dir)?;
    let before = db.stats();
    let start = Instant::now();
    db.compact().map_err(|e| Failure::new("compaction failed", e))?;
    let elapsed = start.elapsed();
    let after = db.stats();
    let describe = |s: &cairn_engine::Stats| {
        let shape: Vec<String> = s
            .levels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.tables > 0)
            .map(|(level, l)| format!("L{level}: {}", l.tables))
            .collect();
        let shape = if shape.is_empty() { "none".to_owned() } else { shape.join(", ") };
        format!("{} in {} tables ({shape})", format::bytes(s.table_bytes()), s.table_count())
    };
    println!("before  {} + memtable {}", describe(&before), format::bytes(before.memtable_bytes));
    println!("after   {}", describe(&after));
    println!(
        "compacted in {} (table bytes {} -> {})",
        format::duration(elapsed),
        before.table_bytes(),
        after.table_bytes()
    );
    db.close().map_err(|e| Failure::new("cannot close the database", e))
}
