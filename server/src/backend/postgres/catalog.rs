//! The catalog: declarations in `cairn_sync_collections`, cached per server (dropped when any server
//! declares), their tables and indexes (built concurrently under a schema-wide declaration lock), and the
//! collections' listing with record counts.

use std::future::Future;
use std::time::Duration;

use cairn_store::{CollectionError, CollectionSpec};
use tokio_postgres::Client;

use super::schema::{index_name, validate_spec, Names, CATALOG, INDEX_PREFIX};
use super::{db_error, internal, Inner};
use crate::backend::{CollectionInfo, Scope};
use crate::problem::ApiError;

impl Inner {
    /// The declaration of `collection`: 404 if there is none.
    pub(crate) async fn spec(&self, collection: &str) -> Result<CollectionSpec, ApiError> {
        if let Some(spec) = self.specs.lock().map_err(internal)?.get(collection) {
            return Ok(spec.clone());
        }
        let mut client = self.pool.get().await?;
        let row = client
            .query_cached(&format!("SELECT spec FROM {} WHERE name = $1", self.names.table(CATALOG)), &[&collection])
            .await
            .map_err(db_error)?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::from(CollectionError::UnknownCollection(collection.to_owned())))?;
        let spec: CollectionSpec = serde_json::from_value(row.try_get(0).map_err(db_error)?).map_err(internal)?;
        self.specs.lock().map_err(internal)?.insert(collection.to_owned(), spec.clone());
        Ok(spec)
    }

    /// Runs `f` holding the schema's declaration lock (a session advisory lock, taken by polling so that no
    /// waiting transaction holds up the concurrent index builds of the holder).
    pub(crate) async fn with_declare_lock<'a, R>(
        &'a self,
        client: &'a Client,
        f: impl FnOnce(&'a Client) -> std::pin::Pin<Box<dyn Future<Output = Result<R, ApiError>> + Send + 'a>>,
    ) -> Result<R, ApiError> {
        let key = self.names.declare_lock();
        loop {
            let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.map_err(db_error)?;
            if row.try_get::<_, bool>(0).map_err(db_error)? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = f(client).await;
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.map_err(db_error);
        let out = out?;
        unlocked?;
        Ok(out)
    }

    /// Builds the indexes of `spec` that are missing (concurrently, so writes go on), rebuilds those a
    /// failed build left invalid, and drops the backend's indexes `spec` no longer declares.
    pub(crate) async fn ensure_indexes(&self, client: &Client, spec: &CollectionSpec) -> Result<(), ApiError> {
        let table = self.names.table(&spec.name);
        let rows = client
            .query(
                "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid = to_regclass($1)::oid AND starts_with(c.relname::text, $2)",
                &[&table, &INDEX_PREFIX],
            )
            .await
            .map_err(db_error)?;
        let wanted: Vec<String> = spec.indexes.iter().map(|i| index_name(&spec.name, i)).collect();
        for row in &rows {
            let name: String = row.try_get(0).map_err(db_error)?;
            let valid: bool = row.try_get(1).map_err(db_error)?;
            if !valid || !wanted.contains(&name) {
                client.batch_execute(&self.names.drop_index_sql(&name)).await.map_err(db_error)?;
            }
        }
        for index in &spec.indexes {
            client.batch_execute(&self.names.create_index_sql(&spec.name, index)).await.map_err(db_error)?;
        }
        Ok(())
    }

    pub(crate) async fn declare(&self, spec: CollectionSpec) -> Result<bool, ApiError> {
        validate_spec(&spec)?;
        let client = self.pool.get().await?;
        let created = self
            .with_declare_lock(&client, |c| {
                Box::pin(async {
                    let catalog = self.names.table(CATALOG);
                    let existed = c
                        .query_opt(&format!("SELECT 1 FROM {catalog} WHERE name = $1"), &[&spec.name])
                        .await
                        .map_err(db_error)?
                        .is_some();
                    self.names.ensure_table(c, &spec.name).await.map_err(db_error)?;
                    self.ensure_indexes(c, &spec).await?;
                    let json = serde_json::to_value(&spec).map_err(internal)?;
                    c.execute(
                        &format!(
                            "WITH w AS (INSERT INTO {catalog} (name, spec) VALUES ($1, $2)
                                        ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec)
                             SELECT pg_notify($3, $1)"
                        ),
                        &[&spec.name, &json, &self.names.catalog_channel()],
                    )
                    .await
                    .map_err(db_error)?;
                    Ok(!existed)
                })
            })
            .await?;
        self.specs.lock().map_err(internal)?.insert(spec.name.clone(), spec);
        Ok(created)
    }

    pub(crate) async fn collections(&self, scope: &Scope) -> Result<Vec<CollectionInfo>, ApiError> {
        let specs = {
            let client = self.pool.get().await?;
            catalog(&*client, &self.names).await?
        };
        let client = self.pool.get().await?;
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let table = self.names.table(&spec.name);
            let row = match &scope.project {
                None => client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await,
                Some(p) => {
                    client
                        .query_one(
                            &format!("SELECT count(*) FROM {table} WHERE doc -> 'project' = to_jsonb($1::text)"),
                            &[p],
                        )
                        .await
                }
            }
            .map_err(db_error)?;
            let count: i64 = row.try_get(0).map_err(db_error)?;
            out.push(CollectionInfo { name: spec.name, indexes: spec.indexes, count: count.max(0) as u64 });
        }
        Ok(out)
    }
}

/// Every declaration in the catalog, by name.
pub(crate) async fn catalog(
    client: &impl tokio_postgres::GenericClient,
    names: &Names,
) -> Result<Vec<CollectionSpec>, ApiError> {
    let rows = client
        .query(&format!("SELECT spec FROM {} ORDER BY name COLLATE \"C\"", names.table(CATALOG)), &[])
        .await
        .map_err(db_error)?;
    rows.iter().map(|r| serde_json::from_value(r.try_get(0).map_err(db_error)?).map_err(internal)).collect()
}
