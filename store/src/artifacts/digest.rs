//! Streaming a body into a blob while computing the digests S3 clients check: MD5 (the ETag), SHA-256 (the
//! object's content address) and, when the client sent one, CRC32C.

use std::io::{Read, Write};

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

/// The digests of a body computed as it streams past: MD5 (the ETag), SHA-256 and, when the client sent
/// one, CRC32C; then checked against the ones the client sent. The artifact store's uploads use it, and so
/// does any other store of artifact bytes (the server's PostgreSQL backend), so that both compute and check
/// the same digests.
pub struct Digests {
    md5: Md5,
    sha: Sha256,
    crc: Option<crc_fast::Digest>,
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
        f.debug_struct("Digests").field("crc32c", &self.crc.is_some()).finish_non_exhaustive()
    }
}

impl Digests {
    /// Digests for a body uploaded with `opts` (CRC32C only if `opts` expects one).
    pub fn new(opts: &PutOptions) -> Self {
        Self {
            md5: Md5::new(),
            sha: Sha256::new(),
            crc: opts.expected_crc32c.map(|_| crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi)),
        }
    }

    /// Adds the next bytes of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        self.sha.update(chunk);
        if let Some(c) = self.crc.as_mut() {
            c.update(chunk);
        }
    }

    /// The digests of the whole body, checked against those `opts` expects: a mismatch is
    /// [`ArtifactError::BadDigest`].
    pub fn finish(self, opts: &PutOptions) -> Result<Digested, ArtifactError> {
        let md5: [u8; 16] = self.md5.finalize().into();
        let sha256: [u8; 32] = self.sha.finalize().into();
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
