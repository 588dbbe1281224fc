//! The run metrics' tables, in the backend's schema, created if missing when a server opens the metrics
//! (under the schema's set-up lock, so that servers starting together do not race), and the statements
//! that use them.
//!
//! | object | key | what |
//! |---|---|---|
//! | `cairn_run_metrics` | `(run, key, step, seq)` | one row per point: `step`, `seq` (log order), `timestamp_ms`, `value` (double precision), `value_bits` (the bits of a NaN value, else NULL), `run` and `key` (text, `COLLATE "C"`) |
//! | `cairn_run_metric_series` | `(run, key)` | one row per series, kept on write: `points`, `min_step`, the latest point (`latest_step`, `latest_seq`, `latest_timestamp_ms`, `latest_value`, `latest_value_bits`), `min_timestamp_ms` (a lower bound of its timestamps) and `max_timestamp_ms` (the newest) |
//! | `cairn_run_metric_batches` | | the sequence numbering logged batches |
//!
//! A point's `seq` is its batch's number times 2^17 ([`SEQ_SHIFT`]) plus its index in the batch (a batch
//! holds at most [`MAX_LOG_POINTS`] < 2^17 points), so that points sort by step, then batch, then place in
//! the batch. The fixed-width columns come first so that rows need no padding.
//!
//! `double precision` keeps every value other than NaN bit for bit (`-0.0` and the infinities included);
//! comparisons and aggregates treat all NaNs alike, and a copy of the table through text (`pg_dump`'s
//! default) would make every NaN the same NaN. So a NaN's bits, payload included, are also kept in
//! `value_bits`, and reads return those bits; the column is NULL (no bytes) for every other value.
//!
//! The points' primary key serves every read of the points: a history page is one range of it, a
//! downsampled read the range of its steps, the latest point left after a retention pass one seek of it.
//! There is no index on `timestamp_ms`: retention finds the series holding old points from the series
//! rows' `min_timestamp_ms`, then reads those series' points.

use cairn_store::metrics::{MetricsError, MAX_LOG_POINTS};

use super::super::pool::Pool;
use super::super::schema::{quote_ident, Names};
use super::pg;

/// The points.
pub(crate) const POINTS: &str = "cairn_run_metrics";
/// The series: point counts and latest points.
pub(crate) const SERIES: &str = "cairn_run_metric_series";
/// The sequence of batch numbers.
pub(crate) const BATCHES: &str = "cairn_run_metric_batches";

/// The names of the tables, which collections may not take.
pub(crate) const TABLES: [&str; 2] = [POINTS, SERIES];

/// Bits of a point's `seq` below its batch's number: its index in the batch.
pub(crate) const SEQ_SHIFT: u32 = 17;
const _: () = assert!(MAX_LOG_POINTS <= 1 << SEQ_SHIFT, "a batch's indexes fit below its number");

/// The statements creating the tables (each idempotent).
fn setup_sql(names: &Names) -> String {
    let (points, series, batches) = (names.table(POINTS), names.table(SERIES), names.table(BATCHES));
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE SEQUENCE IF NOT EXISTS {batches} AS bigint;
         CREATE TABLE IF NOT EXISTS {points} (
             step bigint NOT NULL,
             seq bigint NOT NULL,
             timestamp_ms bigint NOT NULL,
             value double precision NOT NULL,
             value_bits bigint,
             run text COLLATE \"C\" NOT NULL,
             key text COLLATE \"C\" NOT NULL,
             PRIMARY KEY (run, key, step, seq)
         );
         CREATE TABLE IF NOT EXISTS {series} (
             points bigint NOT NULL,
             min_step bigint NOT NULL,
             latest_step bigint NOT NULL,
             latest_seq bigint NOT NULL,
             latest_timestamp_ms bigint NOT NULL,
             latest_value double precision NOT NULL,
             min_timestamp_ms bigint NOT NULL,
             max_timestamp_ms bigint NOT NULL,
             latest_value_bits bigint,
             run text COLLATE \"C\" NOT NULL,
             key text COLLATE \"C\" NOT NULL,
             PRIMARY KEY (run, key)
         );",
        schema = quote_ident(&names.schema),
    )
}

