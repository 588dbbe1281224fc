//! The changes of single jobs (complete, fail, snooze, heartbeat, cancel, retry) and of batches of them,
//! deletions (purge, purge_discarded, and pruning's), and reads (get, list).
//!
//! A change locks its jobs' rows (`SELECT ... FOR UPDATE`, in id order), applies the store's step to each
//! job as read (so that a refusal is the embedded queue's, decided on the job's latest committed state),
//! writes the changed rows back and changes the counts, in one transaction. A completion of a running job
//! under its current token, the common case, is one `UPDATE ... WHERE state = 'running' AND token = ...`
//! with the change of the counts instead.

use std::collections::HashMap;

use cairn_store::queue::{check_queue, Job, JobPage, JobState, QueueError};

use super::super::pool::Pooled;
use super::counts::{shard, Deltas};
use super::rows::{self, signed, COLUMNS, J_COLUMNS};
use super::schema::{COUNTS, JOBS, UNIQUE};
use super::{Fail, Inner, Tx};

/// Most jobs a page of `list` holds.
const MAX_LIST: usize = 1000;
/// Jobs deleted per transaction by `purge_discarded` and pruning.
pub(crate) const DELETE_BATCH: i64 = 1000;

/// A page cursor: the priority and id of the last job of the page.
fn cursor(job: &Job) -> String {
    format!("{}.{}", job.priority, job.id)
}

