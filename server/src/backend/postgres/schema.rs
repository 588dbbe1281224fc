//! The PostgreSQL layout of the backend: names, the catalog and metadata tables, the sort-key function and
//! the indexes of declared collections.
//!
//! | object | what |
//! |---|---|
//! | `<collection>` | one table per collection: `id text PRIMARY KEY, version bigint, seq bigint, doc jsonb, updated_at timestamptz, created_at timestamptz` (the layout of `cairn export postgres`, which may add generated columns) |
//! | `cairn_sync_collections` | the catalog: `name text PRIMARY KEY, spec jsonb` (a `CollectionSpec`) |
//! | `cairn_meta` | `name text PRIMARY KEY, value bigint`: `seq` (the commit counter), `trimmed_through` |
//! | `cairn_changes` | the change feed: one row per event, `(seq, idx)` its key |
//! | `cairn_key(jsonb) → bytea` | the sort key of a field value: the byte order of the embedded store's index keys |
//! | `cairn_ix_<hash>_<index>` | the index of a declared index, over `cairn_key(doc #> path)` per field, then `id COLLATE "C"` |

use cairn_store::{CollectionError, CollectionSpec, IndexSpec};

use crate::problem::ApiError;

/// The catalog, shared with `cairn export postgres`.
pub(crate) const CATALOG: &str = "cairn_sync_collections";
/// The counter and the trim marker.
pub(crate) const META: &str = "cairn_meta";
/// The change feed.
pub(crate) const CHANGES: &str = "cairn_changes";
/// The sort-key function.
pub(crate) const KEY_FN: &str = "cairn_key";
/// The prefix of the indexes the backend builds (and may drop).
pub(crate) const INDEX_PREFIX: &str = "cairn_ix_";
/// The longest identifier PostgreSQL keeps.
const MAX_IDENT: usize = 63;

/// `"name"`, with quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with quotes doubled.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// 64-bit FNV-1a: stable names and lock keys.
pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xffu8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Qualified names of one schema's objects.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The schema, unquoted.
    pub schema: String,
    q: String,
}

impl Names {
    pub(crate) fn new(schema: &str) -> Self {
        Self { schema: schema.to_owned(), q: quote_ident(schema) }
    }

    /// `"schema"."name"`.
    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", self.q, quote_ident(name))
    }

    /// The notification channel of commits.
    pub(crate) fn feed_channel(&self) -> String {
        format!("cairn_feed:{}", self.schema)
    }

    /// The notification channel of declarations.
    pub(crate) fn catalog_channel(&self) -> String {
        format!("cairn_catalog:{}", self.schema)
    }

    /// The notification channel of the job queue's new jobs.
    pub(crate) fn queue_channel(&self) -> String {
        format!("cairn_queue:{}", self.schema)
    }

    /// The session advisory lock serializing declarations in this schema.
    pub(crate) fn declare_lock(&self) -> i64 {
        fnv(&[self.schema.as_bytes(), b"declare"]) as i64
    }

    /// The transaction advisory lock serializing the set-up of this schema.
    pub(crate) fn setup_lock(&self) -> i64 {
        fnv(&[self.schema.as_bytes(), b"setup"]) as i64
    }

    /// The sort key of the field at dot path `path` of `doc`: `cairn_key(doc #> ARRAY[...]::text[])`. Queries
    /// and index definitions use this same text, so that PostgreSQL matches them.
    pub(crate) fn key_expr(&self, path: &str) -> String {
        let parts: Vec<String> = path.split('.').map(quote_literal).collect();
        format!("{}.{KEY_FN}(doc #> ARRAY[{}]::text[])", self.q, parts.join(","))
    }

    /// The sort key of a parameter (a JSON value).
    pub(crate) fn key_param(&self, n: usize) -> String {
        format!("{}.{KEY_FN}(${n}::jsonb)", self.q)
    }

    /// The statements creating the schema, the catalog, the metadata tables and the key function (each
    /// idempotent).
    pub(crate) fn setup_sql(&self) -> String {
        let s = &self.q;
        format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {catalog} (name text PRIMARY KEY, spec jsonb NOT NULL);
             CREATE TABLE IF NOT EXISTS {meta} (name text PRIMARY KEY, value bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {changes} (
                 seq bigint NOT NULL,
                 idx integer NOT NULL,
                 collection text NOT NULL,
                 id text NOT NULL,
                 op text NOT NULL,
                 version bigint NOT NULL,
                 at_ms bigint NOT NULL,
                 doc jsonb,
                 prev_project jsonb,
                 bytes bigint NOT NULL,
                 PRIMARY KEY (seq, idx)
             );
             CREATE OR REPLACE FUNCTION {s}.{KEY_FN}(v jsonb) RETURNS bytea
                 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
                 SELECT CASE jsonb_typeof(v)
                     WHEN 'boolean' THEN CASE WHEN v = 'true'::jsonb THEN '\\x21'::bytea ELSE '\\x20'::bytea END
                     WHEN 'number' THEN '\\x30'::bytea || decode(lpad(to_hex(CASE WHEN v::float8 < 0
                         THEN ~(('x' || encode(float8send(v::float8), 'hex'))::bit(64)::bigint)
                         ELSE ('x' || encode(float8send(v::float8), 'hex'))::bit(64)::bigint | (-9223372036854775807 - 1)
                         END), 16, '0'), 'hex')
                     WHEN 'string' THEN '\\x40'::bytea || decode(replace(v #>> '{{}}', '\\', '\\\\'), 'escape') || '\\x0000'::bytea
                     WHEN 'object' THEN '\\x50'::bytea || decode(replace(v::text, '\\', '\\\\'), 'escape') || '\\x0000'::bytea
                     WHEN 'array' THEN '\\x50'::bytea || decode(replace(v::text, '\\', '\\\\'), 'escape') || '\\x0000'::bytea
                     ELSE '\\x10'::bytea
                 END
             $f$;",
            catalog = self.table(CATALOG),
            meta = self.table(META),
            changes = self.table(CHANGES),
        )
    }

    /// Makes a collection's table exist with every column the backend uses: a table written by `cairn
    /// export postgres` before it wrote `created_at` gets the column (only then: `ALTER TABLE` would lock
    /// the table out of other servers' reads for a moment).
    pub(crate) async fn ensure_table(
        &self,
        client: &impl tokio_postgres::GenericClient,
        collection: &str,
    ) -> Result<(), tokio_postgres::Error> {
        let t = self.table(collection);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                     id text PRIMARY KEY,
                     version bigint NOT NULL,
                     seq bigint NOT NULL,
                     doc jsonb NOT NULL,
                     updated_at timestamptz NOT NULL,
                     created_at timestamptz
                 )"
            ))
            .await?;
        let has = client
            .query_opt(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'created_at' AND NOT attisdropped",
                &[&t],
            )
            .await?;
        if has.is_none() {
            client.batch_execute(&format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS created_at timestamptz")).await?;
        }
        Ok(())
    }

    /// `CREATE INDEX CONCURRENTLY` of a declared index.
    pub(crate) fn create_index_sql(&self, collection: &str, index: &IndexSpec) -> String {
        let cols: Vec<String> = index
            .fields
            .iter()
            .map(|declared| {
                let (path, descending) = declared_field(declared);
                format!("{}{}", self.key_expr(path), if descending { " DESC" } else { "" })
            })
            .collect();
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({}, id COLLATE \"C\")",
            quote_ident(&index_name(collection, index)),
            self.table(collection),
            cols.join(", ")
        )
    }

    /// `DROP INDEX CONCURRENTLY` of one of the backend's indexes.
    pub(crate) fn drop_index_sql(&self, name: &str) -> String {
        format!("DROP INDEX CONCURRENTLY IF EXISTS {}.{}", self.q, quote_ident(name))
    }
}

