//! Queries: equality on a prefix of an index's fields, an optional range on the next field, ordered by
//! the index, with post-scan filters, a limit and an opaque cursor; a full scan in id order when no index
//! serves. See `docs/collections.md`.

use std::cmp::Ordering;
use std::ops::{Bound, ControlFlow};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use cairn_engine::Snapshot;

use crate::catalog::Declared;
use crate::decoded::Decode;
use crate::envelope::{self, Envelope};
use crate::error::{ReadError, StoreError};
use crate::fields;
use crate::hints::{ScanHints, ScanTicket};
use crate::keys;
use crate::record::{CollectionSpec, IndexSpec};

/// Largest page a query may ask for.
pub const MAX_PAGE: usize = 10_000;
const DEFAULT_PAGE: usize = 100;

/// A comparison in a [`Query`] filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (a missing field counts as null).
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    field: String,
    op: Op,
    value: Value,
}

/// What to read from a collection. Build with the methods, e.g.
/// `Query::new().eq("status", "PENDING").order_by("priority").descending().limit(50)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    eq: Vec<(String, Value)>,
    range: Option<(String, Bound<Value>, Bound<Value>)>,
    order_by: Option<String>,
    descending: bool,
    limit: Option<usize>,
    cursor: Option<String>,
    filters: Vec<Filter>,
    index: Option<String>,
}

impl Query {
    /// Everything, in id order.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `field` to equal `value`.
    pub fn eq(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.eq.push((field.to_owned(), value.into()));
        self
    }

    /// Requires `field` within bounds (at most one range per query).
    pub fn range(mut self, field: &str, lower: Bound<Value>, upper: Bound<Value>) -> Self {
        self.range = Some((field.to_owned(), lower, upper));
        self
    }

    /// Adds a filter applied to each record after the index scan.
    pub fn filter(mut self, field: &str, op: Op, value: impl Into<Value>) -> Self {
        self.filters.push(Filter { field: field.to_owned(), op, value: value.into() });
        self
    }

    /// Orders by `field`, which an index must provide after the equality fields.
    pub fn order_by(mut self, field: &str) -> Self {
        self.order_by = Some(field.to_owned());
        self
    }

    /// Descending order.
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    /// At most `n` records per page (default 100, at most [`MAX_PAGE`]).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Continues after the page that returned `cursor`.
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Uses this index, if it can serve the query.
    pub fn use_index(mut self, name: &str) -> Self {
        self.index = Some(name.to_owned());
        self
    }

    /// The plan that answers this query over a collection declared as `spec`: the same choice of index,
    /// order and errors ([`ReadError::InvalidQuery`]) as [`DynCollection::explain`](crate::DynCollection::explain),
    /// for a storage of the same records elsewhere (the server's PostgreSQL backend) to answer it alike.
    pub fn plan(&self, spec: &CollectionSpec) -> Result<Plan, ReadError> {
        self.page_size()?;
        plan(spec, self)
    }

    /// The equality conditions, `(field, value)`, in the order given.
    pub fn equalities(&self) -> &[(String, Value)] {
        &self.eq
    }

    /// Whether the query has conditions beyond equalities (a range or other filters).
    pub fn has_other_conditions(&self) -> bool {
        self.range.is_some() || !self.filters.is_empty()
    }

    /// The field ordered by, if any.
    pub fn ordered_by(&self) -> Option<&str> {
        self.order_by.as_deref()
    }

    /// Whether the order is descending.
    pub fn is_descending(&self) -> bool {
        self.descending
    }

    /// The cursor given to [`after`](Self::after).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether `doc` meets every condition of the query (a missing field counts as null; values of
    /// different JSON types are unequal).
    pub fn matches(&self, doc: &Value) -> bool {
        matches(self, doc)
    }

    /// The page size: the limit given, or 100.
    pub fn page_size(&self) -> Result<usize, ReadError> {
        match self.limit.unwrap_or(DEFAULT_PAGE) {
            0 => Err(ReadError::InvalidQuery("limit must be at least 1".into())),
            n if n > MAX_PAGE => Err(ReadError::InvalidQuery(format!("limit must be at most {MAX_PAGE}"))),
            n => Ok(n),
        }
    }
}

