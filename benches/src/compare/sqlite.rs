//! SQLite (bundled) through rusqlite: WAL journal, `synchronous=FULL` (each commit syncs the WAL) or, for
//! the non-durable variant, `synchronous=OFF`; the cache budget is `PRAGMA cache_size` of each connection.
//! Every thread has a connection of its own (`busy_timeout` 30 s), as SQLite wants.
//!
//! Key-value pairs live in `kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`. Jobs live in a JSON text
//! column with generated columns for the indexed fields, and the same six indexes as `cairn_platform::Job`, each
//! ending in `id` as Cairn's index entries do.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cairn_platform::Job;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use super::workloads::apply_claim;
use super::{Checksum, Compacted, DocEngine, DocSession, KvEngine, KvReader, KvWriter, Result};

const KV_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;";
const KV_PUT: &str = "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)";
const KV_DELETE: &str = "DELETE FROM kv WHERE k = ?1";
const KV_GET: &str = "SELECT v FROM kv WHERE k = ?1";
const KV_RANGE: &str = "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2";

const JOBS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    status TEXT GENERATED ALWAYS AS (json_extract(doc, '$.status')) VIRTUAL,
    owner TEXT GENERATED ALWAYS AS (json_extract(doc, '$.owner')) VIRTUAL,
    project TEXT GENERATED ALWAYS AS (json_extract(doc, '$.project')) VIRTUAL,
    priority INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.priority')) VIRTUAL,
    created_at INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.created_at')) VIRTUAL,
    lease_expires_at INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.lease_expires_at')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, id);
