//! `/v1/runs/{run}/metrics` and `/v1/metrics/{key}/...`: run metrics over HTTP (`docs/metrics.md`, "Over
//! HTTP"): batches of points logged in one durable commit, a series' history by step or time range, its
//! downsampled buckets, the latest value of every metric of a run, and one metric across runs.
//!
//! Values are JSON numbers, or the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, which JSON has no
//! number for (both in requests and in answers). Metric keys may hold `/` (`val/accuracy`): percent-encode
//! it in the path (`val%2Faccuracy`).
//!
//! Project scopes reach metrics through the run's record: a token scoped to project `P` logs and reads the
//! metrics of run `R` only if record `runs/R` exists and its `project` is `P` (404 otherwise, as for a
//! record of another project). Unscoped tokens reach every run's metrics, with or without a record.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_store::metrics::{
    Bucket, DownsampleRequest, HistoryRequest, LatestValue, MetricPoint, MetricsError, RemovedReport, MAX_BUCKETS,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::extract::{JsonBody, Params};
use super::state::AppState;
use crate::backend::RunMetricsApi;
use crate::problem::ApiError;

/// The collection whose records own runs' metrics for project scopes.
pub const RUNS: &str = "runs";
/// Default and largest page of a history read over HTTP.
const DEFAULT_HISTORY_PAGE: usize = 10_000;
const MAX_HISTORY_PAGE: usize = 100_000;
/// Most runs one cross-run read names.
pub const MAX_RUNS: usize = 1000;

/// The problem document of a failed metrics call.
pub fn problem(err: MetricsError) -> ApiError {
    match err {
        MetricsError::Invalid(detail) => ApiError::bad_request(detail),
        MetricsError::Contention { .. } => {
            // Nothing was written: the batch may be sent again.
            let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "contended", err.to_string());
            e.retry_after = Some(1);
            e
        }
        other => {
            tracing::error!(error = %other, "run metrics failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string())
        }
    }
}

/// Runs `f` on the blocking pool with the backend's metrics store.
async fn run<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn RunMetricsApi) -> Result<R, MetricsError> + Send + 'static,
) -> Result<R, ApiError> {
    let backend = state.backend.clone();
    super::state::blocking(&state.metrics_permits, "run metrics", move || {
        let metrics = backend.run_metrics()?;
        f(&*metrics).map_err(problem)
    })
    .await
}

/// 404 unless `who` may reach every run of `runs`: always for an unscoped token; for a scoped one, when
/// each run's record is of its project.
async fn check_runs(state: &AppState, who: &Principal, runs: &[String]) -> Result<(), ApiError> {
    if who.project().is_none() {
        return Ok(());
    }
    for r in runs {
        state.backend.get(who.scope(), RUNS.to_owned(), r.clone()).await.map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::not_found(format!("run {r} not found")).with("run", r.as_str())
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// A value as JSON: a number, or a string for NaN and the infinities.
pub fn value_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

/// A value from JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn parse_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// One point of a logged batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointIn {
    key: String,
    step: i64,
    /// Default: when the server received the batch.
    #[serde(default)]
    timestamp_ms: Option<i64>,
    value: Value,
}

/// The body of a logged batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBody {
    points: Vec<PointIn>,
}

/// `POST /v1/runs/{run}/metrics` with `{"points": [{"key", "step", "timestamp_ms"?, "value"}, ...]}`: the
/// batch in one durable commit (write role). Answers `{"points", "series", "sequence"}`.
pub async fn log(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(run_id): Path<String>,
    JsonBody(body): JsonBody<LogBody>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Write)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let points = body
        .points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let value = parse_value(&p.value).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "points[{i}].value must be a number, \"NaN\", \"Infinity\" or \"-Infinity\", not {}",
                    p.value
                ))
            })?;
            Ok(MetricPoint::new(p.key, p.step, p.timestamp_ms.unwrap_or(now), value))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    check_runs(&state, &who, std::slice::from_ref(&run_id)).await?;
    let receipt = run(&state, move |m| m.log(&run_id, &points)).await?;
    Ok(Json(json!({ "points": receipt.points, "series": receipt.series, "sequence": receipt.sequence })))
}

fn latest_json(l: &LatestValue) -> Value {
    json!({
        "key": l.key,
        "step": l.point.step,
        "timestamp_ms": l.point.timestamp_ms,
        "value": value_json(l.point.value),
        "points": l.points,
    })
}

/// `GET /v1/runs/{run}/metrics`: the latest point and the point count of every metric of the run, kept on
/// write: `{"run", "metrics": [{"key", "step", "timestamp_ms", "value", "points"}, ...]}` by key.
pub async fn latest(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    check_runs(&state, &who, std::slice::from_ref(&run_id)).await?;
    let id = run_id.clone();
    let all = run(&state, move |m| m.latest(&id)).await?;
    Ok(Json(json!({ "run": run_id, "metrics": all.iter().map(latest_json).collect::<Vec<_>>() })))
}

/// `DELETE /v1/runs/{run}/metrics`: removes every metric of the run (write role); answers what went,
/// `{"blocks", "points", "series"}`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Write)?;
    check_runs(&state, &who, std::slice::from_ref(&run_id)).await?;
    let r = run(&state, move |m| m.delete_run(&run_id)).await?;
    Ok(Json(removed_json(&r)))
}

/// What a deletion or an expiry removed, as JSON.
pub fn removed_json(r: &RemovedReport) -> Value {
    json!({ "blocks": r.blocks, "points": r.points, "series": r.series })
}

/// A query parameter that must be a signed integer, if given.
fn i64_param(params: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("{name} must be an integer, not {v:?}"))))
        .transpose()
}

