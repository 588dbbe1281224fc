//! Streaming a body into a blob while computing the digests S3 clients check: MD5 (the ETag), SHA-256 (the
//! object's content address) and, when the client sent one, CRC32C.

use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use cairn_engine::{BlobPin, BlobRef, BlobStore};
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::model::PutOptions;
use super::ArtifactError;

/// Bytes read from a body per step.
const STEP: usize = 64 * 1024;

/// A body stored as a blob, with its digests.
pub(crate) struct Stored {
    pub blob: BlobRef,
    /// Keeps the blob's file from being removed until the record that points to it is committed.
    pub pin: BlobPin,
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    pub crc32c: Option<u32>,
}

/// Once a body has reached this many bytes, its MD5 is computed on a thread of its own, beside the
/// SHA-256, the CRC32C and the writes (MD5 is the slowest of them, about as slow as the others together).
/// Smaller bodies are hashed on the caller's thread: a thread would cost more than it saves.
const PARALLEL_AFTER: u64 = 1 << 20;

/// Size of the buffers a large body's bytes are copied into and handed to the MD5 thread in.
const BATCH: usize = 1 << 20;

/// Buffers of a large body in flight at once (being filled, hashed, waiting): the memory of one upload's
/// MD5 is at most this many [`BATCH`]es.
const BATCHES: usize = 3;

/// The MD5 of a body: on the caller's thread, or on a thread of its own fed [`BATCH`]-sized copies of the
/// body, whose buffers it hands back when done with them.
enum Md5Hasher {
    Inline(Md5),
    Parallel {
        batch: Vec<u8>,
        batches: SyncSender<Vec<u8>>,
        free: Receiver<Vec<u8>>,
        spare: usize,
        done: JoinHandle<Md5>,
    },
}

