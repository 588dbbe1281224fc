//! `/v1/queue`: the job queue over HTTP (`docs/queue.md`, "Over HTTP"): enqueue singly or in batches,
//! claim with a lease and a fencing token (long-polling up to `limits.max_wait_ms`), complete, fail,
//! snooze, heartbeat, cancel, retry and purge jobs, and read jobs, pages of a queue's jobs by state, and
//! the counts of every queue.
//!
//! Queues are shared by every project, like `/v1/stats`: the routes take a token without a project scope
//! (reads with role `read`, job operations with `write`, purges with `admin`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_store::queue::{ClaimRequest, Job, JobState, NewJob, QueueCounts, QueueError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::extract::{JsonBody, Params};
use super::state::AppState;
use crate::backend::QueueApi;
use crate::problem::ApiError;

/// Most jobs one request enqueues or completes.
pub const MAX_BATCH: usize = 1000;

/// The problem document of a refused or failed queue call.
pub fn problem(err: QueueError) -> ApiError {
    let conflict = |kind: &'static str, detail: String| ApiError::new(StatusCode::CONFLICT, kind, detail);
    match err {
        QueueError::Invalid(detail) => ApiError::bad_request(detail),
        QueueError::NotFound(id) => ApiError::not_found(format!("job {id} not found")).with("job", id),
        QueueError::StaleToken { id, presented, current } => {
            conflict("stale-token", err.to_string()).with("job", id).with("token", presented).with("current", current)
        }
        QueueError::InvalidTransition { id, from, to } => conflict("invalid-transition", err.to_string())
            .with("job", id)
            .with("from", from.as_str())
            .with("to", to.as_str()),
        QueueError::NotFinished { id, state } => {
            conflict("not-finished", err.to_string()).with("job", id).with("state", state.as_str())
        }
        QueueError::Contended(_) => {
            let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "contended", err.to_string());
            e.retry_after = Some(1);
            e
        }
        QueueError::Store(_) | QueueError::Backend(_) => {
            tracing::error!(error = %err, "job queue failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string())
        }
    }
}

/// Runs `f` on the blocking pool with the backend's job queue, holding one of the queue's permits.
async fn run<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn QueueApi) -> Result<R, QueueError> + Send + 'static,
) -> Result<R, ApiError> {
    let backend = state.backend.clone();
    super::state::blocking(&state.queue_permits, "queue", move || {
        let queue = backend.queue()?;
        f(&*queue).map_err(problem)
    })
    .await
}

/// `POST /v1/queue/jobs`: enqueues one job (a `NewJob`). 201 with `{"job", "duplicate": false}`, or 200
/// with the existing job and `"duplicate": true` when its unique key matched one.
pub async fn enqueue(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(job): JsonBody<NewJob>,
) -> Result<Response, ApiError> {
    who.require_unscoped(Role::Write)?;
    let done = run(&state, move |q| q.enqueue(&job)).await?;
    let status = if done.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({ "job": done.job, "duplicate": done.duplicate }))).into_response())
}

/// The body of a batch enqueue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBatch {
    jobs: Vec<NewJob>,
}

/// `POST /v1/queue/jobs/batch`: enqueues up to [`MAX_BATCH`] jobs in one commit, all or none; answers
/// `{"results": [{"job", "duplicate"}, ...]}` in order.
pub async fn enqueue_batch(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(batch): JsonBody<EnqueueBatch>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Write)?;
    check_batch(batch.jobs.len())?;
    let done = run(&state, move |q| q.enqueue_batch(&batch.jobs)).await?;
    let results: Vec<Value> = done.into_iter().map(|e| json!({ "job": e.job, "duplicate": e.duplicate })).collect();
    Ok(Json(json!({ "results": results })))
}

fn check_batch(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::bad_request(format!("a batch holds 1 to {MAX_BATCH} jobs, not {n}")));
    }
    Ok(())
}

