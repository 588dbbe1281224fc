//! Job rows: reading a row as a [`Job`], inserting new jobs and writing changed ones back, many per
//! statement (arrays of each column, `unnest`ed).

use cairn_store::queue::{AttemptError, Job, JobState};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Fail, Inner, Tx};

/// The columns [`job`] reads, in its order.
pub(crate) const COLUMNS: &str = "id, queue, kind, payload, priority, state, attempt, max_attempts, scheduled_at_ms, \
     due_at_ms, lease_until_ms, token, worker, unique_key, errors, inserted_at_ms, attempted_at_ms, finished_at_ms";

/// [`COLUMNS`] qualified by the table alias `j`.
pub(crate) const J_COLUMNS: &str = "j.id, j.queue, j.kind, j.payload, j.priority, j.state, j.attempt, \
     j.max_attempts, j.scheduled_at_ms, j.due_at_ms, j.lease_until_ms, j.token, j.worker, j.unique_key, j.errors, \
     j.inserted_at_ms, j.attempted_at_ms, j.finished_at_ms";

/// The state named `name`.
pub(crate) fn state(name: &str) -> Result<JobState, Fail> {
    JobState::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| Fail::corrupt(format!("unknown job state {name:?}")))
}

/// A non-negative bigint as a `u64`.
fn unsigned(v: i64, what: &str) -> Result<u64, Fail> {
    u64::try_from(v).map_err(|_| Fail::corrupt(format!("negative {what} {v}")))
}

/// A row of [`COLUMNS`] as its job.
pub(crate) fn job(row: &Row) -> Result<Job, Fail> {
    let priority: i16 = row.try_get(4)?;
    let attempt: i64 = row.try_get(6)?;
    let max_attempts: i64 = row.try_get(7)?;
    let errors: Value = row.try_get(14)?;
    let state_name: &str = row.try_get(5)?;
    Ok(Job {
        id: unsigned(row.try_get(0)?, "job id")?,
        queue: row.try_get(1)?,
        kind: row.try_get(2)?,
        payload: row.try_get(3)?,
        priority: u8::try_from(priority).map_err(|_| Fail::corrupt(format!("priority {priority}")))?,
        state: state(state_name)?,
        attempt: u32::try_from(attempt).map_err(|_| Fail::corrupt(format!("attempt {attempt}")))?,
        max_attempts: u32::try_from(max_attempts).map_err(|_| Fail::corrupt(format!("max_attempts {max_attempts}")))?,
        scheduled_at_ms: row.try_get(8)?,
        due_at_ms: row.try_get(9)?,
        lease_until_ms: row.try_get(10)?,
        token: unsigned(row.try_get(11)?, "token")?,
        worker: row.try_get(12)?,
        unique_key: row.try_get(13)?,
        errors: serde_json::from_value::<Vec<AttemptError>>(errors)
            .map_err(|e| Fail::corrupt(format!("job errors: {e}")))?,
        inserted_at_ms: row.try_get(15)?,
        attempted_at_ms: row.try_get(16)?,
        finished_at_ms: row.try_get(17)?,
    })
}

