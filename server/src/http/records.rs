//! `/v1/collections/{collection}/records[/{id}]`: create, replace, read, delete and query records, with
//! versions as ETags and project scoping; `/v1/collections/{collection}/count`: count the records a query's
//! filters match.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_store::{Query, Stored};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::extract::{writable_collection, CollectionPath, JsonBody, Params, RecordPath};
use super::state::AppState;
use crate::backend::Precondition;
use crate::problem::ApiError;

/// A stored record as the API shows it.
pub fn record_json(collection: &str, s: &Stored<Value>) -> Value {
    json!({
        "collection": collection,
        "id": s.id,
        "version": s.version,
        "seq": s.seq,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "document": s.doc,
    })
}

/// [`record_json`] as the body of an answer, with the record's version as its ETag: the same text, written
/// straight from the record (no JSON value is built, and the document is not copied).
pub fn record_response<D: Serialize>(status: StatusCode, collection: &str, s: &Stored<D>) -> Response {
    /// `record_json`'s fields, in the order its object writes them (by name).
    #[derive(Serialize)]
    struct Body<'a, D> {
        collection: &'a str,
        created_at_ms: i64,
        document: &'a D,
        id: &'a str,
        seq: u64,
        updated_at_ms: i64,
        version: u64,
    }
    let body = Body {
        collection,
        created_at_ms: s.created_at_ms,
        document: &s.doc,
        id: &s.id,
        seq: s.seq,
        updated_at_ms: s.updated_at_ms,
        version: s.version,
    };
    match serde_json::to_vec(&body) {
        Ok(body) => {
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (header::ETAG, etag_of(s.version)),
            ];
            (status, headers, body).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}

/// The precondition of a write, from `If-Match` / `If-None-Match`: 400 if malformed or if both are given.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give If-Match or If-None-Match, not both")),
        (None, None) => Ok(Precondition::None),
        (None, Some(v)) if v == "*" => Ok(Precondition::Absent),
        (None, Some(v)) => Err(ApiError::bad_request(format!("If-None-Match must be *, not {v:?}"))),
        (Some(v), None) if v == "*" => Ok(Precondition::Exists),
        (Some(v), None) => parse_etag(&v).map(Precondition::Version).ok_or_else(|| {
            ApiError::bad_request(format!("If-Match must be * or a quoted version such as \"3\", not {v:?}"))
        }),
    }
}

fn parse_etag(v: &str) -> Option<u64> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// `PUT /v1/collections/{collection}/records/{id}`.
pub async fn put(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    path: RecordPath,
    headers: HeaderMap,
    JsonBody(doc): JsonBody<Value>,
) -> Result<Response, ApiError> {
    who.require(Role::Write)?;
    if !doc.is_object() {
        return Err(ApiError::bad_request("the document must be a JSON object"));
    }
    who.may_write(&doc)?;
    let pre = precondition(&headers)?;
    let RecordPath { collection, id } = path;
    writable_collection(&collection)?;
    let (stored, created) = state.backend.put(who.scope(), collection.clone(), id, doc, pre).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(record_response(status, &collection, &stored))
}