/// The deterministic name of a declared index: a hash of the collection, the index name and its fields
/// (so a changed declaration is a new index), then as much of the index name as fits.
pub(crate) fn index_name(collection: &str, index: &IndexSpec) -> String {
    let fields = index.fields.join("\u{1}");
    let h = fnv(&[collection.as_bytes(), index.name.as_bytes(), fields.as_bytes()]);
    let mut name = format!("{INDEX_PREFIX}{h:016x}_{}", index.name.to_ascii_lowercase());
    name.truncate(MAX_IDENT);
    name
}

/// A declared index field: its path and whether it is descending (`-path`).
pub(crate) fn declared_field(declared: &str) -> (&str, bool) {
    match declared.strip_prefix('-') {
        Some(path) => (path, true),
        None => (declared, false),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn invalid(detail: String) -> ApiError {
    ApiError::from(CollectionError::Invalid(detail))
}

/// The checks the embedded store makes of a declaration: names, non-empty field paths, no index twice.
pub(crate) fn validate_spec(spec: &CollectionSpec) -> Result<(), ApiError> {
    let name_rule = "must be 1-64 ASCII letters, digits, '_' or '-'";
    if !valid_name(&spec.name) {
        return Err(invalid(format!("collection name {:?} {name_rule}", spec.name)));
    }
    if [CATALOG, META, CHANGES, "cairn_sync_state"].contains(&spec.name.as_str())
        || super::artifacts::TABLES.contains(&spec.name.as_str())
        || super::queue::TABLES.contains(&spec.name.as_str())
        || super::run_metrics::TABLES.contains(&spec.name.as_str())
    {
        return Err(invalid(format!("collection name {:?} is the name of a table of the backend", spec.name)));
    }
    for (i, index) in spec.indexes.iter().enumerate() {
        if !valid_name(&index.name) {
            return Err(invalid(format!("index name {:?} {name_rule}", index.name)));
        }
        if index.fields.is_empty() || index.fields.iter().any(|f| declared_field(f).0.is_empty()) {
            return Err(invalid(format!("index {} needs at least one non-empty field path", index.name)));
        }
        if spec.indexes.iter().skip(i + 1).any(|o| o.name == index.name) {
            return Err(invalid(format!("index {} declared twice", index.name)));
        }
    }
    Ok(())
}

/// Ids: 1 to 512 bytes of UTF-8 without control characters (as the embedded store).
pub(crate) fn validate_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 512 || id.chars().any(char::is_control) {
        return Err(invalid(format!("id {id:?} must be 1-512 bytes without control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_stable_short_and_change_with_the_fields() {
        let a = index_name("jobs", &IndexSpec::new("by_status", &["status", "-priority"]));
        assert!(a.starts_with("cairn_ix_") && a.ends_with("_by_status"), "{a}");
        assert_eq!(a, index_name("jobs", &IndexSpec::new("by_status", &["status", "-priority"])));
        assert_ne!(a, index_name("jobs", &IndexSpec::new("by_status", &["status", "priority"])));
        assert!(index_name("j", &IndexSpec::new(&"x".repeat(64), &["a"])).len() <= MAX_IDENT);
        let n = Names::new("s\"x");
        assert_eq!(n.key_expr("a.b'c"), "\"s\"\"x\".cairn_key(doc #> ARRAY['a','b''c']::text[])");
    }
}
