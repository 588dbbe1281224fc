//! `POST /v1/transactions`: several writes and checks across collections, all or nothing, each with an
//! optional expected version.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::extract::{collection_name, record_id, writable_collection, JsonBody};
use super::records::record_json;
use super::state::AppState;
use crate::backend::{OpKind, OpResult, Operation};
use crate::problem::ApiError;

/// The body of `POST /v1/transactions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    /// The operations, applied in order.
    pub operations: Vec<Operation>,
}

/// Checks an operation's shape and the principal's right to write its document.
fn validate(op: &Operation, who: &Principal) -> Result<(), ApiError> {
    collection_name(&op.collection)?;
    record_id(&op.id)?;
    op.precondition()?;
    match (op.op, &op.document) {
        (OpKind::Put, Some(doc)) if doc.is_object() => who.may_write(doc),
        (OpKind::Put, _) => Err(op.invalid("put needs a document that is a JSON object")),
        (_, Some(_)) => Err(op.invalid("only put takes a document")),
        (_, None) => Ok(()),
    }
}

/// `POST /v1/transactions`.
pub async fn run(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<TransactionRequest>,
) -> Result<Json<Value>, ApiError> {
    who.require(Role::Write)?;
    let ops = req.operations;
    if ops.is_empty() {
        return Err(ApiError::bad_request("a transaction needs at least one operation"));
    }
    if ops.len() > state.limits.max_transaction_ops {
        return Err(ApiError::bad_request(format!(
            "a transaction may have at most {} operations",
            state.limits.max_transaction_ops
        )));
    }
    for op in &ops {
        validate(op, &who)?;
        writable_collection(&op.collection)?;
    }
    let names: Vec<(String, String)> = ops.iter().map(|op| (op.collection.clone(), op.id.clone())).collect();
    let committed = state.backend.transaction(who.scope(), ops).await?;
    let results: Vec<Value> = names
        .iter()
        .zip(committed.results)
        .map(|((collection, id), result)| match result {
            OpResult::Deleted => json!({"collection": collection, "id": id, "deleted": true}),
            OpResult::Record(s) => s.map_or(Value::Null, |s| record_json(collection, &s)),
        })
        .collect();
    let out = json!({ "seq": committed.seq, "results": results });
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(v: Value) -> Operation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operations_are_validated() {
        let anyone = Principal::for_tests(None);
        let ok =
            op(json!({"op": "put", "collection": "jobs", "id": "j1", "document": {"a": 1}, "if_none_match": true}));
        assert!(validate(&ok, &anyone).is_ok());
        for bad in [
            json!({"op": "put", "collection": "jobs", "id": "j1"}),
            json!({"op": "put", "collection": "jobs", "id": "j1", "document": [1]}),
            json!({"op": "check", "collection": "jobs", "id": "j1"}),
            json!({"op": "delete", "collection": "jobs", "id": "j1", "document": {}}),
            json!({"op": "put", "collection": "bad name", "id": "j1", "document": {}}),
            json!({"op": "check", "collection": "jobs", "id": "j1", "if_match": 1, "if_none_match": true}),
        ] {
            assert_eq!(validate(&op(bad.clone()), &anyone).unwrap_err().status.as_u16(), 400, "{bad}");
        }
        let scoped = Principal::for_tests(Some("p1"));
        let other = op(json!({"op": "put", "collection": "jobs", "id": "j1", "document": {"project": "p2"}}));
        assert_eq!(validate(&other, &scoped).unwrap_err().status.as_u16(), 403);
        assert!(serde_json::from_value::<Operation>(json!({"op": "merge", "collection": "c", "id": "i"})).is_err());
    }
}
