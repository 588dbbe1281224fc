//! `/v1/artifacts`: the artifact store's buckets as JSON, with their figures (objects and bytes), and their
//! retention. Objects themselves are read and written through the S3 API (`crate::s3`). A project-scoped
//! token sees only its project's buckets; another project's bucket answers as an absent one (404).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_store::artifacts::{ArtifactError, BlobHealth, BucketInfo};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::extract::JsonBody;
use super::state::AppState;
use crate::backend::ArtifactApi;
use crate::problem::ApiError;

/// A bucket as JSON.
fn bucket_json(b: &BucketInfo) -> Value {
    json!({
        "name": b.name,
        "project": b.project,
        "created_ms": b.created_ms,
        "retention_days": b.retention_days,
        "objects": b.stats.objects,
        "bytes": b.stats.bytes,
    })
}

/// The blob store's health as JSON (for `/healthz` and `/v1/artifacts/stats`).
pub fn health_json(h: &BlobHealth) -> Value {
    json!({
        "healthy": h.last_error.is_none(),
        "files": h.files,
        "disk_bytes": h.disk_bytes,
        "live_bytes": h.live_bytes,
        "last_gc_ms": h.last_gc_ms,
        "last_error": h.last_error,
    })
}

/// The problem document of a failed artifact call.
fn problem(err: ArtifactError) -> ApiError {
    match err {
        ArtifactError::NoSuchBucket(b) => ApiError::not_found(format!("no bucket {b}")).with("bucket", b),
        ArtifactError::InvalidBucketName(_) | ArtifactError::Invalid(_) => ApiError::bad_request(err.to_string()),
        other => {
            tracing::error!(error = %other, "artifact store failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string())
        }
    }
}

/// Runs `f` on the blocking pool with the artifact store: 501 when the server has none.
async fn run<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn ArtifactApi) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let Some(artifacts) = state.artifacts.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            "this server has no artifact store (on the PostgreSQL backend, start it with --artifact-objects URL)",
        ));
    };
    super::state::blocking(&state.artifact_permits, "artifact", move || f(&*artifacts)).await
}

/// A bucket `who` sees: 404 for a missing one and, for a scoped token, for another project's.
fn visible_bucket(a: &dyn ArtifactApi, who: &Principal, name: &str) -> Result<BucketInfo, ApiError> {
    let b = a.bucket(name).map_err(problem)?;
    match who.project() {
        Some(p) if b.project.as_deref() != Some(p) => {
            Err(ApiError::not_found(format!("no bucket {name}")).with("bucket", name))
        }
        _ => Ok(b),
    }
}

/// `GET /v1/artifacts/buckets`: every bucket (a scoped token's: its project's) with its figures.
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let project = who.project().map(str::to_owned);
    let buckets = run(&state, |a| a.list_buckets().map_err(problem)).await?;
    let out: Vec<Value> =
        buckets.iter().filter(|b| project.is_none() || b.project == project).map(bucket_json).collect();
    Ok(Json(json!({ "buckets": out })))
}

/// `GET /v1/artifacts/buckets/{bucket}`: one bucket with its figures.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(bucket): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let b = run(&state, move |a| visible_bucket(a, &who, &bucket)).await?;
    Ok(Json(bucket_json(&b)))
}

/// The body of `PUT /v1/artifacts/buckets/{bucket}/retention`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Objects older than this many days are deleted; `null`: kept forever.
    days: Option<u32>,
}

/// `PUT /v1/artifacts/buckets/{bucket}/retention`: sets how long the bucket keeps objects (admin tokens;
/// a scoped admin, for its project's buckets).
pub async fn set_retention(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(bucket): Path<String>,
    JsonBody(body): JsonBody<Retention>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Admin)?;
    if body.days == Some(0) {
        return Err(ApiError::bad_request("days must be at least 1, or null to keep objects forever"));
    }
    let b = run(&state, move |a| {
        visible_bucket(a, &who, &bucket)?;
        a.set_retention(&bucket, body.days).map_err(problem)
    })
    .await?;
    Ok(Json(bucket_json(&b)))
}

/// `GET /v1/artifacts/stats`: every bucket's figures summed, and the blob store's health. Store-wide, so
/// not for project-scoped tokens.
pub async fn stats(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Read)?;
    let (totals, buckets, health) = run(&state, |a| {
        let totals = a.totals().map_err(problem)?;
        let buckets = a.list_buckets().map_err(problem)?.len();
        Ok((totals, buckets, a.health()))
    })
    .await?;
    Ok(Json(json!({
        "buckets": buckets,
        "objects": totals.objects,
        "bytes": totals.bytes,
        "blobs": health_json(&health),
    })))
}

/// `POST /v1/artifacts/gc`: expires objects past their bucket's retention and collects garbage in the
/// blob files now, instead of at the maintenance thread's next round (admin tokens, no project scope).
pub async fn collect(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Admin)?;
    let (expired, gc, health) = run(&state, |a| {
        let expired = a.expire().map_err(problem)?;
        let gc = a.collect_garbage().map_err(problem)?;
        Ok((expired, gc, a.health()))
    })
    .await?;
    Ok(Json(json!({
        "expired": expired,
        "files_removed": gc.files_removed,
        "blobs_moved": gc.blobs_moved,
        "bytes_reclaimed": gc.bytes_reclaimed,
        "blobs": health_json(&health),
    })))
}
