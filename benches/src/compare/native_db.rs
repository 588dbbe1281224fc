//! native_db 0.8: typed models over redb 2.6 (not the redb 4 of the key-value table). Only the collection
//! workloads, and only durable: native_db commits with redb's default `Durability::Immediate` and has no
//! setting for it. The cache budget goes to `Builder::set_cache_size`.
//!
//! A job is stored whole (`NativeJob`, encoded as JSON through the `Json` codec, as Cairn and SQLite store
//! it: native_model's default, bincode, is not self-describing and cannot read back a `Job` whose empty
//! `artifacts` list was left out by `skip_serializing_if`) with the same six
//! secondary keys as `cairn_platform::Job`, each computed as a string that orders like Cairn's index entries and
//! ends in the id (unique keys). native_db's secondary scans (`start_with`, `range`) collect every matching
//! primary key before returning the first item, so a query's cost grows with the size of the range it scans,
//! not with its limit: that is how the library works, and the benchmark uses it as documented.

use std::ops::Bound;
use std::path::Path;

use cairn_platform::Job;
use native_db::{native_db, Builder, Database, Models, ToKey};
use native_model::{native_model, Model};
use serde::{Deserialize, Serialize};

use super::workloads::apply_claim;
use super::{Checksum, DocEngine, DocSession, Result};

/// A job as native_db stores it, with a version for the version-checked claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[native_model(id = 1, version = 1, with = Json)]
#[native_db(
    primary_key(primary -> String),
    secondary_key(status_key -> String, unique),
    secondary_key(owner_key -> String, unique),
    secondary_key(project_key -> String, unique),
    secondary_key(status_priority_key -> String, unique),
    secondary_key(project_created_key -> String, unique),
    secondary_key(status_lease_key -> String, unique)
)]
pub struct NativeJob {
    version: u64,
    job: Job,
}

/// native_model's codec for `NativeJob`: JSON text by `serde_json`.
pub struct Json;

impl<T: Serialize> native_model::Encode<T> for Json {
    type Error = serde_json::Error;

    fn encode(obj: &T) -> std::result::Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(obj)
    }
}

impl<T: for<'de> Deserialize<'de>> native_model::Decode<T> for Json {
    type Error = serde_json::Error;

    fn decode(data: Vec<u8>) -> std::result::Result<T, serde_json::Error> {
        serde_json::from_slice(&data)
    }
}

/// `n` shifted to an unsigned number with the same order, zero-padded so text order is numeric order.
fn ordered(n: i64) -> String {
    format!("{:020}", (i128::from(n) - i128::from(i64::MIN)) as u64)
}

impl NativeJob {
    fn primary(&self) -> String {
        self.job.id.clone()
    }

    fn status_key(&self) -> String {
        format!("{}/{}", self.job.status.as_str(), self.job.id)
    }

    fn owner_key(&self) -> String {
        format!("{}/{}", self.job.owner, self.job.id)
    }

    fn project_key(&self) -> String {
        format!("{}/{}", self.job.project, self.job.id)
    }

    /// Status, then priority descending, then id: the scheduler's queue in key order.
    fn status_priority_key(&self) -> String {
        format!("{}/{}/{}", self.job.status.as_str(), ordered(i64::MAX - self.job.priority), self.job.id)
    }

    fn project_created_key(&self) -> String {
        format!("{}/{}/{}", self.job.project, ordered(self.job.created_at), self.job.id)
    }

    fn status_lease_key(&self) -> String {
        let lease = self.job.lease_expires_at.map_or_else(|| "-".to_owned(), ordered);
        format!("{}/{lease}/{}", self.job.status.as_str(), self.job.id)
    }
}

/// native_db's document store of jobs.
pub struct NativeDocs {
    db: Database<'static>,
}

impl NativeDocs {
    /// Creates `dir/jobs.native_db`.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Self> {
        let mut models = Models::new();
        models.define::<NativeJob>()?;
        // A database borrows its models; one small leak per open keeps the engine free of lifetimes.
        let models: &'static Models = Box::leak(Box::new(models));
        let db = Builder::new().set_cache_size(cache_bytes).create(models, dir.join("jobs.native_db"))?;
        Ok(Self { db })
    }
}

