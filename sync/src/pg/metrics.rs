//! Metrics in PostgreSQL: `cairn_metrics`, a row per point, and `cairn_metric_series`, a row per series
//! saying what the export shipped. The export compares each series' fingerprint with the one shipped and
//! writes only the series that changed: the points after those shipped when the shipped ones are still the
//! series' first points (the usual case: points logged at later steps), the whole series otherwise. Import
//! and verification read the points back in history order.

use std::collections::{BTreeMap, BTreeSet};

use cairn_store::metrics::{Point, MAX_NAME_LEN};
use cairn_store::{Store, StoreSnapshot};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use super::schema::table_ref;
use crate::digest::{Digest, PointsDigest, SeriesDigester, SeriesDigests};
use crate::error::SyncError;
use crate::metrics::PointWriter;
use crate::progress::Progress;

/// A row per point: `run, key, step, n, timestamp_ms, value, value_bits`.
pub(crate) const POINTS_TABLE: &str = "cairn_metrics";
/// A row per series as last shipped: `run, key, points, fingerprint, sha256, updated_at`.
pub(crate) const SERIES_TABLE: &str = "cairn_metric_series";

/// Columns of a `cairn_metrics` row as the export copies them in.
const POINT_TYPES: [Type; 7] = [Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::FLOAT8, Type::INT8];

/// Creates the metrics tables if missing.
pub(crate) async fn ensure_tables(client: &impl GenericClient, schema: &str) -> Result<(), SyncError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {points} (
             run text NOT NULL,
             key text NOT NULL,
             step bigint NOT NULL,
             n bigint NOT NULL,
             timestamp_ms bigint NOT NULL,
             value double precision NOT NULL,
             value_bits bigint NOT NULL,
             PRIMARY KEY (run, key, step, n)
         );
         CREATE TABLE IF NOT EXISTS {series} (
             run text NOT NULL,
             key text NOT NULL,
             points bigint NOT NULL,
             fingerprint bigint NOT NULL,
             sha256 bytea NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (run, key)
         );",
        points = table_ref(schema, POINTS_TABLE),
        series = table_ref(schema, SERIES_TABLE),
    );
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Whether `schema` has the metrics tables (an export that left metrics out has none).
pub(crate) async fn exists(client: &impl GenericClient, schema: &str) -> Result<bool, SyncError> {
    let table = table_ref(schema, POINTS_TABLE);
    Ok(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await?.try_get(0)?)
}

/// Empties both tables (a restarted export copies everything again).
pub(crate) async fn truncate(client: &impl GenericClient, schema: &str) -> Result<(), SyncError> {
    if exists(client, schema).await? {
        let sql = format!("TRUNCATE {}, {}", table_ref(schema, POINTS_TABLE), table_ref(schema, SERIES_TABLE));
        client.batch_execute(&sql).await?;
    }
    Ok(())
}

/// What the export shipped of one series, as `cairn_metric_series` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shipped {
    points: u64,
    fingerprint: u64,
    sha256: Digest,
}

/// What one sync wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Series written (new, grown or copied again).
    pub series: u64,
    /// Points written.
    pub points: u64,
    /// Series removed (deleted from the store, or expired whole).
    pub removed: u64,
}

/// One series to write: its points from position `from` on. A series written from 0 has its rows deleted
/// first (rows of a series PostgreSQL does not list as shipped, left by an edit of the tables, included).
struct Plan {
    run: String,
    key: String,
    from: u64,
    shipped: Shipped,
}

/// The series PostgreSQL holds, as the export last shipped them; kept in memory between syncs.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    shipped: BTreeMap<(String, String), Shipped>,
}

impl Mirror {
    /// Reads `cairn_metric_series` (the tables must exist).
    pub async fn load(client: &Client, schema: &str) -> Result<Self, SyncError> {
        let table = table_ref(schema, SERIES_TABLE);
        let rows = client.query(&format!("SELECT run, key, points, fingerprint, sha256 FROM {table}"), &[]).await?;
        let mut shipped = BTreeMap::new();
        for row in rows {
            let sha: Vec<u8> = row.try_get(4)?;
            let s = Shipped {
                points: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
                fingerprint: row.try_get::<_, i64>(3)? as u64,
                sha256: sha.try_into().map_err(|_| SyncError::corrupt(&table, "a sha256 that is not 32 bytes"))?,
            };
            shipped.insert((row.try_get(0)?, row.try_get(1)?), s);
        }
        Ok(Self { shipped })
    }

