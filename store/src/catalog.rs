//! The catalog: each collection's declaration as the store holds it, with the indexes commits maintain and
//! the key each index's entries live under, and its persisted form (`0x00 "cat" 0x00 collection`, JSON).
//!
//! An index's entries are keyed by the index's *key*, not by its name: the name for indexes declared with
//! the collection (and for every index of a store written before keys existed), `name@N` for an index built
//! later, with `N` unique within the collection and never reused. An index that changes fields under the
//! same name is thus a new index beside the old one while it is built, and entries of a dropped index are
//! never mistaken for those of a later index of that name. Index names cannot hold `@`, so keys of the two
//! kinds never collide.
//!
//! While an index is built ([`crate::index_build`]) the entry also holds the indexes being built, the
//! declaration being made (to finish the build after a crash) and the keys of dropped indexes whose entries
//! are still to be deleted. Without them, the JSON is exactly a [`CollectionSpec`]'s, so a store whose
//! indexes were never rebuilt reads the same as before keys existed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::record::{CollectionSpec, IndexSpec};

/// An index commits maintain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredIndex {
    pub(crate) spec: IndexSpec,
    /// What its entries are keyed by (see the module documentation).
    pub(crate) key: String,
    /// Complete, so queries may use it; otherwise being built.
    pub(crate) ready: bool,
}

/// A collection as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declared {
    /// The declaration as users see it: the collection's name and its complete indexes.
    pub(crate) spec: Arc<CollectionSpec>,
    /// Every index a commit maintains: the complete ones (in the order of `spec.indexes`), then those being
    /// built.
    pub(crate) indexes: Vec<StoredIndex>,
    /// The declaration an unfinished build makes.
    pub(crate) target: Option<CollectionSpec>,
    /// Keys of dropped indexes whose entries may remain.
    pub(crate) retired: Vec<String>,
    /// The next `N` of an index key `name@N`.
    pub(crate) next_key: u64,
}

impl Declared {
    /// A collection declared for the first time: it has no records, so its indexes are complete, each
    /// keyed by its name.
    pub(crate) fn new(spec: CollectionSpec) -> Self {
        let indexes =
            spec.indexes.iter().map(|i| StoredIndex { spec: i.clone(), key: i.name.clone(), ready: true }).collect();
        Self { spec: Arc::new(spec), indexes, target: None, retired: Vec::new(), next_key: 1 }
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    /// The complete indexes, with their keys.
    pub(crate) fn ready(&self) -> impl Iterator<Item = &StoredIndex> {
        self.indexes.iter().filter(|i| i.ready)
    }

    /// Whether an index build is unfinished (a crash, or a failed write, interrupted it) or dropped indexes
    /// still have entries.
    pub(crate) fn unfinished(&self) -> bool {
        self.target.is_some() || !self.retired.is_empty()
    }

    /// The persisted form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let entry = |i: &StoredIndex| Entry {
            name: i.spec.name.clone(),
            fields: i.spec.fields.clone(),
            key: (i.key != i.spec.name).then(|| i.key.clone()),
        };
        let persisted = Persisted {
            name: self.spec.name.clone(),
            indexes: self.ready().map(entry).collect(),
            building: self.indexes.iter().filter(|i| !i.ready).map(entry).collect(),
            declaring: self.target.clone(),
            retired: self.retired.clone(),
            next_key: if self.next_key > 1 { self.next_key } else { 0 },
        };
        serde_json::to_vec(&persisted).unwrap_or_default()
    }

    /// Decodes a persisted entry (`key` names it in errors).
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let p: Persisted = serde_json::from_slice(value).map_err(|e| StoreError::undecodable(key, e.to_string()))?;
        let stored = |e: Entry, ready: bool| StoredIndex {
            key: e.key.unwrap_or_else(|| e.name.clone()),
            spec: IndexSpec { name: e.name, fields: e.fields },
            ready,
        };
        let mut indexes: Vec<StoredIndex> = p.indexes.into_iter().map(|e| stored(e, true)).collect();
        let spec = CollectionSpec::new(&p.name, indexes.iter().map(|i| i.spec.clone()).collect());
        indexes.extend(p.building.into_iter().map(|e| stored(e, false)));
        Ok(Self { spec: Arc::new(spec), indexes, target: p.declaring, retired: p.retired, next_key: p.next_key.max(1) })
    }
}

/// The catalog entry as stored.
#[derive(Serialize, Deserialize)]
struct Persisted {
    name: String,
    /// The complete indexes.
    indexes: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    building: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    declaring: Option<CollectionSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    next_key: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    fields: Vec<String>,
    /// Absent when it is the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_without_rebuilt_indexes_is_stored_as_its_spec() {
        let spec = CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["status", "-priority"])]);
        let d = Declared::new(spec.clone());
        assert_eq!(d.encode(), serde_json::to_vec(&spec).unwrap());
        assert_eq!(Declared::decode(b"k", &serde_json::to_vec(&spec).unwrap()).unwrap(), d);
    }

    #[test]
    fn keys_builds_and_retired_keys_round_trip() {
        let mut d = Declared::new(CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["status"])]));
        d.indexes.push(StoredIndex {
            spec: IndexSpec::new("status", &["state"]),
            key: "status@3".into(),
            ready: false,
        });
        d.target = Some(CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["state"])]));
        d.retired = vec!["owner".into()];
        d.next_key = 4;
        let back = Declared::decode(b"k", &d.encode()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.ready().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["status"]);
        assert!(back.unfinished());
        // The complete indexes still read as a plain spec.
        let spec: CollectionSpec = serde_json::from_slice(&d.encode()).unwrap();
        assert_eq!(spec, *d.spec);
    }
}
