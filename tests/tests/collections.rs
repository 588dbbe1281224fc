//! Typed collections: CRUD and versions, optimistic concurrency under threads, claims, transactions
//! across collections, the change feed, schema evolution (queries are in `queries.rs`),
//! and index/record agreement under random operations and crashes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use cairn_engine::{Db, Durability, FaultKind, FaultOp, LeveledPolicy, MemStorage};
use cairn_platform::{Job, JobStatus};
use cairn_store::{
    ChangeOp, ChangesError, ClaimError, Collection, CollectionSpec, IndexSpec, OneWrite, Op, Query, ReadError, Record,
    RecordWrite, Store, StoreOptions, Stored, WriteError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod common;

use common::{insert_tasks, store, task, Task};

/// Typed reads go through the store's cache of decoded records; whatever wrote the record since (this
/// store, another store over the same database, a delete), a read answers with what is stored now.
#[test]
fn typed_reads_through_the_record_cache_are_never_stale() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    insert_tasks(&store, 40, 2);
    let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(5);
    let first = tasks.query(&q).unwrap();
    assert_eq!(first.records.len(), 5);
    for _ in 0..3 {
        assert_eq!(tasks.query(&q).unwrap(), first);
        let mut visited = Vec::new();
        tasks.query_each(&q, |r| visited.push(r)).unwrap();
        assert_eq!(visited, first.records);
    }
    // The first two reads mark a record, the third keeps it decoded, later ones are answered from the cache.
    let warm = store.record_cache_stats();
    assert!(warm.hits >= 20 && warm.bytes > 0, "{warm:?}");

    // Written through another store over the same database, whose cache this one does not share.
    let other = Store::with_db(store.db().clone(), StoreOptions::default()).unwrap();
    let mut changed = first.records[0].clone();
    changed.doc.node = Some("gpu-1".into());
    other.collection::<Task>().unwrap().update(&changed.doc, changed.version).unwrap();
    let read = tasks.get(&changed.id).unwrap().unwrap();
    assert_eq!((read.doc.node.as_deref(), read.version), (Some("gpu-1"), changed.version + 1));
    assert_eq!(tasks.query(&q).unwrap().records[0].doc, changed.doc);

    // Rewritten with the same document: a new commit, so a new version, not the cached one.
    let rewritten = tasks.update(&changed.doc, read.version).unwrap();
    assert_eq!(tasks.get(&changed.id).unwrap().unwrap().version, rewritten.version);
    tasks.delete(&changed.id, None).unwrap();
    assert_eq!(tasks.get(&changed.id).unwrap(), None);
    assert!(tasks.query(&q).unwrap().records.iter().all(|r| r.id != changed.id));

    // Without the cache: the same answers, and nothing cached.
    let uncached = Store::with_db(store.db().clone(), StoreOptions::default().record_cache_size(0)).unwrap();
    let plain = uncached.collection::<Task>().unwrap();
    for _ in 0..3 {
        assert_eq!(plain.query(&q).unwrap(), tasks.query(&q).unwrap());
    }
    assert_eq!(uncached.record_cache_stats(), cairn_store::RecordCacheStats::default());
}

/// A query with no condition scans the records in id order and decodes each straight into its type, through
/// the record cache as an index scan's records are, rather than as a JSON tree first.
#[test]
fn unconditioned_scans_decode_through_the_record_cache() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    insert_tasks(&store, 30, 2);
    let q = Query::new().limit(10);
    let first = tasks.query(&q).unwrap();
    assert_eq!(first.records.len(), 10);
    let before = store.record_cache_stats();
    for _ in 0..3 {
        let mut visited = Vec::new();
        tasks.query_each(&q, |r| visited.push(r)).unwrap();
        assert_eq!(visited, first.records);
    }
    // Reads one to three mark the ten records and keep them; the fourth is answered from the cache.
    let after = store.record_cache_stats();
    assert_eq!(after.hits - before.hits, 10, "{before:?} {after:?}");
    assert_eq!(after.misses - before.misses, 20, "{before:?} {after:?}");
    let ids: Vec<_> = first.records.iter().map(|r| r.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
}

/// A query whose records need checking (a condition the index does not answer) reads the values it checks
/// from each record's text and decodes only the records that match, straight into their type and through
/// the record cache; a record that is not the type and does not match is passed over.
#[test]
fn checked_queries_decode_only_matches_through_the_record_cache() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    insert_tasks(&store, 40, 2);
    // Not a `Task` (its priority is a string, and it has no id field), and not a match.
    tasks.as_dyn().insert("x-1", json!({"owner": "user5", "status": "PENDING", "priority": "high"})).unwrap();
    let q = Query::new().eq("status", "PENDING").eq("owner", "user3").filter("priority", Op::Ge, 5);
    assert_eq!(tasks.explain(&q).unwrap().filtered, ["owner", "priority"]);
    let ids = |records: &[Stored<Task>]| records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let first = tasks.query(&q).unwrap();
    assert_eq!(ids(&first.records), ["t000010", "t000024", "t000038"]);
    let before = store.record_cache_stats();
    for _ in 0..3 {
        assert_eq!(tasks.query(&q).unwrap(), first);
    }
    // Reads one to three of the three matches keep them; the fourth is answered from the cache.
    let after = store.record_cache_stats();
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (3, 6), "{before:?} {after:?}");
    // The same answers without the cache, and from the collection read as JSON trees.
    let uncached = Store::with_db(store.db().clone(), StoreOptions::default().record_cache_size(0)).unwrap();
    assert_eq!(uncached.collection::<Task>().unwrap().query(&q).unwrap(), first);
    let trees = tasks.as_dyn().query(&q).unwrap();
    let tree_ids: Vec<_> = trees.records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(tree_ids, ids(&first.records));
    assert_eq!(trees.records[0].doc, serde_json::to_value(&first.records[0].doc).unwrap());
    // Counts check the same way, and a count of every record counts the one that is not a `Task` too.
    assert_eq!(tasks.count(&q).unwrap(), 3);
    assert_eq!(tasks.count(&Query::new()).unwrap(), 41);
    assert_eq!(tasks.count(&Query::new().filter("priority", Op::Ge, 35)).unwrap(), 5);
    // A match that is not a `Task` fails the typed query, naming the record.
    tasks.as_dyn().insert("x-2", json!({"owner": "user3", "status": "PENDING", "priority": 9})).unwrap();
    let err = tasks.query(&q).unwrap_err().to_string();
    assert!(err.contains("x-2"), "{err}");
}

