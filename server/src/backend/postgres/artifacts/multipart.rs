//! Multipart uploads: each part is a stored object of its own and a row; completion checks the listed parts,
//! reads them back once to compute the object's SHA-256, and commits the object's row, whose segments are
//! the parts' stored objects (no byte copied), while deleting the upload and its parts' rows.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use cairn_store::artifacts::{
    check_bucket, check_key, check_part_number, multipart_etag, new_upload_id, ArtifactError, ObjectMeta, PartInfo,
    PutOptions, UploadInfo, MIN_PART_SIZE,
};
use sha2::{Digest as _, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::buckets::now_ms;
use super::objects::NewObject;
use super::{pg, Inner};

/// An upload's row.
struct Upload {
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// A part's row.
#[derive(Debug, Clone)]
struct Part {
    number: u32,
    etag: String,
    size: u64,
    modified_ms: i64,
    path: String,
}

impl Part {
    fn info(&self) -> PartInfo {
        PartInfo {
            part_number: self.number,
            etag: self.etag.clone(),
            size: self.size,
            last_modified_ms: self.modified_ms,
        }
    }
}

impl Inner {
    pub(crate) fn create_multipart(&self, bucket: &str, key: &str, opts: PutOptions) -> Result<String, ArtifactError> {
        check_key(key)?;
        check_bucket(bucket)?;
        let id = new_upload_id();
        let metadata = serde_json::to_value(&opts.metadata).map_err(|e| ArtifactError::Internal(e.to_string()))?;
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!(
                "INSERT INTO {} (id, bucket, key, content_type, metadata, initiated_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                self.table("uploads")
            );
            match client.execute(&sql, &[&id, &bucket, &key, &opts.content_type, &metadata, &now_ms()]).await {
                Ok(_) => Ok(id),
                Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                    Err(ArtifactError::NoSuchBucket(bucket.to_owned()))
                }
                Err(e) => Err(pg(e)),
            }
        })
    }

    /// The upload `upload_id` of `bucket`/`key`, or `NoSuchUpload`.
    async fn upload(
        &self,
        client: &impl GenericClient,
        bucket: &str,
        key: &str,
        upload_id: &str,
        lock: bool,
    ) -> Result<Upload, ArtifactError> {
        let missing = || ArtifactError::NoSuchUpload(upload_id.to_owned());
        if upload_id.is_empty() || upload_id.len() > 64 {
            return Err(missing());
        }
        let sql = format!(
            "SELECT bucket, key, content_type, metadata FROM {} WHERE id = $1{}",
            self.table("uploads"),
            if lock { " FOR UPDATE" } else { "" }
        );
        let row = client.query_opt(&sql, &[&upload_id]).await.map_err(pg)?.ok_or_else(missing)?;
        let (b, k): (String, String) = (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
        if b != bucket || k != key {
            return Err(missing());
        }
        let metadata: serde_json::Value = row.try_get(3).map_err(pg)?;
        Ok(Upload {
            content_type: row.try_get(2).map_err(pg)?,
            metadata: serde_json::from_value(metadata)
                .map_err(|e| ArtifactError::Internal(format!("an upload's metadata does not decode: {e}")))?,
        })
    }

    /// An upload's parts, by number.
    async fn parts(&self, client: &impl GenericClient, upload_id: &str) -> Result<Vec<Part>, ArtifactError> {
        let sql = format!(
            "SELECT part_number, etag, size, modified_ms, path FROM {} WHERE upload_id = $1 ORDER BY part_number",
            self.table("parts")
        );
        let rows = client.query(&sql, &[&upload_id]).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                let (number, size): (i32, i64) = (r.try_get(0).map_err(pg)?, r.try_get(2).map_err(pg)?);
                Ok(Part {
                    number: number.max(0) as u32,
                    etag: r.try_get(1).map_err(pg)?,
                    size: size.max(0) as u64,
                    modified_ms: r.try_get(3).map_err(pg)?,
                    path: r.try_get(4).map_err(pg)?,
                })
            })
            .collect()
    }

    pub(crate) fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut dyn Read,
    ) -> Result<PartInfo, ArtifactError> {
        check_part_number(part_number)?;
        self.block_on(async { self.upload(&*self.conn().await?, bucket, key, upload_id, false).await.map(|_| ()) })?;
        let written = self.write_body(body, &PutOptions::default())?;
        let part = Part {
            number: part_number,
            etag: hex::encode(written.digests.md5),
            size: written.size,
            modified_ms: now_ms(),
            path: written.path,
        };
        self.block_on(async {
            let client = self.conn().await?;
            let sql = format!(
                "INSERT INTO {} (upload_id, part_number, etag, size, modified_ms, path) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = EXCLUDED.etag, size = EXCLUDED.size,
                     modified_ms = EXCLUDED.modified_ms, path = EXCLUDED.path",
                self.table("parts")
            );
            let number = i32::try_from(part.number).unwrap_or(i32::MAX);
            let size = i64::try_from(part.size).unwrap_or(i64::MAX);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&upload_id, &number, &part.etag, &size, &part.modified_ms, &part.path];
            match client.execute(&sql, &params).await {
                Ok(_) => Ok(part.info()),
                // The upload was completed or aborted meanwhile: the part's bytes are left to collection.
                Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                    Err(ArtifactError::NoSuchUpload(upload_id.to_owned()))
                }
                Err(e) => Err(pg(e)),
            }
        })
    }

    pub(crate) fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, ArtifactError> {
        self.block_on(async {
            let client = self.conn().await?;
            self.upload(&*client, bucket, key, upload_id, false).await?;
            Ok(self.parts(&*client, upload_id).await?.iter().map(Part::info).collect())
        })
    }

    pub(crate) fn complete_multipart(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectMeta, ArtifactError> {
        let (upload, uploaded) = self.block_on(async {
            let client = self.conn().await?;
            let upload = self.upload(&*client, bucket, key, upload_id, false).await?;
            Ok::<_, ArtifactError>((upload, self.parts(&*client, upload_id).await?))
        })?;
        if parts.is_empty() {
            return Err(ArtifactError::InvalidPart("a completion lists at least one part".into()));
        }
        if parts.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
            return Err(ArtifactError::InvalidPartOrder);
        }
        let mut chosen = Vec::with_capacity(parts.len());
        for (number, etag) in parts {
            let etag = etag.trim_matches('"');
            let part = uploaded.iter().find(|p| p.number == *number && p.etag == etag).ok_or_else(|| {
                ArtifactError::InvalidPart(format!("part {number} with ETag {etag:?} was not uploaded"))
            })?;
            chosen.push(part.clone());
        }
        if let Some(small) = chosen.iter().rev().skip(1).find(|p| p.size < MIN_PART_SIZE) {
            return Err(ArtifactError::EntityTooSmall { part: small.number });
        }
        let md5s: Vec<[u8; 16]> = chosen
            .iter()
            .map(|p| {
                let mut m = [0u8; 16];
                hex::decode_to_slice(&p.etag, &mut m).map(|()| m)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ArtifactError::Internal(format!("a part's ETag: {e}")))?;
        let segments: Vec<(String, u64)> = chosen.iter().map(|p| (p.path.clone(), p.size)).collect();
        let size = segments.iter().map(|s| s.1).sum();
        // The whole body's SHA-256, read back from the stored parts (checked against their recorded sizes).
        let mut reader = self.reader(&segments, 0, size);
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sha.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArtifactError::Backend(format!("reading the parts back: {e}"))),
            }
        }
        let sha256: [u8; 32] = sha.finalize().into();
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // The bucket first, as every write into it; then the upload, which an abort, another completion
            // or a part's upload (its row's reference to the upload) waits for until this commits.
            self.lock_bucket(&tx, bucket).await?;
            self.upload(&tx, bucket, key, upload_id, true).await?;
            let now = self.parts(&tx, upload_id).await?;
            for p in &chosen {
                if !now.iter().any(|n| n.number == p.number && n.path == p.path) {
                    return Err(ArtifactError::InvalidPart(format!("part {} changed during completion", p.number)));
                }
            }
            let meta = self
                .upsert_object(
                    &tx,
                    NewObject {
                        bucket,
                        key,
                        size,
                        etag: multipart_etag(&md5s),
                        sha256,
                        crc32c: None,
                        content_type: upload.content_type,
                        metadata: upload.metadata,
                        segments,
                    },
                )
                .await?;
            tx.execute(&format!("DELETE FROM {} WHERE id = $1", self.table("uploads")), &[&upload_id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(meta)
        })
    }

    pub(crate) fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ArtifactError> {
        self.block_on(async {
            let mut client = self.conn().await?;
            let tx = client.transaction().await.map_err(pg)?;
            self.upload(&tx, bucket, key, upload_id, true).await?;
            // The parts' rows go with it; their bytes are garbage collection's.
            tx.execute(&format!("DELETE FROM {} WHERE id = $1", self.table("uploads")), &[&upload_id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    pub(crate) fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, ArtifactError> {
        self.block_on(async {
            let client = self.conn().await?;
            let sql =
                format!("SELECT id, key, initiated_ms FROM {} WHERE bucket = $1 ORDER BY id", self.table("uploads"));
            let rows = client.query(&sql, &[&bucket]).await.map_err(pg)?;
            rows.iter()
                .map(|r| {
                    Ok(UploadInfo {
                        upload_id: r.try_get(0).map_err(pg)?,
                        key: r.try_get(1).map_err(pg)?,
                        initiated_ms: r.try_get(2).map_err(pg)?,
                    })
                })
                .collect()
        })
    }
}
