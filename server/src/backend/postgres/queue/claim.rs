//! Claims, long polls and the promotion of due jobs.
//!
//! A claim is one statement: for each queue served, the first available jobs in claim order (priority,
//! then id) from one seek of index `cairn_queue_jobs_ready`, locked with `FOR UPDATE SKIP LOCKED` (rows
//! another claim holds are passed over, not waited for); of those, the first `limit` in claim order are
//! made running with their attempt and token counted, and the counts changed, all in the same statement.
//! Before it, in the same round trip (pipelined), a statement makes every due scheduled or retryable job
//! available (index `cairn_queue_jobs_due`), as the embedded queue's claims do.
//!
//! A claim that finds nothing waits, up to its `wait_ms`, for a wake-up ([`Wake`](super::Wake)), for the
//! next due time of a waiting job, or for [`RECHECK`] (the fallback should a notification be lost while
//! the listening connection reconnects), and then tries again.

use std::time::{Duration, Instant};

use cairn_store::queue::{check_claim_batch, ClaimRequest, Job, QueueError};
use tokio_postgres::types::ToSql;

use super::super::pool::Pooled;
use super::counts::shard;
use super::rows::{self, J_COLUMNS};
use super::schema::{COUNTS, JOBS};
use super::{Fail, Inner};

/// Due jobs one statement promotes.
const PROMOTE_BATCH: i64 = 512;
/// Longest a waiting claim sleeps without looking again.
const RECHECK: Duration = Duration::from_secs(1);
/// How soon a waiting claim looks again when a due job could not be promoted (its row was locked).
const HELD_DUE: Duration = Duration::from_millis(10);

