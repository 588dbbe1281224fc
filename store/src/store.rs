//! The store: typed and untyped collections on top of a [`Db`], with a persisted catalog, transactions and
//! the change feed.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use cairn_engine::Db;
use cairn_engine::Snapshot;
use cairn_engine::StorageError;

use crate::catalog::Declared;
use crate::changes::{decode_event, seq_key, Change};
use crate::counts::CountState;
use crate::decoded::{RecordCache, RecordCacheStats};
use crate::envelope::{self, Envelope};
use crate::error::{ChangesError, DeclareError, StoreError, UnknownCollection};
use crate::hints::{ScanHints, ScanTicket};
use crate::inflight::InFlight;
use crate::keys;
use crate::record::{CollectionSpec, Record};
use crate::retention::{scan_feed_bytes, FeedCounters, Retention, ThreadGuard};
use crate::validate::{validate_name, validate_spec};

/// The zstd level of a store's tables ([`Store::engine_options`]). At a negative level zstd stores a block's
/// literals as they are instead of Huffman-coding them, so a read that misses the block cache builds no
/// Huffman table to decompress its block. Records are JSON text, read mostly one at a time: at 1,000,000
/// jobs, whose blocks mostly miss a 256 MiB cache, gets by id take 10-20% less time than at level 1 in
/// blocks of the same size (`docs/benchmarks.md`, "Get by id").
pub const TABLE_ZSTD_LEVEL: i32 = -1;

/// The size of a store's tables' blocks before compression ([`Store::engine_options`]), twice the engine's
/// default: with literals kept raw, what a block saves comes from the repeats zstd finds between its
/// records, which a block of a dozen records holds more of than one of six. At 1,000,000 jobs the
/// collection takes 247 MiB at 8 KiB and level -1, against 355 MiB at 4 KiB and 311 MiB at 4 KiB and level
/// 1, for gets some 7% slower than at 4 KiB and level -1; at 16 KiB paging by owner took twice as long.
pub const TABLE_BLOCK_SIZE: usize = 8 << 10;

/// The largest zstd dictionary a store's table makes from its first blocks ([`Store::engine_options`],
/// [`Compression::ZstdDictionary`](cairn_engine::Compression::ZstdDictionary)): one block's worth. Records
/// repeat their field names and common values across blocks far more than within one; at 1,000,000 jobs the
/// collection takes 146 MiB on disk with dictionaries and 247 MiB without (`docs/benchmarks.md`, "Table
/// dictionaries").
pub const TABLE_DICTIONARY_SIZE: usize = 8 << 10;

/// Options of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) change_retention: Duration,
    pub(crate) change_retention_bytes: u64,
    pub(crate) max_consumer_lag_bytes: u64,
    pub(crate) change_trim_interval: Duration,
    record_cache_size: usize,
    /// Whether opening may write (first record counts) and trim in the background; off for `check_store`.
    pub(crate) maintain: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            change_retention: Duration::from_secs(7 * 24 * 3600),
            change_retention_bytes: 1 << 30,
            max_consumer_lag_bytes: 4 << 30,
            change_trim_interval: Duration::from_secs(10),
            record_cache_size: 16 << 20,
            maintain: true,
        }
    }
}

impl StoreOptions {
    /// Options that make opening write nothing and trim nothing: for checking a store.
    pub(crate) fn for_check() -> Self {
        Self { maintain: false, change_trim_interval: Duration::ZERO, ..Self::default() }
    }

    /// How long changes are kept: older ones are trimmed unless a consumer holds them back (see
    /// [`StoreOptions::max_consumer_lag_bytes`]). Default: 7 days.
    pub fn change_retention(mut self, retention: Duration) -> Self {
        self.change_retention = retention;
        self
    }

    /// Most bytes (event keys and values) the change feed keeps: the oldest changes are trimmed beyond it,
    /// whatever their age, unless a consumer holds them back. Between two trims the feed grows by what is
    /// written meanwhile; a write that finds it an eighth over the bound starts a trim at once (at most one
    /// each 20 ms), and one that finds it over twice the bound waits for a trim under way. Default: 1 GiB.
    pub fn change_retention_bytes(mut self, bytes: u64) -> Self {
        self.change_retention_bytes = bytes;
        self
    }

