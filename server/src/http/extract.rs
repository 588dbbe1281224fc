//! Request extractors whose rejections are problem documents: JSON bodies (413 when too large, 400 when
//! malformed), query parameters, and validated collection names and record ids in the path.

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::state::AppState;
use crate::problem::ApiError;

/// After a body passes `max_body_bytes`, up to this many more bytes are read and dropped, for at most
/// [`DRAIN_TIME`], before the 413 is sent: a client still writing its body then reads the answer instead
/// of seeing the connection closed under its write.
const DRAIN_BYTES: usize = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A JSON request body of type `T`, at most `max_body_bytes` long (413 past that, 400 if malformed).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.limits.max_body_bytes;
        let mut body = req.into_body().into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                let mut drained = 0;
                let drain = async {
                    while let Some(Ok(chunk)) = body.next().await {
                        drained += chunk.len();
                        if drained > DRAIN_BYTES {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
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

/// Refuses writes to the collections another part of the store keeps (403): the artifact store's
/// (`_artifact_*`, written through the S3 API only) and the job queue's (`_queue_*`, written by the queue
/// alone, whose counts and indexes a direct write would break). Reading them is allowed.
pub fn writable_collection(name: &str) -> Result<(), ApiError> {
    if cairn_store::artifacts::is_artifact_collection(name) {
        return Err(ApiError::forbidden(format!(
            "collection {name} holds the artifact store's metadata: it is written through the S3 API only"
        )));
    }
    if cairn_store::queue::is_queue_collection(name) {
        return Err(ApiError::forbidden(format!(
            "collection {name} holds the job queue's records: it is written by the queue only"
        )));
    }
    Ok(())
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
