//! Object bodies in and out, streamed: the request's [`StreamingBlob`] becomes a blocking
//! [`std::io::Read`] for `put_object` and `upload_part`, and an [`ObjectRead`] becomes the response's
//! body, read on the blocking pool in 64 KiB chunks. Between the async and the blocking side is a bounded
//! channel, so memory does not grow with an object's size: at most [`IN_FLIGHT`] chunks wait in it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use s3s::crypto::{Checksum, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Error, S3ErrorCode, StdError};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::backend::ObjectRead;

/// Size of the chunks an object is sent in.
pub const CHUNK: usize = 64 * 1024;

/// Chunks that may wait in a channel between the async and the blocking side.
pub const IN_FLIGHT: usize = 4;

/// The checksums of a request body that the artifact store does not verify itself, as the client sent
/// them (base64 of the big-endian digest). For an object the store verifies `Content-MD5`,
/// `x-amz-checksum-sha256` and `x-amz-checksum-crc32c`, so only CRC32, CRC64NVME and SHA-1 are left here;
/// for a part it verifies none. The body reader verifies them at the end of the body and fails the read
/// when one differs, so the store keeps nothing.
#[derive(Debug, Default, Clone)]
pub struct ExtraChecksums {
    /// `x-amz-checksum-crc32`.
    pub crc32: Option<String>,
    /// `x-amz-checksum-crc32c`.
    pub crc32c: Option<String>,
    /// `x-amz-checksum-crc64nvme`.
    pub crc64nvme: Option<String>,
    /// `x-amz-checksum-sha1`.
    pub sha1: Option<String>,
    /// `x-amz-checksum-sha256`.
    pub sha256: Option<String>,
    /// `Content-MD5`.
    pub md5: Option<String>,
}

/// One digest being computed over a body, and the one the client sent.
type Pending<H> = Option<(H, Vec<u8>)>;

/// The hashers of [`ExtraChecksums`] over a body.
struct Hashers {
    crc32: Pending<Crc32>,
    crc32c: Pending<Crc32c>,
    crc64nvme: Pending<Crc64Nvme>,
    sha1: Pending<Sha1>,
    sha256: Pending<Sha256>,
    md5: Pending<Md5>,
}

fn start<H: Checksum>(want: Option<Vec<u8>>) -> Pending<H> {
    want.map(|w| (H::new(), w))
}

fn update<H: Checksum>(p: &mut Pending<H>, data: &[u8]) {
    if let Some((h, _)) = p {
        h.update(data);
    }
}

fn differs<H: Checksum>(p: Pending<H>) -> bool {
    p.is_some_and(|(h, want)| h.finalize().as_ref() != want.as_slice())
}

impl Hashers {
    /// Hashers for the checksums given; `InvalidArgument` for one that is not base64.
    fn new(sums: &ExtraChecksums) -> Result<Self, S3Error> {
        let decode = |name: &str, v: &Option<String>| -> Result<Option<Vec<u8>>, S3Error> {
            v.as_deref()
                .map(|s| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|_| super::errors::invalid(format!("{name} is not base64")))
                })
                .transpose()
        };
        Ok(Self {
            crc32: start(decode("x-amz-checksum-crc32", &sums.crc32)?),
            crc32c: start(decode("x-amz-checksum-crc32c", &sums.crc32c)?),
            crc64nvme: start(decode("x-amz-checksum-crc64nvme", &sums.crc64nvme)?),
            sha1: start(decode("x-amz-checksum-sha1", &sums.sha1)?),
            sha256: start(decode("x-amz-checksum-sha256", &sums.sha256)?),
            md5: start(decode("Content-MD5", &sums.md5)?),
        })
    }

    fn update(&mut self, data: &[u8]) {
        update(&mut self.crc32, data);
        update(&mut self.crc32c, data);
        update(&mut self.crc64nvme, data);
        update(&mut self.sha1, data);
        update(&mut self.sha256, data);
        update(&mut self.md5, data);
    }

    /// The header of the first checksum that differs from the body's.
    fn mismatch(self) -> Option<&'static str> {
        [
            (differs(self.crc32), "x-amz-checksum-crc32"),
            (differs(self.crc32c), "x-amz-checksum-crc32c"),
            (differs(self.crc64nvme), "x-amz-checksum-crc64nvme"),
            (differs(self.sha1), "x-amz-checksum-sha1"),
            (differs(self.sha256), "x-amz-checksum-sha256"),
            (differs(self.md5), "Content-MD5"),
        ]
        .into_iter()
        .find_map(|(bad, name)| bad.then_some(name))
    }
}

/// Why a body read failed, kept for the S3 answer: the artifact store sees only an `io::Error`.
#[derive(Debug, Clone, Default)]
pub struct BodyFailure(Arc<Mutex<Option<S3Error>>>);