fn etag_of(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `GET /v1/collections/{collection}/records/{id}`: the document as the backend has it as text (the
/// embedded store's stored bytes), not parsed and written again.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    path: RecordPath,
) -> Result<Response, ApiError> {
    who.require(Role::Read)?;
    let RecordPath { collection, id } = path;
    let stored = state.backend.get_raw(who.scope(), collection.clone(), id).await?;
    Ok(record_response(StatusCode::OK, &collection, &stored))
}

/// `DELETE /v1/collections/{collection}/records/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    path: RecordPath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(Role::Write)?;
    let pre = match precondition(&headers)? {
        Precondition::Absent => return Err(ApiError::bad_request("If-None-Match makes no sense on DELETE")),
        Precondition::None => Precondition::Exists,
        other => other,
    };
    let RecordPath { collection, id } = path;
    writable_collection(&collection)?;
    state.backend.delete(who.scope(), collection, id, pre).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query-string parameters that are not filters.
const RESERVED: [&str; 4] = ["order_by", "order", "limit", "cursor"];

/// A filter value from a query string: a JSON number, `true`, `false`, `null` or a quoted JSON string is
/// taken as that value; anything else is a string.
pub fn filter_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null | Value::String(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

/// Orders `q` by `order_by`, if given, `asc` (the default) or `desc`: 400 for another `order`.
pub fn ordered(mut q: Query, order_by: Option<&str>, order: Option<&str>) -> Result<Query, ApiError> {
    if let Some(field) = order_by {
        q = q.order_by(field);
    }
    match order {
        None | Some("asc") => Ok(q),
        Some("desc") => Ok(q.descending()),
        Some(other) => Err(ApiError::bad_request(format!("order must be asc or desc, not {other:?}"))),
    }
}

/// Builds the query of a list request: filters, order and cursor; the limit defaulted and capped; the
/// principal's project added as a filter.
pub fn list_query(params: &Params, who: &Principal, default_page: usize, max_page: usize) -> Result<Query, ApiError> {
    let mut q = filter_query(params, who)?;
    q = ordered(q, params.get("order_by"), params.get("order"))?;
    let limit = params.u64("limit")?.map_or(default_page, |n| (n as usize).min(max_page));
    if limit == 0 {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    q = q.limit(limit);
    if let Some(c) = params.get("cursor") {
        if c.is_empty() {
            return Err(ApiError::bad_request("empty cursor"));
        }
        q = q.after(Some(c.to_owned()));
    }
    Ok(q)
}

/// The filters of a request's query string (every parameter but the reserved ones), with the principal's
/// project added as a filter: 403 for a filter on another project.
fn filter_query(params: &Params, who: &Principal) -> Result<Query, ApiError> {
    let mut q = Query::new();
    for (field, raw) in &params.0 {
        if RESERVED.contains(&field.as_str()) {
            continue;
        }
        if field.is_empty() {
            return Err(ApiError::bad_request("empty filter field name"));
        }
        let value = filter_value(raw);
        if field == "project" {
            if let Some(p) = who.project() {
                if value != Value::String(p.to_owned()) {
                    return Err(ApiError::forbidden(format!("token {} is limited to project {p:?}", who.name)));
                }
            }
        }
        q = q.eq(field, value);
    }
    if let Some(p) = who.project() {
        if params.get("project").is_none() {
            q = q.eq("project", p);
        }
    }
    Ok(q)
}

/// `GET /v1/collections/{collection}/records?field=value&order_by=&order=&limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    CollectionPath(collection): CollectionPath,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let q = list_query(&params, &who, state.limits.default_page, state.limits.max_page)?;
    let page = state.backend.query(collection.clone(), q).await?;
    let records: Vec<Value> = page.records.iter().map(|s| record_json(&collection, s)).collect();
    let page = json!({ "records": records, "next_cursor": page.next_cursor });
    Ok(Json(page))
}

/// `GET /v1/collections/{collection}/count?field=value`: how many records match the filters (of the
/// token's project, if scoped). The list's other parameters (order, limit, cursor) make no sense here: 400.
pub async fn count(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    CollectionPath(collection): CollectionPath,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    if let Some(name) = RESERVED.iter().find(|name| params.get(name).is_some()) {
        return Err(ApiError::bad_request(format!("{name} makes no sense on a count")));
    }
    let q = filter_query(&params, &who)?;
    let count = state.backend.count(collection, q).await?;
    Ok(Json(json!({ "count": count })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_parse() {
        let mut h = HeaderMap::new();
        assert_eq!(precondition(&h).unwrap(), Precondition::None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"12\""));
        assert_eq!(precondition(&h).unwrap(), Precondition::Version(12));
        for bad in ["12", "\"\"", "\"-1\"", "\"1x\"", "W/\"1\""] {
            h.insert(header::IF_MATCH, HeaderValue::from_static(bad));
            assert_eq!(precondition(&h).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(precondition(&h).is_err(), "both headers");
    }

    /// The answer with a record is `record_json`'s text, whether the document is a value or stored text.
    #[tokio::test]
    async fn record_responses_are_record_json() {
        let doc = json!({"name": "x\"y", "n": [1, 2.5, null], "r": {"gpus": 4}, "project": "p1"});
        let s = Stored { id: "j/1 ü".to_owned(), version: 7, seq: 42, created_at_ms: 1, updated_at_ms: -2, doc };
        let want = serde_json::to_vec(&record_json("jobs", &s)).unwrap();
        let raw = Stored {
            id: s.id.clone(),
            version: s.version,
            seq: s.seq,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            doc: serde_json::value::to_raw_value(&s.doc).unwrap(),
        };
        let answers =
            [record_response(StatusCode::CREATED, "jobs", &s), record_response(StatusCode::CREATED, "jobs", &raw)];
        for resp in answers {
            assert_eq!(resp.status(), StatusCode::CREATED);
            assert_eq!(resp.headers()[header::ETAG], "\"7\"");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            assert_eq!(body, want);
        }
    }

    #[test]
    fn filter_values_are_typed() {
        assert_eq!(filter_value("5"), json!(5));
        assert_eq!(filter_value("true"), json!(true));
        assert_eq!(filter_value("PENDING"), json!("PENDING"));
        assert_eq!(filter_value("\"5\""), json!("5"));
        assert_eq!(filter_value("[1]"), json!("[1]"));
    }
}
