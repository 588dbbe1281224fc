//! `cairn backup`: a consistent copy of a store in a new directory, made while it is in use: opened here
//! (`--data`), or by the running server that holds it (`--server`). The copy is checked before the command
//! reports success.

use std::path::PathBuf;
use std::time::Instant;

use cairn_engine::{BlobOptions, BlobStore, Check, OpenError};
use cairn_server::report;
use clap::Args;
use serde_json::{json, Value};

use super::remote::{self, ServerArgs};
use super::{format, Failure};

/// Arguments of `cairn backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Data directory of the store (when no server holds it).
    #[arg(long = "data", value_name = "DIR", required_unless_present = "server", conflicts_with = "server")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub remote: ServerArgs,
    /// Where the copy goes: a new or empty directory (with --server, an absolute path on the server's
    /// machine). Tables are hard links when it is on the same file system.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

pub fn run(args: &BackupArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let made = match (&args.remote.server, &args.path) {
        (Some(server), _) => {
            let to = std::path::absolute(&args.to).map_err(|e| Failure::new("--to", e))?;
            let body = json!({"to": to, "check": true});
            remote::post(server, args.remote.token.as_deref(), "/v1/admin/backup", &body)?
        }
        (None, Some(dir)) => backup_here(dir, &args.to)?,
        (None, None) => return Err(Failure::new("cairn backup", "give --data DIR or --server URL").with_code(2)),
    };
    let n = |key: &str| made[key].as_u64().unwrap_or(0);
    println!(
        "backed up to {} in {}: {} tables ({}, hard-linked where possible), {} WAL files ({}), through sequence {}",
        made["dir"].as_str().unwrap_or_default(),
        format::duration(start.elapsed()),
        format::thousands(n("tables")),
        format::bytes(n("table_bytes")),
        n("wal_files"),
        format::bytes(n("wal_bytes")),
        format::thousands(n("last_sequence")),
    );
    if n("blob_files") > 0 {
        println!("  and {} blob files ({}) of the artifact store", n("blob_files"), format::bytes(n("blob_bytes")));
    }
    let check = &made["check"];
    if check["healthy"].as_bool() == Some(true) {
        println!(
            "checked: healthy ({} live keys, {} collections, {} index entries)",
            format::thousands(check["live_keys"].as_u64().unwrap_or(0)),
            check["collections"],
            format::thousands(check["index_entries"].as_u64().unwrap_or(0))
        );
        Ok(())
    } else {
        Err(Failure::new("the copy did not pass its check", check))
    }
}

/// Opens the store in `dir`, copies it to `to` and checks the copy.
fn backup_here(dir: &std::path::Path, to: &std::path::Path) -> Result<Value, Failure> {
    let db = cairn_store::Store::engine_options().create_if_missing(false).open(dir).map_err(|e| match e {
        OpenError::Locked { .. } => Failure::new(
            format_args!("cannot open {}", dir.display()),
            "a running server holds it: use `cairn backup --server URL`",
        ),
        e => Failure::new(format_args!("cannot open {}", dir.display()), e),
    })?;
    let info = db.checkpoint(to).map_err(|e| Failure::new(format_args!("cannot back up to {}", to.display()), e))?;
    // The artifact store's blob files: nothing else holds the directory, so no garbage collection runs.
    let blobs = cairn_store::artifacts::blob_dir(dir);
    let copied = if blobs.is_dir() {
        let store = BlobStore::open(db.storage(), &blobs, BlobOptions::default())
            .map_err(|e| Failure::new(format_args!("cannot open {}", blobs.display()), e))?;
        let dest = cairn_store::artifacts::blob_dir(&info.dir);
        Some(store.copy_to(&dest).map_err(|e| Failure::new(format_args!("cannot copy {}", blobs.display()), e))?)
    } else {
        None
    };
    db.close().map_err(|e| Failure::new("cannot close the database", e))?;
    let checked = cairn_store::check_store(&Check::new(), &info.dir)
        .map_err(|e| Failure::new(format_args!("cannot check {}", info.dir.display()), e))?;
    let mut out = report::checkpoint_json(&info);
    if let Some((files, bytes)) = copied {
        out["blob_files"] = json!(files);
        out["blob_bytes"] = json!(bytes);
    }
    out["check"] = report::check_json(&checked);
    Ok(out)
}
