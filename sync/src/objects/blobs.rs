//! Artifact objects' bytes at a location: `blobs/sha256/HEX`, named by the SHA-256 of the bytes, written
//! once and never rewritten (specified in `docs/sync.md`, "Object store layout").
//!
//! An export ships the bytes of every `_artifact_objects` record a snapshot or a segment holds before it
//! writes that snapshot's manifest or that segment ([`Shipper`]); a restore streams them into the new
//! store's blob files once the records are in ([`restore_blobs`]); verification checks they are there
//! ([`list_blobs`], [`remote_sha256`]).

use std::collections::HashMap;
use std::io::Read;

use bytes::Bytes;
use cairn_store::artifacts::{ArtifactError, Artifacts, ObjectMeta, ObjectReader, OBJECTS};
use cairn_store::{ChangeOp, Store};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{PutPayload, WriteMultipart};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::export::{ObjectExport, PART_CONCURRENCY, PART_SIZE};
use super::layout::{blob_name, parse_blob_name, BLOBS};
use super::location::ObjectLocation;
use super::restore::RestoreReport;
use crate::error::SyncError;
use crate::progress::Progress;

/// Bytes read from a local object per step of a multipart upload.
const STEP: usize = 1 << 20;
/// Chunks of a download in flight between the network and the local blob writer.
const DOWNLOAD_QUEUE: usize = 4;
/// Changes read per page while looking for a later version of an object.
const SCAN_PAGE: usize = 10_000;

/// Every blob at the location: SHA-256 (hex) → size.
pub(crate) async fn list_blobs(location: &ObjectLocation) -> Result<HashMap<String, u64>, SyncError> {
    let listed: Vec<_> = location.store()?.list(Some(&location.path(BLOBS))).try_collect().await?;
    Ok(listed
        .iter()
        .filter_map(|m| parse_blob_name(location.relative(&m.location)).map(|hex| (hex.to_owned(), m.size)))
        .collect())
}

/// The SHA-256 (hex) and length of the bytes of blob `sha256` at the location, read as a stream; `None` if
/// it is missing.
pub(crate) async fn remote_sha256(location: &ObjectLocation, sha256: &str) -> Result<Option<(String, u64)>, SyncError> {
    let got = match location.store()?.get(&location.path(&blob_name(sha256))).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut stream = got.into_stream();
    let (mut hash, mut len) = (Sha256::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        len += chunk.len() as u64;
    }
    Ok(Some((hex::encode(hash.finalize()), len)))
}

/// Ships objects' bytes during one export run, remembering which blobs the location holds.
pub(crate) struct Shipper<'a> {
    artifacts: Option<&'a Artifacts>,
    threshold: usize,
    /// Blobs known to be at the location (SHA-256 hex → size): listed, found by HEAD or uploaded.
    known: HashMap<String, u64>,
    /// Whether `known` holds the whole listing (a blob not in it is not at the location).
    listed: bool,
}

impl<'a> Shipper<'a> {
    /// Objects of at least `threshold` bytes go as multipart uploads.
    pub fn new(artifacts: Option<&'a Artifacts>, threshold: usize) -> Self {
        Self { artifacts, threshold, known: HashMap::new(), listed: false }
    }

    /// Lists the location's blobs once: before a snapshot, which looks at every object, one listing costs
    /// less than a HEAD per object. Without it, each blob not yet seen in this run is looked up by HEAD.
    pub async fn list(&mut self, location: &ObjectLocation) -> Result<(), SyncError> {
        if !self.listed {
            self.known.extend(list_blobs(location).await?);
            self.listed = true;
        }
        Ok(())
    }

    /// Makes sure the bytes of object record `id`, whose document `doc` was read in a snapshot at `seq` or
    /// written by the commit `seq`, are at the location. If the store no longer has them (the object was
    /// overwritten or deleted and its blobs collected), this version is skipped (and counted) when
    /// `superseded` holds or a later version of the record is in the change feed after `seq`; otherwise it
    /// fails with [`SyncError::BytesGone`].
    pub async fn ship(
        &mut self,
        store: &Store,
        location: &ObjectLocation,
        (id, seq, doc): (&str, u64, &Value),
        superseded: bool,
        report: &mut ObjectExport,
    ) -> Result<(), SyncError> {
        let meta = Artifacts::document_meta(doc, 0)
            .map_err(|e| SyncError::corrupt(format!("{OBJECTS}/{id}"), e.to_string()))?;
        let sha256 = hex::encode(meta.sha256);
        let path = location.path(&blob_name(&sha256));
        if self.is_there(location, &path, &sha256, meta.size).await? {
            report.blobs_present += 1;
            return Ok(());
        }
        let Some(artifacts) = self.artifacts else {
            return Err(SyncError::invalid(format!(
                "the store holds artifact objects ({OBJECTS}/{id}) but the export was not given its artifact \
                 store: their bytes cannot be shipped"
            )));
        };
        let Some(reader) = artifacts.read_document(doc)? else {
            if superseded || later_version(store, id, seq)? {
                report.blobs_skipped += 1;
                return Ok(());
            }
            return Err(SyncError::BytesGone(format!(
                "{OBJECTS}/{id} as of seq {seq} (sha256 {sha256}): its bytes were garbage collected before the \
                 export read them and no later version of it follows; start a new chain with `cairn export s3 \
                 --snapshot`"
            )));
        };
        upload(location, &path, reader, &meta, &sha256, self.threshold).await?;
        self.known.insert(sha256, meta.size);
        report.blobs_uploaded += 1;
        report.blob_bytes_uploaded += meta.size;
        Ok(())
    }

