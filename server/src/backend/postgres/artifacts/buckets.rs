//! Buckets: create, delete (only when empty), look up, list, retention, statistics. A bucket's `objects`
//! and `bytes` are changed by the transaction of every write into it, which locks the bucket's row first:
//! writes into one bucket, and its deletion, are serialized, so the figures are always those of its rows.

use cairn_store::artifacts::{check_bucket, ArtifactError, BucketInfo, BucketStats};
use tokio_postgres::{GenericClient, Row};

use super::{pg, Inner};

/// The columns of a bucket row that [`info`] reads.
pub(crate) const COLUMNS: &str = "name, project, created_ms, retention_days, objects, bytes";

/// A bucket row as its [`BucketInfo`].
pub(crate) fn info(row: &Row) -> Result<BucketInfo, ArtifactError> {
    let retention: Option<i32> = row.try_get(3).map_err(pg)?;
    let objects: i64 = row.try_get(4).map_err(pg)?;
    let bytes: i64 = row.try_get(5).map_err(pg)?;
    Ok(BucketInfo {
        name: row.try_get(0).map_err(pg)?,
        project: row.try_get(1).map_err(pg)?,
        created_ms: row.try_get(2).map_err(pg)?,
        retention_days: retention.map(|d| d.max(0) as u32),
        stats: BucketStats { objects: objects.max(0) as u64, bytes: bytes.max(0) as u64 },
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Inner {
    /// Locks a bucket's row for a write into it (in `tx`) and returns its project; `NoSuchBucket` if absent.
    pub(crate) async fn lock_bucket(
        &self,
        tx: &impl GenericClient,
        name: &str,
    ) -> Result<Option<String>, ArtifactError> {
        let sql = format!("SELECT project FROM {} WHERE name = $1 FOR NO KEY UPDATE", self.table("buckets"));
        let row = tx.query_opt(&sql, &[&name]).await.map_err(pg)?;
        let row = row.ok_or_else(|| ArtifactError::NoSuchBucket(name.to_owned()))?;
        row.try_get(0).map_err(pg)
    }

    /// Adds `objects` and `bytes` to a bucket's figures (in the transaction that locked it).
    pub(crate) async fn add_stats(
        &self,
        tx: &impl GenericClient,
        name: &str,
        objects: i64,
        bytes: i64,
    ) -> Result<(), ArtifactError> {
        if objects == 0 && bytes == 0 {
            return Ok(());
        }
        let sql =
            format!("UPDATE {} SET objects = objects + $2, bytes = bytes + $3 WHERE name = $1", self.table("buckets"));
        tx.execute(&sql, &[&name, &objects, &bytes]).await.map_err(pg)?;
        Ok(())
    }

    pub(crate) fn create_bucket(&self, name: &str, project: Option<&str>) -> Result<BucketInfo, ArtifactError> {
        check_bucket(name)?;
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!(
                "INSERT INTO {} (name, project, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING \
                 RETURNING {COLUMNS}",
                self.table("buckets")
            );
            let row = client.query_opt(&sql, &[&name, &project, &now_ms()]).await.map_err(pg)?;
            row.map_or_else(|| Err(ArtifactError::BucketExists(name.to_owned())), |r| info(&r))
        })
    }

    pub(crate) fn delete_bucket(&self, name: &str) -> Result<(), ArtifactError> {
        check_bucket(name)?;
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let (buckets, objects, uploads) = (self.table("buckets"), self.table("objects"), self.table("uploads"));
            // Locked: a write into the bucket waits for this transaction, then finds the bucket gone.
            let sql = format!("SELECT 1 FROM {buckets} WHERE name = $1 FOR UPDATE");
            if tx.query_opt(&sql, &[&name]).await.map_err(pg)?.is_none() {
                return Err(ArtifactError::NoSuchBucket(name.to_owned()));
            }
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {objects} WHERE bucket = $1) OR EXISTS (SELECT 1 FROM {uploads} WHERE bucket = $1)"
            );
            let busy: bool = tx.query_one(&sql, &[&name]).await.map_err(pg)?.try_get(0).map_err(pg)?;
            if busy {
                return Err(ArtifactError::BucketNotEmpty(name.to_owned()));
            }
            tx.execute(&format!("DELETE FROM {buckets} WHERE name = $1"), &[&name]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    pub(crate) fn bucket(&self, name: &str) -> Result<BucketInfo, ArtifactError> {
        check_bucket(name)?;
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!("SELECT {COLUMNS} FROM {} WHERE name = $1", self.table("buckets"));
            let row = client.query_opt(&sql, &[&name]).await.map_err(pg)?;
            row.map_or_else(|| Err(ArtifactError::NoSuchBucket(name.to_owned())), |r| info(&r))
        })
    }

    pub(crate) fn list_buckets(&self) -> Result<Vec<BucketInfo>, ArtifactError> {
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!("SELECT {COLUMNS} FROM {} ORDER BY name", self.table("buckets"));
            client.query(&sql, &[]).await.map_err(pg)?.iter().map(info).collect()
        })
    }

    pub(crate) fn set_retention(&self, name: &str, days: Option<u32>) -> Result<BucketInfo, ArtifactError> {
        if days == Some(0) {
            return Err(ArtifactError::Invalid("retention is at least 1 day".into()));
        }
        check_bucket(name)?;
        let days = days.map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        self.block_on(async {
            let client = self.conn().await?;
            let sql =
                format!("UPDATE {} SET retention_days = $2 WHERE name = $1 RETURNING {COLUMNS}", self.table("buckets"));
            let row = client.query_opt(&sql, &[&name, &days]).await.map_err(pg)?;
            row.map_or_else(|| Err(ArtifactError::NoSuchBucket(name.to_owned())), |r| info(&r))
        })
    }

    pub(crate) fn totals(&self) -> Result<BucketStats, ArtifactError> {
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!(
                "SELECT coalesce(sum(objects), 0)::int8, coalesce(sum(bytes), 0)::int8 FROM {}",
                self.table("buckets")
            );
            let row = client.query_one(&sql, &[]).await.map_err(pg)?;
            let (objects, bytes): (i64, i64) = (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
            Ok(BucketStats { objects: objects.max(0) as u64, bytes: bytes.max(0) as u64 })
        })
    }
}
