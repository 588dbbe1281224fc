//! `/v1/collections/{collection}/records[/{id}]`: create, replace, read, delete and query records, with
//! versions as ETags and project scoping.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_store::{Query, RecordWrite, Stored};
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::error::ApiError;
use super::extract::{CollectionPath, JsonBody, Params, RecordPath};
use super::state::AppState;

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

/// The precondition of a write, from `If-Match` / `If-None-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Neither header: create or replace.
    None,
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: *`: replace only, any version.
    Exists,
    /// `If-Match: "<version>"`: replace only that version.
    Version(u64),
}

impl Precondition {
    /// Parses the headers: 400 if malformed or if both are given.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
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
            (None, None) => Ok(Self::None),
            (None, Some(v)) if v == "*" => Ok(Self::Absent),
            (None, Some(v)) => Err(ApiError::bad_request(format!("If-None-Match must be *, not {v:?}"))),
            (Some(v), None) if v == "*" => Ok(Self::Exists),
            (Some(v), None) => parse_etag(&v).map(Self::Version).ok_or_else(|| {
                ApiError::bad_request(format!("If-Match must be * or a quoted version such as \"3\", not {v:?}"))
            }),
        }
    }

    /// Checks the precondition against the current record (`None` if absent).
    pub fn check(self, collection: &str, id: &str, current: Option<u64>) -> Result<(), ApiError> {
        let fail = |detail: String| Err(ApiError::precondition(collection, id, current, detail));
        match (self, current) {
            (Self::Absent, Some(v)) => fail(format!("{collection}/{id} already exists at version {v}")),
            (Self::Exists | Self::Version(_), None) => fail(format!("{collection}/{id} does not exist")),
            (Self::Version(want), Some(v)) if want != v => {
                fail(format!("{collection}/{id} is at version {v}, not {want}"))
            }
            _ => Ok(()),
        }
    }
}

fn parse_etag(v: &str) -> Option<u64> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// A record of another project is invisible to a scoped token: 404, as if absent.
fn hidden(collection: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("{collection}/{id} not found")).with("collection", collection).with("id", id)
}

/// A create that a scoped token cannot make because another project's record has the id: 403, saying no
/// more than that the id is taken (not the record's version, project or document). Ids are shared by all
/// projects, so this is the one answer in which another project's record differs from an absent one.
pub fn id_taken(who: &Principal, collection: &str, id: &str) -> ApiError {
    ApiError::forbidden(format!("{collection}/{id} cannot be created with token {}: the id is taken", who.name))
        .with("collection", collection)
        .with("id", id)
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
    let pre = Precondition::from_headers(&headers)?;
    let RecordPath { collection, id } = path;
    let (stored, created) = state
        .write(move |store| {
            let created = std::cell::Cell::new(false);
            let stored = store.collection_dyn(&collection)?.write_one(&id, |current| {
                // Another project's record is checked as if absent; only a create over it fails (403).
                let visible = current.filter(|c| who.sees(&c.doc));
                pre.check(&collection, &id, visible.map(|c| c.version))?;
                if current.is_some() && visible.is_none() {
                    return Err(id_taken(&who, &collection, &id));
                }
                created.set(current.is_none());
                Ok(RecordWrite::Put(doc.clone()))
            })?;
            let stored = stored.ok_or_else(|| hidden(&collection, &id))?;
            Ok((record_json(&collection, &stored), created.get()))
        })
        .await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let version = stored["version"].as_u64().unwrap_or(0);
    Ok((status, [(header::ETAG, etag_of(version))], Json(stored)).into_response())
}

fn etag_of(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `GET /v1/collections/{collection}/records/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    path: RecordPath,
) -> Result<Response, ApiError> {
    who.require(Role::Read)?;
    let RecordPath { collection, id } = path;
    let stored = state
        .read(move |store| {
            let found = store.collection_dyn(&collection)?.get(&id)?;
            match found {
                Some(s) if who.sees(&s.doc) => Ok(record_json(&collection, &s)),
                _ => Err(hidden(&collection, &id)),
            }
        })
        .await?;
    let version = stored["version"].as_u64().unwrap_or(0);
    Ok(([(header::ETAG, etag_of(version))], Json(stored)).into_response())
}

/// `DELETE /v1/collections/{collection}/records/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    path: RecordPath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(Role::Write)?;
    let pre = match Precondition::from_headers(&headers)? {
        Precondition::Absent => return Err(ApiError::bad_request("If-None-Match makes no sense on DELETE")),
        Precondition::None => Precondition::Exists,
        other => other,
    };
    let RecordPath { collection, id } = path;
    state
        .write(move |store| {
            store.collection_dyn(&collection)?.write_one(&id, |current| {
                match current {
                    Some(c) if who.sees(&c.doc) => {}
                    _ => return Err(hidden(&collection, &id)),
                }
                pre.check(&collection, &id, current.map(|c| c.version))?;
                Ok(RecordWrite::Delete)
            })
        })
        .await?;
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

/// `GET /v1/collections/{collection}/records?field=value&order_by=&order=&limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    CollectionPath(collection): CollectionPath,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Read)?;
    let q = list_query(&params, &who, state.limits.default_page, state.limits.max_page)?;
    let page = state
        .read(move |store| {
            let page = store.collection_dyn(&collection)?.query(&q)?;
            let records: Vec<Value> = page.records.iter().map(|s| record_json(&collection, s)).collect();
            Ok(json!({ "records": records, "next_cursor": page.next_cursor }))
        })
        .await?;
    Ok(Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_parse_and_check() {
        let mut h = HeaderMap::new();
        assert_eq!(Precondition::from_headers(&h).unwrap(), Precondition::None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"12\""));
        assert_eq!(Precondition::from_headers(&h).unwrap(), Precondition::Version(12));
        for bad in ["12", "\"\"", "\"-1\"", "\"1x\"", "W/\"1\""] {
            h.insert(header::IF_MATCH, HeaderValue::from_static(bad));
            assert_eq!(Precondition::from_headers(&h).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(Precondition::from_headers(&h).is_err(), "both headers");
        let check = |p: Precondition, cur| p.check("c", "i", cur).map_err(|e| e.status.as_u16());
        assert_eq!(check(Precondition::Absent, None), Ok(()));
        assert_eq!(check(Precondition::Absent, Some(1)), Err(412));
        assert_eq!(check(Precondition::Version(2), Some(2)), Ok(()));
        assert_eq!(check(Precondition::Version(2), Some(3)), Err(412));
        assert_eq!(check(Precondition::Exists, None), Err(412));
        assert_eq!(check(Precondition::None, None), Ok(()));
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
