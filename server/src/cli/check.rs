//! `cairn check`: verifies every checksum, the tables against the manifest, the WALs, and every collection's
//! indexes against its records, without changing the directory (the engine's [`Check`] and the record store's [`cairn_store::check_store`]); prints a
//! report, as text or JSON. With `--repair`, cuts a torn tail off the newest WAL. Exit status: 0 healthy,
//! 1 problems found, 2 usage or open errors.

use std::path::PathBuf;
use std::time::Instant;

use cairn_engine::{Check, Finding};
use cairn_store::StoreCheckReport;
use clap::Args;
use serde_json::{json, Value};

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
    let report = cairn_store::check_store(&Check::new().repair(args.repair), &args.path)
        .map_err(|e| Failure::new(format_args!("cannot check {}", args.path.display()), e).with_code(2))?;
    if args.json {
        let json = serde_json::to_string_pretty(&report_json(&report))
            .map_err(|e| Failure::new("cannot encode the report", e))?;
        println!("{json}");
    } else {
        print_text(&report, start);
    }
    if report.is_healthy() {
        Ok(())
    } else {
        let r = &report.engine;
        let torn = usize::from(r.torn_wal.is_some() && !r.repaired);
        Err(Failure::new(
            format_args!("{} is not healthy", args.path.display()),
            format_args!("{} problems, {torn} torn WAL tail", r.problems.len()),
        ))
    }
}

/// The report as JSON: every counter, finding and the torn tail, under the names of their fields.
fn report_json(report: &StoreCheckReport) -> Value {
    let r = &report.engine;
    let findings = |list: &[Finding]| -> Vec<Value> {
        list.iter().map(|f| json!({"file": f.file, "offset": f.offset, "message": f.message})).collect()
    };
    let torn = r.torn_wal.as_ref().map(|t| {
        json!({
            "file": t.file,
            "file_len": t.file_len,
            "valid_len": t.valid_len,
            "dropped_bytes": t.dropped_bytes,
            "dropped_records": t.dropped_records,
            "dropped_batches": t.dropped_batches,
            "dropped_entries": t.dropped_entries,
            "reason": t.reason,
        })
    });
    json!({
        "dir": r.dir,
        "problems": findings(&r.problems),
        "warnings": findings(&r.warnings),
        "torn_wal": torn,
        "repaired": r.repaired,
        "manifest": r.manifest,
        "manifest_edits": r.manifest_edits,
        "tables": r.tables,
        "table_blocks": r.table_blocks,
        "table_entries": r.table_entries,
        "wal_files": r.wal_files,
        "wal_batches": r.wal_batches,
        "wal_entries": r.wal_entries,
        "wal_markers": r.wal_markers,
        "live_keys": r.live_keys,
        "collections": report.collections,
        "index_entries": report.index_entries,
    })
}

fn print_text(report: &StoreCheckReport, start: Instant) {
    let r = &report.engine;
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
        n(report.collections),
        n(report.index_entries)
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