/// How a query is answered; see [`DynCollection::explain`](crate::DynCollection::explain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The index scanned, or `None` for a full scan of the collection in id order.
    pub index: Option<String>,
    /// Equality fields answered by the index prefix.
    pub equality: Vec<String>,
    /// The range field answered by the index, if any.
    pub range: Option<String>,
    /// Fields checked on each record after the scan.
    pub filtered: Vec<String>,
    /// Whether results come in descending order.
    pub descending: bool,
    /// Whether the engine keys are scanned backwards (descending order over an ascending field, or
    /// ascending order over a descending one).
    pub reverse_scan: bool,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The records, in query order.
    pub records: Vec<crate::record::Stored<T>>,
    /// Pass to [`Query::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

fn undecodable(key: &[u8], reason: impl Into<String>) -> ReadError {
    StoreError::undecodable(key, reason).into()
}

/// Picks the index serving `q` best: the most equality fields as a prefix, then a range on the next field.
pub(crate) fn plan(spec: &CollectionSpec, q: &Query) -> Result<Plan, ReadError> {
    if let Some((f, _, _)) = &q.range {
        if q.eq.iter().any(|(e, _)| e == f) {
            return Err(ReadError::InvalidQuery(format!("{f} has both an equality and a range")));
        }
    }
    let mut best: Option<(usize, bool, &IndexSpec)> = None;
    for index in &spec.indexes {
        if q.index.as_ref().is_some_and(|n| *n != index.name) {
            continue;
        }
        let paths: Vec<&str> = index.fields.iter().map(|f| keys::index_field(f).0).collect();
        let k = paths.iter().take_while(|p| q.eq.iter().any(|(e, _)| e == *p)).count();
        let next = paths.get(k).copied();
        let range_ok = q.range.as_ref().is_some_and(|(f, _, _)| Some(f.as_str()) == next);
        let order_ok = match &q.order_by {
            None => true,
            Some(o) => Some(o.as_str()) == next || paths.iter().take(k).any(|p| p == o),
        };
        if !order_ok || (k == 0 && !range_ok && q.order_by.is_none()) {
            continue;
        }
        if best.is_none_or(|(bk, br, _)| (k, range_ok) > (bk, br)) {
            best = Some((k, range_ok, index));
        }
    }
    if best.is_none() {
        if let Some(name) = &q.index {
            return Err(ReadError::InvalidQuery(format!("index {name} cannot serve this query")));
        }
        if let Some(o) = &q.order_by {
            return Err(ReadError::InvalidQuery(format!(
                "no index of {} orders by {o} after the equality fields",
                spec.name
            )));
        }
    }
    let equality: Vec<String> = best.map_or_else(Vec::new, |(k, _, i)| {
        i.fields.iter().take(k).map(|f| keys::index_field(f).0.to_owned()).collect()
    });
    let range = best.filter(|b| b.1).and_then(|_| q.range.as_ref().map(|r| r.0.clone()));
    let mut filtered: Vec<String> = q.eq.iter().map(|e| e.0.clone()).filter(|f| !equality.contains(f)).collect();
    if let Some((f, _, _)) = q.range.as_ref().filter(|_| range.is_none()) {
        filtered.push(f.clone());
    }
    filtered.extend(q.filters.iter().map(|f| f.field.clone()));
    // The field after the equality prefix decides the scan direction when the query orders by it: a
    // descending field is stored inverted, so its natural (ascending key) order is descending.
    let next_descending = best.and_then(|(k, _, i)| i.fields.get(k)).is_some_and(|f| keys::index_field(f).1);
    let ordered_by_next = best
        .and_then(|(k, _, i)| i.fields.get(k))
        .is_some_and(|f| q.order_by.as_deref() == Some(keys::index_field(f).0));
    let reverse_scan =
        q.descending != (next_descending && (ordered_by_next || (q.order_by.is_none() && range.is_some())));
    Ok(Plan {
        index: best.map(|b| b.2.name.clone()),
        equality,
        range,
        filtered,
        descending: q.descending,
        reverse_scan,
    })
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => (a == b).then_some(Ordering::Equal),
    }
}

