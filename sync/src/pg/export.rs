//! `export postgres`: a bulk copy of a snapshot, then the change feed, resumable from the cursor that
//! PostgreSQL holds; the metrics, which have no change events, by the series that changed (`metrics.rs`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use cairn_store::{ChangeOp, Store, StoreSnapshot};
use tokio_postgres::Client;

use super::connect;
use super::metrics::{self, Mirror, Synced};
use super::schema::{ensure_meta, ensure_table, table_ref, COLLECTIONS_TABLE, STATE_TABLE};
use super::stage::{apply, StageRow};
use crate::error::SyncError;
use crate::follow::{ensure_consumer, stopped, wait};
use crate::progress::Progress;
use crate::StopFlag;

/// While following a busy change feed, the metrics are brought up to date at least this often (they
/// always are whenever the export has caught up with the feed).
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// What [`export_postgres`] does. Build with [`PgExportOptions::new`] and the setters.
#[derive(Debug, Clone)]
pub struct PgExportOptions {
    url: String,
    schema: String,
    name: String,
    batch: usize,
    follow: bool,
    poll: Duration,
    restart: bool,
    metrics: bool,
}

impl PgExportOptions {
    /// An export to the database at `url` (`postgres://user@host:port/db` or a key=value string).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "public".to_owned(),
            name: "default".to_owned(),
            batch: 10_000,
            follow: false,
            poll: Duration::from_millis(200),
            restart: false,
            metrics: true,
        }
    }

    /// The PostgreSQL schema holding the tables (created if missing). Default: `public`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The export's name: its row in `cairn_sync_state`, and the store's change consumer `pg-NAME` that
    /// keeps the changes it has not shipped. Default: `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Records (bulk) or changes (incremental) per PostgreSQL transaction. Default: 10,000.
    pub fn batch(mut self, records: usize) -> Self {
        self.batch = records.max(1);
        self
    }

    /// Keep following the change feed until the stop flag is set. Default: false (stop once caught up).
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// How long a follower waits before looking for new changes when caught up. Default: 200 ms.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Empty the collections' tables, forget the stored cursor and start again with a bulk copy of a new
    /// snapshot (after the store trimmed changes the export still needed, say). Default: false.
    pub fn restart(mut self, restart: bool) -> Self {
        self.restart = restart;
        self
    }

    /// Carry the store's metrics (tables `cairn_metrics` and `cairn_metric_series`). Default: true. Without
    /// them, metrics tables an earlier export made are left as they are.
    pub fn metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    fn consumer(&self) -> String {
        format!("pg-{}", self.name)
    }

    /// Metric points per PostgreSQL transaction: ten times `batch`.
    fn batch_points(&self) -> u64 {
        self.batch as u64 * 10
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgExportReport {
    /// The export went on from a cursor left by an earlier run.
    pub resumed: bool,
    /// Records copied by the bulk phase (in this run).
    pub bulk_records: u64,
    /// Bytes of their documents, as JSON.
    pub bulk_bytes: u64,
    /// Changes applied by the incremental phase.
    pub changes: u64,
    /// Bytes of the changes' documents, as JSON.
    pub change_bytes: u64,
    /// The commit sequence PostgreSQL now holds everything up to.
    pub cursor: u64,
    /// Time spent in the bulk phase.
    pub bulk_time: Duration,
    /// Metric series written: new ones, and those that changed since the last export.
    pub metric_series: u64,
    /// Metric points written.
    pub metric_points: u64,
    /// Metric series removed (deleted or expired in the store since the last export).
    pub metric_series_removed: u64,
}

impl PgExportReport {
    fn add_metrics(&mut self, synced: Synced) {
        self.metric_series += synced.series;
        self.metric_points += synced.points;
        self.metric_series_removed += synced.removed;
    }
}

/// The export's row of `cairn_sync_state`.
#[derive(Debug)]
struct State {
    phase: String,
    snapshot_seq: u64,
    bulk_collection: Option<String>,
    bulk_last_id: Option<String>,
    cursor: u64,
}

/// Exports `store` to PostgreSQL: on the first run (or with `restart`) a bulk copy of a snapshot, then every
/// change after it. A run killed at any point resumes from the cursor committed in PostgreSQL with the
/// rows it covers, so nothing is missed and nothing applied twice. With `follow`, keeps shipping changes
/// until `stop` is set.
///
/// Metrics (unless left out) are copied with the bulk copy's snapshot, then brought up to date whenever the
/// export has caught up with the change feed (and at least every second while following a busy one): the
/// series whose fingerprint changed are written again, or only their new points when those follow the
/// points shipped.
pub async fn export_postgres(
    store: &Store,
    opts: &PgExportOptions,
    progress: &Progress,
    stop: Option<StopFlag>,
) -> Result<PgExportReport, SyncError> {
    let mut client = connect(&opts.url).await?;
    ensure_meta(&client, &opts.schema).await?;
    if opts.metrics {
        metrics::ensure_tables(&client, &opts.schema).await?;
    }
    let state_table = table_ref(&opts.schema, STATE_TABLE);
    if opts.restart {
        // Start from empty tables: rows of records deleted while the feed was unavailable must go too.
        let txn = client.transaction().await?;
        let tables =
            txn.query(&format!("SELECT name FROM {}", table_ref(&opts.schema, COLLECTIONS_TABLE)), &[]).await?;
        for row in tables {
            let name: String = row.try_get(0)?;
            txn.batch_execute(&format!("TRUNCATE {}", table_ref(&opts.schema, &name))).await?;
        }
        metrics::truncate(&txn, &opts.schema).await?;
        txn.execute(&format!("DELETE FROM {state_table} WHERE name = $1"), &[&opts.name]).await?;
        txn.commit().await?;
    }
    let mut report = PgExportReport::default();
    let mut ready = HashSet::new();
    let mut mirror = if opts.metrics { Some(Mirror::load(&client, &opts.schema).await?) } else { None };
    let state = match read_state(&client, &state_table, &opts.name).await? {
        Some(state) => {
            report.resumed = true;
            state
        }
        None => {
            let snap = store.snapshot();
            let seq = snap.sequence();
            store.register_consumer(&opts.consumer(), seq)?;
            client
                .execute(
                    &format!(
                        "INSERT INTO {state_table} (name, phase, snapshot_seq, cursor) VALUES ($1, 'bulk', $2, $2)"
                    ),
                    &[&opts.name, &to_i64(seq)?],
                )
                .await?;
            State {
                phase: "bulk".to_owned(),
                snapshot_seq: seq,
                bulk_collection: None,
                bulk_last_id: None,
                cursor: seq,
            }
        }
    };
    let mut cursor = state.cursor;
    if state.phase == "bulk" {
        // Changes after the bulk snapshot must still be in the feed: the bulk phase of a resumed export reads
        // a newer snapshot, and replaying from the first one repairs the records copied before the kill.
        store.changes_since(state.snapshot_seq, 1)?;
        ensure_consumer(store, &opts.consumer(), state.snapshot_seq)?;
        let started = Instant::now();
        bulk(store, &mut client, opts, &state, (&mut ready, mirror.as_mut()), progress, &mut report).await?;
        report.bulk_time = started.elapsed();
        client
            .execute(
                &format!(
                    "UPDATE {state_table} SET phase = 'incremental', bulk_collection = NULL, bulk_last_id = NULL,
                     cursor = $2, updated_at = now() WHERE name = $1"
                ),
                &[&opts.name, &to_i64(state.snapshot_seq)?],
            )
            .await?;
        cursor = state.snapshot_seq;
    } else {
        ensure_consumer(store, &opts.consumer(), cursor)?;
    }
    progress.phase("postgres: changes", None);
    let mut metrics_at = Instant::now();
    loop {
        let page = store.changes_since(cursor, opts.batch)?;
        if let Some(mirror) = mirror.as_mut() {
            if page.is_empty() || metrics_at.elapsed() >= METRICS_EVERY {
                let snap = store.snapshot();
                let synced = mirror.sync(&mut client, &opts.schema, &snap, opts.batch_points(), progress).await?;
                if synced != Synced::default() {
                    report.add_metrics(synced);
                    progress.phase("postgres: changes", None);
                }
                metrics_at = Instant::now();
            }
        }
        let Some(last) = page.last().map(|c| c.seq) else {
            if opts.follow && !stopped(&stop) {
                wait(&stop, opts.poll).await;
                continue;
            }
            break;
        };
        let mut latest: HashMap<(String, String), usize> = HashMap::new();
        let mut rows: Vec<StageRow> = Vec::with_capacity(page.len());
        for c in page {
            report.changes += 1;
            let row = StageRow {
                collection: c.collection,
                id: c.id,
                version: c.version,
                seq: c.seq,
                updated_at_ms: c.at_ms,
                created_at_ms: (c.op == ChangeOp::Insert).then_some(c.at_ms),
                doc: if c.op == ChangeOp::Delete { None } else { c.doc },
            };
            let bytes = row.doc_len();
            report.change_bytes += bytes;
            progress.add(1, bytes);
            match latest.entry((row.collection.clone(), row.id.clone())) {
                Entry::Occupied(at) => rows[*at.get()] = row,
                Entry::Vacant(slot) => {
                    slot.insert(rows.len());
                    rows.push(row);
                }
            }
        }
        let fresh: BTreeSet<String> = latest.into_keys().map(|k| k.0).filter(|c| !ready.contains(c)).collect();
        if !fresh.is_empty() {
            let snap = store.snapshot();
            for name in fresh {
                let spec = store.collection_dyn(&name)?.spec()?;
                ensure_table(&client, &opts.schema, &spec, &snap).await?;
                ready.insert(name);
            }
        }
        let txn = client.transaction().await?;
        apply(&txn, &opts.schema, &rows).await?;
        txn.execute(
            &format!("UPDATE {state_table} SET cursor = $2, updated_at = now() WHERE name = $1"),
            &[&opts.name, &to_i64(last)?],
        )
        .await?;
        txn.commit().await?;
        cursor = last;
        store.ack(&opts.consumer(), last)?;
    }
    progress.finish();
    report.cursor = cursor;
    Ok(report)
}

/// Copies every record of a new snapshot, in collection then id order, starting after the position a
/// killed run recorded; each batch commits with the position it reached. Then the metrics of the same
/// snapshot, as far as PostgreSQL does not hold them yet.
async fn bulk(
    store: &Store,
    client: &mut Client,
    opts: &PgExportOptions,
    state: &State,
    (ready, mirror): (&mut HashSet<String>, Option<&mut Mirror>),
    progress: &Progress,
    report: &mut PgExportReport,
) -> Result<(), SyncError> {
    let snap: StoreSnapshot = store.snapshot();
    let specs = crate::exported(snap.collections()?);
    for spec in &specs {
        ensure_table(&*client, &opts.schema, spec, &snap).await?;
        ready.insert(spec.name.clone());
    }
    progress.phase("postgres: bulk copy", None);
    let state_table = table_ref(&opts.schema, STATE_TABLE);
    for spec in &specs {
        let after = match state.bulk_collection.as_deref() {
            Some(done) if spec.name.as_str() < done => continue,
            Some(done) if spec.name == done => state.bulk_last_id.as_deref(),
            _ => None,
        };
        let mut records = snap.records(&spec.name, after)?;
        loop {
            let mut rows = Vec::with_capacity(opts.batch);
            for r in records.by_ref().take(opts.batch) {
                let r = r?;
                rows.push(StageRow {
                    collection: spec.name.clone(),
                    id: r.id,
                    version: r.version,
                    seq: r.seq,
                    updated_at_ms: r.updated_at_ms,
                    created_at_ms: Some(r.created_at_ms),
                    doc: Some(r.doc),
                });
            }
            let Some(last) = rows.last().map(|r| r.id.clone()) else { break };
            let bytes: u64 = rows.iter().map(StageRow::doc_len).sum();
            let txn = client.transaction().await?;
            apply(&txn, &opts.schema, &rows).await?;
            txn.execute(
                &format!(
                    "UPDATE {state_table} SET bulk_collection = $2, bulk_last_id = $3, updated_at = now()
                     WHERE name = $1"
                ),
                &[&opts.name, &spec.name, &last],
            )
            .await?;
            txn.commit().await?;
            report.bulk_records += rows.len() as u64;
            report.bulk_bytes += bytes;
            progress.add(rows.len() as u64, bytes);
        }
    }
    progress.finish();
    if let Some(mirror) = mirror {
        report.add_metrics(mirror.sync(client, &opts.schema, &snap, opts.batch_points(), progress).await?);
    }
    Ok(())
}

async fn read_state(client: &Client, table: &str, name: &str) -> Result<Option<State>, SyncError> {
    let row = client
        .query_opt(
            &format!("SELECT phase, snapshot_seq, bulk_collection, bulk_last_id, cursor FROM {table} WHERE name = $1"),
            &[&name],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let seq = |i: usize| -> Result<u64, SyncError> {
        u64::try_from(row.try_get::<_, i64>(i)?).map_err(|_| SyncError::corrupt(table, "negative sequence"))
    };
    Ok(Some(State {
        phase: row.try_get(0)?,
        snapshot_seq: seq(1)?,
        bulk_collection: row.try_get(2)?,
        bulk_last_id: row.try_get(3)?,
        cursor: seq(4)?,
    }))
}

pub(crate) fn to_i64(v: u64) -> Result<i64, SyncError> {
    i64::try_from(v).map_err(|_| SyncError::invalid(format!("{v} does not fit a bigint")))
}
