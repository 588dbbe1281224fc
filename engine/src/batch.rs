//! Atomic write batches and their encoding, which is also the payload of a WAL record.
//!
//! ```text
//! sequence u64 LE | count u32 LE | count x entry
//! entry = kind u8 | key_len u32 LE | key | (kind = Put) value_len u32 LE | value
//! ```
//! Entry `i` gets sequence `sequence + i`. See `docs/format/wal.md`.

#![deny(clippy::indexing_slicing)]

use crate::error::WriteError;
use crate::format::coding::{put_u32, put_u64, Cursor, DecodeError};
use crate::format::key::ValueKind;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 256 * 1024 * 1024;
/// Largest encoded batch accepted, in bytes.
pub const MAX_BATCH_LEN: usize = 1024 * 1024 * 1024;

/// Length of the batch header: sequence (8) and count (4). A WAL sync marker is a header alone.
pub(crate) const BATCH_HEADER_LEN: usize = 12;

/// A set of puts and deletes applied atomically: after a crash either all of them are visible or none.
///
/// Later operations on the same key win over earlier ones in the same batch.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
    invalid: Option<Invalid>,
    /// Places in `rep` that receive the commit's sequence number when the batch is committed.
    stamps: Vec<Stamp>,
}

/// Where a commit sequence number is written into an operation when its batch commits.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    /// 8 bytes of a key, big-endian (so keys sort in commit order).
    KeyBe(usize),
    /// 8 bytes of a value, little-endian.
    ValueLe(usize),
}

