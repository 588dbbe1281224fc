//! fjall 3: one keyspace in a `Database`; every commit is followed by `PersistMode::SyncAll` (`fsync` of
//! the journal) or, for the non-durable variant, `PersistMode::Buffer` (written to the OS). The cache
//! budget goes to the database's block cache (`DatabaseBuilder::cache_size`).

use std::path::Path;

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Checksum, Compacted, KvEngine, KvReader, KvWriter, Result};

/// fjall as a key-value store.
pub struct FjallKv {
    db: Database,
    keyspace: Keyspace,
    mode: PersistMode,
}

impl FjallKv {
    /// Opens (or creates) the database in `dir` and its keyspace `kv`.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let db = Database::builder(dir).cache_size(cache_bytes as u64).open()?;
        let keyspace = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        let mode = if durable { PersistMode::SyncAll } else { PersistMode::Buffer };
        Ok(Self { db, keyspace, mode })
    }
}

impl KvEngine for FjallKv {
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(self.mode));
        for (k, v) in pairs {
            batch.insert(&self.keyspace, k.as_slice(), v.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(self.mode));
        for k in keys {
            batch.remove(&self.keyspace, k.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    fn writer(&self) -> Result<Box<dyn KvWriter + '_>> {
        Ok(Box::new(self))
    }

    fn reader(&self) -> Result<Box<dyn KvReader + '_>> {
        Ok(Box::new(&self.keyspace))
    }

    fn compact(&mut self) -> Result<Compacted> {
        // Flush the memtable, then merge every table (`major_compact` is public but hidden from fjall's docs).
        self.keyspace.rotate_memtable_and_wait()?;
        self.keyspace.major_compact()?;
        Ok(Compacted::Done)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(self.mode)?;
        Ok(())
    }
}

impl KvWriter for &FjallKv {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.keyspace.insert(key, value)?;
        self.db.persist(self.mode)?;
        Ok(())
    }
}

impl KvReader for &Keyspace {
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool> {
        Ok(match Keyspace::get(self, key)? {
            Some(v) => {
                sum.add(&v);
                true
            }
            None => false,
        })
    }

    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize> {
        let mut read = 0;
        for guard in Keyspace::range(self, start..).take(n) {
            let (k, v) = guard.into_inner()?;
            sum.add(&k);
            sum.add(&v);
            read += 1;
        }
        Ok(read)
    }
}
