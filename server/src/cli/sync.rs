//! `cairn export`, `cairn import` and `cairn verify`: sync with PostgreSQL and object stores (S3 and
//! S3-compatible servers, `file://` directories), through the `cairn-sync` crate: collections and metrics.
//! See `docs/sync.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_store::artifacts::{blob_dir, ArtifactOptions, Artifacts, OBJECTS};
use cairn_store::Store;
use cairn_sync::{
    BlobCheck, ObjectExportOptions, ObjectLocation, PgExportOptions, Progress, RestoreTarget, StopFlag, TableMapping,
    VerifyReport,
};
use clap::{Args, Subcommand};

use super::Failure;

/// Arguments of `cairn export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    to: ExportTo,
}

#[derive(Debug, Subcommand)]
enum ExportTo {
    /// One table per collection (and the metrics): a bulk copy, then the change feed; resumes from the
    /// cursor PostgreSQL holds.
    Postgres {
        /// Data directory of the store.
        #[arg(long = "data", value_name = "DIR")]
        data: PathBuf,
        /// The database, as a postgres:// URL.
        #[arg(long)]
        url: String,
        /// Schema holding the tables.
        #[arg(long, default_value = "public")]
        schema: String,
        /// Records or changes per PostgreSQL transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Forget the stored cursor and start again with a bulk copy.
        #[arg(long)]
        restart: bool,
        /// Keep shipping new changes until interrupted (Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// Leave the metrics out (metrics tables of an earlier export are left as they are).
        #[arg(long)]
        no_metrics: bool,
    },
    /// A checksummed snapshot (if the destination has none, or with --snapshot), then change segments.
    S3 {
        /// Data directory of the store.
        #[arg(long = "data", value_name = "DIR")]
        data: PathBuf,
        /// Destination: s3://bucket/prefix (or file:///dir).
        #[arg(long)]
        dest: String,
        /// Endpoint of an S3-compatible server (http://host:port).
        #[arg(long)]
        endpoint: Option<String>,
        /// Write a new snapshot even if the destination has one.
        #[arg(long)]
        snapshot: bool,
        /// Keep only the newest N snapshots (and the segments after the oldest of them).
        #[arg(long, value_name = "N")]
        keep_snapshots: Option<usize>,
        /// Records per snapshot chunk.
        #[arg(long, default_value_t = 50_000)]
        chunk_records: usize,
        /// Keep shipping new changes until interrupted (Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// While following, write a new snapshot every this many seconds.
        #[arg(long, value_name = "SECONDS")]
        snapshot_every: Option<u64>,
        /// Leave the metrics out of snapshots.
        #[arg(long)]
        no_metrics: bool,
    },
}

/// Arguments of `cairn import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    from: ImportFrom,
}

