//! `cairn stats`: the shape of the tree, caches and counters, as text or JSON.

use std::path::Path;

use cairn_engine::Stats;
use clap::Args;

use super::{format, open_existing, DataDir, Failure};

/// Arguments of `cairn stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &StatsArgs) -> Result<(), Failure> {
    let db = open_existing(&args.dir.path)?;
    let stats = db.stats();
    if args.json {
        println!("{:#}", cairn_server::report::stats_json(db.path(), &stats));
    } else {
        print_text(db.path(), &stats);
    }
    db.close().map_err(|e| Failure::new("cannot close the database", e))
}

fn print_text(dir: &Path, s: &Stats) {
    println!("data directory   {}", dir.display());
    println!("last sequence    {}", format::thousands(s.last_sequence));
    println!("memtable         {} ({} frozen awaiting flush)", format::bytes(s.memtable_bytes), s.immutable_memtables);
    println!();
    println!("level  tables  bytes");
    for (level, l) in s.levels.iter().enumerate() {
        println!("L{level:<5} {:>6}  {}", l.tables, format::bytes(l.bytes));
    }
    println!("total  {:>6}  {}", s.table_count(), format::bytes(s.table_bytes()));
    println!();
    println!("since open:");
    let lookups = s.cache_hits + s.cache_misses;
    let hit_rate = if lookups == 0 { 0.0 } else { 100.0 * s.cache_hits as f64 / lookups as f64 };
    println!(
        "  block cache    {} held, {} hits, {} misses ({hit_rate:.1}% hits)",
        format::bytes(s.cache_bytes),
        s.cache_hits,
        s.cache_misses
    );
    println!(
        "  WAL            {} syncs, {} written in {} write groups ({} commits)",
        s.wal_syncs,
        format::bytes(s.wal_bytes_written),
        s.write_groups,
        s.commits
    );
    println!("  flushes        {} ({} written)", s.flushes, format::bytes(s.flush_bytes_written));
    println!(
        "  compactions    {} ({} trivial moves; {} read, {} written)",
        s.compactions,
        s.trivial_moves,
        format::bytes(s.compaction_bytes_read),
        format::bytes(s.compaction_bytes_written)
    );
    println!("  write stalls   {} slowdowns, {} µs waiting", s.write_slowdowns, s.write_stall_micros);
    println!("  write amp      {:.2}", s.write_amplification());
    if s.recovered_torn_bytes > 0 {
        println!("  recovery       dropped a torn WAL tail of {}", format::bytes(s.recovered_torn_bytes));
    }
}
