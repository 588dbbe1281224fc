//! Errors as `application/problem+json` (RFC 9457), the answer of every failed request whichever layer of the
//! server failed (the routes or the storage backend): `type`, `title`, `status`, `detail`, plus members
//! that say which record failed and its current version.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::{ChangesError, ClaimError, CollectionError, DeclareError, ReadError, StoreError, WriteError};
use serde_json::{json, Map, Value};

/// An error answer. Build with the constructors; extra members with [`ApiError::with`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Short slug naming the kind of problem; the `type` member is `/problems/{kind}`.
    pub kind: &'static str,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Extension members.
    pub extra: Map<String, Value>,
    /// Seconds for `Retry-After`, on 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A problem of `status` and `kind`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind, detail: detail.into(), extra: Map::new(), retry_after: None }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401: no valid bearer token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: the token may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: no such record, collection or route.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 412: a precondition (`If-Match`, `If-None-Match`, a transaction's expected version) does not hold.
    pub fn precondition(collection: &str, id: &str, current: Option<u64>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", detail)
            .with("collection", collection)
            .with("id", id)
            .with("current_version", current)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        e.retry_after = Some(retry_after);
        e
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(obj) = body.as_object_mut() {
            obj.extend(self.extra.clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.retry_after.is_none() {
            tracing::error!(status = self.status.as_u16(), detail = %self.detail, "request failed");
        }
        let mut resp = (self.status, self.body().to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<CollectionError> for ApiError {
    fn from(e: CollectionError) -> Self {
        let detail = e.to_string();
        match e {
            CollectionError::NotFound { collection, id } => {
                ApiError::not_found(detail).with("collection", collection).with("id", id)
            }
            CollectionError::AlreadyExists { collection, id } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", detail)
                    .with("collection", collection)
                    .with("id", id)
            }
            CollectionError::Conflict { collection, id, actual, .. } => {
                ApiError::precondition(&collection, &id, actual, detail)
            }
            CollectionError::TxnConflict { collection, id } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail).with("collection", collection).with("id", id)
            }
            CollectionError::Contended { collection } => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "contended", detail);
                e.retry_after = Some(1);
                e.with("collection", collection)
            }
            CollectionError::UnknownCollection(name) => ApiError::not_found(detail).with("collection", name),
            CollectionError::SpecMismatch(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            CollectionError::Invalid(_) | CollectionError::InvalidQuery(_) => ApiError::bad_request(detail),
            CollectionError::ChangesTrimmed { trimmed_through, .. } => {
                ApiError::new(StatusCode::GONE, "changes-trimmed", detail).with("trimmed_through", trimmed_through)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
        }
    }
}

/// Each operation's error answers as the same error of [`CollectionError`] does.
macro_rules! via_collection_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                CollectionError::from(e).into()
            }
        }
    )*};
}
via_collection_error!(StoreError, ReadError, WriteError, ClaimError, DeclareError, ChangesError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_errors_map_to_statuses() {
        let cases: Vec<(CollectionError, u16)> = vec![
            (CollectionError::NotFound { collection: "c".into(), id: "i".into() }, 404),
            (CollectionError::Conflict { collection: "c".into(), id: "i".into(), expected: 1, actual: Some(2) }, 412),
            (CollectionError::TxnConflict { collection: "c".into(), id: "i".into() }, 409),
            (CollectionError::UnknownCollection("c".into()), 404),
            (CollectionError::Invalid("x".into()), 400),
            (CollectionError::InvalidQuery("x".into()), 400),
            (CollectionError::ChangesTrimmed { requested: 1, trimmed_through: 5 }, 410),
            (CollectionError::Undecodable { key: "k".into(), reason: "r".into() }, 500),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status.as_u16(), status);
        }
        let body = ApiError::from(CollectionError::Conflict {
            collection: "jobs".into(),
            id: "j1".into(),
            expected: 1,
            actual: Some(4),
        })
        .body();
        assert_eq!(body["current_version"], 4);
        assert_eq!(body["type"], "/problems/precondition-failed");
        assert_eq!(body["status"], 412);
    }

    #[test]
    fn each_operations_errors_map_as_the_superset_does() {
        let conflict = WriteError::Conflict { collection: "c".into(), id: "i".into(), expected: 1, actual: Some(2) };
        assert_eq!(ApiError::from(conflict).body()["current_version"], 2);
        assert_eq!(ApiError::from(WriteError::TxnConflict { collection: "c".into(), id: "i".into() }).status, 409);
        assert_eq!(ApiError::from(ReadError::UnknownCollection("c".into())).status, 404);
        assert_eq!(ApiError::from(ReadError::InvalidQuery("q".into())).status, 400);
        assert_eq!(ApiError::from(ClaimError::InvalidQuery("q".into())).status, 400);
        let contended = ApiError::from(ClaimError::Contended { collection: "jobs".into() });
        assert_eq!((contended.status.as_u16(), contended.retry_after, contended.kind), (503, Some(1), "contended"));
        let resp = contended.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(ApiError::from(DeclareError::SpecMismatch("c".into())).status, 409);
        let trimmed = ApiError::from(ChangesError::ChangesTrimmed { requested: 1, trimmed_through: 5 });
        assert_eq!((trimmed.status.as_u16(), &trimmed.body()["trimmed_through"]), (410, &json!(5)));
        let undecodable = StoreError::Undecodable { key: "k".into(), reason: "r".into() };
        assert_eq!(ApiError::from(ReadError::Store(undecodable)).status, 500);
    }
}
