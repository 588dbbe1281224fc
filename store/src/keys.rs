//! How collections map onto the engine's keys. See `docs/collections.md`.
//!
//! | first byte | key                                                        | value                     |
//! |------------|------------------------------------------------------------|---------------------------|
//! | `0x00`     | `0x00 "cat" 0x00 collection`                               | collection spec (JSON)    |
//! | `0x00`     | `0x00 "cur" 0x00 consumer`                                 | acknowledged seq, u64 LE  |
//! | `0x00`     | `0x00 "trimmed"`                                           | last trimmed seq, u64 LE  |
//! | `0x00`     | `0x00 "cnt" 0x00 collection 0x00 seq (u64 BE) op (u32 BE)`  | count change, i64 LE      |
//! | `0x00`     | `0x00 "ast" 0x00 bucket 0x00 seq (u64 BE) op (u32 BE)`      | objects, bytes: i64 LE x2 |
//! | `0x00`     | `0x00 "qst" 0x00 queue 0x00 seq (u64 BE) op (u32 BE)`       | jobs per state: i64 LE x7 |
//! | `0x00`     | `0x00 "mts" 0x00 run 0x00 metric`                          | series entry (metrics)    |
//! | `0x00`     | `0x00 "mtb" 0x00 run 0x00 metric 0x00 step id`             | block of points (metrics) |
//! | `0x01`     | `0x01 collection 0x00 id`                                  | record envelope           |
//! | `0x02`     | `0x02 collection 0x00 index 0x00 enc(v1) .. enc(vn) enc(id)` | id (UTF-8)              |
//! | `0x03`     | `0x03 commit_seq (u64 BE) op_index (u32 BE)`                | change event (JSON)       |
//!
//! `enc` is an order-preserving, self-delimiting encoding of JSON scalars: byte order of encodings is the
//! order of values (null < false < true < numbers < strings < other). A missing field is indexed as null,
//! so records written before a field existed are found by equality on null.

use serde_json::Value;

pub(crate) const CATALOG: &[u8] = b"\x00cat\x00";
pub(crate) const CONSUMERS: &[u8] = b"\x00cur\x00";
/// Highest change sequence trimmed from the feed, u64 LE.
pub(crate) const TRIMMED: &[u8] = b"\x00trimmed";
/// Prefix of the record-count entries (see `counts`).
pub(crate) const COUNTS: &[u8] = b"\x00cnt\x00";
/// Prefix of the artifact store's bucket statistics entries (see `artifacts::stats`).
pub(crate) const ARTIFACT_STATS: &[u8] = b"\x00ast\x00";
/// Prefix of the job queue's count entries (see `queue::counts`).
pub(crate) const QUEUE_STATS: &[u8] = b"\x00qst\x00";
pub(crate) const RECORD: u8 = 0x01;
pub(crate) const INDEX: u8 = 0x02;
pub(crate) const CHANGES: &[u8] = b"\x03";

const TAG_NULL: u8 = 0x10;
const TAG_FALSE: u8 = 0x20;
const TAG_TRUE: u8 = 0x21;
const TAG_NUMBER: u8 = 0x30;
const TAG_STRING: u8 = 0x40;
const TAG_OTHER: u8 = 0x50;

/// The length of the prefix that names `key`'s partition, for the engine's
/// [`table_partitions`](cairn_engine::Options::table_partitions): a collection's records, each of its
/// indexes, the change feed, and each kind of `0x00` entry (the record counts, the metrics' blocks, ...)
/// are partitions of their own, so that a compaction that merges new index entries leaves the tables of
/// records and changes alone.
pub(crate) fn partition_len(key: &[u8]) -> usize {
    // Up to and including the `n`-th zero byte after the first byte, or the whole key.
    let through_zero = |n: usize| {
        key.iter().enumerate().skip(1).filter(|(_, b)| **b == 0).nth(n - 1).map_or(key.len(), |(i, _)| i + 1)
    };
    match key.first() {
        Some(0x00) | Some(&RECORD) => through_zero(1),
        Some(&INDEX) => through_zero(2),
        _ => key.len().min(1),
    }
}

pub(crate) fn catalog_key(collection: &str) -> Vec<u8> {
    [CATALOG, collection.as_bytes()].concat()
}

/// Prefix of the record-count entries of `collection`.
pub(crate) fn count_prefix(collection: &str) -> Vec<u8> {
    [COUNTS, collection.as_bytes(), b"\x00"].concat()
}