CREATE INDEX IF NOT EXISTS jobs_project ON jobs (project, id);
CREATE INDEX IF NOT EXISTS jobs_status_priority ON jobs (status, priority DESC, id);
CREATE INDEX IF NOT EXISTS jobs_project_created ON jobs (project, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_status_lease ON jobs (status, lease_expires_at, id);
";
const JOB_INSERT: &str = "INSERT INTO jobs (id, version, doc) VALUES (?1, 1, ?2)";
/// The scheduler's query; served by `jobs_status_priority` without a sort.
pub const JOB_TOP_PENDING: &str =
    "SELECT id, doc FROM jobs WHERE status = 'PENDING' ORDER BY priority DESC, id LIMIT ?1";
const JOB_CLAIM_UPDATE: &str = "UPDATE jobs SET doc = ?1, version = version + 1 WHERE id = ?2 AND version = ?3";
const JOB_CLAIM_PICK: &str =
    "SELECT id, version, doc FROM jobs WHERE status = 'PENDING' ORDER BY priority DESC, id LIMIT 1";
/// One page of an owner's jobs after a cursor (keyset pagination); served by `jobs_owner`.
pub const JOB_PAGE: &str = "SELECT id, doc FROM jobs WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
const JOB_GET: &str = "SELECT doc FROM jobs WHERE id = ?1";

/// How a connection is set up; every connection of one engine gets the same settings.
#[derive(Debug, Clone)]
struct Settings {
    path: PathBuf,
    durable: bool,
    cache_bytes: usize,
}

impl Settings {
    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA cache_size = -{};",
            if self.durable { "FULL" } else { "OFF" },
            self.cache_bytes / 1024
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// SQLite as a key-value store.
pub struct SqliteKv {
    settings: Settings,
    conn: Mutex<Connection>,
}

impl SqliteKv {
    /// Opens (or creates) `dir/kv.sqlite` and its table.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let settings = Settings { path: dir.join("kv.sqlite"), durable, cache_bytes };
        let conn = settings.connect()?;
        conn.execute_batch(KV_SCHEMA)?;
        Ok(Self { settings, conn: Mutex::new(conn) })
    }

    fn in_transaction(&self, f: impl FnOnce(&Transaction<'_>) -> Result<()>) -> Result<()> {
        let conn = self.conn.lock().map_err(|_| "sqlite connection lock poisoned")?;
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)?;
        f(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

impl KvEngine for SqliteKv {
    fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.in_transaction(|tx| {
            let mut put = tx.prepare_cached(KV_PUT)?;
            for (k, v) in pairs {
                put.execute((k, v))?;
            }
            Ok(())
        })
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.in_transaction(|tx| {
            let mut delete = tx.prepare_cached(KV_DELETE)?;
            for k in keys {
                delete.execute([k])?;
            }
            Ok(())
        })
    }

    fn writer(&self) -> Result<Box<dyn KvWriter + '_>> {
        Ok(Box::new(SqliteConn(self.settings.connect()?)))
    }

    fn reader(&self) -> Result<Box<dyn KvReader + '_>> {
        Ok(Box::new(SqliteConn(self.settings.connect()?)))
    }

    fn compact(&mut self) -> Result<Compacted> {
        let conn = self.conn.get_mut().map_err(|_| "sqlite connection lock poisoned")?;
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(Compacted::Done)
    }

    fn close(self: Box<Self>) -> Result<()> {
        let conn = self.conn.into_inner().map_err(|_| "sqlite connection lock poisoned")?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

/// A connection of one thread.
struct SqliteConn(Connection);

impl KvWriter for SqliteConn {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // One statement outside a transaction is its own (durable) transaction.
        self.0.prepare_cached(KV_PUT)?.execute((key, value))?;
        Ok(())
    }
}

impl KvReader for SqliteConn {
    fn get(&mut self, key: &[u8], sum: &mut Checksum) -> Result<bool> {
        let mut stmt = self.0.prepare_cached(KV_GET)?;
        let mut rows = stmt.query([key])?;
        Ok(match rows.next()? {
            Some(row) => {
                sum.add(row.get_ref(0)?.as_blob()?);
                true
            }
            None => false,
        })
    }

    fn range(&mut self, start: &[u8], n: usize, sum: &mut Checksum) -> Result<usize> {
        let mut stmt = self.0.prepare_cached(KV_RANGE)?;
        let mut rows = stmt.query((start, n as i64))?;
        let mut read = 0;
        while let Some(row) = rows.next()? {
            sum.add(row.get_ref(0)?.as_blob()?);
            sum.add(row.get_ref(1)?.as_blob()?);
            read += 1;
        }
        Ok(read)
    }
}

/// SQLite as a document store of jobs.
pub struct SqliteDocs {
    settings: Settings,
    conn: Mutex<Connection>,
}

impl SqliteDocs {
    /// Opens (or creates) `dir/jobs.sqlite` with its table and indexes.
    pub fn open(dir: &Path, durable: bool, cache_bytes: usize) -> Result<Self> {
        let settings = Settings { path: dir.join("jobs.sqlite"), durable, cache_bytes };
        let conn = settings.connect()?;
        conn.execute_batch(JOBS_SCHEMA)?;
        Ok(Self { settings, conn: Mutex::new(conn) })
    }
}

impl DocEngine for SqliteDocs {
    fn insert_batch(&self, jobs: &[Job]) -> Result<()> {
        let conn = self.conn.lock().map_err(|_| "sqlite connection lock poisoned")?;
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(JOB_INSERT)?;
            for j in jobs {
                insert.execute((&j.id, serde_json::to_string(j)?))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn session(&self) -> Result<Box<dyn DocSession + '_>> {
        Ok(Box::new(SqliteConn(self.settings.connect()?)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        let conn = self.conn.into_inner().map_err(|_| "sqlite connection lock poisoned")?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

impl SqliteConn {
    /// One claim attempt: `Ok(Err(()))` when the version check failed (another writer won).
    fn try_claim(&self, node: &str, now_ms: i64, lease_ms: i64) -> Result<std::result::Result<Option<String>, ()>> {
        let tx = Transaction::new_unchecked(&self.0, TransactionBehavior::Immediate)?;
        let picked = tx
            .prepare_cached(JOB_CLAIM_PICK)?
            .query_row([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)))
            .optional()?;
        let Some((id, version, doc)) = picked else {
            tx.commit()?;
            return Ok(Ok(None));
        };
        let mut job: Job = serde_json::from_str(&doc)?;
        apply_claim(&mut job, node, now_ms, lease_ms);
        let changed = tx.prepare_cached(JOB_CLAIM_UPDATE)?.execute((serde_json::to_string(&job)?, &id, version))?;
        if changed != 1 {
            return Ok(Err(()));
        }
        tx.commit()?;
        Ok(Ok(Some(id)))
    }
}

impl DocSession for SqliteConn {
    fn top_pending(&mut self, limit: usize, sum: &mut Checksum) -> Result<usize> {
        let mut stmt = self.0.prepare_cached(JOB_TOP_PENDING)?;
        let mut rows = stmt.query([limit as i64])?;
        let mut got = 0;
        while let Some(row) = rows.next()? {
            let job: Job = serde_json::from_str(row.get_ref(1)?.as_str()?)?;
            sum.add(row.get_ref(0)?.as_str()?.as_bytes());
            sum.add_u64(job.priority as u64);
            got += 1;
        }
        Ok(got)
    }

    fn claim(&mut self, node: &str, now_ms: i64, lease_ms: i64) -> Result<Option<String>> {
        for _ in 0..1000 {
            match self.try_claim(node, now_ms, lease_ms) {
                Ok(Ok(claimed)) => return Ok(claimed),
                Ok(Err(())) => continue,
                Err(e) if e.downcast_ref::<rusqlite::Error>().is_some_and(is_busy) => continue,
                Err(e) => return Err(e),
            }
        }
        Err("sqlite: 1000 claim attempts lost their races".into())
    }

    fn page_owner(&mut self, owner: &str, page: usize, sum: &mut Checksum) -> Result<(usize, usize)> {
        let mut stmt = self.0.prepare_cached(JOB_PAGE)?;
        let (mut seen, mut pages, mut cursor) = (0, 0, String::new());
        loop {
            // One row past the page says whether another page follows, as Cairn's cursor does.
            let mut rows = stmt.query((owner, &cursor, (page + 1) as i64))?;
            let mut in_page = 0;
            let mut more = false;
            while let Some(row) = rows.next()? {
                if in_page == page {
                    more = true;
                    break;
                }
                let id = row.get_ref(0)?.as_str()?;
                let job: Job = serde_json::from_str(row.get_ref(1)?.as_str()?)?;
                sum.add(id.as_bytes());
                sum.add(job.status.as_str().as_bytes());
                cursor.clear();
                cursor.push_str(id);
                in_page += 1;
            }
            pages += 1;
            seen += in_page;
            if !more {
                return Ok((seen, pages));
            }
        }
    }

    fn get(&mut self, id: &str, sum: &mut Checksum) -> Result<bool> {
        let doc: Option<String> = self.0.prepare_cached(JOB_GET)?.query_row([id], |row| row.get(0)).optional()?;
        let Some(doc) = doc else { return Ok(false) };
        let job: Job = serde_json::from_str(&doc)?;
        sum.add(job.id.as_bytes());
        sum.add(job.status.as_str().as_bytes());
        sum.add_u64(job.priority as u64);
        Ok(true)
    }
}