#[test]
fn crud_versions_and_errors() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    let a = tasks.insert(&task(1, "PENDING")).unwrap();
    assert_eq!((a.version, a.id.as_str()), (1, "t000001"));
    assert!(a.seq > 0 && a.created_at_ms > 0 && a.created_at_ms == a.updated_at_ms);
    assert!(matches!(tasks.insert(&task(1, "PENDING")), Err(WriteError::AlreadyExists { .. })));
    let mut t = task(1, "RUNNING");
    let b = tasks.update(&t, 1).unwrap();
    assert_eq!(b.version, 2);
    assert!(b.seq > a.seq);
    assert_eq!(b.created_at_ms, a.created_at_ms);
    t.priority = 99;
    match tasks.update(&t, 1) {
        Err(WriteError::Conflict { expected: 1, actual: Some(2), .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(tasks.delete("t000001", Some(1)), Err(WriteError::Conflict { .. })));
    assert_eq!(tasks.upsert(&t).unwrap().version, 3);
    tasks.delete("t000001", Some(3)).unwrap();
    assert!(tasks.get("t000001").unwrap().is_none());
    assert!(matches!(tasks.delete("t000001", None), Err(WriteError::NotFound { .. })));
    assert!(matches!(tasks.update(&t, 3), Err(WriteError::NotFound { .. })));
    assert_eq!(tasks.upsert(&t).unwrap().version, 1, "a deleted record starts over");
    // Bad input is rejected and changes nothing.
    assert!(matches!(store.collection_dyn("tasks").unwrap().insert("x", json!([1, 2])), Err(WriteError::Invalid(_))));
    assert!(matches!(store.collection_dyn("tasks").unwrap().insert("", json!({})), Err(WriteError::Invalid(_))));
    assert!(matches!(store.collection_dyn("nope"), Err(ReadError::UnknownCollection(_))));
    assert!(store.declare(CollectionSpec::new("bad name", vec![])).is_err());
    store.check_indexes().unwrap();
}

#[test]
fn threads_incrementing_one_counter_end_at_the_number_of_commits() {
    let (_dir, store) = store();
    let counters = store.collection_dyn("tasks").or_else(|_| {
        store.declare(CollectionSpec::new("counters", vec![])).unwrap();
        store.collection_dyn("counters")
    });
    let counters = counters.unwrap();
    counters.insert("c", json!({"n": 0})).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let counters = counters.clone();
            thread::spawn(move || {
                let mut done = 0;
                let mut conflicts = 0;
                while done < 40 {
                    let cur = counters.get("c").unwrap().unwrap();
                    let n = cur.doc["n"].as_u64().unwrap();
                    match counters.update("c", cur.version, json!({"n": n + 1})) {
                        Ok(_) => done += 1,
                        Err(WriteError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let c = counters.get("c").unwrap().unwrap();
    assert_eq!(c.doc["n"], 240, "{conflicts} conflicts were retried");
    assert_eq!(c.version, 241);
}

#[test]
fn concurrent_claimers_never_take_the_same_record_and_expired_leases_return() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    store
        .transaction(|tx| {
            for i in 0..200 {
                tx.insert(&task(i, "PENDING"))?;
            }
            Ok(())
        })
        .unwrap();
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let tasks = tasks.clone();
            let claimed = claimed.clone();
            thread::spawn(move || {
                let pending = Query::new().eq("status", "PENDING").order_by("priority").descending();
                while let Some(t) = tasks
                    .claim(std::slice::from_ref(&pending), |t| {
                        t.status = "RUNNING".into();
                        t.node = Some(format!("node{w}"));
                        t.lease_until = 1_000;
                        true
                    })
                    .unwrap()
                {
                    claimed.lock().unwrap().push((t.id.clone(), t.doc.priority));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let claimed = claimed.lock().unwrap();
    let ids: HashSet<_> = claimed.iter().map(|c| c.0.clone()).collect();
    assert_eq!(claimed.len(), 200, "every task claimed once");
    assert_eq!(ids.len(), 200, "no task claimed twice");
    assert_eq!(tasks.count(&Query::new().eq("status", "RUNNING")).unwrap(), 200);
    // Leases that expired (lease_until < now = 2,000) can be claimed again.
    let expired = Query::new().eq("status", "RUNNING").filter("lease_until", Op::Lt, 2_000);
    let again = tasks.claim(&[expired], |t| {
        t.lease_until = 5_000;
        true
    });
    let again = again.unwrap().unwrap();
    assert_eq!((again.version, again.doc.lease_until), (3, 5_000));
    store.check_indexes().unwrap();
}

#[test]
fn transactions_span_collections_and_conflict_as_a_whole() {
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Run {
        id: String,
        task: String,
    }
    impl Record for Run {
        const COLLECTION: &'static str = "runs";
        fn id(&self) -> String {
            self.id.clone()
        }
        fn indexes() -> Vec<IndexSpec> {
            vec![IndexSpec::new("task", &["task"])]
        }
    }
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    let runs = store.collection::<Run>().unwrap();
    tasks.insert(&task(1, "PENDING")).unwrap();
    store
        .transaction(|tx| {
            let t = tx.get::<Task>("t000001")?.unwrap();
            tx.update(&Task { status: "RUNNING".into(), ..t.doc }, t.version)?;
            tx.insert(&Run { id: "r1".into(), task: "t000001".into() })?;
            Ok(())
        })
        .unwrap();
    assert_eq!(tasks.get("t000001").unwrap().unwrap().doc.status, "RUNNING");
    assert_eq!(runs.count(&Query::new().eq("task", "t000001")).unwrap(), 1);

    // An error inside the closure rolls everything back.
    let err = store.transaction(|tx| {
        tx.insert(&Run { id: "r2".into(), task: "t000001".into() })?;
        tx.insert(&task(1, "PENDING"))?;
        Ok(())
    });
    assert!(matches!(err, Err(WriteError::AlreadyExists { .. })));
    assert!(runs.get("r2").unwrap().is_none());

    // A record read by the transaction changes before it commits: nothing is written.
    let mut tx = store.begin();
    let t = tx.get::<Task>("t000001").unwrap().unwrap();
    tx.insert(&Run { id: "r3".into(), task: t.id.clone() }).unwrap();
    tasks.update(&Task { priority: 7, ..t.doc.clone() }, t.version).unwrap();
    match tx.commit() {
        Err(WriteError::TxnConflict { collection, id }) => {
            assert_eq!((collection.as_str(), id.as_str()), ("tasks", "t000001"))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(runs.get("r3").unwrap().is_none());
    // The retry helper gets through.
    let attempts = std::cell::Cell::new(0);
    store
        .transaction_with_retry(5, |tx| {
            attempts.set(attempts.get() + 1);
            let t = tx.get::<Task>("t000001")?.unwrap();
            if attempts.get() == 1 {
                tasks.update(&Task { priority: 8, ..t.doc.clone() }, t.version).unwrap();
            }
            tx.update(&Task { priority: 100, ..t.doc }, t.version)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(attempts.get(), 2);
    assert_eq!(tasks.get("t000001").unwrap().unwrap().doc.priority, 100);
    store.check_indexes().unwrap();
}

#[test]
fn restaging_a_record_in_one_transaction_keeps_versions_and_events_right() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    tasks.insert(&task(1, "PENDING")).unwrap();
    let start = store.db().last_sequence();
    // Delete then insert: the record is updated, its version continues.
    store
        .transaction(|tx| {
            tx.delete::<Task>("t000001", Some(1))?;
            tx.insert(&task(1, "RUNNING"))
        })
        .unwrap();
    let t = tasks.get("t000001").unwrap().unwrap();
    assert_eq!((t.version, t.doc.status.as_str()), (2, "RUNNING"));
    // Insert then delete of a new record: nothing happens, no event.
    store
        .transaction(|tx| {
            tx.insert(&task(2, "PENDING"))?;
            tx.delete::<Task>("t000002", None)
        })
        .unwrap();
    assert!(tasks.get("t000002").unwrap().is_none());
    let ops: Vec<_> = store.changes_since(start, 10).unwrap().into_iter().map(|c| (c.id, c.op, c.version)).collect();
    assert_eq!(ops, vec![("t000001".to_owned(), ChangeOp::Update, 2)]);
    store.check_indexes().unwrap();
}

/// Regression (found by the collection_model fuzz target): a delete then insert (or upsert) of one record in
/// a transaction stored the version after the deleted one but returned 1.
#[test]
fn writes_in_a_transaction_return_the_version_they_store() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    tasks.insert(&task(1, "PENDING")).unwrap();
    tasks.upsert(&task(1, "PENDING")).unwrap();
    let (inserted, upserted) = store
        .transaction(|tx| {
            tx.delete::<Task>("t000001", Some(2))?;
            let inserted = tx.insert(&task(1, "RUNNING"))?;
            tx.delete::<Task>("t000001", Some(inserted))?;
            Ok((inserted, tx.upsert(&task(1, "DONE"))?))
        })
        .unwrap();
    let stored = tasks.get("t000001").unwrap().unwrap();
    assert_eq!((inserted, upserted, stored.version), (3, 3, 3));
    // The returned version is the one an optimistic update must name.
    tasks.update(&task(1, "PENDING"), upserted).unwrap();
}

#[test]
fn a_page_of_changes_never_splits_a_commit() {
    let (_dir, store) = store();
    let start = store.db().last_sequence();
    store
        .transaction(|tx| {
            for i in 0..5 {
                tx.insert(&task(i, "PENDING"))?;
            }
            Ok(())
        })
        .unwrap();
    store.collection::<Task>().unwrap().insert(&task(9, "PENDING")).unwrap();
    let first = store.changes_since(start, 2).unwrap();
    assert_eq!(first.len(), 5, "the whole first commit");
    let rest = store.changes_since(first[4].seq, 2).unwrap();
    assert_eq!(rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["t000009"]);
}

#[test]
fn change_feed_in_commit_order_with_consumers_and_trimming() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    let start = store.db().last_sequence();
    tasks.insert(&task(1, "PENDING")).unwrap();
    let v = store
        .transaction(|tx| {
            tx.insert(&task(2, "PENDING"))?;
            tx.update(&task(1, "RUNNING"), 1)
        })
        .unwrap();
    assert_eq!(v, 2);
    tasks.delete("t000002", None).unwrap();
    let changes = store.changes_since(start, 100).unwrap();
    let summary: Vec<_> = changes.iter().map(|c| (c.id.as_str(), c.op, c.version)).collect();
    assert_eq!(
        summary,
        vec![
            ("t000001", ChangeOp::Insert, 1),
            ("t000002", ChangeOp::Insert, 1),
            ("t000001", ChangeOp::Update, 2),
            ("t000002", ChangeOp::Delete, 2)
        ]
    );
    assert_eq!(changes[1].seq, changes[2].seq, "one transaction, one commit sequence");
    assert!(changes[0].seq < changes[1].seq && changes[2].seq < changes[3].seq);
    assert!(changes[3].doc.is_none() && changes[0].doc.as_ref().unwrap()["status"] == "PENDING");
    // Resume from any point.
    assert_eq!(store.changes_since(changes[1].seq, 100).unwrap().len(), 1);
    // Consumers hold changes until they acknowledge them.
    store.register_consumer("pg", start).unwrap();
    store.register_consumer("s3", start).unwrap();
    store.ack("pg", changes[3].seq).unwrap();
    assert_eq!(store.changes_since(start, 100).unwrap().len(), 4, "s3 has not acknowledged");
    store.ack("s3", changes[0].seq).unwrap();
    assert!(matches!(store.changes_since(start, 100), Err(ChangesError::ChangesTrimmed { .. })));
    assert_eq!(store.changes_since(changes[0].seq, 100).unwrap().len(), 3);
    assert_eq!(store.consumers().unwrap(), vec![("pg".to_owned(), changes[3].seq), ("s3".to_owned(), changes[0].seq)]);
    // With no consumer, retention decides.
    store.remove_consumer("pg").unwrap();
    store.remove_consumer("s3").unwrap();
    let short = Store::with_db(store.db().clone(), StoreOptions::default().change_retention(std::time::Duration::ZERO))
        .unwrap();
    thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(short.trim_changes().unwrap(), 3);
    assert!(short.changes_since(changes[3].seq, 10).unwrap().is_empty());
}

#[test]
fn adding_an_optional_field_keeps_old_records_readable() {
    #[derive(Clone, Serialize, Deserialize)]
    struct JobV1 {
        id: String,
        name: String,
    }
    impl Record for JobV1 {
        const COLLECTION: &'static str = "jobs";
        fn id(&self) -> String {
            self.id.clone()
        }
    }
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct JobV2 {
        id: String,
        name: String,
        #[serde(default)]
        gpus: Option<u32>,
    }
    impl Record for JobV2 {
        const COLLECTION: &'static str = "jobs";
        fn id(&self) -> String {
            self.id.clone()
        }
        fn indexes() -> Vec<IndexSpec> {
            vec![IndexSpec::new("gpus", &["gpus"])]
        }
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.collection::<JobV1>().unwrap().insert(&JobV1 { id: "old".into(), name: "resnet".into() }).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    // The newer type adds a field and an index: the index is built from the existing records.
    let v2 = store.collection::<JobV2>().unwrap();
    let old = v2.get("old").unwrap().unwrap();
    assert_eq!((old.doc.name.as_str(), old.doc.gpus), ("resnet", None));
    v2.insert(&JobV2 { id: "new".into(), name: "bert".into(), gpus: Some(8) }).unwrap();
    assert_eq!(v2.count(&Query::new().eq("gpus", 8)).unwrap(), 1);
    assert_eq!(v2.count(&Query::new().eq("gpus", serde_json::Value::Null)).unwrap(), 1, "old record indexed with null");
    store.check_indexes().unwrap();
    // And the older type still reads records written by the newer one, without dropping its index.
    let v1 = store.collection::<JobV1>().unwrap();
    assert_eq!(v1.get("new").unwrap().unwrap().doc.name, "bert");
    assert_eq!(v2.count(&Query::new().eq("gpus", 8)).unwrap(), 1, "the newer type's index survives");
    store.check_indexes().unwrap();
}

#[test]
fn floats_read_back_bit_for_bit_and_index_entries_follow_them() {
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: String,
        score: f64,
    }
    impl Record for Sample {
        const COLLECTION: &'static str = "samples";
        fn id(&self) -> String {
            self.id.clone()
        }
        fn indexes() -> Vec<IndexSpec> {
            vec![IndexSpec::new("score", &["score"])]
        }
    }
    // Each prints as a shortest decimal that a parse without correct rounding reads one unit off.
    let scores = [-6.676040344723838e276, -2.8670328658502655e262, 1.856588120474891e-133, 3.86338527899431e173];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let samples = store.collection::<Sample>().unwrap();
    for (i, score) in scores.into_iter().enumerate() {
        samples.insert(&Sample { id: format!("s{i}"), score }).unwrap();
    }
    for (i, score) in scores.into_iter().enumerate() {
        let got = samples.get(&format!("s{i}")).unwrap().unwrap();
        assert_eq!(got.doc.score.to_bits(), score.to_bits(), "s{i}");
        assert_eq!(samples.count(&Query::new().eq("score", score)).unwrap(), 1, "s{i} found by its score");
        // The update removes the index entry the insert wrote: the stored score parses to the same float.
        samples.update(&Sample { id: got.id, score: -score }, got.version).unwrap();
    }
    store.check_indexes().unwrap();
    assert_eq!(samples.count(&Query::new().eq("score", scores[0])).unwrap(), 0);
}

#[test]
fn a_record_that_is_not_a_json_object_is_refused_and_nothing_is_written() {
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(transparent)]
    struct Tag(String);
    impl Record for Tag {
        const COLLECTION: &'static str = "tags";
        fn id(&self) -> String {
            self.0.clone()
        }
        fn indexes() -> Vec<IndexSpec> {
            vec![IndexSpec::new("name", &["name"])]
        }
    }
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Grid {
        id: String,
        cells: BTreeMap<(u8, u8), u8>,
    }
    impl Record for Grid {
        const COLLECTION: &'static str = "grids";
        fn id(&self) -> String {
            self.id.clone()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tags = store.collection::<Tag>().unwrap();
    let err = tags.insert(&Tag("gpu".into())).unwrap_err();
    assert!(matches!(&err, WriteError::Invalid(m) if m.contains("JSON objects")), "{err}");
    assert!(matches!(tags.upsert(&Tag("gpu".into())), Err(WriteError::Invalid(_))));
    let grids = store.collection::<Grid>().unwrap();
    let grid = Grid { id: "g".into(), cells: BTreeMap::from([((0, 1), 2)]) };
    let tasks = store.collection::<Task>().unwrap();
    let err =
        store.transaction(|tx| tx.insert(&task(1, "PENDING")).and_then(|_| tx.insert(&grid)).map(drop)).unwrap_err();
    assert!(matches!(&err, WriteError::Invalid(m) if m.contains("key must be a string")), "{err}");
    let counts = [&tags.count(&Query::new()), &grids.count(&Query::new()), &tasks.count(&Query::new())];
    assert!(counts.iter().all(|c| *c.as_ref().unwrap() == 0), "{counts:?}");
    assert_eq!(store.changes_since(0, 10).unwrap().len(), 0, "no change event either");
}

#[test]
fn a_typed_claim_skips_documents_that_are_not_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tasks = store.collection::<Task>().unwrap();
    tasks.insert(&task(1, "PENDING")).unwrap();
    // Written untyped, first in the queue, and without the `owner` a `Task` needs.
    let odd = json!({"id": "odd", "status": "PENDING", "priority": 1_000});
    store.collection_dyn("tasks").unwrap().insert("odd", odd).unwrap();
    let pending = Query::new().eq("status", "PENDING").order_by("priority").descending();
    let claimed = tasks.claim(&[pending], |t| {
        t.status = "RUNNING".into();
        true
    });
    assert_eq!(claimed.unwrap().map(|s| s.id), Some("t000001".to_owned()));
    assert_eq!(store.collection_dyn("tasks").unwrap().get("odd").unwrap().unwrap().version, 1, "left alone");
}

/// Regression: a claim whose query filters on a field no index holds reads each candidate as a JSON tree
/// to check it, and turned a tree that is not a `T` into an error instead of passing over it.
#[test]
fn a_typed_claim_checking_records_skips_documents_that_are_not_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tasks = store.collection::<Task>().unwrap();
    let untyped = store.collection_dyn("tasks").unwrap();
    // `pool` is no field of a `Task` (ignored when one is read) and no index's.
    let mut doc = serde_json::to_value(task(1, "PENDING")).unwrap();
    doc["pool"] = json!("a");
    untyped.insert("t000001", doc).unwrap();
    let odd = json!({"id": "odd", "status": "PENDING", "priority": 1_000, "pool": "a"});
    untyped.insert("odd", odd).unwrap();
    let pending = Query::new().eq("status", "PENDING").eq("pool", "a").order_by("priority").descending();
    assert_eq!(tasks.explain(&pending).unwrap().filtered, vec!["pool".to_owned()], "records are checked");
    let claimed = tasks.claim(&[pending], |t| {
        t.status = "RUNNING".into();
        true
    });
    assert_eq!(claimed.unwrap().map(|s| s.id), Some("t000001".to_owned()));
    assert_eq!(untyped.get("odd").unwrap().unwrap().version, 1, "left alone");
}

#[test]
fn shared_reads_are_the_records_typed_reads_return_and_share_what_the_cache_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tasks = store.collection::<Task>().unwrap();
    for i in 0..5 {
        tasks.insert(&task(i, if i % 2 == 0 { "PENDING" } else { "DONE" })).unwrap();
    }
    let pending = Query::new().eq("status", "PENDING").order_by("priority").descending();
    let ids = |page: &[Stored<Arc<Task>>]| page.iter().map(|s| (s.id.clone(), s.version)).collect::<Vec<_>>();
    // The first two reads mark the records, the third keeps them, the fourth is answered from the cache.
    let pages: Vec<_> = (0..4).map(|_| tasks.query_shared(&pending).unwrap().records).collect();
    let typed = tasks.query(&pending).unwrap().records;
    assert_eq!(ids(&pages[0]), typed.iter().map(|s| (s.id.clone(), s.version)).collect::<Vec<_>>());
    for (shared, owned) in pages[3].iter().zip(&typed) {
        assert_eq!(*shared.doc, owned.doc);
    }
    assert!(pages[2].iter().zip(&pages[3]).all(|(a, b)| Arc::ptr_eq(&a.doc, &b.doc)), "kept and shared");
    for (i, (a, b)) in pages.iter().zip(&pages[1..3]).enumerate() {
        assert!(a.iter().zip(b).all(|(a, b)| !Arc::ptr_eq(&a.doc, &b.doc)), "reads {i} and {} parsed apart", i + 1);
    }
    // A typed read of a kept record is a hit too: the cache keeps one entry per record for both.
    let hits = store.record_cache_stats().hits;
    tasks.get("t000000").unwrap().unwrap();
    assert_eq!(store.record_cache_stats().hits, hits + 1);
    // A record changed since it was kept is read anew.
    let mut first = (*tasks.get_shared("t000000").unwrap().unwrap().doc).clone();
    first.owner = "someone-else".into();
    tasks.update(&first, 1).unwrap();
    let read = tasks.get_shared("t000000").unwrap().unwrap();
    assert_eq!((read.version, read.doc.owner.as_str()), (2, "someone-else"));
    assert_eq!(tasks.get_shared("absent").unwrap().map(|s| s.id), None);
}

/// A kept record that no commit since its last read may have changed is answered without reading it (no
/// block is looked up); a write to it, a flush or a compaction in between never lets a stale one through.
#[test]
fn kept_records_are_answered_without_a_read_while_unchanged_and_read_again_once_written() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    let untyped = store.collection_dyn("tasks").unwrap();
    for i in 0..3 {
        tasks.insert(&task(i, "PENDING")).unwrap();
    }
    store.db().flush().unwrap();
    let blocks_looked_up = || {
        let s = store.db().stats();
        s.cache_hits + s.cache_misses
    };
    let id = "t000001";
    let read = |expect_lookups: u64| {
        let before = blocks_looked_up();
        let got = tasks.get_shared(id).unwrap();
        assert_eq!(blocks_looked_up() - before, expect_lookups, "{got:?}");
        got.map(|s| (s.version, s.doc.owner.clone()))
    };
    // Read from its table: marked twice, then kept.
    for _ in 0..3 {
        assert_eq!(read(1), Some((1, "user1".into())));
    }
    // Kept and current: no block, even with other records written since (their writes are in the memtable).
    assert_eq!(read(0), Some((1, "user1".into())));
    tasks.insert(&task(7, "PENDING")).unwrap();
    assert_eq!(read(0), Some((1, "user1".into())));

    // Written by another handle: read again (from the memtable), and kept again on the third read.
    untyped
        .update(
            id,
            1,
            json!({"id": id, "owner": "bob", "status": "DONE", "priority": 1, "node": null, "lease_until": 0}),
        )
        .unwrap();
    assert_eq!(read(0), Some((2, "bob".into())));
    assert_eq!(read(0), Some((2, "bob".into())));
    assert_eq!(read(0), Some((2, "bob".into())));
    // A flush of nothing written since the last read leaves it current; a flush that wrote later sequences
    // to a table makes the next read look the record up, and later ones need not.
    store.db().flush().unwrap();
    assert_eq!(read(0), Some((2, "bob".into())));
    tasks.insert(&task(8, "PENDING")).unwrap();
    store.db().flush().unwrap();
    assert_eq!(read(1), Some((2, "bob".into())));
    assert_eq!(read(0), Some((2, "bob".into())));

    // Deleted, flushed and compacted away: never answered from the cache.
    untyped.delete(id, None).unwrap();
    store.db().flush().unwrap();
    store.db().compact().unwrap();
    assert_eq!(tasks.get_shared(id).unwrap().map(|s| s.version), None);
    assert_eq!(tasks.get(id).unwrap().map(|s| s.version), None);
    let all = tasks.query(&Query::new()).unwrap().records;
    assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["t000000", "t000002", "t000007", "t000008"]);
}

/// `Store::write_together`: each write is decided and checked alone, those that stage commit in one
/// batch, and a write that fails (its `decide` refuses, or a delete of a record that is not there) leaves no
/// trace in the commit; two writes to one record are made in order, the second seeing the first.
#[test]
fn writes_made_together_share_one_commit_and_each_fails_alone() {
    let (_dir, store) = store();
    store.declare(CollectionSpec::new("jobs", vec![IndexSpec::new("status", &["status"])])).unwrap();
    let jobs = store.collection_dyn("jobs").unwrap();
    jobs.insert("a", json!({"status": "PENDING", "n": 0})).unwrap();
    jobs.insert("b", json!({"status": "PENDING", "n": 0})).unwrap();
    let start = store.db().last_sequence();
    let bump = |current: Option<&Stored<Box<serde_json::value::RawValue>>>| {
        let doc: serde_json::Value = serde_json::from_str(current.unwrap().doc.get()).unwrap();
        Ok(RecordWrite::Put(json!({"status": "RUNNING", "n": doc["n"].as_i64().unwrap() + 1})))
    };
    let mut writes: Vec<OneWrite<'_, WriteError>> = vec![
        OneWrite { collection: "jobs", id: "a", decide: Box::new(bump) },
        OneWrite { collection: "jobs", id: "gone", decide: Box::new(|_| Ok(RecordWrite::Delete)) },
        OneWrite {
            collection: "jobs",
            id: "c",
            decide: Box::new(|_| Err(WriteError::Invalid("refused by its decide".into()))),
        },
        OneWrite {
            collection: "jobs",
            id: "d",
            decide: Box::new(|_| Ok(RecordWrite::Put(json!({"status": "PENDING"})))),
        },
        OneWrite { collection: "jobs", id: "a", decide: Box::new(bump) },
        OneWrite { collection: "jobs", id: "b", decide: Box::new(|_| Ok(RecordWrite::Keep)) },
        OneWrite { collection: "nowhere", id: "x", decide: Box::new(|_| Ok(RecordWrite::Delete)) },
        OneWrite { collection: "jobs", id: "e", decide: Box::new(|_| Ok(RecordWrite::Put(json!([1, 2])))) },
    ];
    let answers = store.write_together(&mut writes);
    let a1 = answers[0].as_ref().unwrap().as_ref().unwrap();
    assert_eq!((a1.version, &a1.doc["n"]), (2, &json!(1)));
    assert!(matches!(answers[1], Err(WriteError::NotFound { .. })), "{:?}", answers[1]);
    assert!(matches!(&answers[2], Err(WriteError::Invalid(m)) if m == "refused by its decide"));
    let d = answers[3].as_ref().unwrap().as_ref().unwrap();
    assert_eq!(d.version, 1);
    let a2 = answers[4].as_ref().unwrap().as_ref().unwrap();
    assert_eq!((a2.version, &a2.doc["n"]), (3, &json!(2)), "the second write of a record sees the first");
    assert_eq!(answers[5].as_ref().unwrap().as_ref().unwrap().version, 1, "Keep answers the record as it is");
    assert!(matches!(answers[6], Err(WriteError::UnknownCollection(_))), "{:?}", answers[6]);
    assert!(matches!(answers[7], Err(WriteError::Invalid(_))), "{:?}", answers[7]);
    assert_eq!(a1.seq, d.seq, "the first round is one commit");
    assert!(a2.seq > a1.seq);

    let changes = store.changes_since(start, 100).unwrap();
    let summary: Vec<_> = changes.iter().map(|c| (c.id.as_str(), c.op, c.version, c.seq)).collect();
    assert_eq!(
        summary,
        vec![
            ("a", ChangeOp::Update, 2, a1.seq),
            ("d", ChangeOp::Insert, 1, a1.seq),
            ("a", ChangeOp::Update, 3, a2.seq)
        ],
        "nothing of the writes that failed"
    );
    assert_eq!(jobs.get("gone").unwrap(), None);
    assert_eq!(jobs.count(&Query::new()).unwrap(), 3);
    let running = jobs.query(&Query::new().filter("status", Op::Eq, "RUNNING")).unwrap();
    assert_eq!(running.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
    store.check_indexes().unwrap();
}

/// A commit made between a together-write's read and its commit makes every write of the round decide
/// again from a fresh read; a record only a refused write read does not make the round conflict.
#[test]
fn writes_made_together_decide_again_after_a_concurrent_commit() {
    let (_dir, store) = store();
    store.declare(CollectionSpec::new("jobs", vec![])).unwrap();
    let jobs = store.collection_dyn("jobs").unwrap();
    for id in ["a", "b", "r"] {
        jobs.insert(id, json!({"n": 0})).unwrap();
    }
    let calls = std::cell::Cell::new(0);
    let n_of = |current: Option<&Stored<Box<serde_json::value::RawValue>>>| {
        serde_json::from_str::<serde_json::Value>(current.unwrap().doc.get()).unwrap()["n"].as_i64().unwrap()
    };
    let mut writes: Vec<OneWrite<'_, WriteError>> = vec![
        OneWrite {
            collection: "jobs",
            id: "a",
            decide: Box::new(|current| Ok(RecordWrite::Put(json!({"n": n_of(current) + 1})))),
        },
        OneWrite {
            collection: "jobs",
            id: "r",
            decide: Box::new(|_| {
                // Another writer changes the refused write's record: no conflict for the round.
                jobs.upsert("r", json!({"n": 100})).unwrap();
                Err(WriteError::Invalid("refused".into()))
            }),
        },
        OneWrite {
            collection: "jobs",
            id: "b",
            decide: Box::new(|current| {
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    // Another writer changes "a" after this round read it.
                    jobs.upsert("a", json!({"n": 10})).unwrap();
                }
                Ok(RecordWrite::Put(json!({"n": n_of(current) + 1})))
            }),
        },
    ];
    let answers = store.write_together(&mut writes);
    drop(writes);
    assert_eq!(calls.get(), 2, "decided again once");
    let a = answers[0].as_ref().unwrap().as_ref().unwrap();
    assert_eq!((a.version, &a.doc["n"]), (3, &json!(11)), "decided from the concurrent commit's record");
    assert!(matches!(answers[1], Err(WriteError::Invalid(_))));
    assert_eq!(answers[2].as_ref().unwrap().as_ref().unwrap().doc["n"], 1);
    assert_eq!(jobs.get("r").unwrap().unwrap().doc["n"], 100);
}

/// A together-commit that fails for a reason other than a conflict (here the WAL's append) is tried again
/// write by write: every write gets its own answer, and none is committed.
#[test]
fn writes_made_together_each_answer_when_their_commit_fails() {
    let storage = MemStorage::new();
    let db = Db::builder().storage(Arc::new(storage.clone())).open(Path::new("/db")).unwrap();
    let store = Store::with_db(db, StoreOptions::default()).unwrap();
    store.declare(CollectionSpec::new("jobs", vec![])).unwrap();
    let start = store.db().last_sequence();
    storage.fail(FaultOp::Write, 0, FaultKind::Eio);
    let mut writes: Vec<OneWrite<'_, WriteError>> = ["a", "b", "c"]
        .into_iter()
        .map(|id| OneWrite { collection: "jobs", id, decide: Box::new(|_| Ok(RecordWrite::Put(json!({"n": 1})))) })
        .collect();
    let answers = store.write_together(&mut writes);
    for answer in &answers {
        let e = answer.as_ref().unwrap_err();
        assert!(matches!(e, WriteError::Store(_)), "{e:?}");
    }
    assert_eq!(store.db().last_sequence(), start);
}

#[test]
fn collections_declared_at_runtime_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .declare(CollectionSpec::new("machines", vec![IndexSpec::new("rack_host", &["rack", "host.name"])]))
            .unwrap();
        let m = store.collection_dyn("machines").unwrap();
        m.insert("m1", json!({"rack": "r1", "host": {"name": "gpu-1"}})).unwrap();
        m.insert("m2", json!({"rack": "r1", "host": {"name": "gpu-0"}})).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.collections().len(), 1);
    let m = store.collection_dyn("machines").unwrap();
    let page = m.query(&Query::new().eq("rack", "r1").order_by("host.name")).unwrap();
    assert_eq!(page.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["m2", "m1"]);
}

/// Random writes over two collections with crashes (power cuts) in between; after each reopen every
/// index agrees with its records and the records match a model of what was acknowledged.
#[test]
fn indexes_agree_with_records_under_random_operations_and_crashes() {
    let mut storage = MemStorage::new();
    let open = |s: &MemStorage| {
        let db = Db::builder()
            .storage(Arc::new(s.clone()))
            .durability(Durability::Immediate)
            .memtable_size(16 * 1024)
            .table_size(16 * 1024)
            .compaction_policy(Arc::new(LeveledPolicy::new(2, 32 * 1024, 4)))
            .open(Path::new("/db"))
            .unwrap();
        Store::with_db(db, StoreOptions::default()).unwrap()
    };
    let mut store = open(&storage);
    let mut model: BTreeMap<String, Task> = BTreeMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for step in 0..3000 {
        let tasks = store.collection::<Task>().unwrap();
        let i = (next() % 120) as usize;
        let id = format!("t{i:06}");
        let statuses = ["PENDING", "RUNNING", "DONE"];
        match next() % 10 {
            0..=3 => {
                let mut t = task(i, statuses[(next() % 3) as usize]);
                t.priority = (next() % 20) as i64;
                tasks.upsert(&t).unwrap();
                model.insert(id, t);
            }
            4..=5 => {
                if let Some(cur) = tasks.get(&id).unwrap() {
                    let mut t = cur.doc.clone();
                    t.status = statuses[(next() % 3) as usize].into();
                    tasks.update(&t, cur.version).unwrap();
                    model.insert(id, t);
                }
            }
            6 => {
                if model.remove(&id).is_some() {
                    tasks.delete(&id, None).unwrap();
                }
            }
            7 => {
                let j = (next() % 120) as usize;
                let a = task(i, "RUNNING");
                let b = task(j, "PENDING");
                store
                    .transaction(|tx| {
                        tx.upsert(&a)?;
                        tx.upsert(&b)
                    })
                    .unwrap();
                model.insert(a.id.clone(), a);
                model.insert(b.id.clone(), b);
            }
            8 if step % 97 == 0 => store.db().compact().unwrap(),
            _ if step % 151 == 0 => {
                let image = storage.crash_image();
                drop(tasks);
                drop(store);
                storage = image;
                store = open(&storage);
                store.check_indexes().unwrap();
            }
            _ => {
                let status = statuses[(next() % 3) as usize];
                let want = model.values().filter(|t| t.status == status).count() as u64;
                assert_eq!(tasks.count(&Query::new().eq("status", status)).unwrap(), want, "step {step}");
            }
        }
    }
    store.check_indexes().unwrap();
    let tasks = store.collection::<Task>().unwrap();
    let all = tasks.query(&Query::new().limit(1000)).unwrap();
    let got: BTreeMap<String, Task> = all.records.into_iter().map(|r| (r.id.clone(), r.doc)).collect();
    assert_eq!(got, model);
}

/// Claims the most urgent claimable job of the `jobs` collection for `node`, as a scheduler over it does:
/// QUEUED then PENDING jobs by descending priority (`status_priority`), then RUNNING jobs whose lease lapsed
/// before `now_ms` (`status_lease`). The job taken becomes RUNNING on `node`, leased until
/// `now_ms + lease_ms`, with `started_at` set on its first claim and `attempts` counted.
fn claim_next(
    jobs: &Collection<Job>,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Stored<Job>>, ClaimError> {
    let queries = [
        Query::new().eq("status", JobStatus::Queued.as_str()).order_by("priority").descending(),
        Query::new().eq("status", JobStatus::Pending.as_str()).order_by("priority").descending(),
        Query::new()
            .eq("status", JobStatus::Running.as_str())
            .range("lease_expires_at", Bound::Unbounded, Bound::Excluded(now_ms.into()))
            .use_index("status_lease"),
    ];
    jobs.claim(&queries, |job| {
        let lapsed = job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|t| t < now_ms);
        if !(job.status.can_transition_to(JobStatus::Running) || lapsed) {
            return false;
        }
        job.status = JobStatus::Running;
        job.node = Some(node.to_owned());
        job.started_at.get_or_insert(now_ms);
        job.lease_expires_at = Some(now_ms + lease_ms);
        job.attempts += 1;
        true
    })
}

/// Claims take jobs by priority; once every job is leased nothing is claimable until a lease lapses, and
/// then the job is claimed again, keeping its first start time and counting the attempt.
#[test]
fn claims_jobs_by_priority_then_reclaims_lapsed_leases() {
    let (_dir, store) = store();
    let jobs = store.collection::<Job>().unwrap();
    for (i, priority) in [(1, 5), (2, 50), (3, 20)] {
        jobs.insert(&Job::new(format!("j{i}"), "train", "alice", "p1", priority, 1_000)).unwrap();
    }
    let order: Vec<String> = (0..3).map(|_| claim_next(&jobs, "n1", 2_000, 10_000).unwrap().unwrap().id).collect();
    assert_eq!(order, vec!["j2", "j3", "j1"]);
    assert!(claim_next(&jobs, "n2", 5_000, 10_000).unwrap().is_none(), "leases still held");
    let again = claim_next(&jobs, "n2", 13_000, 10_000).unwrap().unwrap();
    assert_eq!((again.doc.node.as_deref(), again.doc.attempts, again.doc.started_at), (Some("n2"), 2, Some(2_000)));
    assert_eq!(again.doc.lease_expires_at, Some(23_000));
    store.check_indexes().unwrap();
}

/// Scan hints (where the live head of an index range starts) never hide a record: a queue drained by
/// claims while higher- and lower-priority jobs arrive, jobs are sent back to PENDING and the memtable is
/// flushed, always answers exactly what the records say.
#[test]
fn a_drained_queue_answers_exactly_while_jobs_arrive_and_return() {
    let (_dir, store) = store();
    let jobs = store.collection::<Job>().unwrap();
    let mut model: BTreeMap<String, (bool, i64)> = BTreeMap::new(); // id -> (pending, priority)
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let pending_query = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(20);
    let expected = |model: &BTreeMap<String, (bool, i64)>| {
        let mut v: Vec<(i64, String)> = model.iter().filter(|(_, s)| s.0).map(|(id, s)| (-s.1, id.clone())).collect();
        v.sort();
        v.into_iter().take(20).map(|(_, id)| id).collect::<Vec<_>>()
    };
    for step in 0..1500u64 {
        match rand(10) {
            0..=3 => {
                let id = format!("j{step:05}");
                let priority = rand(100) as i64;
                jobs.insert(&Job::new(&id, "train", "alice", "p1", priority, 1_000)).unwrap();
                model.insert(id, (true, priority));
            }
            4..=7 => {
                if let Some(claimed) = claim_next(&jobs, "n1", 2_000, 1_000_000).unwrap() {
                    let want = expected(&model);
                    assert_eq!(Some(&claimed.id), want.first(), "step {step}: claimed the head of the queue");
                    model.get_mut(&claimed.id).unwrap().0 = false;
                }
            }
            8 => {
                // A running job goes back to PENDING (a retry), landing anywhere in the queue.
                let running: Vec<String> = model.iter().filter(|(_, s)| !s.0).map(|(id, _)| id.clone()).collect();
                if !running.is_empty() {
                    let id = &running[rand(running.len() as u64) as usize];
                    let mut job = jobs.get(id).unwrap().unwrap();
                    job.doc.status = JobStatus::Pending;
                    job.doc.priority = rand(100) as i64;
                    jobs.update(&job.doc, job.version).unwrap();
                    model.insert(id.clone(), (true, job.doc.priority));
                }
            }
            _ => {
                if rand(10) == 0 {
                    store.db().flush().unwrap();
                }
            }
        }
        let page: Vec<String> = jobs.query(&pending_query).unwrap().records.into_iter().map(|r| r.id).collect();
        assert_eq!(page, expected(&model), "step {step}");
    }
    store.check_indexes().unwrap();
}

/// Claimers racing with inserters: every job is claimed exactly once, and none is left behind.
#[test]
fn concurrent_claims_and_inserts_lose_no_job() {
    let (_dir, store) = store();
    let jobs = store.collection::<Job>().unwrap();
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let inserters: Vec<_> = (0..2)
        .map(|t| {
            let jobs = jobs.clone();
            thread::spawn(move || {
                for i in 0..300i64 {
                    jobs.insert(&Job::new(format!("t{t}-{i:04}"), "train", "bob", "p1", (i * 37 + t) % 50, 1)).unwrap();
                }
            })
        })
        .collect();
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let jobs = jobs.clone();
            let claimed = claimed.clone();
            thread::spawn(move || {
                let mut idle = 0;
                while idle < 200 {
                    match claim_next(&jobs, "n", 2, 1_000_000).unwrap() {
                        Some(j) => {
                            claimed.lock().unwrap().push(j.id);
                            idle = 0;
                        }
                        None => {
                            idle += 1;
                            thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    for t in inserters {
        t.join().unwrap();
    }
    for t in claimers {
        t.join().unwrap();
    }
    // Whatever the claimers gave up on is still visible as PENDING.
    while let Some(j) = claim_next(&jobs, "n", 2, 1_000_000).unwrap() {
        claimed.lock().unwrap().push(j.id);
    }
    let claimed = claimed.lock().unwrap();
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!((claimed.len(), unique.len()), (600, 600));
    assert_eq!(jobs.count(&Query::new().eq("status", "PENDING")).unwrap(), 0);
    store.check_indexes().unwrap();
}

/// The feed's newest change is the last record write's commit; consumer cursors (also writes) and the trim
/// that an acknowledgement makes leave it.
#[test]
fn last_change_sequence_follows_record_writes_only() {
    let (_dir, store) = store();
    assert_eq!(store.last_change_sequence().unwrap(), 0);
    let tasks = store.collection::<Task>().unwrap();
    let written = tasks.insert(&task(1, "PENDING")).unwrap();
    assert_eq!(store.last_change_sequence().unwrap(), written.seq);
    store.register_consumer("replica", written.seq).unwrap();
    store.ack("replica", written.seq).unwrap();
    assert!(store.db().last_sequence() > written.seq);
    assert_eq!(store.last_change_sequence().unwrap(), written.seq);
    tasks.delete(&written.id, None).unwrap();
    assert!(store.last_change_sequence().unwrap() > written.seq);
}
