//! The objects' bytes in the object store: a body streamed into a stored object of a new name (one request
//! for a body up to [`PART`], an object-store multipart upload of [`PART`]-sized parts for a larger one:
//! memory holds at most one part), and a reader of a range of a sequence of stored objects.

use std::collections::VecDeque;
use std::io::{self, Read};

use bytes::Bytes;
use cairn_store::artifacts::{new_upload_id, ArtifactError, Digested, Digests, PutOptions};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, PutPayload};

use super::{os, Inner};
use crate::backend::ObjectRead;

/// The most bytes of a body held in memory: a body up to this is stored in one request, a longer one in
/// parts of this size.
pub(crate) const PART: usize = 8 << 20;

/// Bytes read from a body per step.
const STEP: usize = 64 * 1024;

/// A body in the object store, with its digests.
pub(crate) struct Written {
    /// The stored object's path.
    pub path: String,
    pub size: u64,
    pub digests: Digested,
}

/// Fills `buf` from `body` up to [`PART`] bytes; `false` once the body has ended.
fn fill(body: &mut dyn Read, buf: &mut Vec<u8>, digests: &mut Digests) -> Result<bool, ArtifactError> {
    let mut step = vec![0u8; STEP];
    while buf.len() < PART {
        let want = STEP.min(PART - buf.len());
        let n = match body.read(&mut step[..want]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArtifactError::Read(e)),
        };
        let chunk = &step[..n];
        digests.update(chunk);
        buf.extend_from_slice(chunk);
    }
    Ok(true)
}

impl Inner {
    /// A new, never used path for stored bytes: `<prefix>/objects/<2 hex>/<32 hex>`.
    fn new_path(&self) -> Path {
        let id = new_upload_id();
        self.objects_prefix.child(&id[..2]).child(id.as_str())
    }

    /// Streams `body` into a new stored object, checking the digests `opts` expects. The body is read
    /// outside the runtime (it may block on the request's stream); each store request runs on it. When a
    /// digest differs or the body fails, nothing is left stored (a large body's multipart upload is
    /// aborted); bytes left by a crash are garbage collection's.
    pub(crate) fn write_body(&self, body: &mut dyn Read, opts: &PutOptions) -> Result<Written, ArtifactError> {
        let path = self.new_path();
        let mut digests = Digests::new(opts);
        let mut buf = Vec::new();
        let more = fill(body, &mut buf, &mut digests)?;
        if !more {
            let digests = digests.finish(opts)?;
            let size = buf.len() as u64;
            self.block_on(self.store.put(&path, PutPayload::from(buf))).map_err(os)?;
            return Ok(Written { path: path.to_string(), size, digests });
        }
        let mut upload = self.block_on(self.store.put_multipart(&path)).map_err(os)?;
        let mut size = 0u64;
        let result = (|| {
            let mut more = more;
            loop {
                let part = std::mem::take(&mut buf);
                size += part.len() as u64;
                if !part.is_empty() {
                    self.block_on(upload.put_part(PutPayload::from(part))).map_err(os)?;
                }
                if !more {
                    break;
                }
                buf = Vec::with_capacity(PART);
                more = fill(body, &mut buf, &mut digests)?;
            }
            Ok::<_, ArtifactError>(())
        })()
        .and_then(|()| digests.finish(opts));
        match result {
            Ok(digests) => {
                self.block_on(upload.complete()).map_err(os)?;
                Ok(Written { path: path.to_string(), size, digests })
            }
            Err(e) => {
                if let Err(abort) = self.block_on(upload.abort()) {
                    tracing::warn!(error = %abort, path = %path, "aborting an object-store upload failed");
                }
                Err(e)
            }
        }
    }

    /// A reader of bytes `start..end` of the concatenation of the stored objects `segments` (path and
    /// length, in order).
    pub(crate) fn reader(
        self: &std::sync::Arc<Self>,
        segments: &[(String, u64)],
        start: u64,
        end: u64,
    ) -> SegmentReader {
        let mut pending = VecDeque::new();
        let mut at = 0u64;
        for (path, len) in segments {
            let (lo, hi) = (at, at + len);
            at = hi;
            if hi <= start || lo >= end {
                continue;
            }
            pending.push_back((path.clone(), start.max(lo) - lo, end.min(hi) - lo));
        }
        SegmentReader {
            inner: self.clone(),
            pending,
            current: None,
            left_in_current: 0,
            chunk: Bytes::new(),
            len: end.saturating_sub(start),
        }
    }
}

/// The bytes of an object (or a range of it), streamed from its stored objects in order, each byte count
/// checked: a stored object shorter or longer than its row says is an error, never wrong bytes.
pub(crate) struct SegmentReader {
    inner: std::sync::Arc<Inner>,
    /// What is left to read: a stored object and the range within it.
    pending: VecDeque<(String, u64, u64)>,
    current: Option<(String, BoxStream<'static, object_store::Result<Bytes>>)>,
    left_in_current: u64,
    chunk: Bytes,
    len: u64,
}

impl SegmentReader {
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            if let Some((path, stream)) = self.current.as_mut() {
                match self.inner.block_on(stream.next()) {
                    Some(Ok(bytes)) => {
                        let n = bytes.len() as u64;
                        if n > self.left_in_current {
                            return Err(io::Error::other(format!("stored object {path} is longer than recorded")));
                        }
                        self.left_in_current -= n;
                        self.chunk = bytes;
                        return Ok(true);
                    }
                    Some(Err(e)) => return Err(io::Error::other(format!("reading stored object {path}: {e}"))),
                    None if self.left_in_current > 0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("stored object {path} is shorter than recorded"),
                        ))
                    }
                    None => self.current = None,
                }
            }
            let Some((path, from, to)) = self.pending.pop_front() else { return Ok(false) };
            if from == to {
                continue;
            }
            let location = Path::from(path.as_str());
            let opts = GetOptions { range: Some(GetRange::Bounded(from..to)), ..GetOptions::default() };
            let got = self
                .inner
                .block_on(self.inner.store.get_opts(&location, opts))
                .map_err(|e| io::Error::other(format!("reading stored object {path}: {e}")))?;
            self.left_in_current = to - from;
            self.current = Some((path, got.into_stream()));
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len());
        let head = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&head);
        Ok(n)
    }
}

impl ObjectRead for SegmentReader {
    fn len(&self) -> u64 {
        self.len
    }
}
