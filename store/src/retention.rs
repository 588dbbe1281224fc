//! Change-feed retention: trimming by age, by total size and by acknowledgement, held back by durable
//! consumers up to a maximum lag; run by a background thread of the store every `change_trim_interval`, and
//! sooner when a write finds the feed over its size bound. See `docs/collections.md`, "Change feed".

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use cairn_engine::WriteBatch;

use crate::changes::decode_event;
use crate::clock::now_ms;
use crate::error::StoreError;
use crate::keys;
use crate::store::{Store, StoreInner};

/// Entries deleted per batch by a trim.
const TRIM_BATCH: usize = 1000;
/// Shortest time between two trims started by writes (rather than by the interval).
const MIN_NUDGED_GAP: Duration = Duration::from_millis(20);

/// The feed's figures the store keeps in memory.
#[derive(Debug, Default)]
pub(crate) struct FeedCounters {
    /// Bytes (key + value) of the events in the feed: computed at open by one scan of the feed, then added
    /// to by every commit and subtracted from by every trim.
    pub(crate) bytes: AtomicI64,
    /// Events trimmed since open.
    pub(crate) trimmed_events: AtomicU64,
    /// Trims run since open.
    pub(crate) trims: AtomicU64,
    /// Trims that failed since open.
    pub(crate) trim_errors: AtomicU64,
    /// Serializes trims (the background thread's and those of `ack` and `trim_changes`).
    pub(crate) trimming: Mutex<()>,
}

/// One durable consumer, as [`FeedStats`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    /// The consumer's name.
    pub name: String,
    /// The sequence it acknowledged.
    pub acked: u64,
    /// Commit sequences between its cursor and the newest change (0 once it has acknowledged every change).
    pub lag_seqs: u64,
    /// Whether changes it has not acknowledged were trimmed (it lagged more than `max_consumer_lag_bytes`,
    /// or than the retention period): reading on from its cursor fails with `ChangesTrimmed`.
    pub trimmed: bool,
}

/// The change feed's state: see [`Store::feed_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Bytes (keys and values) of the events in the feed.
    pub bytes: u64,
    /// Highest sequence trimmed (0 if none).
    pub trimmed_through: u64,
    /// Commit sequence of the newest change ([`Store::last_change_sequence`]).
    pub last_change: u64,
    /// Events trimmed since the store was opened.
    pub trimmed_events: u64,
    /// Trims run since the store was opened.
    pub trims: u64,
    /// Trims that failed since the store was opened (the next one retries).
    pub trim_errors: u64,
    /// The registered consumers.
    pub consumers: Vec<ConsumerLag>,
}

/// Wakes and stops the retention thread.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    stop: bool,
    nudged: bool,
}

/// Wakes a store's retention thread.
#[derive(Debug, Default)]
pub(crate) struct Retention {
    signal: Arc<Signal>,
}

