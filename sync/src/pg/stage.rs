//! Applying rows to collection tables: binary `COPY` into a session staging table, then one upsert and one
//! delete per collection that apply a row only when its commit sequence is newer than the stored one.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::pin_mut;
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::Transaction;

use super::schema::table_ref;
use crate::error::SyncError;
use crate::progress::json_len;

/// One record's state to apply: a document, or a deletion when `doc` is `None`.
#[derive(Debug, Clone)]
pub(crate) struct StageRow {
    pub collection: String,
    pub id: String,
    pub version: u64,
    pub seq: u64,
    pub updated_at_ms: i64,
    /// When the record was created, if known (a bulk copy's record, or an insert of the feed); an update
    /// from the feed keeps the table's.
    pub created_at_ms: Option<i64>,
    pub doc: Option<Value>,
}

impl StageRow {
    /// Bytes of the row's document as JSON (0 for a deletion): what throughput figures count.
    pub fn doc_len(&self) -> u64 {
        self.doc.as_ref().map_or(0, json_len)
    }
}

const STAGE_DDL: &str = "CREATE TEMP TABLE IF NOT EXISTS cairn_stage (
    collection text NOT NULL,
    id text NOT NULL,
    version bigint NOT NULL,
    seq bigint NOT NULL,
    doc jsonb,
    updated_at timestamptz NOT NULL,
    deleted boolean NOT NULL,
    created_at timestamptz
) ON COMMIT DELETE ROWS";

const STAGE_TYPES: [Type; 8] =
    [Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::JSONB, Type::TIMESTAMPTZ, Type::BOOL, Type::TIMESTAMPTZ];

pub(crate) fn to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Stages `rows` (at most one per collection and id) and applies them to their collections' tables
/// (which must exist), inside `txn`. Returns the number of table rows inserted, updated or deleted.
pub(crate) async fn apply(txn: &Transaction<'_>, schema: &str, rows: &[StageRow]) -> Result<u64, SyncError> {
    if rows.is_empty() {
        return Ok(0);
    }
    txn.batch_execute(STAGE_DDL).await?;
    let sink = txn.copy_in("COPY cairn_stage FROM STDIN (FORMAT binary)").await?;
    let writer = BinaryCopyInWriter::new(sink, &STAGE_TYPES);
    pin_mut!(writer);
    for r in rows {
        let version = i64::try_from(r.version).map_err(|_| SyncError::invalid("version beyond i64"))?;
        let seq = i64::try_from(r.seq).map_err(|_| SyncError::invalid("sequence beyond i64"))?;
        let doc = r.doc.as_ref().map(Json);
        let at = to_time(r.updated_at_ms);
        let deleted = r.doc.is_none();
        let created = r.created_at_ms.map(to_time);
        let values: [&(dyn ToSql + Sync); 8] = [&r.collection, &r.id, &version, &seq, &doc, &at, &deleted, &created];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    let collections: BTreeSet<&str> = rows.iter().map(|r| r.collection.as_str()).collect();
    let mut changed = 0;
    for collection in collections {
        let table = table_ref(schema, collection);
        changed += txn
            .execute(
                &format!(
                    "INSERT INTO {table} AS t (id, version, seq, doc, updated_at, created_at)
                     SELECT id, version, seq, doc, updated_at, created_at FROM cairn_stage
                     WHERE collection = $1 AND NOT deleted
                     ON CONFLICT (id) DO UPDATE
                     SET version = EXCLUDED.version, seq = EXCLUDED.seq, doc = EXCLUDED.doc,
                         updated_at = EXCLUDED.updated_at,
                         created_at = coalesce(EXCLUDED.created_at, t.created_at, t.updated_at)
                     WHERE t.seq < EXCLUDED.seq"
                ),
                &[&collection],
            )
            .await?;
        changed += txn
            .execute(
                &format!(
                    "DELETE FROM {table} AS t USING cairn_stage s
                     WHERE s.collection = $1 AND s.deleted AND t.id = s.id AND t.seq < s.seq"
                ),
                &[&collection],
            )
            .await?;
    }
    Ok(changed)
}