/// Compares a field (a missing field counts as null) with a value; values of different types are unequal
/// and unordered.
fn test(v: Option<&Value>, op: Op, want: &Value) -> bool {
    let ord = compare(v.unwrap_or(&Value::Null), want);
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn in_bound(v: Option<&Value>, lower: &Bound<Value>, upper: &Bound<Value>) -> bool {
    let lo = match lower {
        Bound::Included(b) => test(v, Op::Ge, b),
        Bound::Excluded(b) => test(v, Op::Gt, b),
        Bound::Unbounded => true,
    };
    let hi = match upper {
        Bound::Included(b) => test(v, Op::Le, b),
        Bound::Excluded(b) => test(v, Op::Lt, b),
        Bound::Unbounded => true,
    };
    lo && hi
}

/// Whether a document satisfies every condition of the query (index-served ones included: cheap, and a
/// guard against index entries that disagree with their record).
fn matches(q: &Query, doc: &Value) -> bool {
    matches_by(q, |path| keys::field(doc, path))
}

/// [`matches`] on the values `field` gives at each condition's path.
fn matches_by<'v>(q: &Query, field: impl Fn(&str) -> Option<&'v Value>) -> bool {
    q.eq.iter().all(|(f, v)| test(field(f), Op::Eq, v))
        && q.range.as_ref().is_none_or(|(f, lo, hi)| in_bound(field(f), lo, hi))
        && q.filters.iter().all(|f| test(field(&f.field), f.op, &f.value))
}

/// The paths the query's conditions name, each once.
fn condition_paths(q: &Query) -> Vec<&str> {
    let mut paths: Vec<&str> = Vec::new();
    let named =
        q.eq.iter().map(|(f, _)| f).chain(q.range.iter().map(|(f, _, _)| f)).chain(q.filters.iter().map(|f| &f.field));
    for path in named {
        if !paths.contains(&path.as_str()) {
            paths.push(path);
        }
    }
    paths
}

/// The engine-key bounds a plan scans, before the cursor.
fn scan_bounds(d: &Declared, q: &Query, plan: &Plan) -> (Vec<u8>, Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let Some(stored) = plan.index.as_ref().and_then(|n| d.ready().find(|i| i.spec.name == *n)) else {
        let prefix = keys::record_prefix(d.name());
        let upper = keys::after_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        return (prefix.clone(), Bound::Included(prefix), upper);
    };
    let index = &stored.spec;
    let mut prefix = keys::index_prefix(d.name(), &stored.key);
    for (f, declared) in plan.equality.iter().zip(&index.fields) {
        let v = q.eq.iter().find(|(e, _)| e == f).map(|e| &e.1);
        keys::encode_field(&mut prefix, v, keys::index_field(declared).1);
    }
    let range_descending = index.fields.get(plan.equality.len()).is_some_and(|f| keys::index_field(f).1);
    let enc = |v: &Value| {
        let mut k = prefix.clone();
        keys::encode_field(&mut k, Some(v), range_descending);
        k
    };
    let past = |k: Vec<u8>| keys::after_prefix(&k).map_or(Bound::Unbounded, Bound::Excluded);
    let (mut lower, mut upper) = (Bound::Included(prefix.clone()), past(prefix.clone()));
    if let (Some(_), Some((_, lo, hi))) = (&plan.range, &q.range) {
        // On a descending field the value's lower bound limits the keys from above, and vice versa.
        let (key_lo, key_hi) = if range_descending { (hi, lo) } else { (lo, hi) };
        // A range open on one side matches only values of its bound's type (`matches` compares no others):
        // the open side stops where that type's encodings do, so the scan skips nulls and other types.
        let region = match (key_lo, key_hi) {
            (Bound::Unbounded, Bound::Included(v) | Bound::Excluded(v))
            | (Bound::Included(v) | Bound::Excluded(v), Bound::Unbounded) => {
                Some(keys::type_region(&prefix, v, range_descending))
            }
            _ => None,
        };
        let (region_start, region_end) = region.map_or((None, None), |(s, e)| (Some(s), e));
        lower = match key_lo {
            Bound::Included(v) => Bound::Included(enc(v)),
            Bound::Excluded(v) => match past(enc(v)) {
                Bound::Excluded(k) => Bound::Included(k),
                other => other,
            },
            Bound::Unbounded => region_start.map_or(lower, Bound::Included),
        };
        upper = match key_hi {
            Bound::Included(v) => past(enc(v)),
            Bound::Excluded(v) => Bound::Excluded(enc(v)),
            Bound::Unbounded => region_end.map_or(upper, Bound::Excluded),
        };
    }
    (prefix, lower, upper)
}

