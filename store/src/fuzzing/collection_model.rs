//! Collections against a model (id -> version and document): inserts, upserts, version-checked updates and
//! deletes (alone, or several made together in one commit), reads, index queries paged with a limit and a
//! cursor, claims and multi-record transactions, with flushes, compactions, clean reopens and power cuts, on
//! a [`Store`] over [`MemStorage`].
//!
//! The collection has a single-field index and a composite one whose second field is descending. Errors
//! (`NotFound`, `AlreadyExists`, `Conflict` with the versions involved) happen exactly when the model says;
//! query pages concatenate to the model's filtered and sorted records; after every reopen the store holds
//! exactly what was acknowledged (every commit is durable) and [`Store::check_indexes`] finds no
//! disagreement.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{json, Value};

use serde_json::value::RawValue;

use crate::{
    CollectionError, CollectionSpec, DecideRaw, DynCollection, IndexSpec, OneWrite, Query, RecordWrite, Store,
    StoreOptions, Stored, WriteError,
};
use cairn_engine::fuzzing::harness;
use cairn_engine::{CrashMode, MemStorage};

/// Most operations decoded from one input.
const MAX_OPS: usize = 48;
/// Most operations in one transaction.
const MAX_TXN: usize = 8;
/// Distinct record ids.
const IDS: u8 = 24;
const STATUSES: [&str; 3] = ["PENDING", "RUNNING", "DONE"];
const COLLECTION: &str = "jobs";
/// Candidates a claim considers (`handle.rs`: `CLAIM_BATCH`).
const CLAIM_BATCH: usize = 16;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectionSummary {
    /// Operations decoded and run.
    pub ops: usize,
    /// Single-record writes attempted (claims included).
    pub writes: usize,
    /// Writes that failed as the model predicted (not found, already exists, version conflict).
    pub rejected: usize,
    /// Transactions attempted.
    pub transactions: usize,
    /// Groups of single-record writes made together (`Store::write_together`).
    pub together: usize,
    /// Queries checked (every page of each).
    pub queries: usize,
    /// Pages read.
    pub pages: usize,
    /// Reopens, clean or after a power cut (the final check included).
    pub reopens: usize,
    /// Power cuts.
    pub crashes: usize,
}

impl std::ops::AddAssign for CollectionSummary {
    fn add_assign(&mut self, other: Self) {
        let Self { ops, writes, rejected, transactions, together, queries, pages, reopens, crashes } = other;
        self.ops += ops;
        self.writes += writes;
        self.rejected += rejected;
        self.transactions += transactions;
        self.together += together;
        self.queries += queries;
        self.pages += pages;
        self.reopens += reopens;
        self.crashes += crashes;
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    version: u64,
    doc: Value,
}

type Model = BTreeMap<String, Rec>;

#[derive(Debug, Arbitrary)]
struct Doc {
    status: u8,
    prio: Option<u8>,
    owner: bool,
    n: u8,
}

impl Doc {
    fn json(&self) -> Value {
        let mut doc = json!({
            "status": status(self.status),
            "owner": owner(self.owner),
            "n": self.n,
        });
        // A missing field is indexed as null.
        if let (Some(p), Some(map)) = (self.prio, doc.as_object_mut()) {
            map.insert("prio".to_owned(), json!(p % 8));
        }
        doc
    }
}

fn status(s: u8) -> &'static str {
    STATUSES.get(usize::from(s) % STATUSES.len()).copied().unwrap_or("PENDING")
}

fn owner(o: bool) -> &'static str {
    if o {
        "ada"
    } else {
        "bob"
    }
}

fn id(i: u8) -> String {
    format!("r{}", i % IDS)
}

fn prio(doc: &Value) -> Option<u64> {
    doc.get("prio").and_then(Value::as_u64)
}

/// How far an expected version is from the current one.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Delta {
    Exact,
    Below,
    Above,
}