impl BodyFailure {
    fn set(&self, err: S3Error) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(err);
        }
    }

    /// The failure, if the body failed.
    pub fn take(&self) -> Option<S3Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A request body as a blocking reader. Fed by a task that pulls the body's stream into a channel of
/// [`IN_FLIGHT`] chunks; the task stops when the reader is dropped.
pub struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, StdError>>,
    chunk: Bytes,
    hashers: Option<Hashers>,
    failure: BodyFailure,
}

impl BodyReader {
    /// A reader of `body` (none: an empty body) verifying `sums`, and where its failure will be told.
    /// Must be called on a tokio runtime (it spawns the feeding task).
    pub fn new(body: Option<StreamingBlob>, sums: &ExtraChecksums) -> Result<(Self, BodyFailure), S3Error> {
        let hashers = Hashers::new(sums)?;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        if let Some(mut body) = body {
            tokio::spawn(async move {
                while let Some(item) = body.next().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
        }
        let failure = BodyFailure::default();
        Ok((Self { rx, chunk: Bytes::new(), hashers: Some(hashers), failure: failure.clone() }, failure))
    }

    fn fail(&self, err: S3Error) -> io::Error {
        let e = io::Error::other(err.message().unwrap_or("the request body failed").to_owned());
        self.failure.set(err);
        e
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    let err = match e.downcast::<S3Error>() {
                        Ok(s3) => *s3,
                        Err(other) => S3Error::with_message(
                            S3ErrorCode::IncompleteBody,
                            format!("the request body failed: {other}"),
                        ),
                    };
                    return Err(self.fail(err));
                }
                None => {
                    if let Some(name) = self.hashers.take().and_then(Hashers::mismatch) {
                        return Err(self.fail(S3Error::with_message(
                            S3ErrorCode::BadDigest,
                            format!("the {name} sent differs from the body's"),
                        )));
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        let head = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&head);
        if let Some(h) = &mut self.hashers {
            h.update(&head);
        }
        Ok(n)
    }
}

/// The body of a GET: `reader` read on the blocking pool in [`CHUNK`]-byte chunks, with its exact length.
/// `permit` (a place among the artifact tasks) is held until the reading ends.
pub fn object_body(mut reader: Box<dyn ObjectRead>, permit: OwnedSemaphorePermit) -> StreamingBlob {
    let remaining = reader.len();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            let result = loop {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "reading an object failed");
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return; // the client went away
            }
        }
    });
    StreamingBlob::new(ObjectStream { rx, remaining })
}

/// The chunks of an object as the response body's stream.
struct ObjectStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl Stream for ObjectStream {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) if self.remaining > 0 => Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the object ended before its length",
            ))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ByteStream for ObjectStream {
    fn remaining_length(&self) -> RemainingLength {
        usize::try_from(self.remaining).map_or_else(|_| RemainingLength::unknown(), RemainingLength::new_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(chunks: Vec<Result<Bytes, io::Error>>) -> StreamingBlob {
        StreamingBlob::wrap(futures_util::stream::iter(chunks))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_reads_back_whole_and_its_checksums_are_verified() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = data.chunks(10_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let crc32 = base64::engine::general_purpose::STANDARD.encode(Crc32::checksum(&data));
        let sums = ExtraChecksums { crc32: Some(crc32), ..ExtraChecksums::default() };
        let (mut reader, failure) = BodyReader::new(Some(blob(chunks)), &sums).unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, data);
        assert!(failure.take().is_none());

        let sums = ExtraChecksums { sha1: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()), ..ExtraChecksums::default() };
        let (mut reader, failure) = BodyReader::new(Some(blob(vec![Ok(Bytes::from_static(b"abc"))])), &sums).unwrap();
        let res = tokio::task::spawn_blocking(move || reader.read_to_end(&mut Vec::new())).await.unwrap();
        assert!(res.is_err());
        assert_eq!(failure.take().unwrap().code(), &S3ErrorCode::BadDigest);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_stream_fails_the_read() {
        let chunks = vec![Ok(Bytes::from_static(b"abc")), Err(io::Error::other("cut"))];
        let (mut reader, failure) = BodyReader::new(Some(blob(chunks)), &ExtraChecksums::default()).unwrap();
        let res = tokio::task::spawn_blocking(move || reader.read_to_end(&mut Vec::new())).await.unwrap();
        assert!(res.is_err());
        assert_eq!(failure.take().unwrap().code(), &S3ErrorCode::IncompleteBody);
        assert!(BodyReader::new(None, &ExtraChecksums { crc32: Some("!!".into()), ..Default::default() }).is_err());
    }
}