/// Runs `q` at `snap`, calling `visit(key, envelope, id)` for each match in order, at most `limit` times;
/// returns whether another match follows the last one visited. When the decoder wants no records (a count)
/// and nothing needs checking per record, records are not read. Documents are decoded straight into `D` by
/// `decoder`, when a record needs checking only once it matches (the check reads the values it needs from
/// the text), unless `D` is a JSON tree: then the tree parsed for the check is `D`. Past the limit, a record
/// is read only if it needs checking, and never decoded into `D`.
pub(crate) fn execute<D>(
    snap: &Snapshot,
    (hints, ticket): (&ScanHints, ScanTicket),
    d: &Declared,
    q: &Query,
    limit: Option<usize>,
    decoder: &impl Decode<D>,
    mut visit: impl FnMut(&[u8], Option<Envelope<D>>, &str),
) -> Result<bool, ReadError> {
    let plan = plan(&d.spec, q)?;
    let (prefix, mut lower, mut upper) = scan_bounds(d, q, &plan);
    if let Some(cursor) = &q.cursor {
        let key = decode_cursor(cursor)
            .filter(|k| k.starts_with(&prefix))
            .ok_or_else(|| ReadError::InvalidQuery("the cursor does not belong to this query".into()))?;
        if plan.reverse_scan {
            upper = Bound::Excluded(key);
        } else {
            lower = Bound::Excluded(key);
        }
    }
    let full_scan = plan.index.is_none();
    // A forward index scan from the start of its range may begin where an earlier scan found the first
    // live entry, after reading by key the entries inserted before that since (see `hints`), and records
    // where this one finds it.
    let hinted_from = match &lower {
        Bound::Included(lo) if !plan.reverse_scan && !full_scan && q.cursor.is_none() => Some(lo.clone()),
        _ => None,
    };
    let mut exceptions = Vec::new();
    if let Some(lo) = &hinted_from {
        let below_upper = |key: &[u8]| match &upper {
            Bound::Included(u) => key <= u.as_slice(),
            Bound::Excluded(u) => key < u.as_slice(),
            Bound::Unbounded => true,
        };
        let (start, live) = hints.resume(snap, lo, below_upper)?;
        lower = Bound::Included(start);
        exceptions = live;
    }
    // An empty range skips up to its end; the end is kept before the bound moves into the iterator.
    let end = match (&hinted_from, &upper) {
        (Some(_), Bound::Excluded(u)) => Some(u.clone()),
        _ => None,
    };
    let mut iter = if plan.reverse_scan { snap.range_rev((lower, upper))? } else { snap.range((lower, upper))? };
    // An index scan on equalities alone yields only matching records (the index agrees with the records by
    // construction; `check_indexes` verifies it), and so does a full scan with no condition: those records
    // need no check, and are decoded straight into `D`. A full scan's conditions are all in `filtered`.
    let check_records = !plan.filtered.is_empty() || q.range.is_some();
    // Counting from keys alone is exact only for those: a range's encoded bounds may also take in values of
    // other types (null sorts before every number), which only `matches` rejects.
    let skip_records = !decoder.wants_records() && !check_records;
    // Records are checked on the values at the conditions' paths, read from their text without a tree, and
    // only those that match are decoded; a decoder of JSON trees gets the tree the check parsed instead.
    let checked_paths = (check_records && !decoder.decodes_trees()).then(|| condition_paths(q));
    let mut visited = 0usize;
    // The key of an index entry's record, rebuilt in place for each entry.
    let mut record_key = keys::record_prefix(d.name());
    let record_prefix_len = record_key.len();
    // One entry: visits its record if it matches; `Break` when the scan is over and another match follows.
    let mut entry = |key: &[u8], value: &[u8]| -> Result<ControlFlow<()>, ReadError> {
        let full = limit.is_some_and(|l| visited >= l);
        if full && !check_records {
            return Ok(ControlFlow::Break(()));
        }
        // A full scan reads the records themselves; an index entry's value is the id of its record.
        let (id, record) = if full_scan {
            (keys::parse_record_key(key).map(|k| k.1).unwrap_or_default(), Some(value))
        } else {
            let id = std::str::from_utf8(value).map_err(|_| undecodable(key, "index entry id"))?;
            record_key.truncate(record_prefix_len);
            record_key.extend_from_slice(id.as_bytes());
            (id, None)
        };
        if skip_records {
            visit(key, None, id);
            visited += 1;
            return Ok(ControlFlow::Continue(()));
        }
        let record_key = if full_scan { key } else { record_key.as_slice() };
        // What the record's bytes say: a record to visit, one that does not match, or a match past the limit.
        let read = |bytes: &[u8]| -> Result<ControlFlow<(), Option<Envelope<D>>>, ReadError> {
            if !check_records {
                return Ok(ControlFlow::Continue(Some(decoder.decode(record_key, bytes, snap.sequence())?)));
            }
            if let Some(paths) = &checked_paths {
                let doc = envelope::decode_raw(record_key, bytes)?.doc;
                // A document that is not a JSON object is parsed whole below, as it is for a decoder of trees.
                if let Ok(values) = fields::read_paths(doc, paths) {
                    let at = |path: &str| paths.iter().position(|p| *p == path).and_then(|i| values.get(i)?.as_ref());
                    if !matches_by(q, at) {
                        return Ok(ControlFlow::Continue(None));
                    }
                    if full {
                        return Ok(ControlFlow::Break(()));
                    }
                    return Ok(ControlFlow::Continue(Some(decoder.decode(record_key, bytes, snap.sequence())?)));
                }
            }
            let env = envelope::decode(record_key, bytes)?;
            if !matches(q, &env.doc) {
                return Ok(ControlFlow::Continue(None));
            }
            if full {
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(Some(env.try_map(|doc| decoder.decode_tree(record_key, doc))?)))
        };
        // An index entry's record is one the decoder keeps and knows current without reading it, or read in
        // place, in the memtable or the cached block that holds it.
        let recalled = if record.is_none() && !check_records {
            decoder.recall(record_key, snap.sequence(), |after| snap.written_after(record_key, after))?
        } else {
            None
        };
        let read = match (recalled, record) {
            (Some(env), _) => ControlFlow::Continue(Some(env)),
            (None, Some(bytes)) => read(bytes)?,
            (None, None) => {
                snap.get_with(record_key, read)?.ok_or_else(|| undecodable(key, "index entry without record"))??
            }
        };
        match read {
            ControlFlow::Break(()) => Ok(ControlFlow::Break(())),
            ControlFlow::Continue(None) => Ok(ControlFlow::Continue(())),
            ControlFlow::Continue(Some(env)) => {
                visit(key, Some(env), id);
                visited += 1;
                Ok(ControlFlow::Continue(()))
            }
        }
    };
    for (key, id) in &exceptions {
        if entry(key, id)?.is_break() {
            return Ok(true);
        }
    }
    // Where a hinted scan found its first live entry past the exceptions (or its end, if none), recorded
    // once, with the exceptions that were live.
    let live_exceptions = || exceptions.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>();
    let mut ticket = hinted_from.as_ref().map(|lo| (lo, ticket));
    // Entries are read in place (`next_ref`): an index entry's key and id are not copied unless used.
    while let Some(pair) = iter.next_ref() {
        let (key, value) = pair?;
        if let Some((lo, ticket)) = ticket.take() {
            hints.record(ticket, lo, key, snap.sequence(), live_exceptions());
        }
        if entry(key, value)?.is_break() {
            return Ok(true);
        }
    }
    if let (Some((lo, ticket)), Some(end)) = (ticket, &end) {
        hints.record(ticket, lo, end, snap.sequence(), live_exceptions());
    }
    Ok(false)
}

