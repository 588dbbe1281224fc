//! Cairn's record store: collections of JSON documents on Cairn's key-value engine, with secondary indexes
//! (single-field and composite), optimistic versions, atomic transactions across collections, paginated
//! queries, claims for schedulers, a durable change feed and a cache of decoded records. See
//! `docs/collections.md`. Built on them: the artifact store ([`artifacts`], `docs/artifacts.md`) and the job
//! queue ([`queue`], `docs/queue.md`).
//!
//! Everything is stored in the engine's keyspace (`docs/collections.md`, "Key layout"); a record, its index
//! entries and its change event are written in one atomic batch, so they never disagree, even across a
//! crash. The store uses only the engine's public API ([`engine`]).
//!
//! What it is not: it has no record types of its own (the compute platform's `Job`, `Experiment` and the
//! rest are in crate `cairn-platform`), no network and no async runtime (the HTTP server is crate
//! `cairn-server`).
//!
//! [`Store`] shows a typed collection with a composite index, written, updated and queried.

pub mod artifacts;
mod catalog;
mod changes;
mod check;
mod clock;
mod counts;
mod decoded;
mod envelope;
mod error;
mod export;
mod fields;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod hints;
mod index_build;
mod inflight;
mod keys;
pub mod metrics;
mod periodic;
mod query;
pub mod queue;
mod record;
mod retention;
mod store;
mod txn;
mod typed;
mod validate;
mod write_together;

/// The key-value engine the store is built on, for what a store's user needs of it directly (options,
/// durability, the [`Db`](engine::Db) handle of [`Store::with_db`], the storage seam in tests).
pub use cairn_engine as engine;

pub use changes::{Change, ChangeOp};
pub use check::{check_store, StoreCheckReport};
pub use decoded::RecordCacheStats;
pub use error::{ChangesError, ClaimError, CollectionError, DeclareError, ReadError, StoreError, WriteError};
pub use export::{SnapshotRecords, StoreSnapshot};
pub use handle::{DynCollection, RecordWrite, WRITE_ATTEMPTS};
pub use query::{Op, Page, Plan, Query, MAX_PAGE};
pub use record::{CollectionSpec, IndexSpec, Record, Stored};
pub use retention::{ConsumerLag, FeedStats};
pub use store::{Store, StoreOptions, TABLE_BLOCK_SIZE, TABLE_DICTIONARY_SIZE, TABLE_ZSTD_LEVEL};
pub use txn::{Committed, Transaction};
pub use typed::Collection;
pub use write_together::{DecideRaw, OneWrite};
