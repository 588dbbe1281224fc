//! `/v1/admin/*`: operations on the whole database, for unscoped admin tokens: a consistent backup of the
//! live store (`POST /v1/admin/backup`) and a check of it (`POST /v1/admin/check`), so that a store the server
//! holds is backed up and checked without stopping the server (the directory lock keeps `cairn backup
//! --data` and `cairn check --data` out while it runs).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_engine::{Check, Error as EngineError, OpenError};
use cairn_store::check_store;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::error::ApiError;
use super::extract::JsonBody;
use super::state::AppState;
use crate::report;

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

fn checkpoint_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Open(OpenError::AlreadyExists { path }) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{} exists and is not empty; a backup goes to a new directory", path.display()),
        ),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("backup failed: {other}")),
    }
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
    let out = state
        .read(move |store| {
            let info = store.db().checkpoint(&req.to).map_err(checkpoint_error)?;
            let mut out = report::checkpoint_json(&info);
            if req.check {
                let checked = check_store(&Check::new(), &info.dir)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
                out["check"] = report::check_json(&checked);
            }
            Ok(out)
        })
        .await?;
    Ok(Json(out))
}

/// `POST /v1/admin/check`: the checks of `cairn check` on a consistent copy of the live store, made beside
/// the data directory (tables hard-linked) and removed afterwards. The report's `healthy` says the result.
pub async fn check(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require_unscoped(Role::Admin)?;
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let out = state
        .read(move |store| {
            let data = store.db().path().to_path_buf();
            let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let copy = data.with_file_name(format!(
                ".{name}.check-{}-{}",
                std::process::id(),
                COPIES.fetch_add(1, Ordering::Relaxed)
            ));
            let checked = store.db().checkpoint(&copy).map_err(checkpoint_error).and_then(|_| {
                check_store(&Check::new(), &copy)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
            });
            let _ = std::fs::remove_dir_all(&copy);
            let mut out = report::check_json(&checked?);
            out["dir"] = json!(data);
            Ok(out)
        })
        .await?;
    Ok(Json(out))
}