impl Md5Hasher {
    /// Moves the hashing to a thread of its own.
    fn go_parallel(&mut self) {
        if let Self::Inline(md5) = self {
            let mut md5 = std::mem::take(md5);
            let (batches, incoming) = sync_channel::<Vec<u8>>(BATCHES);
            let (give_back, free) = sync_channel::<Vec<u8>>(BATCHES);
            let done = std::thread::spawn(move || {
                for batch in incoming {
                    md5.update(&batch);
                    // The body's reader may have stopped (an error): then the buffer is simply dropped.
                    let _ = give_back.try_send(batch);
                }
                md5
            });
            *self = Self::Parallel { batch: Vec::with_capacity(BATCH), batches, free, spare: BATCHES - 1, done };
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        match self {
            Self::Inline(md5) => md5.update(data),
            Self::Parallel { batch, batches, free, spare, .. } => {
                while !data.is_empty() {
                    let n = (BATCH - batch.len()).min(data.len());
                    let (now, later) = data.split_at(n);
                    batch.extend_from_slice(now);
                    data = later;
                    if batch.len() == BATCH {
                        let next = if *spare > 0 {
                            *spare -= 1;
                            Vec::with_capacity(BATCH)
                        } else {
                            free.recv().map_or_else(
                                |_| Vec::with_capacity(BATCH),
                                |mut b| {
                                    b.clear();
                                    b
                                },
                            )
                        };
                        // The thread only stops when `batches` is dropped, so this cannot fail.
                        let _ = batches.send(std::mem::replace(batch, next));
                    }
                }
            }
        }
    }

    fn finalize(self) -> [u8; 16] {
        match self {
            Self::Inline(md5) => md5.finalize().into(),
            Self::Parallel { batch, batches, done, .. } => {
                if !batch.is_empty() {
                    let _ = batches.send(batch);
                }
                drop(batches);
                match done.join() {
                    Ok(md5) => md5.finalize().into(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

/// The digests of a body computed as it streams past: MD5 (the ETag), SHA-256 and, when the client sent
/// one, CRC32C; then checked against the ones the client sent. The artifact store's uploads use it, and so
/// does any other store of artifact bytes (the server's PostgreSQL backend), so that both compute and check
/// the same digests.
///
/// Past the first MiB, the MD5 is computed on a thread of its own, fed copies of the body in buffers of
/// 1 MiB (at most 3 at once), while the caller's thread computes the others. The SHA-256 is not computed
/// when the upload's [`PutOptions::verified_sha256`] gives it.
pub struct Digests {
    md5: Md5Hasher,
    sha: Option<Sha256>,
    crc: Option<crc_fast::Digest>,
    total: u64,
}

/// What [`Digests::finish`] computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digested {
    /// MD5 of the body (its ETag, in hex).
    pub md5: [u8; 16],
    /// SHA-256 of the body.
    pub sha256: [u8; 32],
    /// CRC32C of the body, computed only when the client sent one.
    pub crc32c: Option<u32>,
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digests")
            .field("bytes", &self.total)
            .field("crc32c", &self.crc.is_some())
            .finish_non_exhaustive()
    }
}

impl Digests {
    /// Digests for a body uploaded with `opts` (CRC32C only if `opts` expects one, SHA-256 unless `opts`
    /// gives a verified one).
    pub fn new(opts: &PutOptions) -> Self {
        Self {
            md5: Md5Hasher::Inline(Md5::new()),
            sha: opts.verified_sha256.is_none().then(Sha256::new),
            crc: opts.expected_crc32c.map(|_| crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi)),
            total: 0,
        }
    }

    /// Adds the next bytes of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.total >= PARALLEL_AFTER {
            self.md5.go_parallel();
        }
        self.total += chunk.len() as u64;
        self.md5.update(chunk);
        if let Some(sha) = self.sha.as_mut() {
            sha.update(chunk);
        }
        if let Some(c) = self.crc.as_mut() {
            c.update(chunk);
        }
    }

    /// The digests of the whole body, checked against those `opts` expects: a mismatch is
    /// [`ArtifactError::BadDigest`].
    pub fn finish(self, opts: &PutOptions) -> Result<Digested, ArtifactError> {
        let md5 = self.md5.finalize();
        let sha256: [u8; 32] = match self.sha {
            Some(sha) => sha.finalize().into(),
            None => opts.verified_sha256.unwrap_or_default(),
        };
        let crc32c = self.crc.map(|c| c.finalize() as u32);
        if let Some(expected) = opts.expected_md5.filter(|e| *e != md5) {
            return Err(ArtifactError::BadDigest(format!(
                "Content-MD5 {} but the body's is {}",
                hex::encode(expected),
                hex::encode(md5)
            )));
        }
        if let Some(expected) = opts.expected_sha256.filter(|e| *e != sha256) {
            return Err(ArtifactError::BadDigest(format!(
                "SHA-256 {} but the body's is {}",
                hex::encode(expected),
                hex::encode(sha256)
            )));
        }
        if let (Some(expected), Some(got)) = (opts.expected_crc32c, crc32c) {
            if expected != got {
                return Err(ArtifactError::BadDigest(format!("CRC32C {expected:08x} but the body's is {got:08x}")));
            }
        }
        Ok(Digested { md5, sha256, crc32c })
    }
}

/// Streams `body` into a new blob, synced when this returns, and checks the digests the client sent. On
/// any error the blob is left unreferenced (garbage collection reclaims it).
pub(crate) fn store_body(blobs: &BlobStore, body: &mut dyn Read, opts: &PutOptions) -> Result<Stored, ArtifactError> {
    let mut writer = blobs.writer()?;
    let mut digests = Digests::new(opts);
    let mut buf = vec![0u8; STEP];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArtifactError::Read(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        digests.update(chunk);
        writer.write_all(chunk).map_err(|e| ArtifactError::Store(crate::error::StoreError::Storage(io_storage(e))))?;
    }
    let Digested { md5, sha256, crc32c } = digests.finish(opts)?;
    let (blob, pin) = writer.finish()?;
    Ok(Stored { blob, pin, md5, sha256, crc32c })
}

/// The storage error inside an I/O error from a blob writer or reader (a corruption names its file and
/// offset), or the I/O error itself.
pub(crate) fn io_storage(e: std::io::Error) -> cairn_engine::StorageError {
    if e.get_ref().is_some_and(|inner| inner.is::<cairn_engine::StorageError>()) {
        if let Some(Ok(storage)) = e.into_inner().map(|inner| inner.downcast::<cairn_engine::StorageError>()) {
            return *storage;
        }
        return cairn_engine::StorageError::Io {
            path: "blob".into(),
            source: std::io::Error::other("blob I/O failed"),
        };
    }
    cairn_engine::StorageError::Io { path: "blob".into(), source: e }
}

/// The ETag of a multipart upload: the MD5 of its parts' binary MD5s, a dash and the number of parts.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut md5 = Md5::new();
    for m in part_md5s {
        md5.update(m);
    }
    format!("{}-{}", hex::encode(md5.finalize()), part_md5s.len())
}

/// The SHA-256 and CRC32C of bytes read from `reader` (an object being assembled from its parts).
pub(crate) fn digest_of(reader: &mut dyn Read) -> Result<[u8; 32], ArtifactError> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; STEP];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sha.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArtifactError::Store(crate::error::StoreError::Storage(io_storage(e)))),
        }
    }
    Ok(sha.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_computed_as_s3_does() {
        // Two parts "a" and "b": md5(md5("a") ++ md5("b")) with "-2".
        let a: [u8; 16] = Md5::digest(b"a").into();
        let b: [u8; 16] = Md5::digest(b"b").into();
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(multipart_etag(&[a, b]), format!("{}-2", hex::encode(Md5::digest(&both))));
    }
}