    /// Brings the tables to the metrics of `snap`: series whose fingerprint changed since they were shipped
    /// are read and written (their new points only, when the shipped points are still their first ones),
    /// series gone from the store are deleted. Transactions of about `batch_points` points, each with the
    /// `cairn_metric_series` rows of its series, so a killed export leaves whole series and resumes with
    /// the rest.
    pub async fn sync(
        &mut self,
        client: &mut Client,
        schema: &str,
        snap: &StoreSnapshot,
        batch_points: u64,
        progress: &Progress,
    ) -> Result<Synced, SyncError> {
        let (plans, removed) = self.plan(snap)?;
        let mut done = Synced::default();
        if plans.is_empty() && removed.is_empty() {
            return Ok(done);
        }
        let total: u64 = plans.iter().map(|p| p.shipped.points - p.from).sum();
        progress.phase("postgres: metrics", Some(total));
        let (points_table, series_table) = (table_ref(schema, POINTS_TABLE), table_ref(schema, SERIES_TABLE));
        let mut plans = plans.into_iter().peekable();
        let mut removed = Some(removed);
        while plans.peek().is_some() || removed.is_some() {
            let mut group = Vec::new();
            let mut points = 0;
            while let Some(p) = plans.next_if(|_| group.is_empty() || points < batch_points) {
                points += p.shipped.points - p.from;
                group.push(p);
            }
            let gone = removed.take().unwrap_or_default();
            let txn = client.transaction().await?;
            let (runs, keys): (Vec<&str>, Vec<&str>) = group
                .iter()
                .filter(|p| p.from == 0)
                .map(|p| (p.run.as_str(), p.key.as_str()))
                .chain(gone.iter().map(|(r, k)| (r.as_str(), k.as_str())))
                .unzip();
            if !runs.is_empty() {
                for table in [&points_table, &series_table] {
                    txn.execute(
                        &format!(
                            "DELETE FROM {table} AS t USING unnest($1::text[], $2::text[]) AS d(run, key)
                             WHERE t.run = d.run AND t.key = d.key"
                        ),
                        &[&runs, &keys],
                    )
                    .await?;
                }
            }
            copy_points(&txn, &points_table, snap, &group, progress).await?;
            record_shipped(&txn, &series_table, &group).await?;
            txn.commit().await?;
            done.removed += gone.len() as u64;
            for id in gone {
                self.shipped.remove(&id);
            }
            for plan in group {
                done.series += 1;
                done.points += plan.shipped.points - plan.from;
                self.shipped.insert((plan.run, plan.key), plan.shipped);
            }
        }
        progress.finish();
        Ok(done)
    }

    /// The series of `snap` to write, and the series shipped that `snap` no longer has.
    #[expect(clippy::type_complexity, reason = "two lists, named by the doc")]
    fn plan(&self, snap: &StoreSnapshot) -> Result<(Vec<Plan>, Vec<(String, String)>), SyncError> {
        let mut plans = Vec::new();
        let mut present = BTreeSet::new();
        for s in snap.metric_series()? {
            let s = s?;
            let id = (s.run, s.key);
            let old = self.shipped.get(&id);
            present.insert(id.clone());
            if old.is_some_and(|o| o.fingerprint == s.fingerprint && o.points == s.points) {
                continue;
            }
            // The digest of the points shipped, taken at the same position of the series as it is now.
            let (run, key) = id;
            let mut digest = PointsDigest::default();
            let mut prefix = None;
            for p in snap.metric_points(&run, &key)? {
                if old.is_some_and(|o| o.points == digest.points()) {
                    prefix = Some(digest.clone().finish().1);
                }
                digest.add(&p?);
            }
            if old.is_some_and(|o| o.points == digest.points()) {
                prefix = Some(digest.clone().finish().1);
            }
            let (points, sha256) = digest.finish();
            let from = match old {
                Some(o) if prefix == Some(o.sha256) => o.points,
                _ => 0,
            };
            let shipped = Shipped { points, fingerprint: s.fingerprint, sha256 };
            plans.push(Plan { run, key, from, shipped });
        }
        let removed = self.shipped.keys().filter(|id| !present.contains(*id)).cloned().collect();
        Ok((plans, removed))
    }
}

/// Copies the points of each series of `group` from its position `from` on into `cairn_metrics`.
async fn copy_points(
    txn: &Transaction<'_>,
    table: &str,
    snap: &StoreSnapshot,
    group: &[Plan],
    progress: &Progress,
) -> Result<(), SyncError> {
    let sink = txn.copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)")).await?;
    let writer = BinaryCopyInWriter::new(sink, &POINT_TYPES);
    pin_mut!(writer);
    for plan in group {
        let from = usize::try_from(plan.from).unwrap_or(usize::MAX);
        for (n, p) in snap.metric_points(&plan.run, &plan.key)?.enumerate().skip(from) {
            let p = p?;
            let (n, bits) = (n as i64, p.value.to_bits() as i64);
            let row: [&(dyn ToSql + Sync); 7] = [&plan.run, &plan.key, &p.step, &n, &p.timestamp_ms, &p.value, &bits];
            writer.as_mut().write(&row).await?;
        }
        progress.add(plan.shipped.points - plan.from, 0);
    }
    writer.finish().await?;
    Ok(())
}