/// Creates what is missing, under the schema's set-up lock.
pub(crate) async fn setup(pool: &Pool, names: &Names) -> Result<(), MetricsError> {
    let mut client = pool.get().await.map_err(|e| MetricsError::Backend(e.detail))?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&names.setup_lock()]).await.map_err(pg)?;
    tx.batch_execute(&setup_sql(names)).await.map_err(pg)?;
    tx.commit().await.map_err(pg)
}

/// The columns of a series row that [`LatestValue`](cairn_store::metrics::LatestValue) reads, in order.
pub(crate) const LATEST: &str = "latest_step, latest_timestamp_ms, latest_value, latest_value_bits, points";

/// The statements of the metrics' calls, with the schema's table names in them (each prepared once per
/// connection).
pub(crate) struct Sql {
    /// Locks `$1` (advisory lock keys) in order, then takes a batch number.
    pub(crate) lock_and_number: String,
    /// `COPY ... FROM STDIN (FORMAT binary)` of the points' columns, in table order.
    pub(crate) copy_points: String,
    /// Adds a batch to its series rows: `$1` run, then per series arrays of key, points, min step, latest
    /// step, seq, timestamp, value and NaN bits, min and max timestamp.
    pub(crate) upsert_series: String,
    /// A page of history: `$1` run, `$2` key, after `($3, $4)` (step, seq), steps up to `$5`, timestamps in
    /// `[$6, $7]`, `$8` rows at most. Planned for its parameters each time (`read.rs`).
    pub(crate) history: String,
    /// Every series row of run `$1`, by key.
    pub(crate) latest: String,
    /// The series rows of key `$1` in runs `$2`.
    pub(crate) latest_of: String,
    /// The lowest and latest step of key `$1` in runs `$2`.
    pub(crate) bounds_of: String,
    /// The buckets of a downsampled series ([`buckets_sql`](super::downsample::buckets_sql)), in `bigint`.
    pub(crate) buckets: String,
    /// The same in `numeric`, for ranges wider than `bigint` holds.
    pub(crate) buckets_numeric: String,
    /// Removes the series rows of run `$1`, returning their keys.
    pub(crate) delete_series_of_run: String,
    /// Removes the points of run `$1` with keys `$2`.
    pub(crate) delete_points_of_keys: String,
    /// The series with a timestamp bound below `$1`: run, key.
    pub(crate) expirable: String,
    /// Locks the row of series `($1, $2)`: points, min and max timestamp.
    pub(crate) lock_series: String,
    /// Removes the points of series `($1, $2)` older than `$3`.
    pub(crate) delete_old_points: String,
    /// Removes every point of series `($1, $2)`.
    pub(crate) delete_series_points: String,
    /// Removes the row of series `($1, $2)`.
    pub(crate) delete_series: String,
    /// After `$3` points older than `$4` went: the series row `($1, $2)` from the points left (no row
    /// changed if none is left). Planned for its parameters each time, so that its two `ORDER BY ... LIMIT 1`
    /// are one seek of the key each.
    pub(crate) refresh_series: String,
}