#[derive(Debug, Subcommand)]
enum ImportFrom {
    /// Tables written by `cairn export postgres`, or one table of yours with --table.
    Postgres {
        /// The database, as a postgres:// URL.
        #[arg(long)]
        url: String,
        /// Data directory of the store (created if missing).
        #[arg(long = "data", value_name = "DIR")]
        data: PathBuf,
        /// Schema of the exported tables.
        #[arg(long, default_value = "public")]
        schema: String,
        /// Import this table ([schema.]name) instead, into --collection.
        #[arg(long, requires = "collection")]
        table: Option<String>,
        /// The collection receiving --table's rows.
        #[arg(long, requires = "table")]
        collection: Option<String>,
        /// --table's id column.
        #[arg(long, default_value = "id")]
        id_column: String,
        /// --table's JSON document column.
        #[arg(long, default_value = "doc")]
        doc_column: String,
        /// --table's version column (default: every record gets version 1).
        #[arg(long)]
        version_column: Option<String>,
    },
    /// Restore a snapshot and replay change segments into a new data directory.
    S3 {
        /// Source: s3://bucket/prefix (or file:///dir).
        #[arg(long)]
        src: String,
        /// New data directory for the restored store.
        #[arg(long = "data", value_name = "DIR")]
        data: PathBuf,
        /// Restore the state right after this commit sequence.
        #[arg(long, conflicts_with = "to_time")]
        to_seq: Option<u64>,
        /// Restore the state at this time (RFC 3339, e.g. 2026-11-21T16:00:00Z, or ms since the epoch).
        #[arg(long)]
        to_time: Option<String>,
        /// Endpoint of an S3-compatible server (http://host:port).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// Arguments of `cairn verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory of the store.
    #[arg(long = "data", value_name = "DIR")]
    data: PathBuf,
    /// postgres://... (tables of `cairn export postgres`) or s3://bucket/prefix / file:///dir.
    #[arg(long)]
    against: String,
    /// Schema of the tables (PostgreSQL).
    #[arg(long, default_value = "public")]
    schema: String,
    /// Endpoint of an S3-compatible server (http://host:port).
    #[arg(long)]
    endpoint: Option<String>,
    /// Object stores: download every artifact object's bytes and check their SHA-256 (by default only
    /// their presence and size are checked, from one listing).
    #[arg(long)]
    hash_blobs: bool,
}

pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    init_logging();
    runtime()?.block_on(async {
        match &args.to {
            ExportTo::Postgres { data, url, schema, batch, restart, follow, no_metrics } => {
                let store = open(data, false)?;
                let opts = PgExportOptions::new(url)
                    .schema(schema)
                    .batch(*batch)
                    .restart(*restart)
                    .follow(*follow)
                    .metrics(!no_metrics);
                let r = cairn_sync::export_postgres(&store, &opts, &Progress::auto(), stop_on_ctrl_c(*follow))
                    .await
                    .map_err(|e| Failure::new("export to postgres failed", e))?;
                let secs = r.bulk_time.as_secs_f64().max(1e-9);
                println!(
                    "{}bulk: {} records, {:.1} MB in {:.2} s ({:.0} records/s, {:.1} MB/s); changes: {}; cursor {}; \
                     metrics: {}",
                    if r.resumed { "resumed; " } else { "" },
                    r.bulk_records,
                    r.bulk_bytes as f64 / 1e6,
                    secs,
                    r.bulk_records as f64 / secs,
                    r.bulk_bytes as f64 / 1e6 / secs,
                    r.changes,
                    r.cursor,
                    if *no_metrics {
                        "left out".to_owned()
                    } else {
                        format!(
                            "{} series ({} points) written, {} removed",
                            r.metric_series, r.metric_points, r.metric_series_removed
                        )
                    }
                );
                Ok(())
            }
            ExportTo::S3 {
                data,
                dest,
                endpoint,
                snapshot,
                keep_snapshots,
                chunk_records,
                follow,
                snapshot_every,
                no_metrics,
            } => {
                let store = open(data, false)?;
                // A store without artifact objects has no artifact store to open (opening one declares
                // its collections).
                let artifacts = if store.collections().iter().any(|c| c.name == OBJECTS) {
                    Some(open_artifacts(&store, data)?)
                } else {
                    None
                };
                let location = location(dest, endpoint)?;
                let opts = ObjectExportOptions::default()
                    .snapshot(*snapshot)
                    .keep_snapshots(*keep_snapshots)
                    .chunk_records(*chunk_records)
                    .follow(*follow)
                    .snapshot_every(snapshot_every.map(Duration::from_secs))
                    .metrics(!no_metrics);
                let r = cairn_sync::export_objects(
                    &store,
                    artifacts.as_ref(),
                    &location,
                    &opts,
                    &Progress::auto(),
                    stop_on_ctrl_c(*follow),
                )
                .await
                .map_err(|e| Failure::new(format_args!("export to {dest} failed"), e))?;
                let secs = r.snapshot_time.as_secs_f64().max(1e-9);
                println!(
                    "snapshots {:?}: {} records, {:.1} MB ({:.1} MB uploaded) in {:.2} s ({:.0} records/s, {:.1} MB/s); \
                     {} segments with {} changes; chain through seq {}; {} old objects deleted; artifact bytes: \
                     {} blobs uploaded ({:.1} MB), {} already there, {} versions gone and superseded; metrics: {}",
                    r.snapshots,
                    r.snapshot_records,
                    r.snapshot_bytes as f64 / 1e6,
                    r.snapshot_uploaded as f64 / 1e6,
                    secs,
                    r.snapshot_records as f64 / secs,
                    r.snapshot_bytes as f64 / 1e6 / secs,
                    r.segments,
                    r.changes,
                    r.through,
                    r.deleted,
                    r.blobs_uploaded,
                    r.blob_bytes_uploaded as f64 / 1e6,
                    r.blobs_present,
                    r.blobs_skipped,
                    if *no_metrics {
                        "left out".to_owned()
                    } else {
                        format!(
                            "{} series ({} points) in snapshots{}",
                            r.snapshot_metric_series,
                            r.snapshot_metric_points,
                            if r.metrics_changed {
                                ", changed since the newest snapshot (segments do not carry them: --snapshot does)"
                            } else {
                                ""
                            }
                        )
                    }
                );
                Ok(())
            }
        }
    })
}