/// Held by every handle of a store its users have (not by the retention thread's own): the last one to drop
/// stops the retention thread and waits for it, so that the store's last handle closes the database on the
/// user's thread, before the drop returns.
#[derive(Debug)]
pub(crate) struct ThreadGuard {
    signal: Arc<Signal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Retention {
    /// Starts the thread, trimming `inner`'s feed every `interval` and when nudged.
    pub(crate) fn start(&self, inner: Weak<StoreInner>, interval: Duration) -> std::io::Result<ThreadGuard> {
        let signal = self.signal.clone();
        let handle =
            std::thread::Builder::new().name("cairn-retention".into()).spawn(move || run(&signal, &inner, interval))?;
        Ok(ThreadGuard { signal: self.signal.clone(), thread: Mutex::new(Some(handle)) })
    }

    /// Asks for a trim soon (a write found the feed over its size bound).
    pub(crate) fn nudge(&self) {
        let mut s = self.signal.state.lock();
        if !s.nudged {
            s.nudged = true;
            self.signal.cond.notify_one();
        }
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.signal.state.lock().stop = true;
        self.signal.cond.notify_one();
        if let Some(handle) = self.thread.lock().take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

fn run(signal: &Signal, inner: &Weak<StoreInner>, interval: Duration) {
    let mut last = Instant::now();
    loop {
        {
            let mut s = signal.state.lock();
            loop {
                if s.stop {
                    return;
                }
                let since = last.elapsed();
                if since >= interval || (s.nudged && since >= MIN_NUDGED_GAP) {
                    break;
                }
                let wait = if s.nudged { MIN_NUDGED_GAP - since } else { interval - since };
                signal.cond.wait_for(&mut s, wait);
            }
            s.nudged = false;
        }
        last = Instant::now();
        let Some(inner) = inner.upgrade() else { return };
        let store = Store::from_inner(inner);
        // A failed trim is counted (`FeedStats::trim_errors`) and retried at the next interval; a failed fold
        // is retried then too.
        let _ = store.trim_changes();
        let _ = store.fold_all_counts();
    }
}

/// What one trim decides for each event, walking the feed from its oldest.
pub(crate) struct TrimPlan {
    /// Events older than this (ms since the epoch) are trimmed.
    pub(crate) cutoff_ms: i64,
    /// The feed is trimmed down to this many bytes.
    pub(crate) max_bytes: u64,
    /// A consumer holds back trimming while the feed after its cursor is at most this many bytes.
    pub(crate) max_lag_bytes: u64,
}

impl Store {
    /// Deletes changes that every registered consumer has acknowledged, changes older than the retention
    /// period, and the oldest changes while the feed is larger than `change_retention_bytes`: but none that a
    /// consumer has not acknowledged, unless the feed after that consumer's cursor exceeds
    /// `max_consumer_lag_bytes` (such a consumer no longer holds anything back; reading on from its cursor
    /// fails with `ChangesTrimmed`). A commit's changes are trimmed together. Returns how many changes were
    /// deleted. The store's retention thread calls it every `change_trim_interval`.
    pub fn trim_changes(&self) -> Result<u64, StoreError> {
        let counters = self.feed_counters();
        let result = self.trim_with(&self.trim_plan());
        counters.trims.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            counters.trim_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    pub(crate) fn trim_with(&self, plan: &TrimPlan) -> Result<u64, StoreError> {
        let counters = self.feed_counters();
        let _trimming = counters.trimming.lock();
        let snap = self.db().snapshot();
        let mut consumers: Vec<(u64, bool)> = Vec::new();
        for pair in snap.prefix(keys::CONSUMERS)? {
            let (key, value) = pair?;
            let seq = value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            consumers.push((seq.ok_or_else(|| StoreError::undecodable(&key, "consumer cursor"))?, false));
        }
        let acked_by_all = consumers.iter().map(|c| c.0).min();
        let mut remaining = counters.bytes.load(Ordering::Relaxed).max(0) as u64;
        let mut batch = WriteBatch::new();
        let mut batch_bytes = 0u64;
        let mut deleted = 0;
        let mut through: Option<u64> = None;
        for pair in snap.prefix(keys::CHANGES)? {
            let (key, value) = pair?;
            let change = decode_event(&key, &value)?;
            let size = (key.len() + value.len()) as u64;
            // The rest of a commit part of which was trimmed goes too.
            if through != Some(change.seq) {
                let wanted = acked_by_all.is_some_and(|a| change.seq <= a)
                    || change.at_ms < plan.cutoff_ms
                    || remaining > plan.max_bytes;
                if !wanted {
                    break;
                }
                let mut held = false;
                // Everything from here on is after the cursor of a consumer that acknowledged less.
                for c in consumers.iter_mut().filter(|c| !c.1 && c.0 < change.seq) {
                    if remaining > plan.max_lag_bytes {
                        c.1 = true;
                    } else {
                        held = true;
                    }
                }
                if held {
                    break;
                }
            }
            batch.delete(&key);
            batch_bytes += size;
            remaining = remaining.saturating_sub(size);
            through = Some(change.seq);
            deleted += 1;
            if batch.len() >= TRIM_BATCH {
                self.finish_trim(std::mem::take(&mut batch), through, batch_bytes)?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.finish_trim(batch, through, batch_bytes)?;
        }
        counters.trimmed_events.fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }

    fn finish_trim(&self, mut batch: WriteBatch, through: Option<u64>, bytes: u64) -> Result<(), StoreError> {
        if let Some(seq) = through {
            batch.put(keys::TRIMMED, seq.to_le_bytes());
        }
        self.db().write(batch)?;
        self.feed_counters().bytes.fetch_sub(bytes as i64, Ordering::Relaxed);
        Ok(())
    }

    /// The change feed's size, trim state and consumers. Reads the consumers' cursors; the rest is kept in
    /// memory.
    pub fn feed_stats(&self) -> Result<FeedStats, StoreError> {
        let c = self.feed_counters();
        let trimmed_through = self.trimmed_through()?;
        // Changes, not commits: a consumer's own cursor writes are commits, and must not count as lag.
        let last = self.last_change_sequence()?;
        let consumers = self
            .consumers()?
            .into_iter()
            .map(|(name, acked)| ConsumerLag {
                name,
                acked,
                lag_seqs: last.saturating_sub(acked),
                trimmed: acked < trimmed_through,
            })
            .collect();
        Ok(FeedStats {
            bytes: c.bytes.load(Ordering::Relaxed).max(0) as u64,
            trimmed_through,
            last_change: last,
            trimmed_events: c.trimmed_events.load(Ordering::Relaxed),
            trims: c.trims.load(Ordering::Relaxed),
            trim_errors: c.trim_errors.load(Ordering::Relaxed),
            consumers,
        })
    }

    /// Counts the bytes of a commit's change events; asks for a trim when the feed is over its size bound by
    /// more than an eighth, and, when it is over twice the bound, waits for a trim under way to finish (so
    /// that writers cannot outrun the trims).
    pub(crate) fn note_appended(&self, bytes: u64) {
        let total = self.feed_counters().bytes.fetch_add(bytes as i64, Ordering::Relaxed) as u64 + bytes;
        let max = self.options().change_retention_bytes;
        if total > max.saturating_add(max / 8) {
            self.retention().nudge();
        }
        if total > max.saturating_mul(2) {
            drop(self.feed_counters().trimming.lock());
        }
    }

    fn trim_plan(&self) -> TrimPlan {
        let o = self.options();
        let age = i64::try_from(o.change_retention.as_millis()).unwrap_or(i64::MAX);
        TrimPlan {
            cutoff_ms: now_ms().saturating_sub(age),
            max_bytes: o.change_retention_bytes,
            max_lag_bytes: o.max_consumer_lag_bytes,
        }
    }
}

/// Bytes (keys and values) of the events in the feed, by one scan of it.
pub(crate) fn scan_feed_bytes(db: &cairn_engine::Db) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for pair in db.prefix(keys::CHANGES)? {
        let (key, value) = pair?;
        total += (key.len() + value.len()) as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ChangesError, CollectionSpec, StoreOptions};

    fn open(dir: &std::path::Path, opts: StoreOptions) -> Store {
        let store = Store::with_db(cairn_engine::Db::open(dir).unwrap(), opts).unwrap();
        store.declare(CollectionSpec::new("c", vec![])).unwrap();
        store
    }

    /// Writes `n` updates of about 1 KB to records `r0` .. `r9`; returns the last one's sequence.
    fn write(store: &Store, n: usize) -> u64 {
        let c = store.collection_dyn("c").unwrap();
        let mut last = 0;
        for i in 0..n {
            last = c.upsert(&format!("r{}", i % 10), json!({"i": i, "pad": "x".repeat(1000)})).unwrap().seq;
        }
        last
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_bytes(store: &Store) {
        assert_eq!(store.feed_stats().unwrap().bytes, scan_feed_bytes(store.db()).unwrap(), "running total");
    }

    #[test]
    fn the_retention_thread_trims_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            StoreOptions::default().change_retention_bytes(64 << 10).change_trim_interval(Duration::from_millis(20));
        let store = open(dir.path(), opts);
        let mut peak = 0;
        let mut last = 0;
        for _ in 0..20 {
            last = write(&store, 100);
            peak = peak.max(store.feed_stats().unwrap().bytes);
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(peak > 64 << 10, "the feed grew past the bound between trims: {peak}");
        wait_for("a trim", || store.feed_stats().unwrap().bytes <= 64 << 10);
        check_bytes(&store);
        let stats = store.feed_stats().unwrap();
        assert!(stats.trimmed_events > 1900 && stats.trims > 0, "{stats:?}");
        // What is kept is the newest changes, readable from the trim marker on.
        let kept = store.changes_since(stats.trimmed_through, usize::MAX).unwrap();
        assert_eq!(kept.last().map(|c| c.seq), Some(last));
        assert!(kept.len() >= 50, "{}", kept.len());
        assert!(matches!(store.changes_since(0, 10), Err(ChangesError::ChangesTrimmed { .. })));
    }

    #[test]
    fn the_retention_thread_trims_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::default()
            .change_retention(Duration::from_millis(300))
            .change_trim_interval(Duration::from_millis(20));
        let store = open(dir.path(), opts);
        let first = write(&store, 10);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(store.changes_since(0, 100).unwrap().len(), 10, "younger than the retention: kept");
        wait_for("a trim by age", || store.trimmed_through().unwrap() >= first);
        assert!(store.changes_since(first, 100).unwrap().is_empty());
        check_bytes(&store);
        assert_eq!(store.feed_stats().unwrap().bytes, 0);
    }

    #[test]
    fn a_dead_consumer_holds_trimming_back_only_up_to_the_maximum_lag() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::default()
            .change_retention_bytes(16 << 10)
            .max_consumer_lag_bytes(48 << 10)
            .change_trim_interval(Duration::ZERO);
        let store = open(dir.path(), opts);
        store.register_consumer("dead", 0).unwrap();
        store.register_consumer("live", 0).unwrap();
        write(&store, 30); // About 31 KB: over the retention, under the lag.
        store.ack("live", store.db().last_sequence()).unwrap();
        assert_eq!(store.trim_changes().unwrap(), 0, "the dead consumer is within its lag");
        assert_eq!(store.changes_since(0, 100).unwrap().len(), 30);
        let stats = store.feed_stats().unwrap();
        assert!(stats.consumers.iter().all(|c| !c.trimmed), "{stats:?}");
        write(&store, 30); // About 62 KB after the dead consumer's cursor: past its lag.
        store.ack("live", store.db().last_sequence()).unwrap();
        let stats = store.feed_stats().unwrap();
        assert!(stats.bytes <= 16 << 10, "trimmed down to the retention: {stats:?}");
        check_bytes(&store);
        let dead = stats.consumers.iter().find(|c| c.name == "dead").unwrap();
        let live = stats.consumers.iter().find(|c| c.name == "live").unwrap();
        assert!(dead.trimmed && !live.trimmed, "{stats:?}");
        // Lag counts changes: the live consumer's own acknowledgements are commits, not changes it missed.
        assert_eq!((live.lag_seqs, stats.last_change), (0, live.acked), "{stats:?}");
        assert_eq!(dead.lag_seqs, stats.last_change, "{stats:?}");
        assert!(matches!(store.changes_since(dead.acked, 10), Err(ChangesError::ChangesTrimmed { .. })));
        assert!(store.changes_since(live.acked, 10).unwrap().is_empty());
    }

    #[test]
    fn the_retention_thread_ends_with_the_last_store_handle() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::default().change_trim_interval(Duration::from_millis(1));
        for round in 0..20 {
            let store = open(dir.path(), opts.clone());
            let clone = store.clone();
            write(&clone, 1);
            assert_eq!(store.changes_since(0, 100).unwrap().len(), round + 1);
            drop(store);
            drop(clone);
            // The directory lock is free again at once, even if the thread was trimming: nothing holds the
            // database any more.
        }
        let again = open(dir.path(), opts);
        check_bytes(&again);
    }
}
