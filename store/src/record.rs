//! What a collection holds: records (any serde type with an id), their declared indexes, and the stored
//! form with version, commit sequence and timestamps.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;

/// A secondary index: one or more field paths of the document (dot-separated, e.g. `resources.gpus`).
/// Entries order by the fields' values in turn, then by id. A composite index such as
/// `(status, priority)` answers equality on `status` with a range or an order on `priority`. A path written
/// with a leading `-` (`"-priority"`) is stored in descending order, so queries ordered by it descending
/// scan forward, which is cheaper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Name, unique within the collection: ASCII letters, digits, `_` and `-`, 1 to 64 bytes.
    pub name: String,
    /// Field paths, most significant first.
    pub fields: Vec<String>,
}

impl IndexSpec {
    /// An index named `name` over `fields`.
    pub fn new(name: &str, fields: &[&str]) -> Self {
        Self { name: name.to_owned(), fields: fields.iter().map(|f| (*f).to_owned()).collect() }
    }
}

/// A collection's declaration: its name and indexes. Persisted in the database's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// Name: ASCII letters, digits, `_` and `-`, 1 to 64 bytes.
    pub name: String,
    /// Secondary indexes.
    pub indexes: Vec<IndexSpec>,
}

impl CollectionSpec {
    /// A collection named `name` with `indexes`.
    pub fn new(name: &str, indexes: Vec<IndexSpec>) -> Self {
        Self { name: name.to_owned(), indexes }
    }
}

/// A Rust type stored as a collection. Its serde form must be a JSON object; the store keeps it in a
/// self-describing encoding, so records written by older or newer versions of the type stay readable
/// (give new fields `#[serde(default)]`).
///
/// ```
/// use cairn_store::{IndexSpec, Record};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Host { name: String, rack: String }
///
/// impl Record for Host {
///     const COLLECTION: &'static str = "hosts";
///     fn id(&self) -> String { self.name.clone() }
///     fn indexes() -> Vec<IndexSpec> { vec![IndexSpec::new("rack", &["rack"])] }
/// }
/// ```
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The collection's name.
    const COLLECTION: &'static str;
    /// The record's primary key: 1 to 512 bytes of UTF-8 without control characters.
    fn id(&self) -> String;
    /// The collection's secondary indexes. Default: none.
    fn indexes() -> Vec<IndexSpec> {
        Vec::new()
    }
}

/// A record as stored: its document plus what the store keeps about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    /// The primary key.
    pub id: String,
    /// 1 on insert, +1 on every write.
    pub version: u64,
    /// Sequence number of the commit that last wrote the record.
    pub seq: u64,
    /// When the record was inserted, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the record was last written, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// The document.
    pub doc: T,
}

/// A record read as JSON, decoded as `T`.
pub(crate) fn from_doc<T: Record>(s: Stored<Value>) -> Result<Stored<T>, StoreError> {
    let doc = serde_json::from_value(s.doc)
        .map_err(|e| StoreError::Undecodable { key: format!("{}/{}", T::COLLECTION, s.id), reason: e.to_string() })?;
    Ok(Stored {
        id: s.id,
        version: s.version,
        seq: s.seq,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        doc,
    })
}
