//! The job queue's tables, in the backend's schema, created if missing when a server opens the queue
//! (under the schema's set-up lock, so that servers starting together do not race):
//!
//! | object | what |
//! |---|---|
//! | `cairn_queue_jobs` | one row per job: the fields of [`Job`](cairn_store::queue::Job), times in ms since the Unix epoch, `errors` a jsonb array; `id` from `cairn_queue_job_ids` |
//! | `cairn_queue_job_ids` | the sequence of job ids |
//! | `cairn_queue_unique` | `(queue, key)` (key) → `job`: the job enqueued last with that unique key |
//! | `cairn_queue_counts` | `(queue, state, shard)` (key) → `n`: the jobs of a queue in a state are the sum over the shards |
//!
//! The indexes of `cairn_queue_jobs`, each partial so that it holds only the jobs its readers look for:
//!
//! | index | columns | rows | used by |
//! |---|---|---|---|
//! | `cairn_queue_jobs_ready` | `(queue, priority, id)` | available | claims: one seek per queue served |
//! | `cairn_queue_jobs_state` | `(queue, state, priority, id)` | not available | pages of the other states, `purge_discarded` |
//! | `cairn_queue_jobs_due` | `(due_at_ms)` | scheduled and retryable | promotion, the next due time of a waiting claim |
//! | `cairn_queue_jobs_lease` | `(lease_until_ms)` | running | rescue of expired leases |
//! | `cairn_queue_jobs_finished` | `(state, finished_at_ms)` | finished | pruning by age |

use super::super::pool::Pool;
use super::super::schema::{quote_ident, Names};
use super::{pg, QueueError};

/// The job rows.
pub(crate) const JOBS: &str = "cairn_queue_jobs";
/// The sequence of job ids.
pub(crate) const IDS: &str = "cairn_queue_job_ids";
/// The unique keys.
pub(crate) const UNIQUE: &str = "cairn_queue_unique";
/// The counts per queue, state and shard.
pub(crate) const COUNTS: &str = "cairn_queue_counts";

/// The names of the tables, which collections may not take.
pub(crate) const TABLES: [&str; 3] = [JOBS, UNIQUE, COUNTS];

/// The statements creating the tables and indexes (each idempotent).
fn setup_sql(names: &Names) -> String {
    let (jobs, ids, unique, counts) = (names.table(JOBS), names.table(IDS), names.table(UNIQUE), names.table(COUNTS));
    let states = "'scheduled', 'available', 'running', 'retryable', 'completed', 'discarded', 'cancelled'";
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE SEQUENCE IF NOT EXISTS {ids} AS bigint;
         CREATE TABLE IF NOT EXISTS {jobs} (
             id bigint PRIMARY KEY DEFAULT nextval('{ids_literal}'),
             queue text COLLATE \"C\" NOT NULL,
             kind text NOT NULL,
             payload jsonb NOT NULL,
             priority smallint NOT NULL,
             state text NOT NULL CHECK (state IN ({states})),
             attempt bigint NOT NULL,
             max_attempts bigint NOT NULL,
             scheduled_at_ms bigint NOT NULL,
             due_at_ms bigint,
             lease_until_ms bigint,
             token bigint NOT NULL,
             worker text,
             unique_key text,
             errors jsonb NOT NULL DEFAULT '[]',
             inserted_at_ms bigint NOT NULL,
             attempted_at_ms bigint,
             finished_at_ms bigint
         );
         CREATE INDEX IF NOT EXISTS cairn_queue_jobs_ready ON {jobs} (queue, priority, id)
             WHERE state = 'available';
         CREATE INDEX IF NOT EXISTS cairn_queue_jobs_state ON {jobs} (queue, state, priority, id)
             WHERE state <> 'available';
         CREATE INDEX IF NOT EXISTS cairn_queue_jobs_due ON {jobs} (due_at_ms)
             WHERE state IN ('scheduled', 'retryable');
         CREATE INDEX IF NOT EXISTS cairn_queue_jobs_lease ON {jobs} (lease_until_ms)
             WHERE state = 'running';
         CREATE INDEX IF NOT EXISTS cairn_queue_jobs_finished ON {jobs} (state, finished_at_ms)
             WHERE state IN ('completed', 'discarded', 'cancelled');
         CREATE TABLE IF NOT EXISTS {unique} (
             queue text COLLATE \"C\" NOT NULL,
             key text COLLATE \"C\" NOT NULL,
             job bigint NOT NULL,
             PRIMARY KEY (queue, key)
         );
         CREATE TABLE IF NOT EXISTS {counts} (
             queue text COLLATE \"C\" NOT NULL,
             state text COLLATE \"C\" NOT NULL,
             shard smallint NOT NULL,
             n bigint NOT NULL,
             PRIMARY KEY (queue, state, shard)
         );",
        schema = quote_ident(&names.schema),
        ids_literal = ids.replace('\'', "''"),
    )
}

/// Creates what is missing, under the schema's set-up lock.
pub(crate) async fn setup(pool: &Pool, names: &Names) -> Result<(), QueueError> {
    let mut client = pool.get().await.map_err(|e| QueueError::Backend(e.detail))?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&names.setup_lock()]).await.map_err(pg)?;
    tx.batch_execute(&setup_sql(names)).await.map_err(pg)?;
    tx.commit().await.map_err(pg)
}