/// The priority and id a cursor names.
fn parse_cursor(cursor: &str) -> Result<(i16, i64), QueueError> {
    let bad = || QueueError::Invalid(format!("bad cursor {cursor:?}"));
    let (priority, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((priority.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

impl Inner {
    /// Applies `step` to job `id` in a transaction: the job as it left it, or its refusal.
    pub(crate) fn change(
        &self,
        id: u64,
        step: impl Fn(&mut Job, i64) -> Result<(), QueueError>,
    ) -> Result<Job, QueueError> {
        let ids = [id];
        let mut out = self.block_on(self.retrying(|| self.try_change_each(&ids, |_| &step)))?;
        out.pop().unwrap_or(Err(QueueError::NotFound(id)))
    }

    /// Completes job `id`, running under `token`, as [`Job::complete`] does. The common case, a running job
    /// and its current token, is one statement; any other goes through [`Inner::change`], which gives the
    /// refusal (or completes a job that came to match meanwhile).
    pub(crate) fn complete(&self, id: u64, token: u64) -> Result<Job, QueueError> {
        match self.block_on(self.retrying(|| self.complete_running(id, token)))? {
            Some(job) => Ok(job),
            None => self.change(id, |job, now| job.complete(token, now)),
        }
    }

    /// Completes job `id` if it is running under `token`, changing the counts, in one statement.
    async fn complete_running(&self, id: u64, token: u64) -> Result<Option<Job>, Fail> {
        let sql = format!(
            "WITH done AS (
                 UPDATE {jobs} AS j SET state = 'completed', lease_until_ms = NULL, finished_at_ms = $3
                 WHERE j.id = $1 AND j.token = $2 AND j.state = 'running'
                 RETURNING {J_COLUMNS}
             ), counted AS (
                 INSERT INTO {counts} AS c (queue, state, shard, n)
                 SELECT done.queue, v.s, $4, v.d
                 FROM done CROSS JOIN (VALUES ('completed', 1::int8), ('running', -1::int8)) AS v(s, d)
                 ORDER BY v.s COLLATE \"C\"
                 ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + EXCLUDED.n
             )
             SELECT * FROM done",
            jobs = self.table(JOBS),
            counts = self.table(COUNTS),
        );
        let now = self.opts.now_ms();
        let rows = self.conn().await?.query_cached(&sql, &[&signed(id), &signed(token), &now, &shard()]).await?;
        rows.first().map(rows::job).transpose()
    }

    /// Completes jobs, each `(id, token)` as [`Job::complete`] does, in one transaction; each one's outcome,
    /// in order.
    pub(crate) fn complete_batch(&self, jobs: &[(u64, u64)]) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = jobs.iter().map(|(id, _)| *id).collect();
        let tokens: HashMap<usize, u64> = jobs.iter().map(|(_, t)| *t).enumerate().collect();
        // The step of the i-th job of the batch: its own token.
        let step = |i: usize| {
            let token = tokens.get(&i).copied().unwrap_or_default();
            move |job: &mut Job, now: i64| job.complete(token, now)
        };
        self.block_on(self.retrying(|| self.try_change_each(&ids, step)))
    }

    /// Applies `step(i)` to the `i`-th job of `ids` (a job named twice sees its first change) in one
    /// transaction, writing the jobs changed; each one's outcome, in order.
    async fn try_change_each<S>(
        &self,
        ids: &[u64],
        step: impl Fn(usize) -> S,
    ) -> Result<Vec<Result<Job, QueueError>>, Fail>
    where
        S: Fn(&mut Job, i64) -> Result<(), QueueError>,
    {
        let mut conn = self.conn().await?;
        let mut tx = Tx::begin(&mut conn).await?;
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = ANY($1) ORDER BY id FOR UPDATE", self.table(JOBS));
        let wanted: Vec<i64> = ids.iter().map(|id| signed(*id)).collect();
        let mut read: HashMap<u64, (Job, JobState, usize)> = HashMap::new();
        for row in tx.query(&sql, &[&wanted]).await? {
            let job = rows::job(&row)?;
            let (state, errors) = (job.state, job.errors.len());
            read.insert(job.id, (job, state, errors));
        }
        let now = self.opts.now_ms();
        let mut out = Vec::with_capacity(ids.len());
        let mut changed = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Some((job, _, _)) = read.get_mut(id) else {
                out.push(Err(QueueError::NotFound(*id)));
                continue;
            };
            let mut next = job.clone();
            match step(i)(&mut next, now) {
                Ok(()) => {
                    *job = next.clone();
                    changed.push(*id);
                    out.push(Ok(next));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if changed.is_empty() {
            return Ok(out);
        }
        changed.sort_unstable();
        changed.dedup();
        let mut deltas = Deltas::default();
        let mut woke = false;
        let mut writes = Vec::with_capacity(changed.len());
        for id in &changed {
            if let Some((job, before, errors)) = read.get(id) {
                deltas.moved(&job.queue, Some(*before), Some(job.state));
                woke |= job.state == JobState::Available && *before != JobState::Available;
                writes.push((job, job.errors.len() != *errors));
            }
        }
        self.write_jobs(&mut tx, &writes).await?;
        deltas.stage(self, &mut tx).await?;
        tx.commit().await?;
        if woke {
            self.wake.jobs_available();
        }
        Ok(out)
    }

    /// Deletes finished job `id`; [`QueueError::NotFinished`] if it is not finished.
    pub(crate) fn purge(&self, id: u64) -> Result<(), QueueError> {
        self.block_on(self.retrying(|| async {
            let mut conn = self.conn().await?;
            let mut tx = Tx::begin(&mut conn).await?;
            let sql = format!("SELECT state FROM {} WHERE id = $1 FOR UPDATE", self.table(JOBS));
            let rows = tx.query(&sql, &[&signed(id)]).await?;
            let Some(row) = rows.first() else { return Err(Fail::Queue(QueueError::NotFound(id))) };
            let state = rows::state(row.try_get(0)?)?;
            if !state.is_finished() {
                return Err(Fail::Queue(QueueError::NotFinished { id, state }));
            }
            let sql = format!("DELETE FROM {} WHERE id = $1 RETURNING id, queue, state, unique_key", self.table(JOBS));
            let gone = tx.query(&sql, &[&signed(id)]).await?;
            self.deleted(&mut tx, &gone).await?;
            tx.commit().await
        }))
    }

    /// Deletes every discarded job of `queue` (in transactions of [`DELETE_BATCH`]); returns how many.
    pub(crate) fn purge_discarded(&self, queue: &str) -> Result<u64, QueueError> {
        check_queue(queue)?;
        let sql = format!(
            "DELETE FROM {jobs} WHERE id IN (
                 SELECT id FROM {jobs} WHERE queue = $1 AND state = 'discarded'
                 ORDER BY priority, id LIMIT $2 FOR UPDATE SKIP LOCKED
             ) RETURNING id, queue, state, unique_key",
            jobs = self.table(JOBS)
        );
        self.block_on(async {
            let mut purged = 0;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&queue, &DELETE_BATCH];
            loop {
                let n = self.retrying(|| self.delete_where(&sql, &params)).await?;
                purged += n;
                if n == 0 {
                    return Ok(purged);
                }
            }
        })
    }

    /// Runs `sql`, a `DELETE ... RETURNING id, queue, state, unique_key` of finished jobs, in a
    /// transaction with the deletion of their unique keys and the change of the counts; how many it
    /// deleted.
    async fn delete_where(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Fail> {
        self.delete_on(&mut self.conn().await?, sql, params).await
    }

    /// [`Inner::delete_where`] on `conn`.
    pub(crate) async fn delete_on(
        &self,
        conn: &mut Pooled<'_>,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Fail> {
        let mut tx = Tx::begin(conn).await?;
        let gone = tx.query(sql, params).await?;
        self.deleted(&mut tx, &gone).await?;
        tx.commit().await?;
        Ok(gone.len() as u64)
    }

    /// After the deletion of the jobs of `gone` (rows of `id, queue, state, unique_key`) in `tx`: deletes
    /// the unique keys they held and changes the counts.
    async fn deleted(&self, tx: &mut Tx<'_>, gone: &[tokio_postgres::Row]) -> Result<(), Fail> {
        let mut deltas = Deltas::default();
        let (mut ids, mut queues, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for row in gone {
            let (id, queue, state, key): (i64, String, &str, Option<String>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            deltas.moved(&queue, Some(rows::state(state)?), None);
            if let Some(key) = key {
                ids.push(id);
                queues.push(queue);
                keys.push(key);
            }
        }
        if !ids.is_empty() {
            let sql = format!(
                "DELETE FROM {} AS u USING unnest($1::text[], $2::text[], $3::int8[]) AS v(queue, key, job)
                 WHERE u.queue = v.queue AND u.key = v.key AND u.job = v.job",
                self.table(UNIQUE)
            );
            tx.execute(&sql, &[&queues, &keys, &ids]).await?;
        }
        deltas.stage(self, tx).await
    }

    /// The job with this id.
    pub(crate) fn get(&self, id: u64) -> Result<Option<Job>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = $1", self.table(JOBS));
        self.block_on(async {
            let rows = self.conn().await?.query_cached(&sql, &[&signed(id)]).await?;
            rows.first().map(rows::job).transpose()
        })
        .map_err(QueueError::from)
    }

    /// Up to `limit` (at most 1,000) jobs of `queue` in `state`, in claim order, after cursor `after`.
    pub(crate) fn list(
        &self,
        queue: &str,
        state: JobState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        check_queue(queue)?;
        let limit = limit.clamp(1, MAX_LIST);
        let (priority, id) = match after {
            Some(c) => parse_cursor(c)?,
            None => (-1, -1),
        };
        // The state is in the text, so that the planner picks the partial index that holds it.
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE queue = $1 AND state = '{}' AND (priority, id) > ($2, $3)
             ORDER BY priority, id LIMIT $4",
            self.table(JOBS),
            state.as_str()
        );
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX) + 1;
        let mut jobs = self
            .block_on(async {
                let rows = self.conn().await?.query_cached(&sql, &[&queue, &priority, &id, &fetch]).await?;
                rows.iter().map(rows::job).collect::<Result<Vec<Job>, Fail>>()
            })
            .map_err(QueueError::from)?;
        let next = (jobs.len() > limit).then(|| {
            jobs.truncate(limit);
            jobs.last().map(cursor)
        });
        Ok(JobPage { jobs, next: next.flatten() })
    }
}
