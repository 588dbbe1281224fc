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

/// Once a body has reached this many bytes, its MD5 is computed on a thread of its own, beside the
/// SHA-256, the CRC32C and the writes (MD5 is the slowest of them, about as slow as the others together).
/// Smaller bodies are hashed on the caller's thread: a thread would cost more than it saves.
const PARALLEL_AFTER: u64 = 1 << 20;

/// Size of the buffers a large body is read into and handed to the MD5 thread in.
const BATCH: usize = 1 << 20;

/// Buffers of a large body in flight at once (read, being hashed, waiting): the memory of one upload is
/// at most this many [`BATCH`]es.
const BATCHES: usize = 3;

/// A body stored as a blob, with its digests.
pub(crate) struct Stored {
    pub blob: BlobRef,
    /// Keeps the blob's file from being removed until the record that points to it is committed.
    pub pin: BlobPin,
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    pub crc32c: Option<u32>,
}

/// A buffer of a body and how many of its bytes are filled.
type Batch = (Vec<u8>, usize);

/// The MD5 of a body: on the caller's thread (reusing one buffer), or on a thread of its own fed
/// [`BATCH`]-sized buffers, which it hands back when done with them.
enum Md5Hasher {
    Inline { md5: Md5, buf: Vec<u8> },
    Parallel { batches: SyncSender<Batch>, free: Receiver<Vec<u8>>, spare: usize, done: JoinHandle<Md5> },
}

impl Md5Hasher {
    fn new() -> Self {
        Self::Inline { md5: Md5::new(), buf: vec![0; STEP] }
    }

    /// Moves the hashing to a thread of its own.
    fn go_parallel(&mut self) {
        if let Self::Inline { md5, .. } = self {
            let mut md5 = std::mem::take(md5);
            let (batches, incoming) = sync_channel::<Batch>(BATCHES);
            let (give_back, free) = sync_channel::<Vec<u8>>(BATCHES);
            let done = std::thread::spawn(move || {
                for (batch, len) in incoming {
                    md5.update(batch.get(..len).unwrap_or_default());
                    // The reader may have stopped (an error): then the buffer is simply dropped.
                    let _ = give_back.try_send(batch);
                }
                md5
            });
            *self = Self::Parallel { batches, free, spare: BATCHES, done };
        }
    }

    /// A buffer for the next bytes of the body: the inline one, or for the MD5 thread a new one while
    /// fewer than [`BATCHES`] exist, else one the thread is done with.
    fn buffer(&mut self) -> Vec<u8> {
        match self {
            Self::Inline { buf, .. } => std::mem::take(buf),
            Self::Parallel { free, spare, .. } => {
                if *spare > 0 {
                    *spare -= 1;
                    return vec![0; BATCH];
                }
                free.recv().unwrap_or_else(|_| vec![0; BATCH])
            }
        }
    }

    /// Hashes the first `len` bytes of `buf` (on the MD5 thread, which hands the buffer back when done).
    fn update(&mut self, buf: Vec<u8>, len: usize) {
        match self {
            Self::Inline { md5, buf: slot } => {
                md5.update(buf.get(..len).unwrap_or_default());
                *slot = buf;
            }
            Self::Parallel { batches, .. } => {
                // The thread only stops when `batches` is dropped, so this cannot fail.
                let _ = batches.send((buf, len));
            }
        }
    }

    fn finalize(self) -> [u8; 16] {
        match self {
            Self::Inline { md5, .. } => md5.finalize().into(),
            Self::Parallel { batches, done, .. } => {
                drop(batches);
                match done.join() {
                    Ok(md5) => md5.finalize().into(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

/// Fills `buf` from `body` as far as it goes; the bytes read (fewer than its length only at the end of the
/// body).
fn fill(body: &mut dyn Read, buf: &mut [u8]) -> Result<usize, ArtifactError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match body.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArtifactError::Read(e)),
        }
    }
    Ok(filled)
}

/// Streams `body` into a new blob, synced when this returns, and checks the digests the client sent. On
/// any error the blob is left unreferenced (garbage collection reclaims it). Memory: one [`STEP`] for a
/// body of up to [`PARALLEL_AFTER`] bytes; past that, at most [`BATCHES`] buffers of [`BATCH`] bytes, as
/// the body's MD5 is then computed on a second thread while this one computes the SHA-256 and CRC32C and
/// writes.
pub(crate) fn store_body(blobs: &BlobStore, body: &mut dyn Read, opts: &PutOptions) -> Result<Stored, ArtifactError> {
    let mut writer = blobs.writer()?;
    let mut md5 = Md5Hasher::new();
    let mut sha = opts.verified_sha256.is_none().then(Sha256::new);
    let mut crc = opts.expected_crc32c.map(|_| crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi));
    let mut total = 0u64;
    loop {
        if total >= PARALLEL_AFTER {
            md5.go_parallel();
        }
        let mut buf = md5.buffer();
        let n = fill(body, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let bytes = buf.get(..n).unwrap_or_default();
        if let Some(sha) = sha.as_mut() {
            sha.update(bytes);
        }
        if let Some(c) = crc.as_mut() {
            c.update(bytes);
        }
        writer.write_all(bytes).map_err(|e| ArtifactError::Store(crate::error::StoreError::Storage(io_storage(e))))?;
        md5.update(buf, n);
    }
    let md5 = md5.finalize();
    let sha256: [u8; 32] = match (sha, opts.verified_sha256) {
        (Some(sha), _) => sha.finalize().into(),
        (None, verified) => verified.unwrap_or_default(),
    };
    let crc32c = crc.map(|c| c.finalize() as u32);
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
pub(crate) fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
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
