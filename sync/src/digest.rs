//! Per-record and per-series hashes for verification: the same record, or the same metric series, hashes
//! the same wherever it is stored.

use std::collections::BTreeMap;

use cairn_store::metrics::Point;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// SHA-256 of a record's version and document.
pub type Digest = [u8; 32];

/// `(collection, id) → (version, digest)`: a state of records as verification compares them.
pub(crate) type Records = BTreeMap<(String, String), (u64, Digest)>;

/// `(run, key) → (points, digest)`: a state of metric series as verification compares them.
pub(crate) type SeriesDigests = BTreeMap<(String, String), (u64, Digest)>;

/// The hash of a metric series' points in history order, as verification and the PostgreSQL export
/// compare them: SHA-256 over each point's step (i64), timestamp in ms (i64) and value bits (u64), 24
/// bytes a point, little-endian.
#[derive(Clone, Default)]
pub(crate) struct PointsDigest {
    points: u64,
    hash: Sha256,
}

impl PointsDigest {
    pub fn add(&mut self, p: &Point) {
        self.points += 1;
        self.hash.update(p.step.to_le_bytes());
        self.hash.update(p.timestamp_ms.to_le_bytes());
        self.hash.update(p.value.to_bits().to_le_bytes());
    }

    /// Points added so far.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// The point count and the digest of the points added so far.
    pub fn finish(self) -> (u64, Digest) {
        (self.points, self.hash.finalize().into())
    }
}

/// Builds [`SeriesDigests`] from points that come series after series, each series' in history order.
#[derive(Default)]
pub(crate) struct SeriesDigester {
    done: SeriesDigests,
    current: Option<((String, String), PointsDigest)>,
}

impl SeriesDigester {
    /// Adds the next point: of the current series, or the first of the next one.
    pub fn add(&mut self, run: &str, key: &str, p: &Point) {
        if !matches!(&self.current, Some(((r, k), _)) if r == run && k == key) {
            if let Some((id, digest)) = self.current.take() {
                self.done.insert(id, digest.finish());
            }
            self.current = Some(((run.to_owned(), key.to_owned()), PointsDigest::default()));
        }
        if let Some((_, digest)) = self.current.as_mut() {
            digest.add(p);
        }
    }

    /// Every series with its point count and digest.
    pub fn finish(mut self) -> SeriesDigests {
        if let Some((id, digest)) = self.current.take() {
            self.done.insert(id, digest.finish());
        }
        self.done
    }
}

/// The hash of a record: SHA-256 over its version (u64 little-endian) followed by its document as
/// canonical JSON (object members sorted by key, no whitespace), so key order and formatting, which
/// PostgreSQL's `jsonb` does not keep, do not matter.
pub fn record_digest(version: u64, doc: &Value) -> Digest {
    let mut text = Vec::with_capacity(256);
    canonical(doc, &mut text);
    let mut h = Sha256::new();
    h.update(version.to_le_bytes());
    h.update(&text);
    h.finalize().into()
}

/// The hash of a record of `collection` as verification compares it: [`record_digest`], except that an
/// artifact object's blob pointers (`segments` of an `_artifact_objects` record), which name one machine's
/// blob files, do not count; its content is its `sha256`.
pub fn record_digest_in(collection: &str, version: u64, doc: &Value) -> Digest {
    if collection == cairn_store::artifacts::OBJECTS {
        record_digest(version, &cairn_store::artifacts::portable_document(doc))
    } else {
        record_digest(version, doc)
    }
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Lower-case hex of a SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order_but_not_values_or_versions() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "a": {"x": null, "y": [1, 2]}, "b": 1 }"#).unwrap();
        assert_eq!(record_digest(1, &a), record_digest(1, &b));
        assert_ne!(record_digest(2, &a), record_digest(1, &a));
        assert_ne!(record_digest(1, &json!({"b": 2, "a": {"y": [1, 2], "x": null}})), record_digest(1, &a));
        assert_ne!(record_digest(1, &json!({"b": 1, "a": {"y": [2, 1], "x": null}})), record_digest(1, &a));
    }
}