pub fn import(args: &ImportArgs) -> Result<(), Failure> {
    init_logging();
    runtime()?.block_on(async {
        match &args.from {
            ImportFrom::Postgres { url, data, schema, table, collection, id_column, doc_column, version_column } => {
                let store = open(data, true)?;
                let progress = Progress::auto();
                let r = match (table, collection) {
                    (Some(table), Some(collection)) => {
                        let mapping = TableMapping::new(table, collection)
                            .id_column(id_column)
                            .doc_column(doc_column)
                            .version_column(version_column.clone());
                        cairn_sync::import_postgres_table(&store, url, &mapping, &progress).await
                    }
                    _ => cairn_sync::import_postgres(&store, url, schema, &progress).await,
                }
                .map_err(|e| Failure::new("import from postgres failed", e))?;
                let secs = r.elapsed.as_secs_f64().max(1e-9);
                println!(
                    "imported {} records ({:.1} MB) into {} collections in {secs:.2} s ({:.0} records/s, {:.1} MB/s); \
                     metrics: {} series ({} points)",
                    r.records,
                    r.bytes as f64 / 1e6,
                    r.collections,
                    r.records as f64 / secs,
                    r.bytes as f64 / 1e6 / secs,
                    r.metric_series,
                    r.metric_points
                );
                Ok(())
            }
            ImportFrom::S3 { src, data, to_seq, to_time, endpoint } => {
                let target = match (to_seq, to_time) {
                    (Some(n), _) => RestoreTarget::Seq(*n),
                    (None, Some(t)) => RestoreTarget::Time(parse_time(t)?),
                    (None, None) => RestoreTarget::Latest,
                };
                let location = location(src, endpoint)?;
                let store = open(data, true)?;
                let artifacts = open_artifacts(&store, data)?;
                let r = cairn_sync::restore_objects(&location, target, &store, Some(&artifacts), &Progress::auto())
                    .await
                    .map_err(|e| Failure::new(format_args!("restore from {src} failed"), e))?;
                let secs = r.elapsed.as_secs_f64().max(1e-9);
                println!(
                    "restored seq {} (snapshot {} with {} records, then {} changes from {} segments): {:.1} MB \
                     ({:.1} MB downloaded) in {secs:.2} s ({:.0} records/s); {} artifact objects, {} blobs \
                     ({:.1} MB) downloaded; metrics: {} series ({} points)",
                    r.seq,
                    r.snapshot_seq,
                    r.snapshot_records,
                    r.changes,
                    r.segments,
                    r.bytes as f64 / 1e6,
                    r.downloaded as f64 / 1e6,
                    (r.snapshot_records + r.changes) as f64 / secs,
                    r.artifact_objects,
                    r.blobs_downloaded,
                    r.blob_bytes as f64 / 1e6,
                    r.metric_series,
                    r.metric_points
                );
                Ok(())
            }
        }
    })
}

