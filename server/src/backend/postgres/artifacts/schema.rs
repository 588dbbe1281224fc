//! The artifact store's tables, in the backend's schema, created if missing when a server opens the store
//! (under the schema's set-up lock, so that servers starting together do not race):
//!
//! | table | columns |
//! |---|---|
//! | `cairn_artifact_buckets` | `name` (key), `project`, `created_ms`, `retention_days`, `objects`, `bytes` (statistics, changed by the transaction of every write) |
//! | `cairn_artifact_objects` | `(bucket, key)` (key, `COLLATE "C"`: byte order), `size`, `etag`, `sha256`, `crc32c`, `content_type`, `metadata` (jsonb), `modified_ms`, `version`, `segment_paths` and `segment_sizes` (the stored objects holding its bytes, in order) |
//! | `cairn_artifact_uploads` | `id` (key), `bucket`, `key`, `content_type`, `metadata`, `initiated_ms` |
//! | `cairn_artifact_parts` | `(upload_id, part_number)` (key; deleted with their upload), `etag`, `size`, `modified_ms`, `path` |
//! | `cairn_artifact_garbage` | `path` (key), `seen_ms`: stored objects a collection found unreferenced, deleted by a later one |

use super::super::pool::Pool;
use super::super::schema::Names;
use super::{pg, ArtifactError};

/// The names of the tables, which collections may not take.
pub(crate) const TABLES: [&str; 5] = [
    "cairn_artifact_buckets",
    "cairn_artifact_objects",
    "cairn_artifact_uploads",
    "cairn_artifact_parts",
    "cairn_artifact_garbage",
];

/// The statements creating the tables (each idempotent).
fn setup_sql(names: &Names) -> String {
    let [buckets, objects, uploads, parts, garbage] = TABLES.map(|t| names.table(t));
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {buckets} (
             name text COLLATE \"C\" PRIMARY KEY,
             project text,
             created_ms bigint NOT NULL,
             retention_days integer,
             objects bigint NOT NULL DEFAULT 0,
             bytes bigint NOT NULL DEFAULT 0
         );
         CREATE TABLE IF NOT EXISTS {objects} (
             bucket text COLLATE \"C\" NOT NULL REFERENCES {buckets} (name),
             key text COLLATE \"C\" NOT NULL,
             size bigint NOT NULL,
             etag text NOT NULL,
             sha256 bytea NOT NULL,
             crc32c bigint,
             content_type text,
             metadata jsonb NOT NULL,
             modified_ms bigint NOT NULL,
             version bigint NOT NULL,
             segment_paths text[] NOT NULL,
             segment_sizes bigint[] NOT NULL,
             PRIMARY KEY (bucket, key)
         );
         CREATE TABLE IF NOT EXISTS {uploads} (
             id text PRIMARY KEY,
             bucket text COLLATE \"C\" NOT NULL REFERENCES {buckets} (name),
             key text COLLATE \"C\" NOT NULL,
             content_type text,
             metadata jsonb NOT NULL,
             initiated_ms bigint NOT NULL
         );
         CREATE INDEX IF NOT EXISTS cairn_artifact_uploads_bucket ON {uploads} (bucket, id);
         CREATE TABLE IF NOT EXISTS {parts} (
             upload_id text NOT NULL REFERENCES {uploads} (id) ON DELETE CASCADE,
             part_number integer NOT NULL,
             etag text NOT NULL,
             size bigint NOT NULL,
             modified_ms bigint NOT NULL,
             path text NOT NULL,
             PRIMARY KEY (upload_id, part_number)
         );
         CREATE TABLE IF NOT EXISTS {garbage} (path text PRIMARY KEY, seen_ms bigint NOT NULL);",
        schema = super::super::schema::quote_ident(&names.schema),
    )
}

/// Creates what is missing, under the schema's set-up lock.
pub(crate) async fn setup(pool: &Pool, names: &Names) -> Result<(), ArtifactError> {
    let mut client = pool.get().await.map_err(|e| ArtifactError::Backend(e.detail))?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&names.setup_lock()]).await.map_err(pg)?;
    tx.batch_execute(&setup_sql(names)).await.map_err(pg)?;
    tx.commit().await.map_err(pg)
}
