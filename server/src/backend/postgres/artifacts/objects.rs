//! Objects: put (streamed to the object store, then the row committed), head, get (with a range), delete,
//! copy (sharing the stored bytes), and listings in S3's order (byte order of the keys: `COLLATE "C"`).

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use cairn_store::artifacts::{
    check_bucket, check_key, rolled_up, ArtifactError, ListPage, ListRequest, ObjectMeta, PutOptions,
};
use tokio_postgres::{GenericClient, Row};

use super::buckets::now_ms;
use super::{pg, Inner};
use crate::backend::ObjectRead;

/// The columns of an object row that [`meta`] reads, then its segments.
pub(crate) const COLUMNS: &str =
    "bucket, key, size, etag, sha256, crc32c, content_type, metadata, modified_ms, version, segment_paths, segment_sizes";

/// An object row's metadata.
pub(crate) fn meta(row: &Row) -> Result<ObjectMeta, ArtifactError> {
    let size: i64 = row.try_get(2).map_err(pg)?;
    let sha: Vec<u8> = row.try_get(4).map_err(pg)?;
    let crc32c: Option<i64> = row.try_get(5).map_err(pg)?;
    let metadata: serde_json::Value = row.try_get(7).map_err(pg)?;
    let version: i64 = row.try_get(9).map_err(pg)?;
    let metadata: BTreeMap<String, String> = serde_json::from_value(metadata)
        .map_err(|e| ArtifactError::Internal(format!("an object's metadata does not decode: {e}")))?;
    Ok(ObjectMeta {
        bucket: row.try_get(0).map_err(pg)?,
        key: row.try_get(1).map_err(pg)?,
        size: size.max(0) as u64,
        etag: row.try_get(3).map_err(pg)?,
        content_type: row.try_get(6).map_err(pg)?,
        metadata,
        sha256: <[u8; 32]>::try_from(sha.as_slice())
            .map_err(|_| ArtifactError::Internal("an object's SHA-256 is not 32 bytes".into()))?,
        crc32c: crc32c.and_then(|c| u32::try_from(c).ok()),
        last_modified_ms: row.try_get(8).map_err(pg)?,
        version: version.max(0) as u64,
    })
}

/// An object row's segments: the stored objects holding its bytes, and their lengths.
pub(crate) fn segments(row: &Row) -> Result<Vec<(String, u64)>, ArtifactError> {
    let paths: Vec<String> = row.try_get(10).map_err(pg)?;
    let sizes: Vec<i64> = row.try_get(11).map_err(pg)?;
    if paths.len() != sizes.len() {
        return Err(ArtifactError::Internal("an object's segments and their sizes differ in number".into()));
    }
    Ok(paths.into_iter().zip(sizes.into_iter().map(|s| s.max(0) as u64)).collect())
}

/// A new object's row, as written.
pub(crate) struct NewObject<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub size: u64,
    pub etag: String,
    pub sha256: [u8; 32],
    pub crc32c: Option<u32>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub segments: Vec<(String, u64)>,
}

/// A key above every key that starts with `common` but its own continuations that start with the highest
/// character (which a listing skips as it meets them).
fn past(common: &str) -> String {
    format!("{common}{}", char::MAX)
}

impl Inner {
    /// Writes an object's row (replacing any of its key) and the change of its bucket's figures, in `tx`
    /// after locking the bucket; returns the object's metadata.
    pub(crate) async fn upsert_object(
        &self,
        tx: &impl GenericClient,
        obj: NewObject<'_>,
    ) -> Result<ObjectMeta, ArtifactError> {
        self.lock_bucket(tx, obj.bucket).await?;
        let objects = self.table("objects");
        let old = tx
            .query_opt(
                &format!("SELECT size FROM {objects} WHERE bucket = $1 AND key = $2 FOR UPDATE"),
                &[&obj.bucket, &obj.key],
            )
            .await
            .map_err(pg)?;
        let (count, old_size) = match old {
            Some(row) => (0i64, row.try_get::<_, i64>(0).map_err(pg)?),
            None => (1, 0),
        };
        let size = i64::try_from(obj.size).map_err(|_| ArtifactError::Invalid("object too large".into()))?;
        let metadata = serde_json::to_value(&obj.metadata).map_err(|e| ArtifactError::Internal(e.to_string()))?;
        let (paths, sizes): (Vec<String>, Vec<i64>) =
            obj.segments.into_iter().map(|(p, s)| (p, i64::try_from(s).unwrap_or(i64::MAX))).unzip();
        let sql = format!(
            "INSERT INTO {objects} AS o ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)
             ON CONFLICT (bucket, key) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag,
                 sha256 = EXCLUDED.sha256, crc32c = EXCLUDED.crc32c, content_type = EXCLUDED.content_type,
                 metadata = EXCLUDED.metadata, modified_ms = EXCLUDED.modified_ms, version = o.version + 1,
                 segment_paths = EXCLUDED.segment_paths, segment_sizes = EXCLUDED.segment_sizes
             RETURNING {COLUMNS}"
        );
        let row = tx
            .query_one(
                &sql,
                &[
                    &obj.bucket,
                    &obj.key,
                    &size,
                    &obj.etag,
                    &obj.sha256.as_slice(),
                    &obj.crc32c.map(i64::from),
                    &obj.content_type,
                    &metadata,
                    &now_ms(),
                    &paths,
                    &sizes,
                ],
            )
            .await
            .map_err(pg)?;
        self.add_stats(tx, obj.bucket, count, size - old_size).await?;
        meta(&row)
    }

