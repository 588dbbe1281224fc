//! `POST /v1/transactions`: several writes and checks across collections, all or nothing, each with an
//! optional expected version.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Role};
use super::error::ApiError;
use super::extract::{collection_name, record_id, JsonBody};
use cairn_store::{Committed, Stored};

use super::records::{id_taken, record_json, Precondition};
use super::state::AppState;

/// Commit attempts when a concurrent commit touched one of the transaction's records. The preconditions
/// are checked again on every attempt.
const ATTEMPTS: usize = 16;

/// What one operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Create or replace the record with `document`.
    Put,
    /// Delete the record (it must exist).
    Delete,
    /// Write nothing; only check the precondition.
    Check,
}

/// One operation of a transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// What to do.
    pub op: OpKind,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// The document, for `put`.
    #[serde(default)]
    pub document: Option<Value>,
    /// The record must be at this version.
    #[serde(default)]
    pub if_match: Option<u64>,
    /// The record must not exist.
    #[serde(default)]
    pub if_none_match: bool,
}

/// The body of `POST /v1/transactions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    /// The operations, applied in order.
    pub operations: Vec<Operation>,
}

impl Operation {
    fn precondition(&self) -> Result<Precondition, ApiError> {
        match (self.if_match, self.if_none_match, self.op) {
            (Some(_), true, _) => Err(self.invalid("give if_match or if_none_match, not both")),
            (Some(v), false, _) => Ok(Precondition::Version(v)),
            (None, true, OpKind::Delete) => Err(self.invalid("if_none_match makes no sense on delete")),
            (None, true, _) => Ok(Precondition::Absent),
            (None, false, OpKind::Check) => Err(self.invalid("check needs if_match or if_none_match")),
            (None, false, OpKind::Delete) => Ok(Precondition::Exists),
            (None, false, OpKind::Put) => Ok(Precondition::None),
        }
    }

    fn invalid(&self, detail: &str) -> ApiError {
        ApiError::bad_request(format!("{}/{}: {detail}", self.collection, self.id))
            .with("collection", self.collection.as_str())
            .with("id", self.id.as_str())
    }

    /// Checks the operation's shape and the principal's right to write its document.
    fn validate(&self, who: &Principal) -> Result<(), ApiError> {
        collection_name(&self.collection)?;
        record_id(&self.id)?;
        self.precondition()?;
        match (self.op, &self.document) {
            (OpKind::Put, Some(doc)) if doc.is_object() => who.may_write(doc),
            (OpKind::Put, _) => Err(self.invalid("put needs a document that is a JSON object")),
            (_, Some(_)) => Err(self.invalid("only put takes a document")),
            (_, None) => Ok(()),
        }
    }
}

/// A record as read inside a transaction, with the sequence and time its commit gave it.
fn as_committed(mut s: Stored<Value>, c: &Committed) -> Stored<Value> {
    s.seq = c.seq;
    s.updated_at_ms = c.at_ms;
    if s.created_at_ms == 0 {
        s.created_at_ms = c.at_ms;
    }
    s
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
        op.validate(&who)?;
    }
    let out = state
        .write(move |store| {
            let (read, c) = store.commit_with_retry(ATTEMPTS, |tx| {
                for op in &ops {
                    // Another project's record is checked as if absent; only a put over it fails (403).
                    let current = tx.get_doc(&op.collection, &op.id)?;
                    let hidden = current.as_ref().is_some_and(|c| !who.sees(&c.doc));
                    let visible = if hidden { None } else { current.as_ref() };
                    op.precondition()?.check(&op.collection, &op.id, visible.map(|c| c.version))?;
                    if hidden && op.op == OpKind::Put {
                        return Err(id_taken(&who, &op.collection, &op.id));
                    }
                    match op.op {
                        OpKind::Put => {
                            tx.upsert_doc(&op.collection, &op.id, op.document.clone().unwrap_or_default())?;
                        }
                        OpKind::Delete => tx.delete_doc(&op.collection, &op.id, None)?,
                        OpKind::Check => {}
                    }
                }
                // Each record as the transaction left it (a later operation may have changed it again).
                ops.iter()
                    .map(|op| match op.op {
                        OpKind::Delete => Ok(None),
                        _ => Ok(tx.get_doc(&op.collection, &op.id)?.filter(|s| who.sees(&s.doc))),
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })?;
            let results: Vec<Value> = ops
                .iter()
                .zip(read)
                .map(|(op, stored)| match (op.op, stored) {
                    (OpKind::Delete, _) => json!({"collection": op.collection, "id": op.id, "deleted": true}),
                    (OpKind::Put, Some(s)) => record_json(&op.collection, &as_committed(s, &c)),
                    (_, s) => s.map_or(Value::Null, |s| record_json(&op.collection, &s)),
                })
                .collect();
            Ok(json!({ "seq": c.seq, "results": results }))
        })
        .await?;
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
        assert!(ok.validate(&anyone).is_ok());
        for bad in [
            json!({"op": "put", "collection": "jobs", "id": "j1"}),
            json!({"op": "put", "collection": "jobs", "id": "j1", "document": [1]}),
            json!({"op": "check", "collection": "jobs", "id": "j1"}),
            json!({"op": "delete", "collection": "jobs", "id": "j1", "document": {}}),
            json!({"op": "put", "collection": "bad name", "id": "j1", "document": {}}),
            json!({"op": "check", "collection": "jobs", "id": "j1", "if_match": 1, "if_none_match": true}),
        ] {
            assert_eq!(op(bad.clone()).validate(&anyone).unwrap_err().status.as_u16(), 400, "{bad}");
        }
        let scoped = Principal::for_tests(Some("p1"));
        let other = op(json!({"op": "put", "collection": "jobs", "id": "j1", "document": {"project": "p2"}}));
        assert_eq!(other.validate(&scoped).unwrap_err().status.as_u16(), 403);
        assert!(serde_json::from_value::<Operation>(json!({"op": "merge", "collection": "c", "id": "i"})).is_err());
    }
}
