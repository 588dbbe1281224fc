//! LMDB through heed 0.23: default environment flags, so a commit syncs the data file before it returns;
//! the non-durable variant opens with `NO_SYNC`. LMDB has no cache of its own: it reads through a shared
//! memory map, so the OS page cache is its cache, and the map size (32 GiB here, reserved address space,
//! not memory) only bounds the file. Readers keep one read transaction for their life.

use std::ops::Bound;
use std::path::Path;

use ::heed::types::Bytes;
use ::heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, WithTls};

use super::{Checksum, Compacted, KvEngine, KvReader, KvWriter, Result};

/// Upper bound of the data file (LMDB's map size): address space, not memory.
const MAP_SIZE: usize = 32 << 30;

/// LMDB as a key-value store.
pub struct LmdbKv {
    env: Env,
    db: Database<'static, Bytes, Bytes>,
}

impl LmdbKv {
    /// Opens (or creates) the environment in `dir` and its unnamed database. `cache_bytes` is ignored: LMDB
    /// reads through the page cache.
    pub fn open(dir: &Path, durable: bool, _cache_bytes: usize) -> Result<Self> {
        let mut options = EnvOpenOptions::new();
        options.map_size(MAP_SIZE);
        if !durable {
            // SAFETY: NO_SYNC only skips the sync after a commit; a crash may lose recent commits but the
            // environment stays consistent as long as the OS does not crash.
            unsafe {
                options.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the benchmark opens each environment once per process and never changes its files from
        // outside LMDB while it is open (heed's requirement for memory-mapped access).
        let env = unsafe { options.open(dir)? };
        let tx = env.write_txn()?;
        let db = env
            .create_databases_and_commit(tx, |opener, tx| {
                opener.create_database(tx, None).map(CommitOrAbort::<_, ()>::Commit)
            })
            .map_err(|e: ::heed::Error| e)?
            .unwrap_commit();
        Ok(Self { env, db })
    }
}

impl KvEngine for LmdbKv {
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut tx = self.env.write_txn()?;
        for (k, v) in pairs {
            self.db.put(&mut tx, k, v)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut tx = self.env.write_txn()?;
        for k in keys {
            self.db.delete(&mut tx, k)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn writer(&self) -> Result<Box<dyn KvWriter + '_>> {
        Ok(Box::new(self))
    }

    fn reader(&self) -> Result<Box<dyn KvReader + '_>> {
        Ok(Box::new(LmdbReader { db: self.db, tx: self.env.read_txn()? }))
    }

    fn compact(&mut self) -> Result<Compacted> {
        // LMDB reuses freed pages but never shrinks its file in place (a compacting copy to a new file
        // exists, `Env::copy_to_file`, but it is an offline copy, not compaction of the live database).
        Ok(Compacted::Unsupported)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.env.prepare_for_closing().wait();
        Ok(())
    }
}

impl KvWriter for &LmdbKv {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut tx = self.env.write_txn()?;
        self.db.put(&mut tx, key, value)?;
        tx.commit()?;
        Ok(())
    }
}

struct LmdbReader<'e> {
    db: Database<'static, Bytes, Bytes>,
    tx: RoTxn<'e, WithTls>,
}

impl KvReader for LmdbReader<'_> {
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool> {
        Ok(match self.db.get(&self.tx, key)? {
            Some(v) => {
                sum.add(v);
                true
            }
            None => false,
        })
    }

    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize> {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(start), Bound::Unbounded);
        let mut read = 0;
        for pair in self.db.range(&self.tx, &bounds)?.take(n) {
            let (k, v) = pair?;
            sum.add(k);
            sum.add(v);
            read += 1;
        }
        Ok(read)
    }
}
