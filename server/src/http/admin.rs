//! `/v1/admin/*`: operations on the whole database, for unscoped admin tokens: a consistent backup of the
//! live store (`POST /v1/admin/backup`) and a check of it (`POST /v1/admin/check`), so that a store the server
//! holds is backed up and checked without stopping the server (the directory lock keeps `cairn backup
//! --data` and `cairn check --data` out while it runs).

use std::path::PathBuf;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Principal, Role};
use super::extract::JsonBody;
use super::state::AppState;
use crate::problem::ApiError;

/// Body of `POST /v1/admin/backup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Where the copy goes, on the server's machine: an absolute path that does not exist or is an empty
    /// directory.
    to: PathBuf,
    /// Whether to check the copy (every checksum, the WALs, every index against its records) before
    /// answering.
    #[serde(default)]
    check: bool,
}

/// `POST /v1/admin/backup`: a consistent copy of the live store in `to` (tables hard-linked where `to` is on
/// the same file system), optionally checked.
pub async fn backup(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<BackupRequest>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Admin)?;
    if !req.to.is_absolute() {
        return Err(ApiError::bad_request(format!("to must be an absolute path, not {}", req.to.display())));
    }
    let out = state.backend.backup(req.to, req.check).await?;
    Ok(Json(out))
}

/// `POST /v1/admin/check`: the checks of `cairn check` on a consistent copy of the live store, made beside
/// the data directory (tables hard-linked) and removed afterwards. The report's `healthy` says the result.
pub async fn check(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Admin)?;
    let out = state.backend.check().await?;
    Ok(Json(out))
}
