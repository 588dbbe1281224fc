//! Options, set through a builder whose every setter states its default.

use std::sync::Arc;
use std::time::Duration;

use crate::compaction::{CompactionPolicy, LeveledPolicy};
use crate::error::OpenError;
use crate::io::{FsStorage, Storage};
use crate::table::Compression;

/// Smallest and largest zstd dictionary a table may make ([`Compression::ZstdDictionary`]).
const MIN_DICTIONARY: usize = 256;
const MAX_DICTIONARY: usize = 1 << 20;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The commit's WAL record is synced (`fdatasync`) before the commit returns. Survives power loss.
    /// Concurrent committers share one sync (group commit).
    #[default]
    Immediate,
    /// The record is written to the operating system before the commit returns and synced by a background
    /// thread at most [`Options::sync_interval`] later. Survives a process crash; a power loss may lose
    /// the last interval.
    Buffered,
    /// The record is written to the operating system; it is synced only when a memtable is flushed, on
    /// [`Db::flush`](crate::Db::flush), or on close. Survives a process crash, not a power loss.
    None,
}

/// How to open a database. Make one with [`Db::builder`](crate::Db::builder), adjust it, then call [`Options::open`].
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) create_if_missing: bool,
    pub(crate) error_if_exists: bool,
    pub(crate) durability: Durability,
    pub(crate) sync_interval: Duration,
    pub(crate) memtable_size: usize,
    pub(crate) max_immutable_memtables: usize,
    pub(crate) block_size: usize,
    pub(crate) block_cache_size: usize,
    pub(crate) compression: Compression,
    pub(crate) bloom_bits_per_key: u32,
    pub(crate) table_size: u64,
    pub(crate) max_compaction_bytes: Option<u64>,
    pub(crate) level0_slowdown_trigger: usize,
    pub(crate) level0_slowdown_rate: u64,
    pub(crate) level0_stop_trigger: usize,
    pub(crate) max_manifest_size: u64,
    pub(crate) ingest_threshold: usize,
    pub(crate) cache_flushed_blocks: bool,
    pub(crate) compaction_policy: Arc<dyn CompactionPolicy>,
    pub(crate) table_partitions: Option<fn(&[u8]) -> usize>,
    pub(crate) storage: Arc<dyn Storage>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            create_if_missing: true,
            error_if_exists: false,
            durability: Durability::Immediate,
            sync_interval: Duration::from_millis(100),
            memtable_size: 64 << 20,
            max_immutable_memtables: 2,
            block_size: 4096,
            block_cache_size: 64 << 20,
            compression: Compression::default(),
            bloom_bits_per_key: 10,
            table_size: 64 << 20,
            max_compaction_bytes: None,
            level0_slowdown_trigger: 12,
            level0_slowdown_rate: 16 << 20,
            level0_stop_trigger: 20,
            max_manifest_size: 4 << 20,
            ingest_threshold: 16 << 20,
            cache_flushed_blocks: true,
            compaction_policy: Arc::new(LeveledPolicy::default()),
            table_partitions: None,
            storage: Arc::new(FsStorage),
        }
    }
}

impl Options {
    /// Create the database if the directory holds none. Default: `true`.
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// Fail if a database already exists. Default: `false`.
    pub fn error_if_exists(mut self, yes: bool) -> Self {
        self.error_if_exists = yes;
        self
    }

    /// Durability of commits that do not choose their own. Default: [`Durability::Immediate`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Longest time a [`Durability::Buffered`] commit waits for its background sync. Default: 100 ms.
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// Size at which the memtable is frozen and flushed to a table. Larger means fewer, larger level-0
    /// tables and a longer WAL replay on open. Each memtable also has, for point reads, a key index of
    /// a sixteenth of this (rounded up to a power of two, at most 16 MiB) and a key filter of a
    /// thirty-second (likewise, at most 2 MiB); from the first flush on, the flush thread keeps one more
    /// of each made ahead, for the next memtable, so that a switch does not map them while writers wait.
    /// A memtable that scans or seeks read gets, once it holds 4,096 entries, fingers where seeks start:
    /// at most a sixteenth of this again (two such while the flush thread rebuilds them, each time the
    /// memtable has grown by half). Default: 64 MiB.
    pub fn memtable_size(mut self, bytes: usize) -> Self {
        self.memtable_size = bytes;
        self
    }