pub(crate) fn encode_cursor(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(key.len() * 2);
    for b in key {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    // An engine key is at most `MAX_KEY_LEN` bytes, two hex digits each.
    if !cursor.len().is_multiple_of(2) || cursor.len() > 2 * cairn_engine::MAX_KEY_LEN {
        return None;
    }
    (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::ops::RangeBounds;

    fn jobs() -> CollectionSpec {
        CollectionSpec::new(
            "jobs",
            vec![
                IndexSpec::new("status", &["status"]),
                IndexSpec::new("owner", &["owner"]),
                IndexSpec::new("status_priority", &["status", "priority"]),
                IndexSpec::new("project_created", &["project", "created_at"]),
            ],
        )
    }

    #[test]
    fn planner_prefers_longest_prefix_then_range() {
        let s = jobs();
        let p = plan(&s, &Query::new().eq("status", "PENDING").order_by("priority").descending()).unwrap();
        assert_eq!((p.index.as_deref(), p.equality.len(), p.descending), (Some("status_priority"), 1, true));
        let p =
            plan(&s, &Query::new().eq("project", "p").range("created_at", Bound::Included(json!(5)), Bound::Unbounded))
                .unwrap();
        assert_eq!((p.index.as_deref(), p.range.as_deref()), (Some("project_created"), Some("created_at")));
        let p = plan(&s, &Query::new().eq("owner", "a").eq("status", "RUNNING")).unwrap();
        assert!(p.index.is_some());
        assert_eq!(p.filtered.len(), 1);
        let p = plan(&s, &Query::new().eq("name", "x")).unwrap();
        assert_eq!((p.index, p.filtered), (None, vec!["name".to_owned()]));
        assert!(plan(&s, &Query::new().eq("owner", "a").order_by("priority")).is_err());
        assert!(plan(&s, &Query::new().eq("status", "x").use_index("owner")).is_err());
        assert!(plan(&s, &Query::new().eq("status", "x").range("status", Bound::Unbounded, Bound::Unbounded)).is_err());
    }

    #[test]
    fn filters_compare_by_type() {
        let doc = json!({"n": 5, "s": "b", "nested": {"x": true}});
        let q = Query::new().filter("n", Op::Gt, 4).filter("s", Op::Lt, "c").filter("nested.x", Op::Eq, true);
        assert!(matches(&q, &doc));
        assert!(!matches(&Query::new().filter("n", Op::Lt, "zzz"), &doc), "mixed types never compare");
        assert!(matches(&Query::new().filter("missing", Op::Ne, 1), &doc), "missing is null, which is not 1");
        assert!(matches(&Query::new().eq("missing", Value::Null), &doc));
        assert!(matches(&Query::new().range("n", Bound::Excluded(json!(4)), Bound::Included(json!(5))), &doc));
    }

    #[test]
    fn a_range_open_on_one_side_scans_only_its_bound_type() {
        for descending in [false, true] {
            let field = if descending { "-lease" } else { "lease" };
            let spec = CollectionSpec::new("jobs", vec![IndexSpec::new("status_lease", &["status", field])]);
            let declared = Declared::new(spec.clone());
            let key = |v: Value| {
                keys::index_key(
                    "jobs",
                    "status_lease",
                    &["status".to_owned(), field.to_owned()],
                    &json!({"status": "RUNNING", "lease": v}),
                    "j",
                )
            };
            let within = |(lower, upper): &(Bound<Vec<u8>>, Bound<Vec<u8>>), k: &Vec<u8>| {
                (lower.as_ref(), upper.as_ref()).contains(k)
            };
            let below_ten =
                Query::new().eq("status", "RUNNING").range("lease", Bound::Unbounded, Bound::Excluded(json!(10)));
            let from_ten =
                Query::new().eq("status", "RUNNING").range("lease", Bound::Included(json!(10)), Bound::Unbounded);
            for (q, inside, outside) in [
                (&below_ten, vec![json!(-1e300), json!(-3), json!(9.5)], vec![json!(10), json!(11)]),
                (&from_ten, vec![json!(10), json!(1e300)], vec![json!(9)]),
            ] {
                let p = plan(&spec, q).unwrap();
                let (_, lower, upper) = scan_bounds(&declared, q, &p);
                let bounds = (lower, upper);
                for v in inside {
                    assert!(within(&bounds, &key(v.clone())), "{v} (descending: {descending})");
                }
                for v in outside.into_iter().chain([json!(null), json!(false), json!(true), json!("5"), json!([1])]) {
                    assert!(!within(&bounds, &key(v.clone())), "{v} (descending: {descending})");
                }
            }
            // Both sides open: every value, nulls included.
            let all = Query::new().eq("status", "RUNNING").range("lease", Bound::Unbounded, Bound::Unbounded);
            let p = plan(&spec, &all).unwrap();
            let (_, lower, upper) = scan_bounds(&declared, &all, &p);
            assert!(within(&(lower, upper), &key(json!(null))));
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = b"\x02jobs\x00status\x00abc".to_vec();
        assert_eq!(encode_cursor(&key), "026a6f62730073746174757300616263");
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_cursor(&encode_cursor(&every)), Some(every));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}
