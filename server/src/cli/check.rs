//! `cairn check`: verifies every checksum, the tables against the manifest, the WALs, and every collection's
//! indexes against its records, without changing the directory (the engine's [`Check`] and the record
//! store's [`cairn_store::check_store`]); prints a report, as text or JSON. With `--repair`, cuts a torn tail
//! off the newest WAL. A store that a running server holds is checked through the server (`--server`: a
//! consistent copy, checked and removed). Exit status: 0 healthy, 1 problems found, 2 usage or open errors.

use std::path::PathBuf;
use std::time::Instant;

use cairn_engine::{Check, OpenError};
use cairn_server::report;
use clap::Args;
use serde_json::{json, Value};

use super::remote::{self, ServerArgs};
use super::{format, Failure};

/// Arguments of `cairn check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Data directory of the database.
    #[arg(long = "data", value_name = "DIR", required_unless_present = "server", conflicts_with = "server")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub remote: ServerArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Cut a torn tail off the newest WAL (what the next open would do) and report what was dropped.
    #[arg(long, conflicts_with = "server")]
    pub repair: bool,
}

pub fn run(args: &CheckArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let (what, r) = match (&args.remote.server, &args.path) {
        (Some(server), _) => {
            let r = remote::post(server, args.remote.token.as_deref(), "/v1/admin/check", &json!({}))
                .map_err(|e| e.with_code(2))?;
            (server.clone(), r)
        }
        (None, Some(dir)) => {
            let checked = cairn_store::check_store(&Check::new().repair(args.repair), dir).map_err(|e| {
                let hint =
                    matches!(e, OpenError::Locked { .. }).then_some(" (a running server holds it: use --server)");
                Failure::new(format_args!("cannot check {}{}", dir.display(), hint.unwrap_or_default()), e).with_code(2)
            })?;
            (dir.display().to_string(), report::check_json(&checked))
        }
        (None, None) => return Err(Failure::new("cairn check", "give --data DIR or --server URL").with_code(2)),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&r).map_err(|e| Failure::new("cannot encode the report", e))?;
        println!("{json}");
    } else {
        print_text(&r, start);
    }
    if r["healthy"].as_bool() == Some(true) {
        Ok(())
    } else {
        let torn = usize::from(!r["torn_wal"].is_null() && r["repaired"] != json!(true));
        let problems = r["problems"].as_array().map_or(0, Vec::len);
        Err(Failure::new(
            format_args!("{what} is not healthy"),
            format_args!("{problems} problems, {torn} torn WAL tail"),
        ))
    }
}

/// The report ([`report::check_json`]) as text.
fn print_text(r: &Value, start: Instant) {
    let n = |key: &str| format::thousands(r[key].as_u64().unwrap_or(0));
    println!("checked {} in {}", r["dir"].as_str().unwrap_or_default(), format::duration(start.elapsed()));
    if let Some(m) = r["manifest"].as_str() {
        println!("  manifest  {m}: {} edits", n("manifest_edits"));
    }
    println!("  tables    {} ({} blocks, {} entries)", n("tables"), n("table_blocks"), n("table_entries"));
    println!(
        "  WAL       {} files: {} batches ({} entries), {} sync markers",
        n("wal_files"),
        n("wal_batches"),
        n("wal_entries"),
        n("wal_markers")
    );
    println!(
        "  contents  {} live keys; {} collections, {} index entries agree with their records",
        n("live_keys"),
        n("collections"),
        n("index_entries")
    );
    if r["blobs"].as_u64().unwrap_or(0) > 0 {
        println!("  blobs     {} artifact blobs, {} bytes read and verified", n("blobs"), n("blob_bytes"));
    }
    if r["metric_series"].as_u64().unwrap_or(0) > 0 {
        println!("  metrics   {} series, {} points read and verified", n("metric_series"), n("metric_points"));
    }
    let findings = |key: &str| r[key].as_array().cloned().unwrap_or_default();
    for w in findings("warnings") {
        println!("warning: {}", finding_text(&w));
    }
    let t = &r["torn_wal"];
    if !t.is_null() {
        let tn = |key: &str| format::thousands(t[key].as_u64().unwrap_or(0));
        let file = t["file"].as_str().unwrap_or_default();
        println!(
            "torn WAL tail: {file}: {} bytes after offset {} ({}); {} intact records inside ({} batches, {} entries)",
            tn("dropped_bytes"),
            t["valid_len"],
            t["reason"].as_str().unwrap_or_default(),
            tn("dropped_records"),
            tn("dropped_batches"),
            tn("dropped_entries")
        );
        if r["repaired"] == json!(true) {
            println!("repaired: {file} truncated to {} bytes", t["valid_len"]);
        } else {
            println!("  (the next open cuts it off; `cairn check --repair` does it now)");
        }
    }
    let problems = findings("problems");
    for p in &problems {
        println!("problem: {}", finding_text(p));
    }
    if r["healthy"].as_bool() == Some(true) {
        println!("healthy");
    } else {
        let torn = if !t.is_null() && r["repaired"] != json!(true) { ", a torn WAL tail" } else { "" };
        println!("NOT healthy: {} problems{torn}", problems.len());
    }
}

/// A finding as [`cairn_engine::Finding`] displays it: file and offset when known, then the message.
fn finding_text(f: &Value) -> String {
    let message = f["message"].as_str().unwrap_or_default();
    match (f["file"].as_str(), f["offset"].as_u64()) {
        (Some(file), Some(offset)) => format!("{file} at offset {offset}: {message}"),
        (Some(file), None) => format!("{file}: {message}"),
        _ => message.to_owned(),
    }
}