/// The first invalid operation added to a batch, reported at commit.
#[derive(Debug, Clone, Copy)]
enum Invalid {
    Key(usize),
    Value(usize),
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        let mut rep = Vec::with_capacity(256);
        rep.resize(BATCH_HEADER_LEN, 0);
        Self { rep, count: 0, invalid: None, stamps: Vec::new() }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.put_parts(&[key.as_ref()], &[value.as_ref()])
    }

    /// Sets the key made of `key` parts to the value made of `value` parts, copying each part once.
    fn put_parts(&mut self, key: &[&[u8]], value: &[&[u8]]) -> &mut Self {
        let key_len: usize = key.iter().map(|p| p.len()).sum();
        let value_len: usize = value.iter().map(|p| p.len()).sum();
        self.check(key_len, Some(value_len));
        self.rep.reserve(9 + key_len + value_len);
        self.rep.push(ValueKind::Put as u8);
        put_u32(&mut self.rep, key_len as u32);
        key.iter().for_each(|p| self.rep.extend_from_slice(p));
        put_u32(&mut self.rep, value_len as u32);
        value.iter().for_each(|p| self.rep.extend_from_slice(p));
        self.count += 1;
        self
    }

    /// Deletes `key` (a no-op if it is absent).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        let key = key.as_ref();
        self.check(key.len(), None);
        self.rep.push(ValueKind::Delete as u8);
        put_u32(&mut self.rep, key.len() as u32);
        self.rep.extend_from_slice(key);
        self.count += 1;
        self
    }

    /// Sets the key `prefix ++ commit_seq (u64 BE) ++ op_index (u32 BE)` to the concatenation of the `value`
    /// parts, where `commit_seq` is the sequence number [`Db::write`](crate::Db::write) returns for this
    /// batch and `op_index` the operation's position in it. Keys written this way sort in commit order: an
    /// extension point for logs kept inside the keyspace (the record store's change feed), which learn their
    /// key only when the batch commits.
    #[expect(clippy::big_endian_bytes, reason = "big-endian keys sort in numeric order")]
    pub fn put_commit_keyed(&mut self, prefix: &[u8], value: &[&[u8]]) -> &mut Self {
        let at = self.rep.len() + 1 + 4 + prefix.len();
        let op_index = self.count.to_be_bytes();
        self.put_parts(&[prefix, &[0; 8], &op_index], value);
        self.stamps.push(Stamp::KeyBe(at));
        self
    }

    /// Sets `key` to `commit_seq (u64 LE) ++ head ++ body`, `commit_seq` as in
    /// [`WriteBatch::put_commit_keyed`]: an extension point for values that carry the commit that wrote
    /// them (the record store stamps every record with it, so that two writes of a key never look alike).
    pub fn put_commit_prefixed(&mut self, key: &[u8], head: &[u8], body: &[u8]) -> &mut Self {
        let at = self.rep.len() + 1 + 4 + key.len() + 4;
        self.put_parts(&[key], &[&[0; 8], head, body]);
        self.stamps.push(Stamp::ValueLe(at));
        self
    }

    /// The keys the batch writes, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries().filter_map(Result::ok).map(|(_, k, _)| k)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes: what the batch costs in the WAL.
    pub fn encoded_len(&self) -> usize {
        self.rep.len()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        self.rep.truncate(BATCH_HEADER_LEN);
        self.count = 0;
        self.invalid = None;
        self.stamps.clear();
    }

    /// Notes the first invalid operation: a key of `key_len` bytes and, for a put, a value of `value_len`.
    fn check(&mut self, key_len: usize, value_len: Option<usize>) {
        if self.invalid.is_some() {
            return;
        }
        if key_len == 0 || key_len > MAX_KEY_LEN {
            self.invalid = Some(Invalid::Key(key_len));
        } else if let Some(len) = value_len.filter(|len| *len > MAX_VALUE_LEN) {
            self.invalid = Some(Invalid::Value(len));
        }
    }

    /// Rejects a batch holding an invalid key or value, or too large as a whole.
    pub(crate) fn validate(&self) -> Result<(), WriteError> {
        match self.invalid {
            Some(Invalid::Key(len)) => return Err(WriteError::InvalidKey { len, max: MAX_KEY_LEN }),
            Some(Invalid::Value(len)) => return Err(WriteError::ValueTooLarge { len, max: MAX_VALUE_LEN }),
            None => {}
        }
        if self.rep.len() > MAX_BATCH_LEN {
            return Err(WriteError::BatchTooLarge { len: self.rep.len(), max: MAX_BATCH_LEN });
        }
        Ok(())
    }

    /// Stamps the batch with its first sequence number (and its commit sequence, the last one, wherever
    /// an operation asked for it) and returns the encoded record payload.
    #[expect(clippy::big_endian_bytes, reason = "commit sequences in keys are big-endian so keys sort in commit order")]
    pub(crate) fn stamp(&mut self, first_seq: u64) -> &[u8] {
        let mut header = Vec::with_capacity(BATCH_HEADER_LEN);
        put_u64(&mut header, first_seq);
        put_u32(&mut header, self.count);
        if let Some(h) = self.rep.get_mut(..BATCH_HEADER_LEN) {
            h.copy_from_slice(&header);
        }
        let commit_seq = first_seq + u64::from(self.count.saturating_sub(1));
        for stamp in &self.stamps {
            let (at, bytes) = match *stamp {
                Stamp::KeyBe(at) => (at, commit_seq.to_be_bytes()),
                Stamp::ValueLe(at) => (at, commit_seq.to_le_bytes()),
            };
            if let Some(dst) = self.rep.get_mut(at..at + 8) {
                dst.copy_from_slice(&bytes);
            }
        }
        &self.rep
    }

    /// The encoded operations as last stamped (what [`stamp`](Self::stamp) returned).
    pub(crate) fn payload(&self) -> &[u8] {
        &self.rep
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The operations in order, with their kinds; the batch is always well-formed.
    pub(crate) fn entries(&self) -> BatchEntries<'_> {
        BatchEntries { cursor: Cursor::new(self.rep.get(BATCH_HEADER_LEN..).unwrap_or_default()), left: self.count }
    }
}

/// A precondition of [`Db::write_if`](crate::Db::write_if): no version of `key` (value or tombstone) was
/// committed after sequence `seq`. Read at a [`Snapshot`](crate::Snapshot) and require its keys unchanged
/// since [`Snapshot::sequence`](crate::Snapshot::sequence) for an optimistic transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub(crate) key: Vec<u8>,
    pub(crate) seq: u64,
}

impl Condition {
    /// Requires that `key` was not written after sequence `seq`.
    pub fn unchanged_since(key: impl Into<Vec<u8>>, seq: u64) -> Self {
        Self { key: key.into(), seq }
    }
}

/// A decoded batch: its first sequence and its entries.
pub(crate) struct DecodedBatch<'a> {
    pub first_seq: u64,
    pub count: u32,
    pub entries: BatchEntries<'a>,
}