    /// Frozen memtables allowed to wait for their flush before writers stall. Default: 2.
    pub fn max_immutable_memtables(mut self, n: usize) -> Self {
        self.max_immutable_memtables = n;
        self
    }

    /// Target uncompressed size of a table block. Smaller blocks make point reads cheaper and indexes
    /// larger. Default: 4 KiB.
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }

    /// Memory for decoded table blocks, shared by all tables: data blocks and every open table's index and
    /// filter (a point read needs both). It bounds what tables hold in memory however many there are.
    /// Index and filter blocks take up to three quarters of it: up to half pinned by their tables' readers
    /// (a read of such a table looks up only its data block), the rest in a pool of their own that data
    /// blocks do not evict; data blocks get what is left. One evicted is read from the table again (and checked) on its
    /// next use, which for a whole index takes a millisecond or so: with 4 KiB blocks a table's index and
    /// filter take about 3% of its data (16-byte keys, 100-byte values: 41 MiB for 10 million keys), so
    /// keep three quarters of this above that for the data you hold. [`Stats::cache_index_filter_bytes`]
    /// says what they take. Default: 64 MiB.
    ///
    /// [`Stats::cache_index_filter_bytes`]: crate::Stats::cache_index_filter_bytes
    pub fn block_cache_size(mut self, bytes: usize) -> Self {
        self.block_cache_size = bytes;
        self
    }

    /// Block compression. Default: `Compression::Zstd { level: 1 }`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Bloom filter bits per key; 10 gives about 1% false positives. Default: 10.
    pub fn bloom_bits_per_key(mut self, bits: u32) -> Self {
        self.bloom_bits_per_key = bits;
        self
    }

    /// Target size of tables written by compaction. Default: 64 MiB.
    pub fn table_size(mut self, bytes: u64) -> Self {
        self.table_size = bytes;
        self
    }

    /// Most bytes of input tables one background compaction takes, so that its extra disk space (its
    /// outputs exist next to its inputs until it installs) and its run time stay bounded. A compaction
    /// still takes at least one table of the upper level with the tables of the next level that hold its
    /// keys, even if they add up to more. Level 0 compacts its oldest tables first, as many as fit. `Db::compact`
    /// is not capped. Default: 25 × [`Options::table_size`] (1.6 GiB with the default table size).
    pub fn max_compaction_bytes(mut self, bytes: u64) -> Self {
        self.max_compaction_bytes = Some(bytes);
        self
    }

    /// The cap on one compaction's inputs: [`Options::max_compaction_bytes`] or its default.
    pub(crate) fn compaction_cap(&self) -> u64 {
        self.max_compaction_bytes.unwrap_or_else(|| self.table_size.saturating_mul(25))
    }

    /// Level-0 table count from which writers are held to [`Options::level0_slowdown_rate`], so compaction
    /// catches up. Default: 12.
    pub fn level0_slowdown_trigger(mut self, n: usize) -> Self {
        self.level0_slowdown_trigger = n;
        self
    }

    /// Bytes a second that writers may add while level 0 is at its slowdown trigger. Writers slower than
    /// this are not delayed; a write group that would run ahead of it by more than 1 ms waits for what it is
    /// ahead by, at most 1 ms. Default: 16 MiB/s.
    pub fn level0_slowdown_rate(mut self, bytes_per_second: u64) -> Self {
        self.level0_slowdown_rate = bytes_per_second;
        self
    }

    /// Level-0 table count at which writers wait for compaction. Default: 20.
    pub fn level0_stop_trigger(mut self, n: usize) -> Self {
        self.level0_stop_trigger = n;
        self
    }

    /// Encoded size from which a batch without conditions is written straight to tables instead of the WAL
    /// and the memtable: it is sorted, written and synced as tables at the deepest level no older table
    /// overlaps, and committed by the manifest edit that adds them (durable whatever the durability asked
    /// for). Frozen memtables are flushed first, and other writers wait meanwhile. Saves the memtable
    /// inserts and the later flush of a bulk load. `usize::MAX` turns it off. Default: 16 MiB.
    pub fn ingest_threshold(mut self, bytes: usize) -> Self {
        self.ingest_threshold = bytes;
        self
    }

    /// Put the data blocks of a flushed memtable into the block cache, decoded, as the flush writes them, so
    /// that reads of what was just written (a job right after it was queued, a run's latest records) find
    /// their blocks there instead of reading, checking and decompressing each on its first read. They count
    /// against `block_cache_size` and are evicted like any block; compactions' outputs are never put in.
    /// Costs the flush a decode of each block: about a third more of its time for pairs of 174 bytes (a
    /// 52 MB memtable in 370 ms instead of 280 ms), so the WAL a crash leaves to replay is longer too (still
    /// bounded by the memtables' budget, see `max_immutable_memtables`). Default: `true`.
    pub fn cache_flushed_blocks(mut self, yes: bool) -> Self {
        self.cache_flushed_blocks = yes;
        self
    }

    /// Size past which the manifest is rewritten as a single snapshot. Default: 4 MiB.
    pub fn max_manifest_size(mut self, bytes: u64) -> Self {
        self.max_manifest_size = bytes;
        self
    }

    /// What to compact when. Default: [`LeveledPolicy::default`] (level 0 at 4 tables, level 1 at
    /// 256 MiB, x10 per level, tables compacted for their tombstones from a tombstone ratio of 0.5).
    pub fn compaction_policy(mut self, policy: Arc<dyn CompactionPolicy>) -> Self {
        self.compaction_policy = policy;
        self
    }

    /// How keys fall into partitions: `prefix_len(key)` is the length of the prefix that names `key`'s
    /// partition (clamped to the key's length). The tables compactions write never hold keys of two
    /// partitions, so that a compaction leaves alone the tables of partitions its upper level's tables hold
    /// no key of. Layers that keep unrelated kinds of keys side by side (records, index entries, a log of
    /// changes) set it; level-0 tables, one per flush, are not split. The function is not stored: a database
    /// opened with another one (or none) reads the same, and only what compactions write from then on is
    /// split differently. Default: none (tables are cut by [`Options::table_size`] only).
    pub fn table_partitions(mut self, prefix_len: fn(&[u8]) -> usize) -> Self {
        self.table_partitions = Some(prefix_len);
        self
    }

    /// Where files live. Default: [`FsStorage`], the real file system.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), OpenError> {
        let bad = |what: &str| Err(OpenError::InvalidOptions(what.to_owned()));
        if self.memtable_size < 4096 {
            return bad("memtable_size must be at least 4 KiB");
        }
        if self.block_size < 64 || self.block_size > 16 << 20 {
            return bad("block_size must be between 64 bytes and 16 MiB");
        }
        if self.table_size < 4096 {
            return bad("table_size must be at least 4 KiB");
        }
        if self.max_immutable_memtables == 0 {
            return bad("max_immutable_memtables must be at least 1");
        }
        if self.level0_slowdown_rate == 0 {
            return bad("level0_slowdown_rate must be positive");
        }
        if self.level0_stop_trigger <= self.level0_slowdown_trigger {
            return bad("level0_stop_trigger must exceed level0_slowdown_trigger");
        }
        if let Compression::Zstd { level } | Compression::ZstdDictionary { level, .. } = self.compression {
            if !zstd::compression_level_range().contains(&level) {
                return bad("zstd level out of range");
            }
        }
        if let Compression::ZstdDictionary { dictionary_size, .. } = self.compression {
            if !(MIN_DICTIONARY..=MAX_DICTIONARY).contains(&dictionary_size) {
                return bad("zstd dictionary_size must be 256 bytes to 1 MiB");
            }
        }
        Ok(())
    }
}

/// Options for one write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Durability of this commit; `None` uses the database's default.
    pub durability: Option<Durability>,
}

impl WriteOptions {
    /// A write with the given durability.
    pub fn durability(durability: Durability) -> Self {
        Self { durability: Some(durability) }
    }
}