/// `POST /v1/queue/claim`: a `ClaimRequest` (`queues`, `worker`, `lease_ms`, `limit` (default 1),
/// `wait_ms` (default 0, at most `limits.max_wait_ms`)); answers `{"jobs": [...]}`, running, each with its
/// `token` and `lease_until_ms`, empty when none became available within the wait.
pub async fn claim(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(mut req): JsonBody<ClaimRequest>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Write)?;
    req.wait_ms = req.wait_ms.min(state.limits.max_wait_ms);
    let jobs = run(&state, move |q| q.claim_batch(&req)).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// A job's id in the path: 400 unless an unsigned integer.
fn job_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("a job id is an unsigned integer, not {raw:?}")))
}

/// `GET /v1/queue/jobs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    who.require_unscoped(Role::Read)?;
    let id = job_id(&id)?;
    let job = run(&state, move |q| q.get(id)).await?;
    job.map(Json).ok_or_else(|| problem(QueueError::NotFound(id)))
}

/// `DELETE /v1/queue/jobs/{id}`: deletes a finished job (409 `not-finished` otherwise). 204.
pub async fn purge(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require_unscoped(Role::Admin)?;
    let id = job_id(&id)?;
    run(&state, move |q| q.purge(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `complete`: the fencing token of the worker's claim.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    token: u64,
}

/// The body of `fail`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    token: u64,
    /// What went wrong (at most 4 KiB kept).
    #[serde(default)]
    error: String,
}

/// The body of `snooze`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snooze {
    token: u64,
    /// How long until the job is available again.
    delay_ms: u64,
}

/// The body of `heartbeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    token: u64,
    /// The lease's new length, from now.
    lease_ms: u64,
}

// The calls on one job answer the job as it now is: 409 `stale-token` when the token is not the job's
// current one (its lease expired and it was claimed again), 409 `invalid-transition` when the job's state
// does not allow the call (completing a job that is not running...), 404 for an unknown job.

/// Runs `f` on the job of the path for a token of role `write` without a project scope, answering the job
/// as it now is.
async fn on_job(
    state: &AppState,
    who: &Principal,
    id: &str,
    f: impl FnOnce(&dyn QueueApi, u64) -> Result<Job, QueueError> + Send + 'static,
) -> Result<Json<Job>, ApiError> {
    who.require_unscoped(Role::Write)?;
    let id = job_id(id)?;
    run(state, move |q| f(q, id)).await.map(Json)
}

/// `POST /v1/queue/jobs/{id}/complete` with `{"token"}`.
pub async fn complete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Token>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, move |q, id| q.complete(id, b.token)).await
}

/// `POST /v1/queue/jobs/{id}/fail` with `{"token", "error"}`: retryable after the queue's backoff, or
/// discarded after the last attempt.
pub async fn fail(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Failure>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, move |q, id| q.fail(id, b.token, &b.error)).await
}

/// `POST /v1/queue/jobs/{id}/snooze` with `{"token", "delay_ms"}`: scheduled again, the attempt not
/// counted.
pub async fn snooze(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Snooze>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, move |q, id| q.snooze(id, b.token, b.delay_ms)).await
}

/// `POST /v1/queue/jobs/{id}/heartbeat` with `{"token", "lease_ms"}`: the lease extended to `lease_ms`
/// from now.
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Heartbeat>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, move |q, id| q.heartbeat(id, b.token, b.lease_ms)).await
}

/// `POST /v1/queue/jobs/{id}/cancel`: cancels an unfinished job (no token: an operator's call).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, |q, id| q.cancel(id)).await
}

/// `POST /v1/queue/jobs/{id}/retry`: makes a finished job (a dead letter, typically) available again.
pub async fn retry(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    on_job(&state, &who, &id, |q, id| q.retry(id)).await
}

/// One job of a batch completion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    id: u64,
    token: u64,
}