/// Decodes a WAL record payload.
pub(crate) fn decode(payload: &[u8]) -> Result<DecodedBatch<'_>, DecodeError> {
    let mut c = Cursor::new(payload);
    let first_seq = c.u64("batch sequence")?;
    let count = c.u32("batch count")?;
    let body = payload.get(BATCH_HEADER_LEN..).unwrap_or_default();
    Ok(DecodedBatch { first_seq, count, entries: BatchEntries { cursor: Cursor::new(body), left: count } })
}

/// Iterator over `(kind, key, value)`; yields an error (offsets relative to the entries) for malformed input.
pub(crate) struct BatchEntries<'a> {
    cursor: Cursor<'a>,
    left: u32,
}

impl<'a> BatchEntries<'a> {
    fn next_entry(&mut self) -> Result<(ValueKind, &'a [u8], &'a [u8]), DecodeError> {
        let at = self.cursor.pos();
        let kind =
            ValueKind::from_u8(self.cursor.u8("entry kind")?).ok_or(DecodeError::new(at, "unknown entry kind"))?;
        let key = self.cursor.len_prefixed("entry key")?;
        let value = match kind {
            ValueKind::Put => self.cursor.len_prefixed("entry value")?,
            ValueKind::Delete => &[],
        };
        Ok((kind, key, value))
    }

    /// Checks that the entries end exactly where the count says.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.left == 0 && !self.cursor.is_empty() {
            return Err(DecodeError::new(self.cursor.pos() + BATCH_HEADER_LEN, "bytes after the last entry"));
        }
        Ok(())
    }
}

impl<'a> Iterator for BatchEntries<'a> {
    type Item = Result<(ValueKind, &'a [u8], &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = self.next_entry().map_err(|e| DecodeError::new(e.offset + BATCH_HEADER_LEN, e.reason));
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").delete(b"b").put(b"c", b"");
        assert_eq!(b.len(), 3);
        let payload = b.stamp(42).to_vec();
        let d = decode(&payload).unwrap();
        assert_eq!((d.first_seq, d.count), (42, 3));
        let got: Vec<_> = d.entries.map(|e| e.unwrap()).collect();
        assert_eq!(
            got,
            vec![(ValueKind::Put, &b"a"[..], &b"1"[..]), (ValueKind::Delete, b"b", b""), (ValueKind::Put, b"c", b"")]
        );
    }

    #[test]
    #[expect(clippy::big_endian_bytes, reason = "stamped keys carry big-endian numbers")]
    fn commit_sequence_stamps_land_in_keys_and_values() {
        let mut b = WriteBatch::new();
        b.put(b"x", b"1").put_commit_keyed(b"feed/", &[b"ev", b"ent"]).put_commit_prefixed(b"rec", b"d", b"oc");
        let payload = b.stamp(10).to_vec();
        let got: Vec<_> = decode(&payload).unwrap().entries.map(|e| e.unwrap()).collect();
        let commit = 12u64;
        let mut feed_key = b"feed/".to_vec();
        feed_key.extend_from_slice(&commit.to_be_bytes());
        feed_key.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(got[1].1, &feed_key[..]);
        assert_eq!(got[1].2, b"event");
        let mut rec = commit.to_le_bytes().to_vec();
        rec.extend_from_slice(b"doc");
        assert_eq!(got[2].2, &rec[..]);
        assert_eq!(b.keys().collect::<Vec<_>>(), vec![&b"x"[..], &feed_key[..], b"rec"]);
    }

    #[test]
    fn malformed_payloads_error() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value");
        let payload = b.stamp(1).to_vec();
        for cut in 0..payload.len() {
            let res = decode(&payload[..cut]).and_then(|d| d.entries.collect::<Result<Vec<_>, _>>().map(drop));
            assert!(res.is_err(), "cut at {cut}");
        }
        let mut bad = payload.clone();
        bad[12] = 7;
        assert!(decode(&bad).unwrap().entries.next().unwrap().is_err());
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let mut b = WriteBatch::new();
        b.put(b"", b"x");
        assert!(matches!(b.validate(), Err(WriteError::InvalidKey { len: 0, .. })));
        let mut b = WriteBatch::new();
        b.put(vec![0u8; MAX_KEY_LEN + 1], b"x");
        assert!(matches!(b.validate(), Err(WriteError::InvalidKey { .. })));
        b.clear();
        b.put(b"k", b"v");
        assert!(b.validate().is_ok());
    }
}
