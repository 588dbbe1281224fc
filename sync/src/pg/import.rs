//! `import postgres`: tables written by the export (or a user's table with a column mapping) read back into
//! collections with their ids and versions, and the metrics back into the metrics store, through binary
//! `COPY ... TO STDOUT`.

use std::time::{Duration, Instant};

use cairn_store::{CollectionSpec, Store};
use futures_util::{pin_mut, TryStreamExt};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::Client;

use super::connect;
use super::metrics;
use super::schema::{quote_ident, table_ref, COLLECTIONS_TABLE};
use crate::error::SyncError;
use crate::progress::{json_len, Progress};

/// Records written per store transaction.
const WRITE_BATCH: usize = 1000;

/// Where a user's table keeps a record: which column holds the id, which the JSON document and (optionally)
/// which the version. Build with [`TableMapping::new`] and the setters.
#[derive(Debug, Clone)]
pub struct TableMapping {
    table: String,
    collection: String,
    id_column: String,
    doc_column: String,
    version_column: Option<String>,
}

impl TableMapping {
    /// Rows of `table` (`name` or `schema.name`) become records of `collection` (declared without indexes if
    /// it is not declared yet).
    pub fn new(table: impl Into<String>, collection: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            collection: collection.into(),
            id_column: "id".to_owned(),
            doc_column: "doc".to_owned(),
            version_column: None,
        }
    }

    /// The id column, cast to `text`. Default: `id`.
    pub fn id_column(mut self, column: impl Into<String>) -> Self {
        self.id_column = column.into();
        self
    }

    /// The document column (`jsonb`, `json` or JSON text), which must hold JSON objects. Default: `doc`.
    pub fn doc_column(mut self, column: impl Into<String>) -> Self {
        self.doc_column = column.into();
        self
    }

    /// The version column (an integer, at least 1). Default: none, every record gets version 1.
    pub fn version_column(mut self, column: Option<String>) -> Self {
        self.version_column = column;
        self
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgImportReport {
    /// Collections imported.
    pub collections: u64,
    /// Records written.
    pub records: u64,
    /// Bytes of their documents, as JSON.
    pub bytes: u64,
    /// Metric series written.
    pub metric_series: u64,
    /// Metric points written.
    pub metric_points: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// Imports every collection that `export_postgres` wrote to `schema` of the database at `url`: declares
/// each with its indexes and writes each row with its id, version and document (replacing records with the
/// same ids). Then the metrics, if the export carried them: every series' points in history order, bit for
/// bit (the values of `value_bits`), each run replacing the store's metrics of that run. Every table is
/// checked first, so rows a store would refuse fail the import before anything is written.
pub async fn import_postgres(
    store: &Store,
    url: &str,
    schema: &str,
    progress: &Progress,
) -> Result<PgImportReport, SyncError> {
    let started = Instant::now();
    let client = connect(url).await?;
    let rows = client
        .query(&format!("SELECT name, spec FROM {} ORDER BY name", table_ref(schema, COLLECTIONS_TABLE)), &[])
        .await?;
    let mut specs = Vec::new();
    for row in rows {
        let Json(spec): Json<CollectionSpec> = row.try_get(1)?;
        specs.push(spec);
    }
    let sources: Vec<(CollectionSpec, Source)> = specs
        .into_iter()
        .map(|spec| {
            let source = Source {
                table: table_ref(schema, &spec.name),
                id: "id".to_owned(),
                version: "version".to_owned(),
                doc: "doc".to_owned(),
            };
            (spec, source)
        })
        .collect();
    for (_, source) in &sources {
        source.preflight(&client).await?;
    }
    let with_metrics = metrics::preflight(&client, schema).await?;
    let mut report = PgImportReport::default();
    for (spec, source) in &sources {
        store.declare(spec.clone())?;
        copy_into(store, &client, &spec.name, source, progress, &mut report).await?;
        report.collections += 1;
    }
    if with_metrics {
        let imported = metrics::import(store, &client, schema, progress).await?;
        report.metric_series = imported.series;
        report.metric_points = imported.points;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Imports the rows of a user's table into one collection as `mapping` says. The table is checked first:
/// a missing or duplicate id, a document that is not a JSON object or a version below 1 fails the import
/// before anything is written.
pub async fn import_postgres_table(
    store: &Store,
    url: &str,
    mapping: &TableMapping,
    progress: &Progress,
) -> Result<PgImportReport, SyncError> {
    let started = Instant::now();
    let client = connect(url).await?;
    let table = match mapping.table.split_once('.') {
        Some((schema, name)) => table_ref(schema, name),
        None => quote_ident(&mapping.table),
    };
    let source = Source {
        table,
        id: quote_ident(&mapping.id_column),
        version: mapping.version_column.as_deref().map_or_else(|| "1".to_owned(), quote_ident),
        doc: quote_ident(&mapping.doc_column),
    };
    source.preflight(&client).await?;
    if store.collections().iter().all(|s| s.name != mapping.collection) {
        store.declare(CollectionSpec::new(&mapping.collection, Vec::new()))?;
    }
    let mut report = PgImportReport::default();
    copy_into(store, &client, &mapping.collection, &source, progress, &mut report).await?;
    report.collections = 1;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A table and the SQL expressions of its id, version and document.
struct Source {
    table: String,
    id: String,
    version: String,
    doc: String,
}

impl Source {
    /// Fails if any row would be refused by the store, naming the first such id.
    async fn preflight(&self, client: &Client) -> Result<(), SyncError> {
        let Source { table, id, version, doc } = self;
        let sql = format!(
            "SELECT ({id})::text,
                    CASE WHEN ({id}) IS NULL OR ({id})::text = '' THEN 'an empty or NULL id'
                         WHEN octet_length(({id})::text) > 512 THEN 'an id over 512 bytes'
                         WHEN ({id})::text ~ '[\\x01-\\x1f\\x7f-\\x9f]' THEN 'a control character in the id'
                         WHEN ({doc}) IS NULL OR jsonb_typeof(({doc})::jsonb) <> 'object'
                              THEN 'a document that is not a JSON object'
                         WHEN ({version}) IS NULL OR ({version})::bigint < 1 THEN 'a version below 1'
                         ELSE 'an id that appears twice' END
             FROM {table}
             WHERE ({id}) IS NULL OR ({id})::text = '' OR octet_length(({id})::text) > 512
                OR ({id})::text ~ '[\\x01-\\x1f\\x7f-\\x9f]'
                OR ({doc}) IS NULL OR jsonb_typeof(({doc})::jsonb) <> 'object'
                OR ({version}) IS NULL OR ({version})::bigint < 1
                OR ({id})::text IN (SELECT ({id})::text FROM {table} GROUP BY 1 HAVING count(*) > 1)
             LIMIT 1"
        );
        if let Some(row) = client.query_opt(&sql, &[]).await? {
            let bad: Option<String> = row.try_get(0)?;
            let why: String = row.try_get(1)?;
            return Err(SyncError::invalid(format!(
                "{table}: row with id {} has {why}; nothing was imported",
                bad.map_or("NULL".to_owned(), |b| format!("{b:?}"))
            )));
        }
        Ok(())
    }
}

/// Streams the rows of `source` into `collection`, [`WRITE_BATCH`] records per store transaction.
async fn copy_into(
    store: &Store,
    client: &Client,
    collection: &str,
    source: &Source,
    progress: &Progress,
    report: &mut PgImportReport,
) -> Result<(), SyncError> {
    let Source { table, id, version, doc } = source;
    let total: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.try_get(0)?;
    progress.phase(&format!("postgres → {collection}"), u64::try_from(total).ok());
    let sql = format!(
        "COPY (SELECT ({id})::text, ({version})::bigint, ({doc})::jsonb FROM {table}) TO STDOUT (FORMAT binary)"
    );
    let stream = client.copy_out(&sql).await?;
    let rows = BinaryCopyOutStream::new(stream, &[Type::TEXT, Type::INT8, Type::JSONB]);
    pin_mut!(rows);
    let mut batch: Vec<(String, u64, Value)> = Vec::with_capacity(WRITE_BATCH);
    let mut bytes = 0u64;
    while let Some(row) = rows.try_next().await? {
        let id: String = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let Json(doc): Json<Value> = row.try_get(2)?;
        bytes += json_len(&doc);
        let version = u64::try_from(version).map_err(|_| SyncError::corrupt(table.as_str(), "negative version"))?;
        batch.push((id, version, doc));
        if batch.len() >= WRITE_BATCH {
            write(store, collection, std::mem::take(&mut batch), progress, report, std::mem::take(&mut bytes))?;
        }
    }
    write(store, collection, batch, progress, report, bytes)?;
    progress.finish();
    Ok(())
}

fn write(
    store: &Store,
    collection: &str,
    batch: Vec<(String, u64, Value)>,
    progress: &Progress,
    report: &mut PgImportReport,
    bytes: u64,
) -> Result<(), SyncError> {
    let n = batch.len() as u64;
    if n == 0 {
        return Ok(());
    }
    store.transaction(|tx| {
        for (id, version, doc) in batch {
            tx.restore_doc(collection, &id, version, doc)?;
        }
        Ok(())
    })?;
    report.records += n;
    report.bytes += bytes;
    progress.add(n, bytes);
    Ok(())
}
