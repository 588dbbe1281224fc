//! Cairn: `Durability::Immediate` (each commit's WAL record is `fdatasync`ed before it returns; concurrent
//! committers share a sync) or `Durability::None`; the cache budget is the block cache. Documents are the
//! built-in `cairn_platform::Job` collection of a `Store` over the same kind of database, whose budget is split: the
//! store's cache of decoded records at its default size, the block cache the rest.

use std::path::Path;

use cairn_engine::{Db, Durability, Options, WriteBatch};
use cairn_platform::Job;
use cairn_store::{Collection, Query, Store, StoreOptions};

use super::workloads::claim_next;
use super::{Checksum, Compacted, DocEngine, DocSession, KvEngine, KvReader, KvWriter, Result};

/// Opens the database; `ingest: false` turns table ingest off, so that large batches go through the WAL
/// and the memtable like small ones.
fn open_db(dir: &Path, durable: bool, cache_bytes: usize, ingest: bool, options: Options) -> Result<Db> {
    let durability = if durable { Durability::Immediate } else { Durability::None };
    let mut options = options.durability(durability).block_cache_size(cache_bytes);
    if !ingest {
        options = options.ingest_threshold(usize::MAX);
    }
    Ok(options.open(dir)?)
}

/// Cairn as a key-value store.
pub struct CairnKv {
    db: Db,
}

impl CairnKv {
    /// Opens the database in `dir`; with `ingest` a batch of at least `Options::ingest_threshold` bytes
    /// (16 MiB) is written straight to tables, without it through the WAL and the memtable.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize, ingest: bool) -> Result<Self> {
        Ok(Self { db: open_db(dir, durable, cache_bytes, ingest, Db::builder())? })
    }
}

impl KvEngine for CairnKv {
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (k, v) in pairs {
            batch.put(k, v);
        }
        self.db.write(batch)?;
        Ok(())
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for k in keys {
            batch.delete(k);
        }
        self.db.write(batch)?;
        Ok(())
    }

    fn writer(&self) -> Result<Box<dyn KvWriter + '_>> {
        Ok(Box::new(&self.db))
    }

    fn reader(&self) -> Result<Box<dyn KvReader + '_>> {
        Ok(Box::new(&self.db))
    }

    fn compact(&mut self) -> Result<Compacted> {
        self.db.compact()?;
        Ok(Compacted::Done)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.db.close()?)
    }

    fn describe(&self) -> Option<String> {
        Some(describe_db(&self.db))
    }
}

impl KvWriter for &Db {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Db::put(self, key, value)?;
        Ok(())
    }
}

impl KvReader for &Db {
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool> {
        // The value read in place, as redb's and LMDB's harnesses read theirs through guards and slices.
        Ok(Db::get_with(self, key, |v| sum.add(v))?.is_some())
    }

    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize> {
        // Pairs read in place, as redb's and LMDB's harnesses read theirs through guards and slices.
        let mut iter = Db::range(self, start..)?;
        let mut read = 0;
        while read < n {
            let Some(pair) = iter.next_ref() else { break };
            let (k, v) = pair?;
            sum.add(k);
            sum.add(v);
            read += 1;
        }
        Ok(read)
    }
}

/// Tables per level, memtables, compactions, block cache hits and misses, and write stalls of `db`.
fn describe_db(db: &Db) -> String {
    let s = db.stats();
    let levels: Vec<String> = s
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.tables > 0)
        .map(|(i, l)| format!("L{i} {} ({} MiB)", l.tables, l.bytes >> 20))
        .collect();
    format!(
        "tables: {}; memtable {} MiB + {} frozen; {} compactions so far; block cache {} hits / {} misses; \
         {} writes slowed, {} ms stalled",
        if levels.is_empty() { "none".to_owned() } else { levels.join(", ") },
        s.memtable_bytes >> 20,
        s.immutable_memtables,
        s.compactions,
        s.cache_hits,
        s.cache_misses,
        s.write_slowdowns,
        s.write_stall_micros / 1000
    )
}

/// The size of the store's cache of decoded records: `StoreOptions`' default, taken out of the budget.
const RECORD_CACHE: usize = 16 << 20;

/// Cairn's `Store` with the `jobs` collection.
pub struct CairnDocs {
    store: Store,
    jobs: Collection<Job>,
}

impl CairnDocs {
    /// Opens the store in `dir` and declares the `jobs` collection.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let records = RECORD_CACHE.min(cache_bytes / 2);
        let db = open_db(dir, durable, cache_bytes - records, true, Store::engine_options())?;
        let store = Store::with_db(db, StoreOptions::default().record_cache_size(records))?;
        let jobs = store.collection::<Job>()?;
        Ok(Self { store, jobs })
    }
}

impl DocEngine for CairnDocs {
    fn insert_batch(&self, jobs: &[Job]) -> Result<()> {
        self.store.transaction(|tx| {
            for j in jobs {
                tx.insert(j)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn session(&self) -> Result<Box<dyn DocSession + '_>> {
        Ok(Box::new(CairnSession { jobs: self.jobs.clone() }))
    }

    fn describe(&self) -> Option<String> {
        Some(describe_db(self.store.db()))
    }

    fn close(self: Box<Self>) -> Result<()> {
        let db = self.store.db().clone();
        drop(self.jobs);
        drop(self.store);
        Ok(db.close()?)
    }
}

struct CairnSession {
    jobs: Collection<Job>,
}

impl DocSession for CairnSession {
    fn top_pending(&mut self, limit: usize, sum: &mut Checksum) -> Result<usize> {
        // Read-only, so the jobs are shared with the record cache rather than copied out of it.
        let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(limit);
        let page = self.jobs.query_shared(&q)?;
        for r in &page.records {
            sum.add(r.id.as_bytes());
            sum.add_u64(r.doc.priority as u64);
        }
        Ok(page.records.len())
    }

    fn claim(&mut self, node: &str, now_ms: i64, lease_ms: i64) -> Result<Option<String>> {
        // A claim that lost every race (`Contended`) is tried again.
        loop {
            match claim_next(&self.jobs, node, now_ms, lease_ms) {
                Err(e) if e.is_retryable() => continue,
                other => return Ok(other?.map(|s| s.id)),
            }
        }
    }

    fn page_owner(&mut self, owner: &str, page: usize, sum: &mut Checksum) -> Result<(usize, usize)> {
        let q = Query::new().eq("owner", owner).limit(page);
        let (mut seen, mut pages, mut cursor) = (0, 0, None);
        loop {
            cursor = self.jobs.query_each(&q.clone().after(cursor), |r| {
                sum.add(r.id.as_bytes());
                sum.add(r.doc.status.as_str().as_bytes());
                seen += 1;
            })?;
            pages += 1;
            if cursor.is_none() {
                return Ok((seen, pages));
            }
        }
    }

    fn get(&mut self, id: &str, sum: &mut Checksum) -> Result<bool> {
        Ok(match self.jobs.get_shared(id)? {
            Some(s) => {
                sum.add(s.id.as_bytes());
                sum.add(s.doc.status.as_str().as_bytes());
                sum.add_u64(s.doc.priority as u64);
                true
            }
            None => false,
        })
    }
}
