//! `/v1/stats` and `/v1/admin/check` on this backend: counts, sizes and the counter; the checks of the
//! catalog tables, the declared indexes, and that no record or change is stamped above the counter.

use serde_json::{json, Map, Value};

use super::catalog::catalog;
use super::schema::{index_name, CATALOG, CHANGES, META};
use super::{db_error, Inner};
use crate::problem::ApiError;

impl Inner {
    pub(crate) async fn stats(&self) -> Result<Value, ApiError> {
        let specs = {
            let client = self.pool.get().await?;
            catalog(&*client, &self.names).await?
        };
        let client = self.pool.get().await?;
        let mut collections = Map::new();
        for spec in &specs {
            let row = client
                .query_one(&format!("SELECT count(*) FROM {}", self.names.table(&spec.name)), &[])
                .await
                .map_err(db_error)?;
            collections.insert(spec.name.clone(), json!(row.try_get::<_, i64>(0).map_err(db_error)?));
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_database_size(current_database()),
                            coalesce((SELECT value FROM {} WHERE name = 'seq'), 0)",
                    self.names.table(META)
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        let size: i64 = row.try_get(0).map_err(db_error)?;
        let counter: i64 = row.try_get(1).map_err(db_error)?;
        drop(client);
        let feed = self.feed_stats().await?;
        Ok(json!({
            "backend": "postgres",
            "schema": self.names.schema,
            "collections": collections,
            "last_sequence": counter,
            "database_bytes": size,
            "changes": {
                "bytes": feed.bytes,
                "trimmed_through": feed.trimmed_through,
                "last_change": feed.last_change,
            },
        }))
    }

    pub(crate) async fn check(&self) -> Result<Value, ApiError> {
        let client = self.pool.get().await?;
        let mut checks = Vec::new();
        let mut healthy = true;
        let mut note = |name: String, ok: bool, detail: String| {
            healthy &= ok;
            checks.push(json!({"check": name, "ok": ok, "detail": detail}));
        };
        let exists = |name: String| {
            let client = &client;
            async move {
                let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.map_err(db_error)?;
                row.try_get::<_, bool>(0).map_err(db_error)
            }
        };
        for t in [CATALOG, META, CHANGES] {
            let present = exists(self.names.table(t)).await?;
            note(format!("table {t}"), present, if present { "present" } else { "missing" }.to_owned());
        }
        let specs = catalog(&*client, &self.names).await.unwrap_or_default();
        let counter: i64 = client
            .query_opt(&format!("SELECT value FROM {} WHERE name = 'seq'", self.names.table(META)), &[])
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(-1);
        note("commit counter".into(), counter >= 0, format!("{counter}"));
        for spec in &specs {
            let table = self.names.table(&spec.name);
            if !exists(table.clone()).await? {
                note(format!("collection {}", spec.name), false, "its table is missing".into());
                continue;
            }
            let row = client
                .query_one(&format!("SELECT coalesce(max(seq), 0), count(*) FROM {table}"), &[])
                .await
                .map_err(db_error)?;
            let (top, count): (i64, i64) = (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
            note(
                format!("collection {}", spec.name),
                top <= counter,
                format!("{count} records, highest seq {top}, counter {counter}"),
            );
            let indexes = client
                .query(
                    "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE i.indrelid = to_regclass($1)::oid AND i.indisvalid",
                    &[&table],
                )
                .await
                .map_err(db_error)?;
            let present: Vec<String> = indexes.iter().filter_map(|r| r.try_get(0).ok()).collect();
            for index in &spec.indexes {
                let name = index_name(&spec.name, index);
                let ok = present.contains(&name);
                note(
                    format!("index {}.{}", spec.name, index.name),
                    ok,
                    if ok { name } else { format!("{name} missing or invalid") },
                );
            }
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT coalesce(max(seq), 0), coalesce((SELECT value FROM {} WHERE name = 'trimmed_through'), 0) FROM {}",
                    self.names.table(META),
                    self.names.table(CHANGES)
                ),
                &[],
            )
            .await
            .map_err(db_error)?;
        let (feed_top, trimmed): (i64, i64) = (row.try_get(0).map_err(db_error)?, row.try_get(1).map_err(db_error)?);
        note(
            "change feed".into(),
            feed_top <= counter && trimmed <= counter,
            format!("highest seq {feed_top}, trimmed through {trimmed}, counter {counter}"),
        );
        Ok(
            json!({"healthy": healthy, "backend": "postgres", "schema": self.names.schema, "last_sequence": counter, "checks": checks}),
        )
    }
}
