//! Enqueues, singly and in batches (one transaction each), and unique keys.
//!
//! A unique key is held by the job enqueued last with it (`cairn_queue_unique` names it, as the embedded
//! queue's `_queue_unique` records do). An enqueue with a key takes a transaction advisory lock on its
//! queue and key first (a batch takes its keys' locks in order, so that batches do not deadlock), then
//! reads the job holding the key and, unless that job holds it for this enqueue ([`Job::holds_unique`]),
//! adds the job and names it as the key's holder: of two enqueues of one key on any servers, the second
//! waits for the first's commit and finds its job.

use std::collections::HashMap;

use cairn_store::queue::{check_new_job, Enqueued, Job, JobState, NewJob, QueueError};

use super::counts::Deltas;
use super::rows::{self, signed, J_COLUMNS};
use super::schema::{IDS, JOBS, UNIQUE};
use super::{Fail, Inner, Tx};

impl Inner {
    /// Enqueues `jobs` in one transaction, returning what each enqueue did, in order. Refused whole if any
    /// job is invalid.
    pub(crate) fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
        for job in jobs {
            check_new_job(job)?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.block_on(self.retrying(|| self.try_enqueue(jobs)))?;
        if out.iter().any(|e| !e.duplicate && e.job.state == JobState::Available) {
            self.wake.jobs_available();
        }
        Ok(out)
    }

    async fn try_enqueue(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, Fail> {
        let mut conn = self.conn().await?;
        let mut tx = Tx::begin(&mut conn).await?;
        let now = self.opts.now_ms();
        let mut locks: Vec<i64> =
            jobs.iter().filter_map(|j| j.unique.as_ref().map(|u| self.unique_lock(&j.queue, &u.key))).collect();
        if !locks.is_empty() {
            locks.sort_unstable();
            locks.dedup();
            let sql =
                "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::int8[]) AS k ORDER BY k) s";
            tx.query(sql, &[&locks]).await?;
        }
        let ids = self.allocate_ids(&mut tx, jobs.len()).await?;
        // The jobs this batch adds that hold their unique keys, by (queue, key).
        let mut holders: HashMap<(&str, &str), Job> = HashMap::new();
        let (mut added, mut out) = (Vec::new(), Vec::with_capacity(jobs.len()));
        let mut deltas = Deltas::default();
        for (new, id) in jobs.iter().zip(ids) {
            if let Some(unique) = &new.unique {
                let holder = match holders.get(&(new.queue.as_str(), unique.key.as_str())) {
                    Some(job) => Some(job.clone()),
                    None => self.unique_holder(&mut tx, &new.queue, &unique.key).await?,
                };
                if let Some(existing) = holder.filter(|h| h.holds_unique(unique, now)) {
                    out.push(Enqueued { job: existing, duplicate: true });
                    continue;
                }
            }
            let job = Job::enqueued(id, new, now);
            if let Some(unique) = &new.unique {
                holders.insert((new.queue.as_str(), unique.key.as_str()), job.clone());
            }
            deltas.moved(&job.queue, None, Some(job.state));
            added.push(job.clone());
            out.push(Enqueued { job, duplicate: false });
        }
        self.insert_jobs(&mut tx, &added).await?;
        if !holders.is_empty() {
            let sql = format!(
                "INSERT INTO {} AS u (queue, key, job) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
                 ON CONFLICT (queue, key) DO UPDATE SET job = EXCLUDED.job",
                self.table(UNIQUE)
            );
            let (mut queues, mut keys, mut held) = (Vec::new(), Vec::new(), Vec::new());
            for ((queue, key), job) in &holders {
                queues.push(*queue);
                keys.push(*key);
                held.push(signed(job.id));
            }
            tx.execute(&sql, &[&queues, &keys, &held]).await?;
        }
        deltas.stage(self, &mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// `n` new job ids, increasing.
    async fn allocate_ids(&self, tx: &mut Tx<'_>, n: usize) -> Result<Vec<u64>, Fail> {
        let sql = format!("SELECT nextval('{}') FROM generate_series(1, $1)", self.table(IDS).replace('\'', "''"));
        let n = i32::try_from(n).map_err(|_| QueueError::Invalid(format!("{n} jobs are too many for one batch")))?;
        let mut ids = tx
            .query(&sql, &[&n])
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<_, i64>(0)?.max(0) as u64))
            .collect::<Result<Vec<u64>, Fail>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// The job holding unique key `key` of `queue`, if any (under the key's lock).
    async fn unique_holder(&self, tx: &mut Tx<'_>, queue: &str, key: &str) -> Result<Option<Job>, Fail> {
        let sql = format!(
            "SELECT {J_COLUMNS} FROM {} AS u JOIN {} AS j ON j.id = u.job WHERE u.queue = $1 AND u.key = $2",
            self.table(UNIQUE),
            self.table(JOBS)
        );
        tx.query(&sql, &[&queue, &key]).await?.first().map(rows::job).transpose()
    }
}