pub fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    init_logging();
    runtime()?.block_on(async {
        let store = open(&args.data, false)?;
        let report = if args.against.starts_with("postgres://") || args.against.starts_with("postgresql://") {
            cairn_sync::verify_postgres(&store, &args.against, &args.schema).await
        } else {
            let location = location(&args.against, &args.endpoint)?;
            let blobs = if args.hash_blobs { BlobCheck::Sha256 } else { BlobCheck::Listed };
            cairn_sync::verify_objects(&store, &location, blobs).await
        }
        .map_err(|e| Failure::new(format_args!("cannot verify against {}", args.against), e))?;
        print_report(&report);
        if report.equal() {
            Ok(())
        } else {
            Err(Failure::new(
                "verify",
                format_args!("{} records and {} metric series differ", report.differences, report.series_differences),
            ))
        }
    })
}

fn print_report(r: &VerifyReport) {
    println!("local records  {}", r.local_records);
    println!("remote records {}", r.remote_records);
    if r.blobs > 0 {
        println!("artifact blobs {}", r.blobs);
    }
    println!("differences    {}", r.differences);
    for d in &r.listed {
        println!("  {d}");
    }
    if r.differences > r.listed.len() as u64 {
        println!("  ... and {} more", r.differences - r.listed.len() as u64);
    }
    if !r.metrics {
        println!("metrics        not compared (none at the other end)");
        return;
    }
    println!("local metrics  {} series, {} points", r.local_series, r.local_points);
    println!("remote metrics {} series, {} points", r.remote_series, r.remote_points);
    println!("differences    {} series", r.series_differences);
    for d in &r.listed_series {
        println!("  {d}");
    }
    if r.series_differences > r.listed_series.len() as u64 {
        println!("  ... and {} more", r.series_differences - r.listed_series.len() as u64);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new("cannot start the async runtime", e))
}

/// Log lines on stderr (`RUST_LOG` filters them; default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
}

fn open(dir: &Path, create: bool) -> Result<Store, Failure> {
    let db = Store::engine_options()
        .create_if_missing(create)
        .open(dir)
        .map_err(|e| Failure::new(format_args!("cannot open {}", dir.display()), e))?;
    Store::with_db(db, cairn_store::StoreOptions::default())
        .map_err(|e| Failure::new(format_args!("cannot open the store in {}", dir.display()), e))
}

/// The artifact store of the data directory `dir` (its blob files in `dir/blobs`), without a maintenance
/// thread: the command holds the directory, and nothing needs collecting while it runs.
fn open_artifacts(store: &Store, dir: &Path) -> Result<Artifacts, Failure> {
    let opts = ArtifactOptions::default().maintenance_interval(Duration::ZERO);
    Artifacts::open(store.clone(), &blob_dir(dir), opts)
        .map_err(|e| Failure::new(format_args!("cannot open the artifact store in {}", blob_dir(dir).display()), e))
}

fn location(url: &str, endpoint: &Option<String>) -> Result<ObjectLocation, Failure> {
    ObjectLocation::new(url).endpoint(endpoint.clone()).open().map_err(|e| Failure::new(format_args!("{url}"), e))
}

/// A stop flag set by Ctrl-C, when following.
fn stop_on_ctrl_c(follow: bool) -> Option<StopFlag> {
    if !follow {
        return None;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    Some(rx)
}

/// RFC 3339, or milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, Failure> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Failure::new(format_args!("--to-time {text:?} is neither RFC 3339 nor milliseconds"), e))
}
