//! The stored form of a record.
//!
//! ```text
//! commit_seq u64 LE | format u8 (= 1) | version u64 LE | created_ms i64 LE | updated_ms i64 LE | document (JSON)
//! ```
//! `commit_seq` is written by the engine when the batch commits (`WriteBatch::put_commit_prefixed`).

#![deny(clippy::indexing_slicing)]

use std::any::{Any, TypeId};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::StoreError;
use crate::record::Stored;

const FORMAT: u8 = 1;

/// A decoded record envelope, with the document decoded as `D` (a JSON value, or a record type directly).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope<D = Value> {
    pub seq: u64,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub doc: D,
}

impl<D> Envelope<D> {
    /// The same record with `f` applied to its document.
    pub(crate) fn map<E>(self, f: impl FnOnce(D) -> E) -> Envelope<E> {
        let Ok(mapped) = self.try_map(|doc| Ok::<E, std::convert::Infallible>(f(doc)));
        mapped
    }

    /// The same record with `f` applied to its document, or `f`'s error.
    pub(crate) fn try_map<E, Err>(self, f: impl FnOnce(D) -> Result<E, Err>) -> Result<Envelope<E>, Err> {
        let doc = f(self.doc)?;
        Ok(Envelope {
            seq: self.seq,
            version: self.version,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            doc,
        })
    }
}

/// Encodes what lies between the commit sequence (which the engine prepends) and the document's JSON.
pub(crate) fn encode_head(version: u64, created_ms: i64, updated_ms: i64) -> [u8; 25] {
    let bytes = [FORMAT].into_iter().chain(version.to_le_bytes()).chain(created_ms.to_le_bytes());
    let mut out = [0; 25];
    for (o, b) in out.iter_mut().zip(bytes.chain(updated_ms.to_le_bytes())) {
        *o = b;
    }
    out
}

pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Envelope, StoreError> {
    decode_as(key, bytes)
}

/// Decodes an envelope, parsing the document straight into `D`.
pub(crate) fn decode_as<D: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<Envelope<D>, StoreError> {
    let e = decode_raw(key, bytes)?;
    let doc = decode_doc(key, e.doc)?;
    Ok(e.map(|_| doc))
}

/// Parses a record's document (the JSON text after its envelope's head, under `key`) into `D`.
pub(crate) fn decode_doc<D: DeserializeOwned>(key: &[u8], doc: &[u8]) -> Result<D, StoreError> {
    // Checking the UTF-8 of the whole document at once is cheaper than string by string as `from_slice` does.
    let text = std::str::from_utf8(doc).map_err(|e| bad_doc(key, e))?;
    serde_json::from_str(text).map_err(|e| bad_doc(key, e))
}

/// A record's document already parsed as a JSON tree (under `key`), as `D`: the tree itself when `D` is a
/// JSON tree, rather than a copy built from it.
pub(crate) fn tree_as<D: DeserializeOwned + 'static>(key: &[u8], doc: Value) -> Result<D, StoreError> {
    let mut doc = Some(doc);
    if let Some(tree) = (&mut doc as &mut dyn Any).downcast_mut::<Option<D>>().and_then(Option::take) {
        return Ok(tree);
    }
    serde_json::from_value(doc.unwrap_or_default()).map_err(|e| bad_doc(key, e))
}

/// Whether `D` is a JSON tree, which a record's check parses anyway ([`tree_as`] then hands it over).
pub(crate) fn is_tree<D: 'static>() -> bool {
    TypeId::of::<D>() == TypeId::of::<Value>()
}

/// The error for the document of the record under `key` that is not a `D`.
fn bad_doc(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::undecodable(key, format!("document: {e}"))
}

/// Decodes an envelope's head, leaving the document as the bytes it is stored as (not checked).
pub(crate) fn decode_raw<'b>(key: &[u8], bytes: &'b [u8]) -> Result<Envelope<&'b [u8]>, StoreError> {
    let bad = |reason: &str| StoreError::undecodable(key, reason.to_owned());
    let mut pos = 0;
    let mut field = |len: usize, what: &str| {
        let field = bytes.get(pos..pos + len).ok_or_else(|| bad(what))?;
        pos += len;
        Ok::<_, StoreError>(field)
    };
    let seq = le_u64(field(8, "commit sequence")?);
    let format = field(1, "format")?;
    if format != [FORMAT] {
        return Err(bad("unknown record format"));
    }
    let version = le_u64(field(8, "version")?);
    let created_ms = le_u64(field(8, "created")?) as i64;
    let updated_ms = le_u64(field(8, "updated")?) as i64;
    let doc = bytes.get(pos..).unwrap_or_default();
    Ok(Envelope { seq, version, created_ms, updated_ms, doc })
}

/// A little-endian `u64` from a field of exactly 8 bytes.
fn le_u64(field: &[u8]) -> u64 {
    field.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// The record of id `id` an envelope holds.
pub(crate) fn stored<D>(id: &str, e: Envelope<D>) -> Stored<D> {
    Stored {
        id: id.to_owned(),
        version: e.version,
        seq: e.seq,
        created_at_ms: e.created_ms,
        updated_at_ms: e.updated_ms,
        doc: e.doc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roundtrip_and_rejects_garbage() {
        let mut bytes = 42u64.to_le_bytes().to_vec();
        bytes.extend(encode_head(3, 10, 20));
        bytes.extend(br#"{"a":1}"#);
        let e = decode(b"k", &bytes).unwrap();
        assert_eq!(e, Envelope { seq: 42, version: 3, created_ms: 10, updated_ms: 20, doc: json!({"a": 1}) });
        for cut in 0..bytes.len() - 1 {
            assert!(decode(b"k", &bytes[..cut]).is_err(), "cut {cut}");
        }
        // The head alone, the document left as stored.
        let raw = decode_raw(b"k", &bytes).unwrap();
        assert_eq!((raw.seq, raw.version, raw.created_ms, raw.updated_ms), (42, 3, 10, 20));
        assert_eq!(raw.doc, br#"{"a":1}"#);
        assert!(decode_raw(b"k", &bytes[..32]).is_err(), "a head cut short");
    }
}
