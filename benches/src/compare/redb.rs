//! redb 4: one file, `Durability::Immediate` (the default: the commit is on disk when `commit` returns)
//! or `Durability::None`; the cache budget goes to `Builder::set_cache_size`. Readers keep one read
//! transaction for their life, as redb's own benchmark does.

use std::path::Path;

use ::redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use super::{Checksum, Compacted, KvEngine, KvReader, KvWriter, Result};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// redb as a key-value store.
pub struct RedbKv {
    db: Database,
    durability: Durability,
}

impl RedbKv {
    /// Opens (or creates) `dir/data.redb` and its table.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let db = Database::builder().set_cache_size(cache_bytes).create(dir.join("data.redb"))?;
        let this = Self { db, durability: if durable { Durability::Immediate } else { Durability::None } };
        this.write(|_| Ok(()))?;
        Ok(this)
    }

    /// Runs `f` in a write transaction with the configured durability, then commits.
    fn write(&self, f: impl FnOnce(&mut ::redb::Table<'_, &[u8], &[u8]>) -> Result<()>) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut table = tx.open_table(TABLE)?;
            f(&mut table)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl KvEngine for RedbKv {
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.write(|table| {
            for (k, v) in pairs {
                table.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.write(|table| {
            for k in keys {
                table.remove(k.as_slice())?;
            }
            Ok(())
        })
    }

    fn writer(&self) -> Result<Box<dyn KvWriter + '_>> {
        Ok(Box::new(self))
    }

    fn reader(&self) -> Result<Box<dyn KvReader + '_>> {
        Ok(Box::new(RedbReader { table: self.db.begin_read()?.open_table(TABLE)? }))
    }

    fn compact(&mut self) -> Result<Compacted> {
        // Each call compacts what it can; repeat until redb says nothing is left to gain.
        for _ in 0..64 {
            if !self.db.compact()? {
                break;
            }
        }
        Ok(Compacted::Done)
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self.db);
        Ok(())
    }
}

impl KvWriter for &RedbKv {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(|table| {
            table.insert(key, value)?;
            Ok(())
        })
    }
}

struct RedbReader {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl KvReader for RedbReader {
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool> {
        Ok(match self.table.get(key)? {
            Some(v) => {
                sum.add(v.value());
                true
            }
            None => false,
        })
    }

    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize> {
        let mut read = 0;
        for pair in self.table.range(start..)?.take(n) {
            let (k, v) = pair?;
            sum.add(k.value());
            sum.add(v.value());
            read += 1;
        }
        Ok(read)
    }
}