    /// A durable consumer keeps the changes it has not acknowledged from being trimmed (by age or size) while
    /// the feed after its cursor is at most this many bytes; past that it holds nothing back, the changes it
    /// missed are trimmed, and reading on from its cursor fails with
    /// [`ChangesError::ChangesTrimmed`](crate::ChangesError::ChangesTrimmed). So the feed never exceeds the
    /// larger of this and [`StoreOptions::change_retention_bytes`] (plus one interval's writes). Default:
    /// 4 GiB.
    pub fn max_consumer_lag_bytes(mut self, bytes: u64) -> Self {
        self.max_consumer_lag_bytes = bytes;
        self
    }

    /// How often the store's retention thread trims the change feed ([`Store::trim_changes`]). Zero starts
    /// no thread: the feed is then trimmed only by [`Store::trim_changes`] and [`Store::ack`]. Default: 10 s.
    pub fn change_trim_interval(mut self, interval: Duration) -> Self {
        self.change_trim_interval = interval;
        self
    }

    /// Memory for decoded records, shared by the store's typed collections
    /// ([`Collection`](crate::Collection)): a record read three times without changing in between is kept
    /// decoded, and later reads clone it instead of parsing its JSON. Each kept record is charged what it holds in
    /// memory decoded, not its stored size (the benchmark's `Job`: 671 bytes stored, 1,869 bytes in 23
    /// allocations decoded): its inline size, plus one allocation per string, array and nested object of
    /// its JSON (an object taken for a `BTreeMap`: its keys and nodes), rounded up as the allocator does,
    /// plus its key and 64 bytes. A cached record is checked against the commit that wrote what the read
    /// found, so it is never stale. 0 turns the cache off. Default: 16 MiB.
    pub fn record_cache_size(mut self, bytes: usize) -> Self {
        self.record_cache_size = bytes;
        self
    }
}