/// The body of a batch completion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatch {
    jobs: Vec<Completion>,
}

/// `POST /v1/queue/complete`: completes up to [`MAX_BATCH`] jobs (`{"jobs": [{"id", "token"}, ...]}`) in
/// one commit. A job refused does not stop the others: answers `{"results": [...]}` in order, each the
/// completed job (`{"job": ...}`) or the problem document of its refusal (`{"error": ...}`).
pub async fn complete_batch(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(batch): JsonBody<CompleteBatch>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Write)?;
    check_batch(batch.jobs.len())?;
    let pairs: Vec<(u64, u64)> = batch.jobs.iter().map(|c| (c.id, c.token)).collect();
    let done = run(&state, move |q| q.complete_batch(&pairs)).await?;
    let results: Vec<Value> = done
        .into_iter()
        .map(|r| match r {
            Ok(job) => json!({ "job": job }),
            Err(e) => json!({ "error": problem(e).body() }),
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// A queue's counts as JSON: one field per state, and `total`.
fn counts_json(queue: &str, c: &QueueCounts) -> Value {
    let mut out = json!({ "queue": queue, "total": c.total() });
    for s in JobState::ALL {
        out[s.as_str()] = json!(c.get(s));
    }
    out
}

/// Every queue by name, with its counts.
fn every_count(q: &dyn QueueApi) -> Result<Vec<(String, QueueCounts)>, QueueError> {
    q.queues()?.into_iter().map(|n| q.counts(&n).map(|c| (n, c))).collect()
}

/// `GET /v1/queue/queues`: every queue with its counts, by name.
pub async fn queues(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Read)?;
    let all = run(&state, every_count).await?;
    let queues: Vec<Value> = all.iter().map(|(n, c)| counts_json(n, c)).collect();
    Ok(Json(json!({ "queues": queues })))
}

/// `GET /v1/queue/queues/{queue}`: the queue's counts (all zero for a queue never used).
pub async fn counts(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Read)?;
    let name = queue.clone();
    let c = run(&state, move |q| q.counts(&name)).await?;
    Ok(Json(counts_json(&queue, &c)))
}

/// `GET /v1/queue/queues/{queue}/jobs?state=S&limit=N&cursor=C`: a page of the queue's jobs in state `S`
/// (default `available`) in claim order, and `next_cursor`, the cursor of the following page (null on the
/// last).
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(queue): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Read)?;
    let job_state = match params.get("state") {
        None => JobState::Available,
        Some(s) => JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = JobState::ALL.iter().map(|st| st.as_str()).collect();
            ApiError::bad_request(format!("no job state {s:?}: one of {}", names.join(", ")))
        })?,
    };
    let limit = params.u64("limit")?.unwrap_or(state.limits.default_page as u64);
    if limit == 0 || limit > state.limits.max_page as u64 {
        return Err(ApiError::bad_request(format!("limit must be 1 to {}", state.limits.max_page)));
    }
    let cursor = params.get("cursor").map(str::to_owned);
    let page = run(&state, move |q| q.list(&queue, job_state, cursor.as_deref(), limit as usize)).await?;
    Ok(Json(json!({ "jobs": page.jobs, "next_cursor": page.next })))
}

/// `DELETE /v1/queue/queues/{queue}/discarded`: deletes the queue's dead letters; answers
/// `{"purged": n}`.
pub async fn purge_discarded(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Admin)?;
    let n = run(&state, move |q| q.purge_discarded(&queue)).await?;
    Ok(Json(json!({ "purged": n })))
}

/// Every queue's counts, for `/metrics`: `None` when the backend has no queue or reading them failed (the
/// scrape goes on without them).
pub async fn all_counts(state: &AppState) -> Option<Vec<(String, QueueCounts)>> {
    match tokio::time::timeout(Duration::from_secs(5), run(state, every_count)).await {
        Ok(Ok(all)) => Some(all),
        _ => None,
    }
}