pub(crate) fn consumer_key(name: &str) -> Vec<u8> {
    [CONSUMERS, name.as_bytes()].concat()
}

/// Prefix of every record key of `collection`.
pub(crate) fn record_prefix(collection: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(collection.len() + 2);
    k.push(RECORD);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k
}

pub(crate) fn record_key(collection: &str, id: &str) -> Vec<u8> {
    let mut k = record_prefix(collection);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The collection and id a record key names, borrowed from the key.
pub(crate) fn parse_record_key(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(&[RECORD])?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let collection = std::str::from_utf8(rest.get(..sep)?).ok()?;
    let id = std::str::from_utf8(rest.get(sep + 1..)?).ok()?;
    Some((collection, id))
}

/// Prefix of every entry of one index.
pub(crate) fn index_prefix(collection: &str, index: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(collection.len() + index.len() + 3);
    k.push(INDEX);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(index.as_bytes());
    k.push(0);
    k
}

/// An index field as declared: a path, descending when written with a leading `-`.
pub(crate) fn index_field(declared: &str) -> (&str, bool) {
    match declared.strip_prefix('-') {
        Some(path) => (path, true),
        None => (declared, false),
    }
}

/// Appends a field's encoding; for a descending field every byte is inverted, which reverses the order
/// (the encoding is prefix-free, so no encoding is a prefix of another).
pub(crate) fn encode_field(out: &mut Vec<u8>, v: Option<&Value>, descending: bool) {
    let start = out.len();
    encode_value(out, v);
    if descending {
        for b in out.iter_mut().skip(start) {
            *b = !*b;
        }
    }
}

/// The index entry key of a document: its values for `fields`, then its id.
pub(crate) fn index_key(collection: &str, index: &str, fields: &[String], doc: &Value, id: &str) -> Vec<u8> {
    index_key_with(collection, index, fields, |path| field(doc, path), id)
}

/// [`index_key`] of a document whose value at each field path `value_at` gives.
pub(crate) fn index_key_with<'v>(
    collection: &str,
    index: &str,
    fields: &[String],
    value_at: impl Fn(&str) -> Option<&'v Value>,
    id: &str,
) -> Vec<u8> {
    let mut k = index_prefix(collection, index);
    for f in fields {
        let (path, descending) = index_field(f);
        encode_field(&mut k, value_at(path), descending);
    }
    encode_str(&mut k, TAG_STRING, id);
    k
}

/// The value at a dot-separated path of a document, if any.
pub(crate) fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, part| v.get(part))
}

fn encode_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Appends the order-preserving encoding of a field's value (`None`: the field is missing, encoded as null).
#[expect(clippy::big_endian_bytes, reason = "order-preserving encoding: big-endian bytes sort numerically")]
pub(crate) fn encode_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) => out.push(TAG_NULL),
        Some(Value::Bool(false)) => out.push(TAG_FALSE),
        Some(Value::Bool(true)) => out.push(TAG_TRUE),
        Some(Value::Number(n)) => {
            out.push(TAG_NUMBER);
            let f = n.as_f64().unwrap_or(0.0);
            // 0.0 and -0.0 compare equal, so they must encode equally.
            let bits = if f == 0.0 { 0.0f64.to_bits() } else { f.to_bits() };
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Some(Value::String(s)) => encode_str(out, TAG_STRING, s),
        Some(other) => encode_str(out, TAG_OTHER, &other.to_string()),
    }
}

