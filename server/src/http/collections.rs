//! `/v1/collections`: list and declare collections; `/v1/collections/{collection}/claim`: take the first
//! matching record atomically, for workers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_store::{CollectionSpec, Query};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::{Principal, Role};
use super::extract::{collection_name, writable_collection, CollectionPath, JsonBody};
use super::records::{ordered, record_json};
use super::state::AppState;
use crate::problem::ApiError;

/// `GET /v1/collections`: every collection with its indexes and record count: the count every write keeps
/// (no scan), or, for a scoped token, the count of its project's records (a query).
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let out: Vec<Value> = state
        .backend
        .collections(who.scope())
        .await?
        .into_iter()
        .map(|c| json!({ "name": c.name, "indexes": c.indexes, "count": c.count }))
        .collect();
    let out = json!({ "collections": out });
    Ok(Json(out))
}

/// `POST /v1/collections`: declares a collection and its indexes (admin). 201 when new, 200 when it
/// existed (its indexes are then replaced by these, new ones built online). Unscoped admin tokens
/// only: indexes are shared by every project.
pub async fn declare(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(spec): JsonBody<CollectionSpec>,
) -> Result<Response, ApiError> {
    who.require_unscoped(Role::Admin)?;
    collection_name(&spec.name)?;
    writable_collection(&spec.name)?;
    let created = state.backend.declare(spec.clone()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "name": spec.name, "indexes": spec.indexes }))).into_response())
}

/// One query of a claim.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    /// Fields that must equal these values.
    #[serde(default, rename = "where")]
    pub filter: Map<String, Value>,
    /// The field to order candidates by (an index must provide it).
    #[serde(default)]
    pub order_by: Option<String>,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    pub order: Option<String>,
}

/// The body of a claim: one query (`where`, `order_by`, `order`) or several (`queries`, tried in order),
/// and the fields to set on the record taken.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    #[serde(default, rename = "where")]
    filter: Map<String, Value>,
    #[serde(default)]
    order_by: Option<String>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    queries: Vec<ClaimQuery>,
    /// Fields to set (dot-separated paths reach into nested objects). Must not be empty.
    set: Map<String, Value>,
}

impl ClaimQuery {
    fn to_query(&self, who: &Principal) -> Result<Query, ApiError> {
        let mut q = Query::new();
        for (field, value) in &self.filter {
            if field == "project" && who.project().is_some_and(|p| value != p) {
                return Err(ApiError::forbidden(format!("token {} is limited to its project", who.name)));
            }
            q = q.eq(field, value.clone());
        }
        if let Some(p) = who.project() {
            if !self.filter.contains_key("project") {
                q = q.eq("project", p);
            }
        }
        ordered(q, self.order_by.as_deref(), self.order.as_deref())
    }
}

/// `POST /v1/collections/{collection}/claim`: atomically updates the first record matching the queries
/// with `set`, so concurrent workers never take the same one. 200 with the record, or 204 if none matched.
pub async fn claim(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    CollectionPath(collection): CollectionPath,
    JsonBody(req): JsonBody<ClaimRequest>,
) -> Result<Response, ApiError> {
    who.require(Role::Write)?;
    writable_collection(&collection)?;
    if req.set.is_empty() {
        return Err(ApiError::bad_request("set must name at least one field"));
    }
    if req.set.keys().any(|k| k.is_empty() || k.split('.').any(str::is_empty)) {
        return Err(ApiError::bad_request("set has an empty field path"));
    }
    if who.project().is_some() && req.set.contains_key("project") {
        return Err(ApiError::forbidden("a project-scoped token cannot move records between projects"));
    }
    let single = ClaimQuery { filter: req.filter, order_by: req.order_by, order: req.order };
    let single_given = !single.filter.is_empty() || single.order_by.is_some() || single.order.is_some();
    if single_given && !req.queries.is_empty() {
        return Err(ApiError::bad_request("give where/order_by/order or queries, not both"));
    }
    let queries = if req.queries.is_empty() { vec![single] } else { req.queries };
    let queries = queries.iter().map(|q| q.to_query(&who)).collect::<Result<Vec<_>, _>>()?;
    let claimed = state.backend.claim(who.scope(), collection.clone(), queries, req.set).await?;
    let claimed = claimed.map(|s| record_json(&collection, &s));
    Ok(match claimed {
        Some(record) => Json(record).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_bodies_parse() {
        let r: ClaimRequest =
            serde_json::from_value(json!({"where": {"status": "PENDING"}, "order_by": "priority", "order": "desc", "set": {"status": "RUNNING"}}))
                .unwrap();
        assert_eq!(r.filter["status"], "PENDING");
        assert!(serde_json::from_value::<ClaimRequest>(json!({"set": {}, "bogus": 1})).is_err());
    }
}
