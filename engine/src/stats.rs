//! Counters the engine keeps, and the [`Stats`] report built from them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub user_bytes: AtomicU64,
    pub commits: AtomicU64,
    pub write_groups: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_bytes: AtomicU64,
    pub ingests: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub slowdowns: AtomicU64,
    pub stall_micros: AtomicU64,
    pub recovered_torn_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One level of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LevelStats {
    /// Tables at this level.
    pub tables: usize,
    /// Bytes of those tables on disk.
    pub bytes: u64,
    /// Entries in those tables, tombstones included.
    pub entries: u64,
    /// Tombstones among them (tables written before tombstones were counted add 0).
    pub tombstones: u64,
}

/// A report on the engine: shape of the tree, caches, and counters since open.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Per level, from 0.
    pub levels: Vec<LevelStats>,
    /// Approximate bytes in the active memtable.
    pub memtable_bytes: u64,
    /// Frozen memtables waiting to be flushed.
    pub immutable_memtables: usize,
    /// Sequence number of the newest commit.
    pub last_sequence: u64,
    /// Bytes of keys and values committed since open (as encoded in batches).
    pub user_bytes_written: u64,
    /// Commits since open.
    pub commits: u64,
    /// WAL appends since open; each carries one or more commits (group commit).
    pub write_groups: u64,
    /// Bytes appended to write-ahead logs since open.
    pub wal_bytes_written: u64,
    /// WAL syncs (`fdatasync`) since open.
    pub wal_syncs: u64,
    /// Memtables flushed to tables since open.
    pub flushes: u64,
    /// Bytes of tables written by flushes and by batches ingested as tables.
    pub flush_bytes_written: u64,
    /// Batches written straight to tables since open (see
    /// [`Options::ingest_threshold`](crate::Options::ingest_threshold)).
    pub ingested_batches: u64,
    /// Compactions run since open (merges and moves).
    pub compactions: u64,
    /// Compactions that moved a table to the next level without rewriting it.
    pub trivial_moves: u64,
    /// Bytes of tables read by compactions.
    pub compaction_bytes_read: u64,
    /// Bytes of tables written by compactions.
    pub compaction_bytes_written: u64,
    /// Write groups delayed because level 0 was filling up.
    pub write_slowdowns: u64,
    /// Microseconds writers spent waiting for flushes and compactions.
    pub write_stall_micros: u64,
    /// Block cache hits (lookups of data, index and filter blocks).
    pub cache_hits: u64,
    /// Block cache misses, lookups that gave up on a busy shard (and read the block themselves) included.
    pub cache_misses: u64,
    /// Bytes held by the block cache: data, index and filter blocks, within
    /// [`Options::block_cache_size`](crate::Options::block_cache_size).
    pub cache_bytes: u64,
    /// Of `cache_bytes`, the bytes of tables' index and filter blocks.
    pub cache_index_filter_bytes: u64,
    /// Bytes of torn WAL tail dropped at open.
    pub recovered_torn_bytes: u64,
}

impl Stats {
    /// Bytes written to disk (WAL, flushes, compactions) per byte committed; 0 before any write.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes_written == 0 {
            return 0.0;
        }
        let disk = self.wal_bytes_written + self.flush_bytes_written + self.compaction_bytes_written;
        disk as f64 / self.user_bytes_written as f64
    }

    /// Bytes of all tables.
    pub fn table_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }

    /// Number of tables.
    pub fn table_count(&self) -> usize {
        self.levels.iter().map(|l| l.tables).sum()
    }
}
