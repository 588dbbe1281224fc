//! Queries over collections: descending index fields, ranges, order, counts and plans, page boundaries and
//! cursors, `query_each`, and pagination under concurrent writes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use cairn_store::{CollectionSpec, IndexSpec, Op, Query, ReadError, StoreError};
use serde_json::json;

mod common;

use common::{insert_tasks, store, task, Task};

#[test]
fn descending_index_fields_serve_both_orders_ranges_and_cursors() {
    let (_dir, store) = store();
    store.declare(CollectionSpec::new("q", vec![IndexSpec::new("state_prio", &["state", "-prio"])])).unwrap();
    let q = store.collection_dyn("q").unwrap();
    for i in 0..120 {
        q.insert(&format!("i{i:03}"), json!({"state": if i % 2 == 0 { "ready" } else { "done" }, "prio": i % 40}))
            .unwrap();
    }
    let model: Vec<(i64, String)> =
        (0..120).filter(|i| i % 2 == 0).map(|i| ((i % 40) as i64, format!("i{i:03}"))).collect();
    let prio_desc = Query::new().eq("state", "ready").order_by("prio").descending();
    let plan = q.explain(&prio_desc).unwrap();
    assert!(!plan.reverse_scan, "descending order over a descending field scans forward");
    assert!(q.explain(&Query::new().eq("state", "ready").order_by("prio")).unwrap().reverse_scan);
    for (query, descending) in [(prio_desc.clone(), true), (Query::new().eq("state", "ready").order_by("prio"), false)]
    {
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = q.query(&query.clone().limit(7).after(cursor)).unwrap();
            got.extend(page.records.iter().map(|r| r.doc["prio"].as_i64().unwrap()));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let mut want: Vec<i64> = model.iter().map(|m| m.0).collect();
        want.sort_unstable();
        if descending {
            want.reverse();
        }
        assert_eq!(got, want, "descending: {descending}");
    }
    for (lo, hi) in [
        (Bound::Included(json!(10)), Bound::Excluded(json!(20))),
        (Bound::Excluded(json!(10)), Bound::Included(json!(20))),
        (Bound::Unbounded, Bound::Included(json!(5))),
    ] {
        let ranged = Query::new().eq("state", "ready").range("prio", lo.clone(), hi.clone()).limit(1000);
        assert_eq!(q.explain(&ranged).unwrap().range.as_deref(), Some("prio"));
        let inside = |p: i64| {
            let above = match &lo {
                Bound::Included(v) => p >= v.as_i64().unwrap(),
                Bound::Excluded(v) => p > v.as_i64().unwrap(),
                Bound::Unbounded => true,
            };
            let below = match &hi {
                Bound::Included(v) => p <= v.as_i64().unwrap(),
                Bound::Excluded(v) => p < v.as_i64().unwrap(),
                Bound::Unbounded => true,
            };
            above && below
        };
        let want = model.iter().filter(|m| inside(m.0)).count();
        assert_eq!(q.query(&ranged).unwrap().records.len(), want, "{lo:?}..{hi:?}");
        assert_eq!(q.count(&ranged).unwrap(), want as u64);
    }
    store.check_indexes().unwrap();
}

#[test]
fn counting_a_half_open_range_skips_nulls() {
    let (_dir, store) = store();
    store.declare(CollectionSpec::new("leases", vec![IndexSpec::new("state_until", &["state", "until"])])).unwrap();
    let leases = store.collection_dyn("leases").unwrap();
    leases.insert("a", json!({"state": "held", "until": 5})).unwrap();
    leases.insert("b", json!({"state": "held"})).unwrap();
    leases.insert("c", json!({"state": "held", "until": null})).unwrap();
    let q = Query::new().eq("state", "held").range("until", Bound::Unbounded, Bound::Excluded(json!(10)));
    assert_eq!(leases.count(&q).unwrap(), 1);
    assert_eq!(leases.query(&q).unwrap().records.len(), 1);
    assert_eq!(leases.count(&Query::new().eq("state", "held")).unwrap(), 3);
}

#[test]
fn queries_ranges_order_count_and_explain() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    insert_tasks(&store, 300, 3);
    let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(50);
    let plan = tasks.explain(&q).unwrap();
    assert_eq!(plan.index.as_deref(), Some("status_priority"));
    let page = tasks.query(&q).unwrap();
    assert_eq!(page.records.len(), 50);
    assert!(page.records.windows(2).all(|w| w[0].doc.priority >= w[1].doc.priority));
    assert!(page.records.iter().all(|r| r.doc.status == "PENDING"));
    assert_eq!(page.records[0].doc.priority, 49);
    let ranged =
        Query::new().eq("status", "PENDING").range("priority", Bound::Included(json!(10)), Bound::Excluded(json!(20)));
    assert_eq!(tasks.explain(&ranged).unwrap().range.as_deref(), Some("priority"));
    let n = tasks.count(&ranged).unwrap();
    assert_eq!(n, (0..300).filter(|i| i % 3 == 0 && (10..20).contains(&(i % 50))).count() as u64);
    // No usable index: a full scan, filtered.
    let full = Query::new().filter("priority", Op::Ge, 45).limit(1000);
    assert_eq!(tasks.explain(&full).unwrap().index, None);
    assert_eq!(tasks.count(&full).unwrap(), 30);
    assert_eq!(
        tasks.count(&Query::new().eq("owner", "user3").eq("status", "DONE")).unwrap(),
        (0..300).filter(|i| i % 7 == 3 && i % 3 != 0).count() as u64
    );
    assert!(matches!(
        tasks.query(&Query::new().order_by("priority").eq("owner", "user1")),
        Err(ReadError::InvalidQuery(_))
    ));
    assert!(matches!(tasks.query(&Query::new().limit(0)), Err(ReadError::InvalidQuery(_))));
    assert!(matches!(tasks.query(&q.clone().after(Some("00ff".into()))), Err(ReadError::InvalidQuery(_))));
}