impl Sql {
    pub(crate) fn new(names: &Names) -> Sql {
        let (points, series, batches) = (names.table(POINTS), names.table(SERIES), names.table(BATCHES));
        let batches_literal = batches.replace('\'', "''");
        let newer = "(EXCLUDED.latest_step, EXCLUDED.latest_seq) > (s.latest_step, s.latest_seq)";
        let pick = |col: &str| format!("{col} = CASE WHEN {newer} THEN EXCLUDED.{col} ELSE s.{col} END");
        Sql {
            lock_and_number: format!(
                "WITH l AS MATERIALIZED (
                     SELECT count(pg_advisory_xact_lock(k)) AS n
                     FROM (SELECT k FROM unnest($1::int8[]) AS k ORDER BY k) s
                 )
                 SELECT nextval('{batches_literal}') FROM l"
            ),
            copy_points: format!(
                "COPY {points} (step, seq, timestamp_ms, value, value_bits, run, key) FROM STDIN (FORMAT binary)"
            ),
            upsert_series: format!(
                "INSERT INTO {series} AS s (run, key, points, min_step, latest_step, latest_seq, latest_timestamp_ms,
                     latest_value, latest_value_bits, min_timestamp_ms, max_timestamp_ms)
                 SELECT $1::text, * FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
                     $8::float8[], $9::int8[], $10::int8[], $11::int8[])
                 ON CONFLICT (run, key) DO UPDATE SET
                     points = s.points + EXCLUDED.points,
                     min_step = least(s.min_step, EXCLUDED.min_step),
                     {}, {}, {}, {}, {},
                     min_timestamp_ms = least(s.min_timestamp_ms, EXCLUDED.min_timestamp_ms),
                     max_timestamp_ms = greatest(s.max_timestamp_ms, EXCLUDED.max_timestamp_ms)",
                pick("latest_step"),
                pick("latest_seq"),
                pick("latest_timestamp_ms"),
                pick("latest_value"),
                pick("latest_value_bits"),
            ),
            history: format!(
                "SELECT step, seq, timestamp_ms, value, value_bits FROM {points}
                 WHERE run = $1 AND key = $2 AND (step, seq) > ($3, $4) AND step <= $5
                     AND timestamp_ms >= $6 AND timestamp_ms <= $7
                 ORDER BY step, seq LIMIT $8"
            ),
            latest: format!("SELECT key, {LATEST} FROM {series} WHERE run = $1 ORDER BY key"),
            latest_of: format!("SELECT run, {LATEST} FROM {series} WHERE key = $1 AND run = ANY($2::text[])"),
            bounds_of: format!(
                "SELECT run, min_step, latest_step FROM {series} WHERE key = $1 AND run = ANY($2::text[])"
            ),
            buckets: super::downsample::buckets_sql(&points, false),
            buckets_numeric: super::downsample::buckets_sql(&points, true),
            delete_series_of_run: format!("DELETE FROM {series} WHERE run = $1 RETURNING key"),
            delete_points_of_keys: format!("DELETE FROM {points} WHERE run = $1 AND key = ANY($2::text[])"),
            expirable: format!("SELECT run, key FROM {series} WHERE min_timestamp_ms < $1"),
            lock_series: format!(
                "SELECT points, min_timestamp_ms, max_timestamp_ms FROM {series} WHERE run = $1 AND key = $2 FOR UPDATE"
            ),
            delete_old_points: format!("DELETE FROM {points} WHERE run = $1 AND key = $2 AND timestamp_ms < $3"),
            delete_series_points: format!("DELETE FROM {points} WHERE run = $1 AND key = $2"),
            delete_series: format!("DELETE FROM {series} WHERE run = $1 AND key = $2"),
            refresh_series: format!(
                "UPDATE {series} AS s SET
                     points = s.points - $3,
                     min_timestamp_ms = greatest(s.min_timestamp_ms, $4),
                     min_step = f.step,
                     latest_step = l.step,
                     latest_seq = l.seq,
                     latest_timestamp_ms = l.timestamp_ms,
                     latest_value = l.value,
                     latest_value_bits = l.value_bits
                 FROM (SELECT step FROM {points} WHERE run = $1 AND key = $2 ORDER BY step, seq LIMIT 1) AS f,
                     (SELECT step, seq, timestamp_ms, value, value_bits FROM {points} WHERE run = $1 AND key = $2
                      ORDER BY step DESC, seq DESC LIMIT 1) AS l
                 WHERE s.run = $1 AND s.key = $2"
            ),
        }
    }
}