    /// Whether bucket `name` exists (`NoSuchBucket` if not).
    pub(crate) async fn bucket_exists(&self, client: &impl GenericClient, name: &str) -> Result<(), ArtifactError> {
        let sql = format!("SELECT 1 FROM {} WHERE name = $1", self.table("buckets"));
        match client.query_opt(&sql, &[&name]).await.map_err(pg)? {
            Some(_) => Ok(()),
            None => Err(ArtifactError::NoSuchBucket(name.to_owned())),
        }
    }

    pub(crate) fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectMeta, ArtifactError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.block_on(async { self.bucket_exists(&*self.conn().await?, bucket).await })?;
        let written = self.write_body(body, &opts)?;
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let meta = self
                .upsert_object(
                    &tx,
                    NewObject {
                        bucket,
                        key,
                        size: written.size,
                        etag: hex::encode(written.digests.md5),
                        sha256: written.digests.sha256,
                        crc32c: written.digests.crc32c,
                        content_type: opts.content_type,
                        metadata: opts.metadata,
                        segments: vec![(written.path, written.size)],
                    },
                )
                .await?;
            tx.commit().await.map_err(pg)?;
            Ok(meta)
        })
    }

    /// An object's row, or `NoSuchKey` (`NoSuchBucket` when the bucket is missing).
    async fn object_row(&self, client: &impl GenericClient, bucket: &str, key: &str) -> Result<Row, ArtifactError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE bucket = $1 AND key = $2", self.table("objects"));
        match client.query_opt(&sql, &[&bucket, &key]).await.map_err(pg)? {
            Some(row) => Ok(row),
            None => {
                self.bucket_exists(client, bucket).await?;
                Err(ArtifactError::NoSuchKey { bucket: bucket.to_owned(), key: key.to_owned() })
            }
        }
    }

    pub(crate) fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectMeta, ArtifactError> {
        self.block_on(async { meta(&self.object_row(&*self.conn().await?, bucket, key).await?) })
    }

    pub(crate) fn get_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, Box<dyn ObjectRead>), ArtifactError> {
        let row = self.block_on(async { self.object_row(&*self.conn().await?, bucket, key).await })?;
        let (meta, segments) = (meta(&row)?, segments(&row)?);
        let (start, end) = match &range {
            None => (0, meta.size),
            Some(r) if r.start >= meta.size && meta.size > 0 || r.start > r.end => {
                return Err(ArtifactError::InvalidRange { size: meta.size })
            }
            Some(r) => (r.start.min(meta.size), r.end.min(meta.size)),
        };
        let reader = self.reader(&segments, start, end);
        Ok((meta, Box::new(reader)))
    }

    pub(crate) fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ArtifactError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            self.lock_bucket(&tx, bucket).await?;
            let sql = format!("DELETE FROM {} WHERE bucket = $1 AND key = $2 RETURNING size", self.table("objects"));
            let Some(row) = tx.query_opt(&sql, &[&bucket, &key]).await.map_err(pg)? else {
                return Ok(false);
            };
            let size: i64 = row.try_get(0).map_err(pg)?;
            self.add_stats(&tx, bucket, -1, -size).await?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
    }

    pub(crate) fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        replace: Option<PutOptions>,
    ) -> Result<ObjectMeta, ArtifactError> {
        check_bucket(src_bucket)?;
        check_bucket(dst_bucket)?;
        check_key(src_key)?;
        check_key(dst_key)?;
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            self.lock_bucket(&tx, dst_bucket).await?;
            // The two objects' rows are locked in (bucket, key) byte order, so that two copies the other
            // way round between two buckets queue instead of deadlocking.
            if (dst_bucket.as_bytes(), dst_key.as_bytes()) < (src_bucket.as_bytes(), src_key.as_bytes()) {
                let sql = format!("SELECT 1 FROM {} WHERE bucket = $1 AND key = $2 FOR UPDATE", self.table("objects"));
                tx.query_opt(&sql, &[&dst_bucket, &dst_key]).await.map_err(pg)?;
            }
            // Held until the copy commits: a deletion of the source waits, so its bytes are referenced by
            // one row or the other at every moment garbage collection may look.
            let sql =
                format!("SELECT {COLUMNS} FROM {} WHERE bucket = $1 AND key = $2 FOR SHARE", self.table("objects"));
            let Some(src) = tx.query_opt(&sql, &[&src_bucket, &src_key]).await.map_err(pg)? else {
                self.bucket_exists(&tx, src_bucket).await?;
                return Err(ArtifactError::NoSuchKey { bucket: src_bucket.to_owned(), key: src_key.to_owned() });
            };
            let (old, segments) = (meta(&src)?, segments(&src)?);
            let (content_type, metadata) = match replace {
                Some(r) => (r.content_type, r.metadata),
                None => (old.content_type, old.metadata),
            };
            let meta = self
                .upsert_object(
                    &tx,
                    NewObject {
                        bucket: dst_bucket,
                        key: dst_key,
                        size: old.size,
                        etag: old.etag,
                        sha256: old.sha256,
                        crc32c: old.crc32c,
                        content_type,
                        metadata,
                        segments,
                    },
                )
                .await?;
            tx.commit().await.map_err(pg)?;
            Ok(meta)
        })
    }

    /// One page of a bucket's objects in key order, as the embedded store lists them: keys under `prefix`,
    /// those holding `delimiter` after it rolled up into common prefixes, after `start_after`. Each query
    /// reads keys from where the page stands in the primary key's order; a common prefix is passed over
    /// with a new query starting after it.
    pub(crate) fn list_objects(&self, bucket: &str, req: &ListRequest) -> Result<ListPage, ArtifactError> {
        check_bucket(bucket)?;
        self.block_on(async {
            let client = self.conn().await?;
            self.bucket_exists(&*client, bucket).await?;
            let max = req.max_keys.min(1000);
            let mut page = ListPage::default();
            if max == 0 {
                return Ok(page);
            }
            let prefix = req.prefix.as_str();
            let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
            // Where the next query starts, whether that key itself is included, and the common prefix
            // whose keys are skipped.
            let (mut from, mut inclusive, mut skip) = (prefix.to_owned(), true, None::<String>);
            if let Some(after) = req.start_after.as_deref().filter(|a| a.as_bytes() >= prefix.as_bytes()) {
                match delimiter.and_then(|d| rolled_up(after, prefix, d)) {
                    Some(common) => (from, skip) = (past(&common), Some(common)),
                    None => (from, inclusive) = (after.to_owned(), false),
                }
            }
            let objects = self.table("objects");
            let batch = i64::try_from(max + 1).unwrap_or(1001);
            let mut last: Option<String> = None;
            'query: loop {
                let op = if inclusive { ">=" } else { ">" };
                let sql =
                    format!("SELECT {COLUMNS} FROM {objects} WHERE bucket = $1 AND key {op} $2 ORDER BY key LIMIT $3");
                let rows = client.query(&sql, &[&bucket, &from, &batch]).await.map_err(pg)?;
                let full = rows.len() as i64 == batch;
                for row in &rows {
                    let key: String = row.try_get(1).map_err(pg)?;
                    if !key.starts_with(prefix) {
                        break 'query;
                    }
                    if skip.as_deref().is_some_and(|s| key.starts_with(s)) {
                        (from, inclusive) = (key, false);
                        continue;
                    }
                    if page.objects.len() + page.common_prefixes.len() == max {
                        page.truncated = true;
                        page.next_start_after = last;
                        return Ok(page);
                    }
                    if let Some(common) = delimiter.and_then(|d| rolled_up(&key, prefix, d)) {
                        page.common_prefixes.push(common.clone());
                        last = Some(common.clone());
                        (from, inclusive) = (past(&common), true);
                        skip = Some(common);
                        continue 'query;
                    }
                    page.objects.push(meta(row)?);
                    (from, inclusive) = (key.clone(), false);
                    last = Some(key);
                }
                if !full {
                    break;
                }
            }
            Ok(page)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::past;

    #[test]
    fn past_sorts_after_every_continuation_of_a_common_prefix() {
        assert!(past("a/").as_bytes() > "a/\u{10fffe}zzz".as_bytes());
        assert!(past("a/").as_bytes() < "a0".as_bytes());
    }
}