#[test]
fn a_page_ends_with_a_cursor_only_when_a_match_follows_and_reads_no_record_past_it() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    for i in 0..6 {
        tasks.insert(&task(i, "PENDING")).unwrap();
    }
    // By the index alone: t000000..t000005 are PENDING.
    let by_status = Query::new().eq("status", "PENDING");
    let page = tasks.query(&by_status.clone().limit(6)).unwrap();
    assert_eq!((page.records.len(), page.next_cursor), (6, None), "a page that takes the last match");
    let page = tasks.query(&by_status.clone().limit(5)).unwrap();
    let last = tasks.query(&by_status.clone().limit(5).after(page.next_cursor.clone())).unwrap();
    assert_eq!((page.records.len(), last.records.len(), last.next_cursor), (5, 1, None));
    // Checked on each record (`priority` is filtered): a record past the page that fails the filter does
    // not make another page.
    let filtered = Query::new().eq("status", "PENDING").filter("priority", Op::Lt, 5);
    let page = tasks.query(&filtered.clone().limit(5)).unwrap();
    assert_eq!((page.records.len(), page.next_cursor), (5, None));
    let page = tasks.query(&filtered.clone().limit(4)).unwrap();
    assert_eq!(page.records.len(), 4);
    let last = tasks.query(&filtered.clone().limit(4).after(page.next_cursor)).unwrap();
    assert_eq!((last.records.len(), last.next_cursor), (1, None));

    // A document that is not a `Task` right after a full page: the page is answered without decoding it,
    // and the next page reports it.
    let not_a_task = json!({"status": "PENDING", "owner": "x"});
    store.collection_dyn("tasks").unwrap().insert("t000006", not_a_task).unwrap();
    let page = tasks.query(&by_status.clone().limit(6)).unwrap();
    assert_eq!(page.records.len(), 6);
    let next = tasks.query(&by_status.clone().limit(6).after(page.next_cursor));
    assert!(matches!(next, Err(ReadError::Store(StoreError::Undecodable { .. }))), "{next:?}");
}

#[test]
fn query_each_visits_the_page_query_returns_and_pages_on_with_its_cursor() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    insert_tasks(&store, 230, 2);
    for q in [
        Query::new().eq("status", "PENDING").order_by("priority").descending().limit(40),
        Query::new().eq("owner", "user3").limit(7),
        Query::new().filter("priority", Op::Ge, 25).limit(30),
    ] {
        let (mut by_pages, mut by_visits) = (Vec::new(), Vec::new());
        let mut cursor = None;
        loop {
            let page = tasks.query(&q.clone().after(cursor.clone())).unwrap();
            let mut visited = Vec::new();
            let next = tasks.query_each(&q.clone().after(cursor), |r| visited.push(r)).unwrap();
            assert_eq!(visited, page.records, "{q:?}");
            assert_eq!(next, page.next_cursor);
            by_pages.extend(page.records.into_iter().map(|r| r.id));
            by_visits.extend(visited.into_iter().map(|r| r.id));
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(by_pages, by_visits);
        assert_eq!(by_pages.len() as u64, tasks.count(&q).unwrap(), "{q:?}");
    }
    // A document that is not a `Task` in the middle of a page: the records before it are visited, then the
    // error ends the page.
    let not_a_task = json!({"status": "PENDING", "owner": "x", "priority": 100});
    store.collection_dyn("tasks").unwrap().insert("t000001x", not_a_task).unwrap();
    let mut visited = Vec::new();
    let q = Query::new().eq("status", "PENDING").order_by("priority").descending().limit(10);
    let got = tasks.query_each(&q, |r| visited.push(r.id));
    assert!(matches!(got, Err(ReadError::Store(StoreError::Undecodable { .. }))), "{got:?}");
    assert!(visited.is_empty(), "priority 100 sorts first: {visited:?}");
    let by_id = Query::new().eq("status", "PENDING").limit(10);
    let got = tasks.query_each(&by_id, |r| visited.push(r.id));
    assert!(matches!(got, Err(ReadError::Store(StoreError::Undecodable { .. }))), "{got:?}");
    assert_eq!(visited, ["t000000"], "ids t000000, then t000001x");
}

#[test]
fn pagination_under_concurrent_writes_returns_each_long_lived_record_once() {
    let (_dir, store) = store();
    let tasks = store.collection::<Task>().unwrap();
    let n = 100_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        store
            .transaction(|tx| {
                for &i in chunk {
                    tx.insert(&task(i * 2, "PENDING"))?;
                }
                Ok(())
            })
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let tasks = tasks.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            // Short-lived records come and go between the long-lived ones.
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = task(i * 2 + 1, "PENDING");
                tasks.insert(&t).unwrap();
                if i % 2 == 0 {
                    tasks.delete(&t.id, None).unwrap();
                }
                i = (i + 1) % n;
            }
        })
    };
    for query in
        [Query::new().limit(3000), Query::new().eq("status", "PENDING").order_by("priority").descending().limit(2500)]
    {
        let mut seen = HashSet::new();
        let mut cursor = None;
        loop {
            let page = tasks.query(&query.clone().after(cursor)).unwrap();
            for r in &page.records {
                let i: usize = r.id[1..].parse().unwrap();
                if i.is_multiple_of(2) {
                    assert!(seen.insert(i), "record {i} returned twice");
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), n, "every long-lived record returned");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    store.check_indexes().unwrap();
}