impl Delta {
    fn apply(self, current: Option<&Rec>) -> u64 {
        let v = current.map_or(1, |r| r.version);
        match self {
            Delta::Exact => v,
            Delta::Below => v.saturating_sub(1),
            Delta::Above => v + 1,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Write {
    Insert { id: u8, doc: Doc },
    Upsert { id: u8, doc: Doc },
    Update { id: u8, delta: Delta, doc: Doc },
    Delete { id: u8, check: Option<Delta> },
}

impl Write {
    /// The id of the record written.
    fn id(&self) -> String {
        match self {
            Write::Insert { id: i, .. }
            | Write::Upsert { id: i, .. }
            | Write::Update { id: i, .. }
            | Write::Delete { id: i, .. } => id(*i),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum TxOp {
    Write(Write),
    Get { id: u8 },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Bounds {
    lo: Option<(u8, bool)>,
    hi: Option<(u8, bool)>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Shape {
    /// Every record in id order, optionally filtered on `n`.
    All { min_n: Option<u8> },
    /// Equality on the single-field index.
    Status(u8),
    /// Equality on the composite index's first field, ordered by its descending second field.
    Owner(bool),
    /// Equality on the first field and a range on the descending second field.
    OwnerRange(bool, Bounds),
    /// Two equalities: one served by an index, the other filtered.
    StatusOwner(u8, bool),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Write(Write),
    Get {
        id: u8,
    },
    Query {
        shape: Shape,
        limit: u8,
        descending: bool,
    },
    Claim {
        status: u8,
        min_prio: u8,
    },
    Txn(Vec<TxOp>),
    /// Single-record writes made together in one commit, each answered on its own.
    Together(Vec<Write>),
    /// Grouped, so that they are rarer than reads and writes and the collection grows between them.
    Disrupt(Disruption),
}

#[derive(Debug, Arbitrary)]
enum Disruption {
    Flush,
    Compact,
    Reopen,
    Crash { seed: u64, mode: bool, tear: bool },
}

/// A write's outcome as the model predicts it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Option<Rec>),
    NotFound,
    AlreadyExists,
    Conflict { expected: u64, actual: Option<u64> },
}

fn outcome_of_error(e: impl Into<CollectionError>) -> Outcome {
    match e.into() {
        CollectionError::NotFound { .. } => Outcome::NotFound,
        CollectionError::AlreadyExists { .. } => Outcome::AlreadyExists,
        CollectionError::Conflict { expected, actual, .. } => Outcome::Conflict { expected, actual },
        other => panic!("unexpected collection error: {other}"),
    }
}

/// The `decide` of `w` made together with other writes: the checks `DynCollection`'s insert, update and
/// delete make (`expected`: the version an update or a checked delete expects).
fn decide<'a>(w: &Write, id: &'a str, expected: Option<u64>) -> DecideRaw<'a, WriteError> {
    let (collection, id) = (COLLECTION.to_owned(), id.to_owned());
    let check = move |current: Option<&Stored<Box<RawValue>>>| match (current, expected) {
        (None, _) => Err(WriteError::NotFound { collection: collection.clone(), id: id.clone() }),
        (Some(c), Some(expected)) if expected != c.version => Err(WriteError::Conflict {
            collection: collection.clone(),
            id: id.clone(),
            expected,
            actual: Some(c.version),
        }),
        (Some(_), _) => Ok(()),
    };
    match w {
        Write::Insert { doc, id: i } => {
            let (doc, id) = (doc.json(), self::id(*i));
            Box::new(move |current| match current {
                Some(_) => Err(WriteError::AlreadyExists { collection: COLLECTION.to_owned(), id: id.clone() }),
                None => Ok(RecordWrite::Put(doc.clone())),
            })
        }
        Write::Upsert { doc, .. } => {
            let doc = doc.json();
            Box::new(move |_| Ok(RecordWrite::Put(doc.clone())))
        }
        Write::Update { doc, .. } => {
            let doc = doc.json();
            Box::new(move |current| check(current).map(|()| RecordWrite::Put(doc.clone())))
        }
        Write::Delete { .. } => Box::new(move |current| check(current).map(|()| RecordWrite::Delete)),
    }
}

/// A transaction's view: the records at its snapshot (`base`) with its own writes applied (`view`).
struct TxModel<'a> {
    base: &'a Model,
    view: Model,
}

impl<'a> TxModel<'a> {
    fn new(base: &'a Model) -> Self {
        Self { base, view: base.clone() }
    }

    /// Applies a write as the store defines it; the record after it, or the error it must fail with.
    fn apply(&mut self, w: &Write) -> Outcome {
        let (id, after) = match w {
            Write::Insert { id: i, doc } => {
                if self.view.contains_key(&id(*i)) {
                    return Outcome::AlreadyExists;
                }
                (id(*i), Some((1, doc.json())))
            }
            Write::Upsert { id: i, doc } => {
                let v = self.view.get(&id(*i)).map_or(1, |r| r.version + 1);
                (id(*i), Some((v, doc.json())))
            }
            Write::Update { id: i, delta, doc } => {
                let cur = self.view.get(&id(*i));
                let expected = delta.apply(cur);
                match cur {
                    None => return Outcome::NotFound,
                    Some(r) if r.version != expected => return Outcome::Conflict { expected, actual: Some(r.version) },
                    Some(r) => (id(*i), Some((r.version + 1, doc.json()))),
                }
            }
            Write::Delete { id: i, check } => {
                let cur = self.view.get(&id(*i));
                let Some(r) = cur else { return Outcome::NotFound };
                if let Some(expected) = check.map(|d| d.apply(cur)) {
                    if expected != r.version {
                        return Outcome::Conflict { expected, actual: Some(r.version) };
                    }
                }
                (id(*i), None)
            }
        };
        match after {
            Some((version, doc)) => {
                // Versions continue from the record at the snapshot: a delete then insert is an update.
                let version = self.base.get(&id).map_or(version, |b| version.max(b.version + 1));
                let rec = Rec { version, doc };
                self.view.insert(id, rec.clone());
                Outcome::Ok(Some(rec))
            }
            None => {
                self.view.remove(&id);
                Outcome::Ok(None)
            }
        }
    }
}

fn spec() -> CollectionSpec {
    CollectionSpec::new(
        COLLECTION,
        vec![IndexSpec::new("status", &["status"]), IndexSpec::new("owner_prio", &["owner", "-prio"])],
    )
}

fn open(fs: &MemStorage) -> (Store, DynCollection) {
    let db = harness::options(fs).open(Path::new("/db")).unwrap_or_else(|e| panic!("open failed: {e}"));
    let store = Store::with_db(db, StoreOptions::default()).unwrap_or_else(|e| panic!("store: {e}"));
    store.declare(spec()).unwrap_or_else(|e| panic!("declare: {e}"));
    let jobs = store.collection_dyn(COLLECTION).unwrap_or_else(|e| panic!("collection: {e}"));
    (store, jobs)
}

/// The query a shape stands for, and the model's answer: ids in the order the store must return them.
fn model_query(model: &Model, shape: Shape, descending: bool) -> (Query, Vec<String>) {
    // Index order of `owner_prio` (owner, -prio, id) within one owner: highest priority first, records
    // without a priority (null) last, then by id.
    let owner_prio_order = |ids: &mut Vec<String>| {
        ids.sort_by_key(|i| {
            (Reverse(model.get(i).and_then(|r| prio(&r.doc)).map_or(-1, |p| i64::try_from(p).unwrap_or(0))), i.clone())
        });
    };
    let field_is = |r: &Rec, f: &str, v: &str| r.doc.get(f).and_then(Value::as_str) == Some(v);
    let (mut q, mut ids, reverse) = match shape {
        Shape::All { min_n } => {
            let mut q = Query::new();
            if let Some(m) = min_n {
                q = q.filter("n", crate::Op::Ge, m);
            }
            let ids = model
                .iter()
                .filter(|(_, r)| min_n.is_none_or(|m| r.doc.get("n").and_then(Value::as_u64) >= Some(u64::from(m))))
                .map(|(i, _)| i.clone())
                .collect();
            (q, ids, descending)
        }
        Shape::Status(s) => {
            let ids = model.iter().filter(|(_, r)| field_is(r, "status", status(s))).map(|(i, _)| i.clone()).collect();
            (Query::new().eq("status", status(s)), ids, descending)
        }
        Shape::Owner(o) => {
            let mut ids: Vec<String> =
                model.iter().filter(|(_, r)| field_is(r, "owner", owner(o))).map(|(i, _)| i.clone()).collect();
            owner_prio_order(&mut ids);
            // The field is stored descending: an ascending order scans the index backwards.
            (Query::new().eq("owner", owner(o)).order_by("prio"), ids, !descending)
        }
        Shape::OwnerRange(o, b) => {
            let bound = |x: Option<(u8, bool)>| match x {
                None => Bound::Unbounded,
                Some((v, true)) => Bound::Included(json!(v % 9)),
                Some((v, false)) => Bound::Excluded(json!(v % 9)),
            };
            let (lo, hi) = (bound(b.lo), bound(b.hi));
            let within = |r: &Rec| {
                if b.lo.is_none() && b.hi.is_none() {
                    return true;
                }
                let Some(p) = prio(&r.doc) else { return false };
                let lo_ok =
                    b.lo.is_none_or(|(v, incl)| if incl { p >= u64::from(v % 9) } else { p > u64::from(v % 9) });
                let hi_ok =
                    b.hi.is_none_or(|(v, incl)| if incl { p <= u64::from(v % 9) } else { p < u64::from(v % 9) });
                lo_ok && hi_ok
            };
            let mut ids: Vec<String> = model
                .iter()
                .filter(|(_, r)| field_is(r, "owner", owner(o)) && within(r))
                .map(|(i, _)| i.clone())
                .collect();
            owner_prio_order(&mut ids);
            (Query::new().eq("owner", owner(o)).range("prio", lo, hi), ids, !descending)
        }
        Shape::StatusOwner(s, o) => {
            let ids = model
                .iter()
                .filter(|(_, r)| field_is(r, "status", status(s)) && field_is(r, "owner", owner(o)))
                .map(|(i, _)| i.clone())
                .collect();
            (Query::new().eq("status", status(s)).eq("owner", owner(o)), ids, descending)
        }
    };
    if descending {
        q = q.descending();
    }
    if reverse {
        ids.reverse();
    }
    (q, ids)
}

struct Run {
    fs: MemStorage,
    store: Option<Store>,
    jobs: Option<DynCollection>,
    model: Model,
    summary: CollectionSummary,
}

impl Run {
    fn jobs(&self) -> &DynCollection {
        self.jobs.as_ref().unwrap_or_else(|| panic!("no open store"))
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap_or_else(|| panic!("no open store"))
    }

    fn check_get(&self, i: u8) {
        let got = self.jobs().get(&id(i)).unwrap_or_else(|e| panic!("get: {e}"));
        let got = got.map(|s| Rec { version: s.version, doc: s.doc });
        assert_eq!(got.as_ref(), self.model.get(&id(i)), "get {}", id(i));
        // Typed reads go through the store's record cache: a first read marks the record, a second keeps it,
        // a third may be answered without a read; each answers what the model holds.
        let cached = self.jobs().records().shared::<Value>();
        for round in 0..3 {
            let got = self.jobs().get_as(&id(i), &cached).unwrap_or_else(|e| panic!("typed get: {e}"));
            let got = got.map(|s| Rec { version: s.version, doc: Value::clone(&s.doc) });
            assert_eq!(got.as_ref(), self.model.get(&id(i)), "typed get {} (read {round})", id(i));
        }
    }

    fn write(&mut self, w: &Write) {
        self.summary.writes += 1;
        let mut tx = TxModel::new(&self.model);
        let want = tx.apply(w);
        let view = tx.view;
        let jobs = self.jobs();
        let cur = self.model.get(&w.id());
        let result = match w {
            Write::Insert { id: i, doc } => jobs.insert(&id(*i), doc.json()).map(Some),
            Write::Upsert { id: i, doc } => jobs.upsert(&id(*i), doc.json()).map(Some),
            Write::Update { id: i, delta, doc } => jobs.update(&id(*i), delta.apply(cur), doc.json()).map(Some),
            Write::Delete { id: i, check } => jobs.delete(&id(*i), check.map(|d| d.apply(cur))).map(|()| None),
        };
        let got = match result {
            Ok(s) => Outcome::Ok(s.map(|s| Rec { version: s.version, doc: s.doc })),
            Err(e) => outcome_of_error(e),
        };
        assert_eq!(got, want, "{w:?}");
        match got {
            Outcome::Ok(_) => self.model = view,
            _ => self.summary.rejected += 1,
        }
    }

    /// The writes made together (`Store::write_together`), each deciding as `DynCollection`'s own
    /// insert, upsert, update and delete do: each must end as it would alone, in order.
    fn together(&mut self, writes: &[Write]) {
        self.summary.together += 1;
        let writes = writes.get(..writes.len().min(MAX_TXN)).unwrap_or_default();
        self.summary.writes += writes.len();
        let mut model = self.model.clone();
        let (mut wants, mut expected) = (Vec::new(), Vec::new());
        for w in writes {
            let cur = model.get(&w.id());
            expected.push(match w {
                Write::Update { delta, .. } => Some(delta.apply(cur)),
                Write::Delete { check, .. } => check.map(|d| d.apply(cur)),
                Write::Insert { .. } | Write::Upsert { .. } => None,
            });
            let mut tx = TxModel::new(&model);
            let want = tx.apply(w);
            if matches!(want, Outcome::Ok(_)) {
                model = tx.view;
            }
            wants.push(want);
        }
        let ids: Vec<String> = writes.iter().map(Write::id).collect();
        let mut group: Vec<OneWrite<'_, WriteError>> = writes
            .iter()
            .zip(&ids)
            .zip(expected)
            .map(|((w, i), expected)| OneWrite { collection: COLLECTION, id: i, decide: decide(w, i, expected) })
            .collect();
        let answers = self.store().write_together(&mut group);
        drop(group);
        for ((w, answer), want) in writes.iter().zip(answers).zip(wants) {
            let got = match answer {
                Ok(s) => Outcome::Ok(s.map(|s| Rec { version: s.version, doc: s.doc })),
                Err(e) => outcome_of_error(e),
            };
            if !matches!(got, Outcome::Ok(_)) {
                self.summary.rejected += 1;
            }
            assert_eq!(got, want, "together {w:?}");
        }
        self.model = model;
    }

    fn transaction(&mut self, ops: &[TxOp]) {
        self.summary.transactions += 1;
        let mut model = TxModel::new(&self.model);
        let store = self.store.as_ref().unwrap_or_else(|| panic!("no open store"));
        let mut tx = store.begin();
        for op in ops.iter().take(MAX_TXN) {
            match op {
                TxOp::Get { id: i } => {
                    let got = tx.get_doc(COLLECTION, &id(*i)).unwrap_or_else(|e| panic!("txn get: {e}"));
                    let got = got.map(|s| Rec { version: s.version, doc: s.doc });
                    assert_eq!(got.as_ref(), model.view.get(&id(*i)), "txn get {}", id(*i));
                }
                TxOp::Write(w) => {
                    let cur = model.view.get(&w.id()).cloned();
                    let result = match w {
                        Write::Insert { id: i, doc } => tx.insert_doc(COLLECTION, &id(*i), doc.json()),
                        Write::Upsert { id: i, doc } => tx.upsert_doc(COLLECTION, &id(*i), doc.json()),
                        Write::Update { id: i, delta, doc } => {
                            tx.update_doc(COLLECTION, &id(*i), delta.apply(cur.as_ref()), doc.json())
                        }
                        Write::Delete { id: i, check } => {
                            tx.delete_doc(COLLECTION, &id(*i), check.map(|d| d.apply(cur.as_ref()))).map(|()| 0)
                        }
                    };
                    let want = model.apply(w);
                    match (result, want) {
                        // A write returns the version it gave the record (a delete returns nothing).
                        (Ok(v), Outcome::Ok(rec)) => {
                            let want = rec.map_or(0, |r| r.version);
                            assert_eq!(v, want, "txn {w:?}: returned version");
                        }
                        (Err(e), want) => {
                            let got = outcome_of_error(e);
                            assert_eq!(got, want, "txn {w:?}");
                            // The transaction is abandoned: nothing of it may be written.
                            self.summary.rejected += 1;
                            return;
                        }
                        (Ok(v), want) => panic!("txn {w:?} succeeded (version {v}); the model says {want:?}"),
                    }
                }
            }
        }
        tx.commit().unwrap_or_else(|e| panic!("commit of an uncontended transaction failed: {e}"));
        self.model = model.view;
    }

    fn query(&mut self, shape: Shape, limit: u8, descending: bool) {
        self.summary.queries += 1;
        let limit = 1 + usize::from(limit % 6);
        let (q, want) = model_query(&self.model, shape, descending);
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..=IDS {
            self.summary.pages += 1;
            let page_query = q.clone().limit(limit).after(cursor);
            let page = self.jobs().query(&page_query).unwrap_or_else(|e| panic!("{q:?}: {e}"));
            assert!(page.records.len() <= limit, "{q:?}: page longer than its limit");
            if page.next_cursor.is_some() {
                assert_eq!(page.records.len(), limit, "{q:?}: a short page that is not the last");
            }
            // The same page read typed, through the record cache, holds the same records.
            let cached = self.jobs().records().shared::<Value>();
            let typed = self.jobs().query_as(&page_query, &cached).unwrap_or_else(|e| panic!("typed {q:?}: {e}"));
            let typed: Vec<_> = typed.records.into_iter().map(|s| (s.id, s.version, Value::clone(&s.doc))).collect();
            let plain: Vec<_> = page.records.iter().map(|s| (s.id.clone(), s.version, s.doc.clone())).collect();
            assert_eq!(typed, plain, "{q:?}: typed page");
            for s in page.records {
                let want = self.model.get(&s.id);
                assert_eq!(Some(&Rec { version: s.version, doc: s.doc }), want, "{q:?}: record {}", s.id);
                got.push(s.id);
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(got, want, "{q:?} (limit {limit})");
    }

    fn claim(&mut self, s: u8, min_prio: u8) {
        self.summary.writes += 1;
        let min_prio = u64::from(min_prio % 8);
        let next = status(s.wrapping_add(1));
        let change = |doc: &mut Value| {
            if prio(doc).is_some_and(|p| p >= min_prio) {
                if let Some(map) = doc.as_object_mut() {
                    map.insert("status".to_owned(), json!(next));
                }
                true
            } else {
                false
            }
        };
        let (_, order) = model_query(&self.model, Shape::Status(s), false);
        let want = order.iter().take(CLAIM_BATCH).find_map(|i| {
            let r = self.model.get(i)?;
            let mut doc = r.doc.clone();
            change(&mut doc).then(|| (i.clone(), Rec { version: r.version + 1, doc }))
        });
        let got = self
            .jobs()
            .claim(&[Query::new().eq("status", status(s))], change)
            .unwrap_or_else(|e| panic!("claim: {e}"))
            .map(|s| (s.id, Rec { version: s.version, doc: s.doc }));
        assert_eq!(got, want, "claim of a {} record with priority >= {min_prio}", status(s));
        if let Some((i, rec)) = got {
            self.model.insert(i, rec);
        }
    }

    fn reopen(&mut self, crash: Option<(u64, CrashMode)>) {
        self.summary.reopens += 1;
        let image = crash.map(|(seed, mode)| self.fs.crash(seed, mode));
        self.jobs = None;
        drop(self.store.take());
        if let Some(image) = image {
            self.summary.crashes += 1;
            self.fs = image;
        }
        let (store, jobs) = open(&self.fs);
        store.check_indexes().unwrap_or_else(|e| panic!("indexes after reopen (crash: {crash:?}): {e}"));
        store.db().verify().unwrap_or_else(|e| panic!("verify after reopen: {e}"));
        self.store = Some(store);
        self.jobs = Some(jobs);
        // Every commit was durable: the store holds exactly the acknowledged records.
        for i in 0..IDS {
            self.check_get(i);
        }
        self.query(Shape::All { min_n: None }, 5, false);
    }
}

/// Decodes `data` into operations and runs them against the model; panics on any disagreement.
pub fn collection_model(data: &[u8]) -> CollectionSummary {
    let mut u = Unstructured::new(data);
    let fs = MemStorage::new();
    let (store, jobs) = open(&fs);
    let mut run =
        Run { fs, store: Some(store), jobs: Some(jobs), model: Model::new(), summary: CollectionSummary::default() };
    for op in harness::ops(&mut u, MAX_OPS) {
        run.summary.ops += 1;
        match op {
            Op::Write(w) => run.write(&w),
            Op::Get { id: i } => run.check_get(i),
            Op::Query { shape, limit, descending } => run.query(shape, limit, descending),
            Op::Claim { status: s, min_prio } => run.claim(s, min_prio),
            Op::Txn(ops) => run.transaction(&ops),
            Op::Together(writes) => run.together(&writes),
            Op::Disrupt(Disruption::Flush) => run.store().db().flush().unwrap_or_else(|e| panic!("flush: {e}")),
            Op::Disrupt(Disruption::Compact) => {
                run.store().db().compact().unwrap_or_else(|e| panic!("compact: {e}"));
            }
            Op::Disrupt(Disruption::Reopen) => run.reopen(None),
            Op::Disrupt(Disruption::Crash { seed, mode, tear }) => {
                let mode = match (mode, tear) {
                    (false, false) => CrashMode::Drop,
                    (false, true) => CrashMode::Tear,
                    (true, false) => CrashMode::Garble,
                    (true, true) => CrashMode::Mixed,
                };
                run.reopen(Some((seed, mode)));
            }
        }
    }
    run.reopen(None);
    run.summary
}
