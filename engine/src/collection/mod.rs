//! Typed collections on the engine: documents with secondary indexes, optimistic versions, transactions
//! across collections, paginated queries and a durable change feed. See `docs/collections.md`.
//!
//! Everything is stored in the engine's keyspace (see `keys`); a record, its index entries and its change
//! event are written in one atomic batch, so they never disagree, even across a crash.

mod changes;
mod decoded;
mod envelope;
mod error;
mod export;
mod fields;
mod handle;
mod hints;
mod inflight;
mod keys;
mod query;
mod record;
mod store;
mod txn;
mod typed;

pub use changes::{Change, ChangeOp};
pub use decoded::RecordCacheStats;
pub use error::CollectionError;
pub use export::{SnapshotRecords, StoreSnapshot};
pub use handle::DynCollection;
pub use query::{Op, Page, Plan, Query, MAX_PAGE};
pub use record::{CollectionSpec, IndexSpec, Record, Stored};
pub use store::{Store, StoreOptions};
pub use txn::{Committed, Transaction};
pub use typed::Collection;
