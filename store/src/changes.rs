//! The change feed: one event per record write, keyed by commit sequence, readable in commit order from any
//! retained sequence; durable consumer cursors; trimming by acknowledgement and by age.

#![deny(clippy::indexing_slicing)]

use std::io::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;

/// What a change did to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// The record was created.
    Insert,
    /// The record was replaced.
    Update,
    /// The record was deleted; the change carries no document.
    Delete,
}

/// One committed change to one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Commit sequence number: changes of one transaction share it.
    pub seq: u64,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// What happened.
    pub op: ChangeOp,
    /// The record's version after the change (for a delete: the version the record would have had).
    pub version: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The document after the change; `None` for a delete (a tombstone).
    pub doc: Option<Value>,
    /// For an update or a delete: the top-level `project` field of the document before the change, if it had
    /// one (events written before this field existed carry none). Lets a reader scoped to a project see a
    /// record leave it. Not part of `Change`'s own serde form.
    #[serde(skip)]
    pub prev_project: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct Event<'a> {
    collection: std::borrow::Cow<'a, str>,
    id: std::borrow::Cow<'a, str>,
    op: ChangeOp,
    version: u64,
    at_ms: i64,
    doc: Option<std::borrow::Cow<'a, Value>>,
    #[serde(default)]
    prev_project: Option<Value>,
}

/// Encodes an event around `doc`, the document already serialized as JSON: the event is `head ++ doc ++
/// tail` (`doc` `null` for none), returned as `head` and `tail` so that the document is spliced in, not
/// copied or re-encoded. `prev_project` (the previous document's `project`) is written when given.
pub(crate) fn encode_event(
    collection: &str,
    id: &str,
    op: ChangeOp,
    version: u64,
    at_ms: i64,
    prev_project: Option<&Value>,
    doc: Option<&[u8]>,
) -> (Vec<u8>, &'static [u8]) {
    let mut head = Vec::with_capacity(96 + collection.len() + id.len());
    let op = match op {
        ChangeOp::Insert => "insert",
        ChangeOp::Update => "update",
        ChangeOp::Delete => "delete",
    };
    head.extend_from_slice(b"{\"collection\":");
    let _ = serde_json::to_writer(&mut head, collection);
    head.extend_from_slice(b",\"id\":");
    let _ = serde_json::to_writer(&mut head, id);
    let _ = write!(head, ",\"op\":\"{op}\",\"version\":{version},\"at_ms\":{at_ms}");
    if let Some(p) = prev_project {
        head.extend_from_slice(b",\"prev_project\":");
        let _ = serde_json::to_writer(&mut head, p);
    }
    head.extend_from_slice(b",\"doc\":");
    (head, if doc.is_some() { b"}" } else { b"null}" })
}

/// Decodes a change-feed entry: key `0x03 | seq u64 BE | op u32 BE`, value the event's JSON.
pub(crate) fn decode_event(key: &[u8], value: &[u8]) -> Result<Change, StoreError> {
    let seq = key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::undecodable(key, "change key too short"))?;
    let e: Event<'_> = serde_json::from_slice(value).map_err(|e| StoreError::undecodable(key, e.to_string()))?;
    Ok(Change {
        seq,
        collection: e.collection.into_owned(),
        id: e.id.into_owned(),
        op: e.op,
        version: e.version,
        at_ms: e.at_ms,
        doc: e.doc.map(std::borrow::Cow::into_owned),
        prev_project: e.prev_project,
    })
}

/// The key at which changes with sequence `seq` start.
#[expect(clippy::big_endian_bytes, reason = "big-endian keys sort in commit order")]
pub(crate) fn seq_key(seq: u64) -> Vec<u8> {
    let mut k = crate::keys::CHANGES.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    #[expect(clippy::big_endian_bytes, reason = "change keys carry big-endian numbers")]
    fn events_round_trip() {
        let doc = json!({"status": "PENDING"});
        let text = serde_json::to_vec(&doc).unwrap();
        let p1 = json!("p1");
        let (head, tail) = encode_event("jobs", "j\"1", ChangeOp::Update, 3, 99, Some(&p1), Some(&text));
        let bytes = [&head[..], &text, tail].concat();
        let mut key = seq_key(42);
        key.extend_from_slice(&0u32.to_be_bytes());
        let c = decode_event(&key, &bytes).unwrap();
        assert_eq!(
            c,
            Change {
                seq: 42,
                collection: "jobs".into(),
                id: "j\"1".into(),
                op: ChangeOp::Update,
                version: 3,
                at_ms: 99,
                doc: Some(doc),
                prev_project: Some(p1),
            }
        );
        let (head, tail) = encode_event("jobs", "j", ChangeOp::Delete, 4, 100, None, None);
        let deleted = decode_event(&key, &[&head[..], tail].concat()).unwrap();
        assert_eq!((deleted.op, deleted.version, deleted.doc, deleted.prev_project), (ChangeOp::Delete, 4, None, None));
        // An event written before `prev_project` existed reads as having none.
        let old = br#"{"collection":"jobs","id":"j","op":"delete","version":2,"at_ms":5,"doc":null}"#;
        assert_eq!(decode_event(&key, old).unwrap().prev_project, None);
        assert!(decode_event(b"\x03", &bytes).is_err());
        assert!(decode_event(&key, b"{").is_err());
    }
}
