//! `cairn check`: verifies every checksum, the tables against the manifest, the WALs, and every collection's
//! indexes against its records, without changing the directory (the engine's [`cairn::Check`]); prints a
//! report, as text or JSON. With `--repair`, cuts a torn tail off the newest WAL. Exit status: 0 healthy,
//! 1 problems found, 2 usage or open errors.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::{format, Failure};

/// Arguments of `cairn check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Data directory of the database.
    #[arg(long = "data", value_name = "DIR")]
    pub path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Cut a torn tail off the newest WAL (what the next open would do) and report what was dropped.
    #[arg(long)]
    pub repair: bool,
}

pub fn run(args: &CheckArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let report = cairn::Check::new()
        .repair(args.repair)
        .run(&args.path)
        .map_err(|e| Failure::new(format_args!("cannot check {}", args.path.display()), e).with_code(2))?;
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| Failure::new("cannot encode the report", e))?;
        println!("{json}");
    } else {
        print_text(&report, start);
    }
    if report.is_healthy() {
        Ok(())
    } else {
        let torn = usize::from(report.torn_wal.is_some() && !report.repaired);
        Err(Failure::new(
            format_args!("{} is not healthy", args.path.display()),
            format_args!("{} problems, {torn} torn WAL tail", report.problems.len()),
        ))
    }
}

fn print_text(r: &cairn::CheckReport, start: Instant) {
    let n = format::thousands;
    println!("checked {} in {}", r.dir.display(), format::duration(start.elapsed()));
    if let Some(m) = &r.manifest {
        println!("  manifest  {}: {} edits", m.display(), n(r.manifest_edits));
    }
    println!("  tables    {} ({} blocks, {} entries)", n(r.tables), n(r.table_blocks), n(r.table_entries));
    println!(
        "  WAL       {} files: {} batches ({} entries), {} sync markers",
        n(r.wal_files),
        n(r.wal_batches),
        n(r.wal_entries),
        n(r.wal_markers)
    );
    println!(
        "  contents  {} live keys; {} collections, {} index entries agree with their records",
        n(r.live_keys),
        n(r.collections),
        n(r.index_entries)
    );
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let Some(t) = &r.torn_wal {
        println!(
            "torn WAL tail: {}: {} bytes after offset {} ({}); {} intact records inside ({} batches, {} entries)",
            t.file.display(),
            n(t.dropped_bytes),
            t.valid_len,
            t.reason,
            n(t.dropped_records),
            n(t.dropped_batches),
            n(t.dropped_entries)
        );
        if r.repaired {
            println!("repaired: {} truncated to {} bytes", t.file.display(), t.valid_len);
        } else {
            println!("  (the next open cuts it off; `cairn check --repair` does it now)");
        }
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
    if r.is_healthy() {
        println!("healthy");
    } else {
        let torn = if r.torn_wal.is_some() && !r.repaired { ", a torn WAL tail" } else { "" };
        println!("NOT healthy: {} problems{torn}", r.problems.len());
    }
}