    /// Whether blob `sha256` of `size` bytes is at the location (one of another size is not: it is
    /// replaced).
    async fn is_there(
        &mut self,
        location: &ObjectLocation,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<bool, SyncError> {
        if let Some(&known) = self.known.get(sha256) {
            return Ok(known == size);
        }
        if self.listed {
            return Ok(false);
        }
        match location.store()?.head(path).await {
            Ok(head) => {
                self.known.insert(sha256.to_owned(), head.size);
                Ok(head.size == size)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a later version of object record `id` than the one at `after` is in the store's change feed
/// (so the export ships it too).
fn later_version(store: &Store, id: &str, after: u64) -> Result<bool, SyncError> {
    if store.collection_dyn(OBJECTS)?.get(id)?.is_some_and(|now| now.seq > after) {
        return Ok(true);
    }
    let mut from = after;
    loop {
        let page = store.changes_since(from, SCAN_PAGE)?;
        let Some(last) = page.last() else { return Ok(false) };
        if page.iter().any(|c| c.collection == OBJECTS && c.id == id && c.op != ChangeOp::Delete) {
            return Ok(true);
        }
        from = last.seq;
    }
}

/// Uploads an object's bytes to `path`, streamed: in one request below `threshold`, in parts otherwise.
/// The bytes' SHA-256 is checked before the upload completes, so a blob's name always matches its bytes.
async fn upload(
    location: &ObjectLocation,
    path: &Path,
    mut reader: ObjectReader,
    meta: &ObjectMeta,
    sha256: &str,
    threshold: usize,
) -> Result<(), SyncError> {
    let store = location.store()?;
    let local =
        |e: std::io::Error| SyncError::corrupt(format!("local artifact {}/{}", meta.bucket, meta.key), e.to_string());
    let mismatch = |found: &str| {
        SyncError::corrupt(
            format!("local artifact {}/{}", meta.bucket, meta.key),
            format!("its bytes' sha256 is {found}, its record says {sha256}"),
        )
    };
    if meta.size < threshold as u64 {
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        reader.read_to_end(&mut bytes).map_err(local)?;
        let found = hex::encode(Sha256::digest(&bytes));
        if found != sha256 {
            return Err(mismatch(&found));
        }
        store.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(path).await?, PART_SIZE);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; STEP];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(local(e));
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hash.update(chunk);
        writer.wait_for_capacity(PART_CONCURRENCY).await?;
        writer.write(chunk);
    }
    let found = hex::encode(hash.finalize());
    if found != sha256 {
        let _ = writer.abort().await;
        return Err(mismatch(&found));
    }
    writer.finish().await?;
    Ok(())
}

/// Gives every object record of the restored store its bytes: each distinct blob is downloaded once and
/// streamed into a new local blob while its SHA-256 is checked (a mismatch fails the restore, naming the
/// blob and the object); objects with the same bytes share them. Then every bucket's statistics are
/// recomputed.
pub(crate) async fn restore_blobs(
    location: &ObjectLocation,
    artifacts: &Artifacts,
    progress: &Progress,
    report: &mut RestoreReport,
) -> Result<(), SyncError> {
    let snap = artifacts.store().snapshot();
    if !snap.collections()?.iter().any(|c| c.name == OBJECTS) {
        return Ok(());
    }
    progress.phase("restore: artifact bytes", None);
    // SHA-256 → the first object restored with those bytes.
    let mut restored: HashMap<String, (String, String)> = HashMap::new();
    for r in snap.records(OBJECTS, None)? {
        let r = r?;
        let meta = Artifacts::document_meta(&r.doc, r.version)
            .map_err(|e| SyncError::corrupt(format!("{OBJECTS}/{}", r.id), e.to_string()))?;
        let sha256 = hex::encode(meta.sha256);
        report.artifact_objects += 1;
        if let Some((bucket, key)) = restored.get(&sha256) {
            artifacts.share_object_bytes(&meta.bucket, &meta.key, bucket, key)?;
            progress.add(1, 0);
            continue;
        }
        fetch_into(location, artifacts, &meta, &sha256, report).await?;
        report.blobs_downloaded += 1;
        progress.add(1, meta.size);
        restored.insert(sha256, (meta.bucket, meta.key));
    }
    artifacts.rebuild_stats()?;
    progress.finish();
    Ok(())
}

/// Streams blob `sha256` from the location into the local blob store as the bytes of object `meta`.
async fn fetch_into(
    location: &ObjectLocation,
    artifacts: &Artifacts,
    meta: &ObjectMeta,
    sha256: &str,
    report: &mut RestoreReport,
) -> Result<(), SyncError> {
    let name = blob_name(sha256);
    let object = format!("{}/{}", meta.bucket, meta.key);
    let got = location.store()?.get(&location.path(&name)).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            SyncError::Gap(format!("{name}, the bytes of object {object}, is missing from {}", location.url()))
        }
        other => other.into(),
    })?;
    let mut stream = got.into_stream();
    let (tx, rx) = tokio::sync::mpsc::channel(DOWNLOAD_QUEUE);
    let (a, bucket, key) = (artifacts.clone(), meta.bucket.clone(), meta.key.clone());
    let writer = tokio::task::spawn_blocking(move || {
        a.restore_object_bytes(&bucket, &key, &mut ChannelReader { rx, current: Bytes::new() })
    });
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                report.blob_bytes += bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| SyncError::invalid(format!("restoring the bytes of {object}: {e}")))?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    match written {
        Ok(_) => Ok(()),
        Err(ArtifactError::BadDigest(why)) => {
            Err(SyncError::corrupt(name, format!("checksum mismatch for the bytes of object {object}: {why}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bytes of a download, as a blocking reader fed by the task that receives them.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        if let Some(dest) = buf.get_mut(..n) {
            dest.copy_from_slice(&chunk);
        }
        Ok(n)
    }
}