/// A `u64` as a bigint (ids, tokens and attempts stay far below 2⁶³).
pub(crate) fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Inner {
    /// Inserts `jobs` (new, as [`Job::enqueued`] makes them) in one statement.
    pub(crate) async fn insert_jobs(&self, tx: &mut Tx<'_>, jobs: &[Job]) -> Result<(), Fail> {
        if jobs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} (id, queue, kind, payload, priority, state, attempt, max_attempts, scheduled_at_ms,
                 due_at_ms, lease_until_ms, token, worker, unique_key, errors, inserted_at_ms, attempted_at_ms,
                 finished_at_ms)
             SELECT id, queue, kind, payload, priority, state, 0, max_attempts, scheduled_at_ms, due_at_ms, NULL, 0,
                 NULL, unique_key, '[]', inserted_at_ms, NULL, NULL
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::text[], $7::int8[],
                 $8::int8[], $9::int8[], $10::text[], $11::int8[])
                 AS v(id, queue, kind, payload, priority, state, max_attempts, scheduled_at_ms, due_at_ms,
                      unique_key, inserted_at_ms)",
            self.table(super::schema::JOBS)
        );
        let ids: Vec<i64> = jobs.iter().map(|j| signed(j.id)).collect();
        let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let payloads: Vec<&Value> = jobs.iter().map(|j| &j.payload).collect();
        let priorities: Vec<i16> = jobs.iter().map(|j| i16::from(j.priority)).collect();
        let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
        let max_attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.max_attempts)).collect();
        let scheduled: Vec<i64> = jobs.iter().map(|j| j.scheduled_at_ms).collect();
        let due: Vec<Option<i64>> = jobs.iter().map(|j| j.due_at_ms).collect();
        let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
        let inserted: Vec<i64> = jobs.iter().map(|j| j.inserted_at_ms).collect();
        tx.execute(
            &sql,
            &[
                &ids,
                &queues,
                &kinds,
                &payloads,
                &priorities,
                &states,
                &max_attempts,
                &scheduled,
                &due,
                &keys,
                &inserted,
            ],
        )
        .await?;
        Ok(())
    }

    /// Writes the changeable fields of `jobs` (each read from its row, locked, in `tx`) back to their rows
    /// in one statement; `errors` only of the jobs whose `errors_changed` says so.
    pub(crate) async fn write_jobs(&self, tx: &mut Tx<'_>, jobs: &[(&Job, bool)]) -> Result<(), Fail> {
        if jobs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE {} AS j SET state = v.state, attempt = v.attempt, max_attempts = v.max_attempts,
                 scheduled_at_ms = v.scheduled_at_ms, due_at_ms = v.due_at_ms, lease_until_ms = v.lease_until_ms,
                 token = v.token, worker = v.worker, errors = coalesce(v.errors, j.errors),
                 attempted_at_ms = v.attempted_at_ms, finished_at_ms = v.finished_at_ms
             FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
                 $8::int8[], $9::text[], $10::jsonb[], $11::int8[], $12::int8[])
                 AS v(id, state, attempt, max_attempts, scheduled_at_ms, due_at_ms, lease_until_ms, token, worker,
                      errors, attempted_at_ms, finished_at_ms)
             WHERE j.id = v.id",
            self.table(super::schema::JOBS)
        );
        let ids: Vec<i64> = jobs.iter().map(|(j, _)| signed(j.id)).collect();
        let states: Vec<&str> = jobs.iter().map(|(j, _)| j.state.as_str()).collect();
        let attempts: Vec<i64> = jobs.iter().map(|(j, _)| i64::from(j.attempt)).collect();
        let max_attempts: Vec<i64> = jobs.iter().map(|(j, _)| i64::from(j.max_attempts)).collect();
        let scheduled: Vec<i64> = jobs.iter().map(|(j, _)| j.scheduled_at_ms).collect();
        let due: Vec<Option<i64>> = jobs.iter().map(|(j, _)| j.due_at_ms).collect();
        let leases: Vec<Option<i64>> = jobs.iter().map(|(j, _)| j.lease_until_ms).collect();
        let tokens: Vec<i64> = jobs.iter().map(|(j, _)| signed(j.token)).collect();
        let workers: Vec<Option<&str>> = jobs.iter().map(|(j, _)| j.worker.as_deref()).collect();
        let errors: Vec<Option<Value>> = jobs
            .iter()
            .map(|(j, changed)| changed.then(|| serde_json::to_value(&j.errors)).transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| Fail::corrupt(format!("job errors: {e}")))?;
        let attempted: Vec<Option<i64>> = jobs.iter().map(|(j, _)| j.attempted_at_ms).collect();
        let finished: Vec<Option<i64>> = jobs.iter().map(|(j, _)| j.finished_at_ms).collect();
        tx.execute(
            &sql,
            &[
                &ids,
                &states,
                &attempts,
                &max_attempts,
                &scheduled,
                &due,
                &leases,
                &tokens,
                &workers,
                &errors,
                &attempted,
                &finished,
            ],
        )
        .await?;
        Ok(())
    }
}
