//! What the collection tests share: a record type with single and composite indexes, and a store in a
//! temporary directory.

#![allow(dead_code, reason = "each test file uses its own part")]

use cairn_store::{IndexSpec, Record, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub owner: String,
    pub status: String,
    pub priority: i64,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub lease_until: i64,
}

impl Record for Task {
    const COLLECTION: &'static str = "tasks";
    fn id(&self) -> String {
        self.id.clone()
    }
    fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new("status", &["status"]),
            IndexSpec::new("owner", &["owner"]),
            IndexSpec::new("status_priority", &["status", "priority"]),
        ]
    }
}

pub fn task(i: usize, status: &str) -> Task {
    Task {
        id: format!("t{i:06}"),
        owner: format!("user{}", i % 7),
        status: status.into(),
        priority: (i % 50) as i64,
        node: None,
        lease_until: 0,
    }
}

/// Inserts tasks `0..n` in one transaction: every `pending_every`th PENDING, the others DONE.
pub fn insert_tasks(store: &Store, n: usize, pending_every: usize) {
    store
        .transaction(|tx| {
            for i in 0..n {
                tx.insert(&task(i, if i % pending_every == 0 { "PENDING" } else { "DONE" }))?;
            }
            Ok(())
        })
        .unwrap();
}

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}
