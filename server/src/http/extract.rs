//! Request extractors whose rejections are problem documents: JSON bodies (413 when too large, 400 when
//! malformed), query parameters, and validated collection names and record ids in the path.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let kind = if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "payload-too-large" } else { "bad-request" };
            ApiError::new(r.status(), kind, r.body_text())
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Query-string parameters, in order.
#[derive(Debug)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request(r.body_text()))?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// The value of `name`, if given (the last one wins).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name` parsed as an unsigned integer, if given; 400 if it is not one.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| ApiError::bad_request(format!("{name} must be an unsigned integer, not {v:?}")))
            })
            .transpose()
    }
}

/// Checks a collection name: ASCII letters, digits, `_` and `-`, 1 to 64 bytes.
pub fn collection_name(name: &str) -> Result<(), ApiError> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("collection name {name:?} must be 1-64 ASCII letters, digits, '_' or '-'")))
    }
}

/// Checks a record id: 1 to 512 bytes of UTF-8 without control characters.
pub fn record_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 512 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("id {id:?} must be 1-512 bytes without control characters")));
    }
    Ok(())
}

/// `/v1/collections/{collection}`: a validated collection name.
#[derive(Debug)]
pub struct CollectionPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CollectionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|r| ApiError::bad_request(r.body_text()))?;
        collection_name(&name)?;
        Ok(Self(name))
    }
}

/// `/v1/collections/{collection}/records/{id}`: a validated collection name and record id.
#[derive(Debug)]
pub struct RecordPath {
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((collection, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request(r.body_text()))?;
        collection_name(&collection)?;
        record_id(&id)?;
        Ok(Self { collection, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_checked() {
        assert!(collection_name("jobs_2-x").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65), "a/b"] {
            assert_eq!(collection_name(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert!(record_id("job 42/ü").is_ok());
        for bad in ["", "a\nb", &"x".repeat(513)] {
            assert!(record_id(bad).is_err(), "{bad:?}");
        }
    }
}