pub(crate) struct StoreInner {
    db: Db,
    opts: StoreOptions,
    catalog: RwLock<HashMap<String, Arc<Declared>>>,
    /// For each record type, the declaration last found to hold all of its indexes: while the catalog still
    /// holds that very declaration, [`Store::ensure`] has nothing to check.
    ensured: RwLock<HashMap<TypeId, Arc<Declared>>>,
    declare: Mutex<()>,
    /// Commits that write records hold it shared; an index build holds it exclusively while it replaces a
    /// collection's declaration and while it indexes each chunk of records (see `index_build`).
    writes: RwLock<()>,
    /// Commits waiting for `writes`: an index build lets them through between two chunks.
    waiting_writes: AtomicUsize,
    hints: ScanHints,
    claims: InFlight,
    records: RecordCache,
    feed: FeedCounters,
    counts: CountState,
    retention: Retention,
    /// Runs between the two reads of [`Store::changes_since`], once: lets a test commit a trim there.
    #[cfg(test)]
    between_marker_and_range: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// The highest sequence trimmed from the feed as of `snap` (0 if none).
fn trimmed_through_at(snap: &Snapshot) -> Result<u64, StoreError> {
    Ok(snap.get(keys::TRIMMED)?.and_then(|v| v.get(..8)?.try_into().ok()).map_or(0, u64::from_le_bytes))
}

/// Typed collections of records stored in a [`Db`]. Cheap to clone; share it between threads.
///
/// The store owns the keys starting with bytes `0x00` to `0x03` of its database; other keys remain free for
/// direct key-value use through [`Store::db`].
///
/// ```
/// use cairn_store::{Query, Record, IndexSpec, Store};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Task { id: String, state: String, priority: i64 }
///
/// impl Record for Task {
///     const COLLECTION: &'static str = "tasks";
///     fn id(&self) -> String { self.id.clone() }
///     fn indexes() -> Vec<IndexSpec> { vec![IndexSpec::new("state_priority", &["state", "priority"])] }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let tasks = store.collection::<Task>()?;
/// tasks.insert(&Task { id: "t1".into(), state: "PENDING".into(), priority: 5 })?;
/// let t = tasks.insert(&Task { id: "t2".into(), state: "PENDING".into(), priority: 9 })?;
/// tasks.update(&Task { id: "t2".into(), state: "RUNNING".into(), priority: 9 }, t.version)?;
/// let page = tasks.query(&Query::new().eq("state", "PENDING").order_by("priority").descending().limit(10))?;
/// assert_eq!(page.records[0].id, "t1");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
    /// Stops the retention thread when the last user handle drops; `None` in the thread's own handle.
    guard: Option<Arc<ThreadGuard>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("db", &self.inner.db).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) a store in directory `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::with_db(Store::engine_options().open(path.as_ref())?, StoreOptions::default())
    }

    /// The engine's default options with what a store's database wants:
    ///
    /// * its compactions keep records, each index, the change feed and each kind of bookkeeping entry in
    ///   tables of their own ([`table_partitions`](cairn_engine::Options::table_partitions)), so that
    ///   merging new index entries into level 1 does not rewrite the records and changes beside them;
    /// * its tables' blocks hold [`TABLE_BLOCK_SIZE`] bytes and are compressed at zstd level
    ///   [`TABLE_ZSTD_LEVEL`], against a dictionary of up to [`TABLE_DICTIONARY_SIZE`] bytes that each table
    ///   makes from its first blocks.
    ///
    /// Open the [`Db`] given to [`Store::with_db`] with these (adjusted as needed).
    pub fn engine_options() -> cairn_engine::Options {
        Db::builder().table_partitions(keys::partition_len).block_size(TABLE_BLOCK_SIZE).compression(
            cairn_engine::Compression::ZstdDictionary {
                level: TABLE_ZSTD_LEVEL,
                dictionary_size: TABLE_DICTIONARY_SIZE,
            },
        )
    }

    /// A store over an open database, loading its catalog.
    pub fn with_db(db: Db, opts: StoreOptions) -> Result<Store, StoreError> {
        let mut catalog = HashMap::new();
        for pair in db.prefix(keys::CATALOG)? {
            let (key, value) = pair?;
            let declared = Declared::decode(&key, &value)?;
            catalog.insert(declared.name().to_owned(), Arc::new(declared));
        }
        let feed = FeedCounters::default();
        feed.bytes.store(i64::try_from(scan_feed_bytes(&db)?).unwrap_or(i64::MAX), Ordering::Relaxed);
        let mut store = Store {
            guard: None,
            inner: Arc::new(StoreInner {
                records: RecordCache::new(opts.record_cache_size),
                db,
                opts,
                catalog: RwLock::new(catalog),
                ensured: RwLock::new(HashMap::new()),
                declare: Mutex::new(()),
                writes: RwLock::new(()),
                waiting_writes: AtomicUsize::new(0),
                hints: ScanHints::default(),
                claims: InFlight::default(),
                feed,
                counts: CountState::default(),
                retention: Retention::default(),
                #[cfg(test)]
                between_marker_and_range: Mutex::new(None),
            }),
        };
        if !store.inner.opts.maintain {
            return Ok(store);
        }
        store.finish_index_builds()?;
        for spec in store.collections() {
            store.ensure_count(&spec.name)?;
        }
        let interval = store.inner.opts.change_trim_interval;
        if !interval.is_zero() {
            let guard = store
                .inner
                .retention
                .start(Arc::downgrade(&store.inner), interval)
                .map_err(|source| StorageError::Io { path: store.db().path().to_path_buf(), source })?;
            store.guard = Some(Arc::new(guard));
        }
        Ok(store)
    }

    /// The retention thread's handle on the store.
    pub(crate) fn from_inner(inner: Arc<StoreInner>) -> Store {
        Store { inner, guard: None }
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    pub(crate) fn feed_counters(&self) -> &FeedCounters {
        &self.inner.feed
    }

    pub(crate) fn retention(&self) -> &Retention {
        &self.inner.retention
    }

    pub(crate) fn counts(&self) -> &CountState {
        &self.inner.counts
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Where index scans may start; every index insert must be registered here (see `hints`).
    pub(crate) fn hints(&self) -> &ScanHints {
        &self.inner.hints
    }

    pub(crate) fn records(&self) -> &RecordCache {
        &self.inner.records
    }

    /// Size and counters of the cache of decoded records (see [`StoreOptions::record_cache_size`]).
    pub fn record_cache_stats(&self) -> RecordCacheStats {
        self.inner.records.stats()
    }

    /// Records a claim is taking right now (see `inflight`).
    pub(crate) fn claims(&self) -> &InFlight {
        &self.inner.claims
    }

    /// Declares a collection (persisted). Declaring it again with the same indexes does nothing; with
    /// different indexes, the new ones are built online (`index_build`): commits go on and maintain them
    /// while existing records are indexed in chunks, queries use an index once it is complete, and the
    /// entries of dropped or changed indexes are deleted once the new declaration is in place. Returns once
    /// the declaration is complete. A transaction that staged a write under the collection's previous
    /// declaration fails with [`WriteError::TxnConflict`](crate::WriteError::TxnConflict) (a single-record
    /// write retries it under the new one).
    pub fn declare(&self, spec: CollectionSpec) -> Result<(), DeclareError> {
        validate_spec(&spec)?;
        let _guard = self.inner.declare.lock();
        self.declare_locked(spec).map(drop)
    }

    /// Holds off index builds while a commit writes records; while it is held, [`Store::is_current`] tells
    /// whether the index entries a transaction computed are those commits maintain now.
    pub(crate) fn writing(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        if let Some(guard) = self.inner.writes.try_read() {
            return guard;
        }
        self.inner.waiting_writes.fetch_add(1, Ordering::AcqRel);
        let guard = self.inner.writes.read();
        self.inner.waiting_writes.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    /// Whether commits are waiting to write records.
    pub(crate) fn writes_waiting(&self) -> bool {
        self.inner.waiting_writes.load(Ordering::Acquire) > 0
    }

    /// Holds off record writes (see `index_build`).
    pub(crate) fn exclusive_writes(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.inner.writes.write()
    }

    /// Serializes declarations.
    pub(crate) fn declare_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.declare.lock()
    }

    /// Each collection's declaration, by name.
    pub(crate) fn catalog(&self) -> &RwLock<HashMap<String, Arc<Declared>>> {
        &self.inner.catalog
    }

    /// Whether `declared` maintains the indexes the collection's declaration maintains now.
    pub(crate) fn is_current(&self, declared: &Arc<Declared>) -> bool {
        self.inner
            .catalog
            .read()
            .get(declared.name())
            .is_some_and(|c| Arc::ptr_eq(c, declared) || c.indexes == declared.indexes)
    }

    /// Every declared collection.
    pub fn collections(&self) -> Vec<CollectionSpec> {
        let mut out: Vec<_> = self.inner.catalog.read().values().map(|d| (*d.spec).clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The collection's declaration, with the indexes commits maintain.
    pub(crate) fn spec(&self, name: &str) -> Result<Arc<Declared>, UnknownCollection> {
        self.inner.catalog.read().get(name).cloned().ok_or_else(|| UnknownCollection(name.to_owned()))
    }

    /// The collection's declaration and a snapshot taken while it was in place (so that the snapshot holds
    /// every entry of its complete indexes: a build cleans up a dropped index only after replacing the
    /// declaration), with a scan ticket taken before the snapshot (see `hints`).
    pub(crate) fn declared_at_snapshot(
        &self,
        name: &str,
    ) -> Result<(Arc<Declared>, ScanTicket, Snapshot), UnknownCollection> {
        loop {
            let declared = self.spec(name)?;
            let ticket = self.hints().begin_scan();
            let snap = self.db().snapshot();
            if self.spec(name)?.indexes == declared.indexes {
                return Ok((declared, ticket, snap));
            }
        }
    }

    /// Makes sure `T`'s collection is declared with at least `T`'s indexes. Indexes declared by others (a
    /// newer version of the type, say) are kept: a typed handle only ever adds indexes. An index of the same
    /// name over other fields is a [`DeclareError::SpecMismatch`].
    pub(crate) fn ensure<T: Record>(&self) -> Result<Arc<Declared>, DeclareError> {
        let current = self.spec(T::COLLECTION);
        if let Ok(current) = &current {
            if self.inner.ensured.read().get(&TypeId::of::<T>()).is_some_and(|s| Arc::ptr_eq(s, current)) {
                return Ok(current.clone());
            }
        }
        let wanted = T::indexes();
        if let Ok(current) = current {
            if wanted.iter().all(|w| current.spec.indexes.contains(w)) {
                self.inner.ensured.write().insert(TypeId::of::<T>(), current.clone());
                return Ok(current);
            }
        }
        // Merge under the declare lock, so two types adding different indexes at once keep both.
        let guard = self.inner.declare.lock();
        let Ok(current) = self.spec(T::COLLECTION) else {
            let spec = CollectionSpec::new(T::COLLECTION, wanted);
            validate_spec(&spec)?;
            return self.declare_locked(spec);
        };
        let mut merged = (*current.spec).clone();
        for index in wanted {
            match current.spec.indexes.iter().find(|i| i.name == index.name) {
                Some(existing) if *existing == index => {}
                Some(_) => return Err(DeclareError::SpecMismatch(T::COLLECTION.to_owned())),
                None => merged.indexes.push(index),
            }
        }
        let spec = if merged != *current.spec { self.declare_locked(merged)? } else { current };
        drop(guard);
        Ok(spec)
    }

    pub(crate) fn read_envelope(&self, key: &[u8], snap: Option<&Snapshot>) -> Result<Option<Envelope>, StoreError> {
        let value = match snap {
            Some(s) => s.get(key)?,
            None => self.db().get(key)?,
        };
        value.map(|v| envelope::decode(key, &v)).transpose()
    }

    /// The commit sequence of the newest change (0 before the first): how far a consumer must acknowledge
    /// to have seen every change. The newest change in the feed, or, if trimming emptied the feed, the last
    /// one trimmed. Consumer cursors and trim markers are not changes, so their writes do not move it.
    pub fn last_change_sequence(&self) -> Result<u64, StoreError> {
        let trimmed = self.trimmed_through()?;
        let Some(pair) = self.db().prefix_rev(keys::CHANGES)?.next() else { return Ok(trimmed) };
        let (key, value) = pair?;
        Ok(decode_event(&key, &value)?.seq.max(trimmed))
    }

    /// About `limit` changes with a sequence greater than `after`, in commit order: the page never ends in the
    /// middle of a commit (it may exceed `limit` to finish one), so resuming after the last change's `seq`
    /// misses nothing. Fails with [`ChangesError::ChangesTrimmed`] if changes after `after` were already
    /// trimmed.
    pub fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>, ChangesError> {
        // The trim marker and the range are read at one snapshot: a trim committing in between must not make
        // the range start after changes the marker said were still there.
        let snap = self.db().snapshot();
        let trimmed = trimmed_through_at(&snap)?;
        if after < trimmed {
            return Err(ChangesError::ChangesTrimmed { requested: after, trimmed_through: trimmed });
        }
        #[cfg(test)]
        if let Some(hook) = self.inner.between_marker_and_range.lock().take() {
            hook();
        }
        let start = seq_key(after.saturating_add(1));
        let end = keys::after_prefix(keys::CHANGES).unwrap_or_default();
        let mut out: Vec<Change> = Vec::new();
        for pair in snap.range(start..end)? {
            let (key, value) = pair?;
            let change = decode_event(&key, &value)?;
            if out.len() >= limit.max(1) && out.last().is_some_and(|last| last.seq != change.seq) {
                break;
            }
            out.push(change);
        }
        Ok(out)
    }

    /// Registers (or moves) a durable consumer cursor at `seq`: changes after it are kept until the consumer
    /// acknowledges them or the retention period passes.
    pub fn register_consumer(&self, name: &str, seq: u64) -> Result<(), ChangesError> {
        validate_name("consumer", name)?;
        self.db().put(keys::consumer_key(name), seq.to_le_bytes())?;
        Ok(())
    }

    /// Removes a consumer; its unacknowledged changes are then kept only for the retention period.
    pub fn remove_consumer(&self, name: &str) -> Result<(), ChangesError> {
        validate_name("consumer", name)?;
        self.db().delete(keys::consumer_key(name))?;
        Ok(())
    }

    /// Records that consumer `name` has processed every change up to `seq`, then trims what no consumer
    /// needs.
    pub fn ack(&self, name: &str, seq: u64) -> Result<(), ChangesError> {
        validate_name("consumer", name)?;
        let key = keys::consumer_key(name);
        if self.db().get(&key)?.is_none() {
            return Err(ChangesError::Invalid(format!("consumer {name} is not registered")));
        }
        self.db().put(key, seq.to_le_bytes())?;
        self.trim_changes()?;
        Ok(())
    }

    /// Registered consumers and the sequence each has acknowledged.
    pub fn consumers(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for pair in self.db().prefix(keys::CONSUMERS)? {
            let (key, value) = pair?;
            let name = String::from_utf8_lossy(key.get(keys::CONSUMERS.len()..).unwrap_or_default()).into_owned();
            let seq = value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            out.push((name, seq.ok_or_else(|| StoreError::undecodable(&key, "consumer cursor"))?));
        }
        Ok(out)
    }

    /// The highest sequence trimmed from the feed (0 if none).
    pub fn trimmed_through(&self) -> Result<u64, StoreError> {
        trimmed_through_at(&self.db().snapshot())
    }

    /// Recomputes every index entry from the records and compares with the stored entries. Returns the
    /// number of entries checked, or the first disagreement.
    pub fn check_indexes(&self) -> Result<u64, StoreError> {
        let snap = self.db().snapshot();
        let mut checked = 0;
        let declared: Vec<Arc<Declared>> = self.inner.catalog.read().values().cloned().collect();
        for d in declared {
            let spec = &d.spec;
            let mut expected = std::collections::BTreeSet::new();
            for pair in snap.prefix(keys::record_prefix(&spec.name))? {
                let (key, value) = pair?;
                let e = envelope::decode(&key, &value)?;
                let id = keys::parse_record_key(&key).map(|k| k.1).unwrap_or_default();
                for index in d.ready() {
                    expected.insert(keys::index_key(&spec.name, &index.key, &index.spec.fields, &e.doc, id));
                }
            }
            let mut found = std::collections::BTreeSet::new();
            for index in d.ready() {
                for pair in snap.prefix(keys::index_prefix(&spec.name, &index.key))? {
                    found.insert(pair?.0);
                }
            }
            // The kept record count, where kept, must be the number of records.
            if let Some((kept, _)) = crate::counts::sum_at(&snap, &spec.name)? {
                let records = crate::counts::scan_at(&snap, &spec.name)?;
                if kept != records as i64 {
                    let what = format!("record count {kept} kept for {} records", records);
                    return Err(StoreError::undecodable(&keys::count_prefix(&spec.name), what));
                }
            }
            if let Some(k) = expected.symmetric_difference(&found).next() {
                let what = if expected.contains(k) { "missing index entry" } else { "index entry without record" };
                return Err(StoreError::undecodable(k, what));
            }
            checked += found.len() as u64;
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::{IndexSpec, WriteError};

    #[test]
    fn writes_during_index_builds_leave_no_index_entry_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let only_a = CollectionSpec::new("c", vec![IndexSpec::new("a", &["a"])]);
        let a_and_b = CollectionSpec::new("c", vec![IndexSpec::new("a", &["a"]), IndexSpec::new("b", &["b"])]);
        store.declare(only_a.clone()).unwrap();
        let c = store.collection_dyn("c").unwrap();
        for i in 0..3000 {
            c.insert(&format!("r{i:05}"), json!({"a": i % 7, "b": 0})).unwrap();
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for w in 0..2 {
                let (c, stop) = (&c, &stop);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("r{:05}", (n * 7919 + w * 1511) % 3000);
                        c.upsert(&id, json!({"a": n % 7, "b": n})).unwrap();
                        if n.is_multiple_of(5) {
                            let mut tx = c.store().begin();
                            tx.upsert_doc("c", &id, json!({"a": 1, "b": n + 1})).unwrap();
                            // A declaration may have come between the staging and the commit.
                            match tx.commit() {
                                Ok(_) | Err(WriteError::TxnConflict { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                });
            }
            // Ends with index `b` built while the writers ran.
            for round in 0..9u32 {
                store.declare(if round.is_multiple_of(2) { a_and_b.clone() } else { only_a.clone() }).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(store.collections(), [a_and_b]);
        store.check_indexes().unwrap();
    }

    #[test]
    fn updates_and_deletes_carry_the_project_the_record_had_with_or_without_a_project_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let indexes = [vec![IndexSpec::new("project", &["project"]), IndexSpec::new("n", &["n"])], vec![]];
        for (c, indexes) in ["indexed", "plain"].into_iter().zip(indexes) {
            store.declare(CollectionSpec::new(c, indexes)).unwrap();
            let c = store.collection_dyn(c).unwrap();
            c.insert("a", json!({"project": "p1", "n": 1})).unwrap();
            c.upsert("a", json!({"project": "p2", "n": 2})).unwrap();
            c.update("a", 2, json!({"n": 3})).unwrap();
            c.write_one("a", |_| Ok::<_, WriteError>(crate::RecordWrite::Put(json!({"project": "p4"})))).unwrap();
            c.delete("a", None).unwrap();
        }
        store.check_indexes().unwrap();
        let changes = store.changes_since(0, 100).unwrap();
        for c in ["indexed", "plain"] {
            let prev: Vec<_> = changes.iter().filter(|e| e.collection == c).map(|e| e.prev_project.clone()).collect();
            assert_eq!(prev, [None, Some(json!("p1")), Some(json!("p2")), None, Some(json!("p4"))], "{c}");
        }
    }

    /// A trim that commits between the reader's look at the trim marker and its read of the range must not
    /// make it skip changes: both are read at one snapshot.
    #[test]
    fn a_trim_between_the_marker_and_the_range_skips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("c", vec![])).unwrap();
        let c = store.collection_dyn("c").unwrap();
        let mut seqs = Vec::new();
        for i in 0..10 {
            c.upsert(&format!("r{i}"), json!({"i": i})).unwrap();
            seqs.push(store.db().last_sequence());
        }
        store.register_consumer("reader", 0).unwrap();
        let trimmer = store.clone();
        let through = seqs[5];
        *store.inner.between_marker_and_range.lock() = Some(Box::new(move || {
            trimmer.ack("reader", through).unwrap();
        }));
        let page = store.changes_since(seqs[1], 100).unwrap();
        assert!(store.trimmed_through().unwrap() >= through, "the hook trimmed");
        let got: Vec<u64> = page.iter().map(|c| c.seq).collect();
        assert_eq!(got, seqs[2..], "changes after the requested sequence, none skipped");
        let err = store.changes_since(seqs[1], 100).unwrap_err();
        assert!(matches!(err, ChangesError::ChangesTrimmed { .. }), "{err:?}");
    }

    /// For each zstd frame in the table `file` (a compressed block: `raw_len u32 LE`, then the frame), its
    /// `raw_len` and, if its first block is compressed, that block's literals section type (RFC 8878,
    /// 3.1.1.3.1.1: 0 raw, 1 RLE, 2 Huffman-coded, 3 Huffman-coded with the previous block's table).
    fn zstd_blocks(file: &[u8]) -> Vec<(u32, Option<u8>)> {
        const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
        let mut blocks = Vec::new();
        for at in (4..file.len().saturating_sub(4)).filter(|&at| file[at..at + 4] == MAGIC) {
            let raw_len = u32::from_le_bytes(file[at - 4..at].try_into().unwrap());
            let descriptor = file[at + 4];
            let single_segment = descriptor & 0x20 != 0;
            let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 3)];
            let content_size = match descriptor >> 6 {
                0 => usize::from(single_segment),
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let block = at + 5 + usize::from(!single_segment) + dictionary_id + content_size;
            let header = u32::from_le_bytes([file[block], file[block + 1], file[block + 2], 0]);
            blocks.push((raw_len, ((header >> 1) & 3 == 2).then(|| file[block + 3] & 3)));
        }
        blocks
    }

    #[test]
    fn a_stores_tables_have_blocks_of_its_size_with_their_literals_raw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.declare(CollectionSpec::new("jobs", vec![IndexSpec::new("owner", &["owner"])])).unwrap();
        let jobs = store.collection_dyn("jobs").unwrap();
        for i in 0..2000 {
            let doc = json!({"owner": format!("user{}", i % 50), "status": "PENDING", "command": "python train.py",
                             "note": format!("job {i} of the nightly sweep over learning rates and seeds")});
            jobs.insert(&format!("job-{i:06}"), doc).unwrap();
        }
        store.db().flush().unwrap();
        let mut blocks = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sst") {
                blocks.extend(zstd_blocks(&std::fs::read(&path).unwrap()));
            }
        }
        let types: Vec<u8> = blocks.iter().filter_map(|b| b.1).collect();
        assert!(types.len() > 20, "compressed blocks found: {}", types.len());
        assert!(types.iter().all(|&t| t < 2), "literal section types: {types:?}");
        // A data block is cut once it holds at least the block size, so most blocks end just past it (a
        // table's last data block and its index block are the others).
        let mut lens: Vec<usize> = blocks.iter().map(|b| b.0 as usize).collect();
        lens.sort_unstable();
        let median = lens[lens.len() / 2];
        assert!((TABLE_BLOCK_SIZE..TABLE_BLOCK_SIZE + 512).contains(&median), "block sizes: {lens:?}");
    }
}