/// `now` plus `ms`, saturating (as [`Job::claim`] computes a lease's end).
fn after(now: i64, ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl Inner {
    /// Claims up to `request.limit` jobs, waiting up to `request.wait_ms` for one.
    pub(crate) fn claim_batch(&self, request: &ClaimRequest) -> Result<Vec<Job>, QueueError> {
        check_claim_batch(request)?;
        self.block_on(async {
            let deadline = Instant::now() + Duration::from_millis(request.wait_ms);
            let mut woken = self.wake.subscribe();
            loop {
                woken.borrow_and_update();
                let jobs = self.retrying(|| self.claim_once(request)).await?;
                let now = Instant::now();
                if !jobs.is_empty() || now >= deadline {
                    return Ok(jobs);
                }
                let mut wait = (deadline - now).min(RECHECK);
                if let Some(due) = self.retrying(|| self.next_due()).await? {
                    // A job due already is one the promotion passed over while another transaction held
                    // its row: look again shortly, not at once.
                    let until = due.saturating_sub(self.opts.now_ms());
                    let until = if until > 0 { Duration::from_millis(until as u64) } else { HELD_DUE };
                    wait = wait.min(until);
                }
                let _ = tokio::time::timeout(wait, woken.changed()).await;
            }
        })
    }

    /// Promotes due jobs, then claims up to `request.limit` jobs, not waiting.
    async fn claim_once(&self, request: &ClaimRequest) -> Result<Vec<Job>, Fail> {
        let now = self.opts.now_ms();
        let mut conn = self.conn().await?;
        let promote = self.promote_sql();
        let claim = format!(
            "WITH picked AS (
                 SELECT c.id FROM unnest($1::text[]) AS q(name) CROSS JOIN LATERAL (
                     SELECT id, priority FROM {jobs} WHERE queue = q.name AND state = 'available'
                     ORDER BY priority, id LIMIT $2 FOR UPDATE SKIP LOCKED
                 ) AS c
                 ORDER BY c.priority, c.id LIMIT $2
             ), claimed AS (
                 UPDATE {jobs} AS j SET state = 'running', attempt = j.attempt + 1, token = j.token + 1,
                     worker = $3, attempted_at_ms = $4, lease_until_ms = $5
                 FROM picked WHERE j.id = picked.id AND j.state = 'available'
                 RETURNING {J_COLUMNS}
             ), counted AS (
                 INSERT INTO {counts} AS c (queue, state, shard, n)
                 SELECT queue, s, $6, d FROM (
                     SELECT queue, 'available' AS s, -count(*) AS d FROM claimed GROUP BY queue
                     UNION ALL SELECT queue, 'running', count(*) FROM claimed GROUP BY queue
                 ) AS v
                 ORDER BY queue COLLATE \"C\", s COLLATE \"C\"
                 ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + EXCLUDED.n
             )
             SELECT * FROM claimed",
            jobs = self.table(JOBS),
            counts = self.table(COUNTS),
        );
        let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
        let lease = after(now, request.lease_ms);
        let (client, statements) = conn.split();
        let promote = statements.get(&*client, &promote).await?;
        let claim = statements.get(&*client, &claim).await?;
        // Both statements go in one round trip; each commits on its own, the promotion first.
        loop {
            let (promote_shard, claim_shard) = (shard(), shard());
            let promote_params: [&(dyn ToSql + Sync); 3] = [&now, &PROMOTE_BATCH, &promote_shard];
            let claim_params: [&(dyn ToSql + Sync); 6] =
                [&request.queues, &limit, &request.worker, &now, &lease, &claim_shard];
            let (promoted, claimed) =
                tokio::try_join!(client.query_one(&promote, &promote_params), client.query(&claim, &claim_params),)?;
            let promoted: i64 = promoted.try_get(0)?;
            if promoted > 0 {
                self.wake.jobs_available();
            }
            if promoted < PROMOTE_BATCH || !claimed.is_empty() {
                let mut jobs = claimed.iter().map(rows::job).collect::<Result<Vec<Job>, Fail>>()?;
                jobs.sort_by_key(|j| (j.priority, j.id));
                return Ok(jobs);
            }
            // More jobs are due than one statement promotes, and none was claimed: more urgent ones may be
            // among them.
        }
    }

    /// The statement making up to `$2` scheduled or retryable jobs due by `$1` available, counted in shard
    /// `$3`; it returns how many.
    pub(crate) fn promote_sql(&self) -> String {
        format!(
            "WITH due AS (
                 SELECT id, state FROM {jobs}
                 WHERE state IN ('scheduled', 'retryable') AND due_at_ms <= $1
                 ORDER BY due_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED
             ), moved AS (
                 UPDATE {jobs} AS j SET state = 'available', due_at_ms = NULL
                 FROM due WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
                 RETURNING j.queue, due.state AS was
             ), counted AS (
                 INSERT INTO {counts} AS c (queue, state, shard, n)
                 SELECT queue, s, $3, sum(d) FROM (
                     SELECT queue, was AS s, -1 AS d FROM moved
                     UNION ALL SELECT queue, 'available', 1 FROM moved
                 ) AS v
                 GROUP BY queue, s
                 ORDER BY queue COLLATE \"C\", s COLLATE \"C\"
                 ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + EXCLUDED.n
             )
             SELECT count(*) FROM moved",
            jobs = self.table(JOBS),
            counts = self.table(COUNTS),
        )
    }

    /// Makes every scheduled or retryable job due by `now` available (in statements of
    /// [`PROMOTE_BATCH`], on `conn`); returns how many, and wakes waiting claims if any.
    pub(crate) async fn promote_all(&self, conn: &mut Pooled<'_>, now: i64) -> Result<u64, Fail> {
        let sql = self.promote_sql();
        let mut promoted = 0u64;
        loop {
            let rows = conn.query_cached(&sql, &[&now, &PROMOTE_BATCH, &shard()]).await?;
            let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
            promoted += n.max(0) as u64;
            if n < PROMOTE_BATCH {
                break;
            }
        }
        if promoted > 0 {
            self.wake.jobs_available();
        }
        Ok(promoted)
    }

    /// When the next scheduled or retryable job is due, if any.
    async fn next_due(&self) -> Result<Option<i64>, Fail> {
        let sql = format!("SELECT min(due_at_ms) FROM {} WHERE state IN ('scheduled', 'retryable')", self.table(JOBS));
        let rows = self.conn().await?.query_cached(&sql, &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.flatten())
    }
}