/// The keys after `prefix` whose next field holds a value of `v`'s type, as `[start, end)` (`end` `None`:
/// no bound). Values of other types never compare with `v`, so a range with one bound lies in this region.
pub(crate) fn type_region(prefix: &[u8], v: &Value, descending: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let (first, last) = match v {
        Value::Null => (TAG_NULL, TAG_NULL),
        Value::Bool(_) => (TAG_FALSE, TAG_TRUE),
        Value::Number(_) => (TAG_NUMBER, TAG_NUMBER),
        Value::String(_) => (TAG_STRING, TAG_STRING),
        _ => (TAG_OTHER, TAG_OTHER),
    };
    let (first, last) = if descending { (!last, !first) } else { (first, last) };
    let with = |tag: u8| [prefix, &[tag]].concat();
    (with(first), after_prefix(&with(last)))
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub(crate) fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_of_key_is_a_partition_of_its_own() {
        let part = |k: &[u8]| k.get(..partition_len(k)).unwrap_or_default().to_vec();
        let doc = json!({"status": "PENDING", "owner": "ada"});
        // A collection's records; each of its indexes; another collection's records.
        assert_eq!(part(&record_key("jobs", "j-1")), record_prefix("jobs"));
        assert_eq!(part(&record_key("jobs", "j-2")), record_prefix("jobs"));
        assert_ne!(part(&record_key("runs", "j-1")), record_prefix("jobs"));
        let status = index_key("jobs", "status", &["status".to_owned()], &doc, "j-1");
        let owner = index_key("jobs", "owner", &["owner".to_owned()], &doc, "j-1");
        assert_eq!(part(&status), index_prefix("jobs", "status"));
        assert_eq!(part(&owner), index_prefix("jobs", "owner"));
        // Bookkeeping entries by kind, the change feed as one.
        assert_eq!(part(&[count_prefix("jobs"), vec![0; 12]].concat()), COUNTS);
        assert_eq!(part(&catalog_key("jobs")), CATALOG);
        assert_eq!(part(TRIMMED), TRIMMED);
        assert_eq!(part(&crate::changes::seq_key(7)), CHANGES);
        assert_eq!(partition_len(b""), 0);
    }

    fn enc(v: Option<&Value>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&mut out, v);
        out
    }

    #[test]
    fn encodings_sort_like_values() {
        let values = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-5),
            json!(-0.5),
            json!(0),
            json!(0.25),
            json!(3),
            json!(1_700_000_000_000i64),
            json!(""),
            json!("a"),
            json!("a\u{0}"),
            json!("a\u{0}b"),
            json!("ab"),
            json!("b"),
            json!([1]),
        ];
        assert_eq!(enc(None), enc(Some(&json!(null))), "missing indexes as null");
        let mut prev = Vec::new();
        for v in &values {
            let e = enc(Some(v));
            assert!(prev < e, "{v} must sort after the previous value");
            prev = e;
        }
        assert_eq!(enc(Some(&json!(0.0))), enc(Some(&json!(-0.0))));
    }

    #[test]
    fn composite_keys_sort_field_by_field_then_by_id() {
        let fields = vec!["status".to_owned(), "priority".to_owned()];
        let k = |s: &str, p: i64, id: &str| index_key("jobs", "sp", &fields, &json!({"status": s, "priority": p}), id);
        assert!(k("PENDING", 5, "z") < k("PENDING", 10, "a"));
        assert!(k("PENDING", 10, "a") < k("PENDING", 10, "b"));
        assert!(k("PENDING", 99, "a") < k("RUNNING", 0, "a"));
        // A string value is never a prefix-ambiguity: "a" then id "b" differs from "ab".
        let f1 = vec!["s".to_owned()];
        assert_ne!(
            index_key("c", "i", &f1, &json!({"s": "a"}), "b"),
            index_key("c", "i", &f1, &json!({"s": "ab"}), "")
        );
        assert!(index_key("c", "i", &f1, &json!({"s": "a"}), "b").starts_with(&index_prefix("c", "i")));
    }

    #[test]
    fn descending_fields_reverse_the_order() {
        let fields = vec!["status".to_owned(), "-priority".to_owned()];
        let k = |p: serde_json::Value, id: &str| {
            index_key("jobs", "sp", &fields, &json!({"status": "PENDING", "priority": p}), id)
        };
        assert!(k(json!(10), "z") < k(json!(5), "a"));
        assert!(k(json!(5), "a") < k(json!(5), "b"), "ids still ascend");
        assert!(k(json!(-1), "a") < k(json!(null), "a"), "null sorts last when descending");
        assert!(k(json!("b"), "a") < k(json!("a"), "a") && k(json!("ab"), "a") < k(json!("a"), "a"));
        assert_eq!(index_field("-priority"), ("priority", true));
    }

    #[test]
    fn record_keys_round_trip_and_paths_resolve() {
        let k = record_key("jobs", "job-1/x");
        assert_eq!(parse_record_key(&k), Some(("jobs", "job-1/x")));
        assert!(k.starts_with(&record_prefix("jobs")));
        assert!(!k.starts_with(&record_prefix("job")));
        let doc = json!({"resources": {"gpus": 2}});
        assert_eq!(field(&doc, "resources.gpus"), Some(&json!(2)));
        assert_eq!(field(&doc, "resources.cpus"), None);
        assert_eq!(after_prefix(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(after_prefix(b"\xff"), None);
    }
}