/// `GET /v1/runs/{run}/metrics/{key}/history?min_step&max_step&min_time_ms&max_time_ms&limit&cursor`: a page
/// of the series' points (bounds inclusive), ordered by step then log order, in columns:
/// `{"run", "key", "steps", "timestamps_ms", "values", "next_cursor"}`. `limit` defaults to 10,000 and is
/// at most 100,000.
pub async fn history(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((run_id, key)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let limit = params.u64("limit")?.unwrap_or(DEFAULT_HISTORY_PAGE as u64);
    if limit == 0 || limit > MAX_HISTORY_PAGE as u64 {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_HISTORY_PAGE}")));
    }
    let req = HistoryRequest {
        run: run_id.clone(),
        key: key.clone(),
        min_step: i64_param(&params, "min_step")?,
        max_step: i64_param(&params, "max_step")?,
        min_timestamp_ms: i64_param(&params, "min_time_ms")?,
        max_timestamp_ms: i64_param(&params, "max_time_ms")?,
        limit: limit as usize,
        cursor: params.get("cursor").map(str::to_owned),
    };
    check_runs(&state, &who, std::slice::from_ref(&run_id)).await?;
    let page = run(&state, move |m| m.history(&req)).await?;
    let steps: Vec<i64> = page.points.iter().map(|p| p.step).collect();
    let times: Vec<i64> = page.points.iter().map(|p| p.timestamp_ms).collect();
    let values: Vec<Value> = page.points.iter().map(|p| value_json(p.value)).collect();
    Ok(Json(json!({
        "run": run_id,
        "key": key,
        "steps": steps,
        "timestamps_ms": times,
        "values": values,
        "next_cursor": page.next_cursor,
    })))
}

fn bucket_json(b: &Bucket) -> Value {
    json!({
        "start_step": b.start_step,
        "end_step": b.end_step,
        "count": b.count,
        "nan_count": b.nan_count,
        "min": value_json(b.min),
        "max": value_json(b.max),
        "mean": value_json(b.mean),
        "last_step": b.last_step,
        "last": value_json(b.last),
    })
}

/// The downsampling asked by `max_points` (required, 1 to 100,000), `min_step` and `max_step`.
fn downsample_request(params: &Params, run_id: &str, key: &str) -> Result<DownsampleRequest, ApiError> {
    let max_points = params.u64("max_points")?.ok_or_else(|| ApiError::bad_request("max_points is required"))?;
    if max_points == 0 || max_points > MAX_BUCKETS as u64 {
        return Err(ApiError::bad_request(format!("max_points must be 1 to {MAX_BUCKETS}")));
    }
    Ok(DownsampleRequest {
        run: run_id.to_owned(),
        key: key.to_owned(),
        min_step: i64_param(params, "min_step")?,
        max_step: i64_param(params, "max_step")?,
        max_points: max_points as usize,
    })
}

/// `GET /v1/runs/{run}/metrics/{key}/downsample?max_points=N&min_step&max_step`: the series' steps in at
/// most N buckets of equal width, each `{"start_step", "end_step", "count", "nan_count", "min", "max",
/// "mean", "last_step", "last"}` (empty buckets left out).
pub async fn downsample(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((run_id, key)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let req = downsample_request(&params, &run_id, &key)?;
    check_runs(&state, &who, std::slice::from_ref(&run_id)).await?;
    let buckets = run(&state, move |m| m.downsample(&req)).await?;
    Ok(Json(json!({ "run": run_id, "key": key, "buckets": buckets.iter().map(bucket_json).collect::<Vec<_>>() })))
}

/// The runs named: each `run` parameter (any run id, commas included) and each of the comma-separated ids
/// of the `runs` parameters, in order; 1 to [`MAX_RUNS`] in all.
fn runs_param(params: &Params) -> Result<Vec<String>, ApiError> {
    let mut runs = Vec::new();
    for (name, value) in &params.0 {
        match name.as_str() {
            "run" => runs.push(value.clone()),
            "runs" => runs.extend(value.split(',').map(str::to_owned)),
            _ => {}
        }
    }
    if runs.is_empty() || runs.len() > MAX_RUNS || runs.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(format!(
            "name 1 to {MAX_RUNS} runs: run=ID (repeated) or runs=ID,ID,... (no empty id)"
        )));
    }
    Ok(runs)
}

/// `GET /v1/metrics/{key}/latest?runs=A,B,...` (or `run=A&run=B...`): the latest point of metric `key` in each run, in the
/// order asked: `{"key", "runs": [{"run", "latest": {...} or null}, ...]}`.
pub async fn latest_of(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let runs = runs_param(&params)?;
    check_runs(&state, &who, &runs).await?;
    let k = key.clone();
    let all = run(&state, move |m| m.latest_of(&runs, &k)).await?;
    let runs: Vec<Value> =
        all.iter().map(|(r, l)| json!({ "run": r, "latest": l.as_ref().map(latest_json) })).collect();
    Ok(Json(json!({ "key": key, "runs": runs })))
}

/// `GET /v1/metrics/{key}/compare?runs=A,B,...&max_points=N&min_step&max_step`: metric `key` of each run,
/// downsampled as `downsample` does, from one snapshot: `{"key", "series": [{"run", "buckets"}, ...]}`.
pub async fn compare(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let runs = runs_param(&params)?;
    let req = downsample_request(&params, "", &key)?;
    check_runs(&state, &who, &runs).await?;
    let all = run(&state, move |m| m.compare(&runs, &req)).await?;
    let series: Vec<Value> = all
        .iter()
        .map(|s| json!({ "run": s.run, "buckets": s.buckets.iter().map(bucket_json).collect::<Vec<_>>() }))
        .collect();
    Ok(Json(json!({ "key": key, "series": series })))
}
