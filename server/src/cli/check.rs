//! `cairn check`: reads every table and reports the first corruption, naming file and offset.

use std::path::Path;
use std::time::Instant;

use super::{format, open_existing, Failure};

pub fn run(dir: &Path) -> Result<(), Failure> {
    let db = open_existing(dir)?;
    let tables = db.stats().table_count();
    let start = Instant::now();
    let entries = db.verify().map_err(|e| Failure::new("check failed", e))?;
    println!(
        "ok: {} entries in {tables} tables checked in {}",
        format::thousands(entries),
        format::duration(start.elapsed())
    );
    db.close().map_err(|e| Failure::new("cannot close the database", e))
}
