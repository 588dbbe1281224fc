//! Jobs per queue and state, kept on write: every transaction that moves jobs between states (or adds or
//! deletes them) adds its changes to rows of `cairn_queue_counts` keyed `(queue, state, shard)`, in the
//! same transaction as the jobs, and a queue's count of a state is the sum over its shards. The shard is
//! chosen per transaction (one of [`SHARDS`], in turn), so that concurrent claims and completions of one
//! queue mostly change different rows instead of all waiting for one row's lock.
//!
//! Each transaction changes its count rows in one statement, last, in the order of `(queue, state)`: a
//! transaction waiting for a count row holds no other count row that a transaction ahead of it could
//! want, so the counts add no deadlock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_store::queue::{JobState, QueueCounts};

use super::schema::COUNTS;
use super::{Fail, Inner, Tx};

/// Rows per queue and state.
pub(crate) const SHARDS: u64 = 16;

/// The shard of the next transaction.
static NEXT_SHARD: AtomicU64 = AtomicU64::new(0);

/// A shard for a transaction: in turn, starting at a place that differs between processes.
pub(crate) fn shard() -> i16 {
    let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed).wrapping_add(u64::from(std::process::id()));
    (n % SHARDS) as i16
}

/// The statement adding `$3` (bigint[]) to the counts of `$1` (queues) and `$2` (states) in shard `$4`,
/// in key order.
pub(crate) fn add_sql(inner: &Inner) -> String {
    let counts = inner.table(COUNTS);
    format!(
        "INSERT INTO {counts} AS c (queue, state, shard, n)
         SELECT q, s, $4, d FROM unnest($1::text[], $2::text[], $3::int8[]) AS v(q, s, d)
         ORDER BY q COLLATE \"C\", s COLLATE \"C\"
         ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + EXCLUDED.n"
    )
}

/// Count changes of one transaction, by queue and state.
#[derive(Debug, Default)]
pub(crate) struct Deltas(BTreeMap<(String, JobState), i64>);

impl Deltas {
    /// A job of `queue` moved from `from` (`None`: it is new) to `to` (`None`: it is deleted).
    pub(crate) fn moved(&mut self, queue: &str, from: Option<JobState>, to: Option<JobState>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            *self.0.entry((queue.to_owned(), from)).or_default() -= 1;
        }
        if let Some(to) = to {
            *self.0.entry((queue.to_owned(), to)).or_default() += 1;
        }
    }

    /// Adds the changes to the counts in `tx`: the transaction's last statement.
    pub(crate) async fn stage(self, inner: &Inner, tx: &mut Tx<'_>) -> Result<(), Fail> {
        let changed: Vec<_> = self.0.into_iter().filter(|(_, d)| *d != 0).collect();
        if changed.is_empty() {
            return Ok(());
        }
        let queues: Vec<&str> = changed.iter().map(|((q, _), _)| q.as_str()).collect();
        let states: Vec<&str> = changed.iter().map(|((_, s), _)| s.as_str()).collect();
        let deltas: Vec<i64> = changed.iter().map(|(_, d)| *d).collect();
        tx.execute(&add_sql(inner), &[&queues, &states, &deltas, &shard()]).await?;
        Ok(())
    }
}

impl Inner {
    /// The jobs of `queue` in each state: the sum of its count rows.
    pub(crate) async fn counts(&self, queue: &str) -> Result<QueueCounts, Fail> {
        let sql = format!("SELECT state, sum(n)::int8 FROM {} WHERE queue = $1 GROUP BY state", self.table(COUNTS));
        let rows = self.conn().await?.query_cached(&sql, &[&queue]).await?;
        let mut counts = QueueCounts::default();
        for row in rows {
            let state = super::rows::state(row.try_get(0)?)?;
            let n = row.try_get::<_, i64>(1)?.max(0) as u64;
            match state {
                JobState::Scheduled => counts.scheduled = n,
                JobState::Available => counts.available = n,
                JobState::Running => counts.running = n,
                JobState::Retryable => counts.retryable = n,
                JobState::Completed => counts.completed = n,
                JobState::Discarded => counts.discarded = n,
                JobState::Cancelled => counts.cancelled = n,
            }
        }
        Ok(counts)
    }

    /// Every queue that has count rows (every queue a job was ever enqueued to), in byte order.
    pub(crate) async fn queues(&self) -> Result<Vec<String>, Fail> {
        let sql = format!("SELECT DISTINCT queue FROM {} ORDER BY queue", self.table(COUNTS));
        let rows = self.conn().await?.query_cached(&sql, &[]).await?;
        rows.iter().map(|r| r.try_get(0).map_err(Fail::from)).collect()
    }
}