/// Writes the `cairn_metric_series` rows of the series of `group`.
async fn record_shipped(txn: &Transaction<'_>, table: &str, group: &[Plan]) -> Result<(), SyncError> {
    if group.is_empty() {
        return Ok(());
    }
    let runs: Vec<&str> = group.iter().map(|p| p.run.as_str()).collect();
    let keys: Vec<&str> = group.iter().map(|p| p.key.as_str()).collect();
    let points: Vec<i64> = group.iter().map(|p| i64::try_from(p.shipped.points).unwrap_or(i64::MAX)).collect();
    let fingerprints: Vec<i64> = group.iter().map(|p| p.shipped.fingerprint as i64).collect();
    let sha256: Vec<&[u8]> = group.iter().map(|p| p.shipped.sha256.as_slice()).collect();
    txn.execute(
        &format!(
            "INSERT INTO {table} (run, key, points, fingerprint, sha256)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[])
             ON CONFLICT (run, key) DO UPDATE
             SET points = EXCLUDED.points, fingerprint = EXCLUDED.fingerprint, sha256 = EXCLUDED.sha256,
                 updated_at = now()"
        ),
        &[&runs, &keys, &points, &fingerprints, &sha256],
    )
    .await?;
    Ok(())
}

/// `COPY` of every point in history order: `run, key, step, timestamp_ms, value, value_bits`.
async fn points_in_order(client: &Client, schema: &str) -> Result<BinaryCopyOutStream, SyncError> {
    let sql = format!(
        "COPY (SELECT run, key, step, timestamp_ms, value, value_bits FROM {} ORDER BY run, key, step, n)
         TO STDOUT (FORMAT binary)",
        table_ref(schema, POINTS_TABLE)
    );
    let stream = client.copy_out(&sql).await?;
    Ok(BinaryCopyOutStream::new(stream, &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::FLOAT8, Type::INT8]))
}

/// What an import of metrics wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Imported {
    pub series: u64,
    pub points: u64,
}

/// Whether `schema` has metrics to import; fails, naming the first, if a run or key is one the store
/// would refuse.
pub(crate) async fn preflight(client: &Client, schema: &str) -> Result<bool, SyncError> {
    if !exists(client, schema).await? {
        return Ok(false);
    }
    let table = table_ref(schema, POINTS_TABLE);
    let bad = format!(
        "SELECT run, key FROM {table}
         WHERE octet_length(run) NOT BETWEEN 1 AND {MAX_NAME_LEN} OR octet_length(key) NOT BETWEEN 1 AND {MAX_NAME_LEN}
         LIMIT 1"
    );
    if let Some(row) = client.query_opt(&bad, &[]).await? {
        let (run, key): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        return Err(SyncError::invalid(format!(
            "{table}: run {run:?}, key {key:?}: a run or key must be 1 to {MAX_NAME_LEN} bytes; nothing was imported"
        )));
    }
    Ok(true)
}

/// Logs every point of `cairn_metrics` into `store`, a series' points in history order (by `step`, then
/// `n`) with the values of `value_bits`; each run found replaces the store's metrics of that run. Run
/// [`preflight`] first.
pub(crate) async fn import(
    store: &Store,
    client: &Client,
    schema: &str,
    progress: &Progress,
) -> Result<Imported, SyncError> {
    let table = table_ref(schema, POINTS_TABLE);
    let total: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.try_get(0)?;
    progress.phase("postgres → metrics", u64::try_from(total).ok());
    let rows = points_in_order(client, schema).await?;
    pin_mut!(rows);
    let mut writer = PointWriter::new(store, true);
    let mut since = 0u64;
    while let Some(row) = rows.try_next().await? {
        let (run, key): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
        let p = Point {
            step: row.try_get(2)?,
            timestamp_ms: row.try_get(3)?,
            value: f64::from_bits(row.try_get::<i64>(5)? as u64),
        };
        writer.push(run, key, p)?;
        since += 1;
        if since >= 10_000 {
            progress.add(std::mem::take(&mut since), 0);
        }
    }
    writer.flush()?;
    progress.add(since, 0);
    progress.finish();
    Ok(Imported { series: writer.series, points: writer.points })
}

/// Every series of `cairn_metrics` with its point count and digest, and the series where a row's `value`
/// is not the `f64` of its `value_bits` (its first such step); `None` when `schema` has no metrics
/// tables.
pub(crate) async fn remote_digests(
    client: &Client,
    schema: &str,
) -> Result<Option<(SeriesDigests, BTreeMap<(String, String), i64>)>, SyncError> {
    if !exists(client, schema).await? {
        return Ok(None);
    }
    let rows = points_in_order(client, schema).await?;
    pin_mut!(rows);
    let mut digests = SeriesDigester::default();
    let mut disagree = BTreeMap::new();
    while let Some(row) = rows.try_next().await? {
        let (run, key): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
        let value: f64 = row.try_get(4)?;
        let bits = row.try_get::<i64>(5)? as u64;
        let p = Point { step: row.try_get(2)?, timestamp_ms: row.try_get(3)?, value: f64::from_bits(bits) };
        digests.add(run, key, &p);
        if value.to_bits() != bits && !(value.is_nan() && p.value.is_nan()) {
            disagree.entry((run.to_owned(), key.to_owned())).or_insert(p.step);
        }
    }
    Ok(Some((digests.finish(), disagree)))
}