impl DocEngine for NativeDocs {
    fn insert_batch(&self, jobs: &[Job]) -> Result<()> {
        let rw = self.db.rw_transaction()?;
        for j in jobs {
            rw.insert(NativeJob { version: 1, job: j.clone() })?;
        }
        rw.commit()?;
        Ok(())
    }

    fn session(&self) -> Result<Box<dyn DocSession + '_>> {
        Ok(Box::new(NativeSession { db: &self.db }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self.db);
        Ok(())
    }
}

struct NativeSession<'a> {
    db: &'a Database<'static>,
}

const PENDING: &str = "PENDING/";

impl DocSession for NativeSession<'_> {
    fn top_pending(&mut self, limit: usize, sum: &mut Checksum) -> Result<usize> {
        let r = self.db.r_transaction()?;
        let mut got = 0;
        for item in r
            .scan()
            .secondary::<NativeJob>(NativeJobKey::status_priority_key)?
            .start_with(PENDING.to_owned())?
            .take(limit)
        {
            let j = item?;
            sum.add(j.job.id.as_bytes());
            sum.add_u64(j.job.priority as u64);
            got += 1;
        }
        Ok(got)
    }

    fn claim(&mut self, node: &str, now_ms: i64, lease_ms: i64) -> Result<Option<String>> {
        // Write transactions are serialized, so the version check cannot fail; it is kept for parity.
        let rw = self.db.rw_transaction()?;
        let first = {
            let scan = rw.scan().secondary::<NativeJob>(NativeJobKey::status_priority_key)?;
            let mut it = scan.start_with(PENDING.to_owned())?;
            it.next().transpose()?
        };
        let Some(old) = first else {
            rw.commit()?;
            return Ok(None);
        };
        let current = rw.get().primary::<NativeJob>(old.job.id.clone())?;
        if current.as_ref().map(|c| c.version) != Some(old.version) {
            rw.abort()?;
            return Err("native_db: version changed inside a write transaction".into());
        }
        let mut new = old.clone();
        apply_claim(&mut new.job, node, now_ms, lease_ms);
        new.version += 1;
        let id = new.job.id.clone();
        rw.update(old, new)?;
        rw.commit()?;
        Ok(Some(id))
    }

    fn page_owner(&mut self, owner: &str, page: usize, sum: &mut Checksum) -> Result<(usize, usize)> {
        let (mut seen, mut pages) = (0, 0);
        let mut lower = Bound::Included(format!("{owner}/"));
        let upper = Bound::Excluded(format!("{owner}0")); // '0' follows '/'
        loop {
            let r = self.db.r_transaction()?;
            let scan = r.scan().secondary::<NativeJob>(NativeJobKey::owner_key)?;
            let mut in_page = 0;
            let mut more = false;
            let mut last = None;
            for item in scan.range((lower.clone(), upper.clone()))?.take(page + 1) {
                let j = item?;
                if in_page == page {
                    more = true;
                    break;
                }
                sum.add(j.job.id.as_bytes());
                sum.add(j.job.status.as_str().as_bytes());
                last = Some(format!("{owner}/{}", j.job.id));
                in_page += 1;
            }
            pages += 1;
            seen += in_page;
            match (more, last) {
                // native_db's ranges cannot start at an excluded bound: start at the smallest key after it.
                (true, Some(last)) => lower = Bound::Included(format!("{last}\u{0}")),
                _ => return Ok((seen, pages)),
            }
        }
    }

    fn get(&mut self, id: &str, sum: &mut Checksum) -> Result<bool> {
        let r = self.db.r_transaction()?;
        Ok(match r.get().primary::<NativeJob>(id.to_owned())? {
            Some(j) => {
                sum.add(j.job.id.as_bytes());
                sum.add(j.job.status.as_str().as_bytes());
                sum.add_u64(j.job.priority as u64);
                true
            }
            None => false,
        })
    }
}
