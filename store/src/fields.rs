//! A document's indexed fields, read without building a JSON tree of the whole document: from a typed
//! record as it serializes ([`capture_paths`]: only the fields on an indexed path are serialized, into
//! small JSON values), or from a document's JSON text ([`read_paths`]: the values at the indexed paths are
//! parsed, every other value is skipped as it is read).

use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};
use serde_json::Value;

use crate::keys;

/// Paths read in one pass at most; more fall back to parsing the whole document.
const MAX_PATHS: usize = 64;

/// The values of `doc` (a JSON object's text) at each of `paths` (dot-separated field names, as
/// [`keys::field`] resolves them on a parsed document), in order: `None` where a path is missing. Fails if
/// `doc` is not valid JSON or not an object. A key repeated in an object resolves to its last value, as
/// when the whole document is parsed.
pub(crate) fn read_paths(doc: &[u8], paths: &[&str]) -> Result<Vec<Option<Value>>, serde_json::Error> {
    let mut out = vec![None; paths.len()];
    if paths.len() > MAX_PATHS {
        let tree: Value = serde_json::from_slice(doc)?;
        if !tree.is_object() {
            return Err(serde_json::Error::custom("not a JSON object"));
        }
        for (slot, path) in out.iter_mut().zip(paths) {
            *slot = keys::field(&tree, path).cloned();
        }
        return Ok(out);
    }
    let active = Active::top(paths);
    // One check of the whole text is cheaper than one per string, which a parse of bytes makes.
    let text = std::str::from_utf8(doc).map_err(|e| serde_json::Error::custom(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Object { active: &active, out: &mut out })?;
    de.end()?;
    Ok(out)
}

/// The values of `record`'s serde form at each of `paths`, as [`read_paths`] would read them from its JSON
/// text, found while serializing only the fields on those paths. `None` when the record is not a struct or
/// a map with string keys (then its JSON text tells, and may not be an object at all) or a field on a path
/// does not serialize to a JSON value.
pub(crate) fn capture_paths<T: Serialize + ?Sized>(record: &T, paths: &[&str]) -> Option<Vec<Option<Value>>> {
    if paths.len() > MAX_PATHS {
        return None;
    }
    let active = Active::top(paths);
    let mut capture = Capture { active: &active, out: vec![None; paths.len()], key: None };
    record.serialize(&mut capture).ok()?;
    Some(capture.out)
}

/// Serializes a record's top level, keeping the values of the fields on the `active` paths.
struct Capture<'a, 'p> {
    active: &'a [Active<'p>],
    out: Vec<Option<Value>>,
    /// The key of the map entry whose value comes next.
    key: Option<String>,
}

impl Capture<'_, '_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Unsupported> {
        let m = KeyMatch::of(self.active, key);
        if m.leaf == 0 && m.deeper == 0 {
            return Ok(());
        }
        let v = value.serialize(serde_json::value::Serializer).map_err(|_| Unsupported)?;
        assign(self.active, &mut self.out, &m, &v);
        Ok(())
    }
}

/// Why a record's fields were not captured; its JSON text is read instead.
#[derive(Debug)]
struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a struct or a map with string keys")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Unsupported
    }
}

impl Serializer for &mut Capture<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Unsupported> {
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Unsupported> {
        Ok(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_i64(self, _: i64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_u64(self, _: u64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_i8(self, _: i8) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_i16(self, _: i16) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_i32(self, _: i32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_u8(self, _: u8) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_u16(self, _: u16) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_u32(self, _: u32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_f32(self, _: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_f64(self, _: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_char(self, _: char) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_str(self, _: &str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

impl ser::SerializeStruct for &mut Capture<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Unsupported> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), Unsupported> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Capture<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        match key.serialize(serde_json::value::Serializer) {
            Ok(Value::String(k)) => {
                self.key = Some(k);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        let key = self.key.take().ok_or(Unsupported)?;
        self.field(&key, value)
    }

    fn end(self) -> Result<(), Unsupported> {
        Ok(())
    }
}

/// A path still being matched: its output slot and the part of it below the current object.
#[derive(Clone, Copy)]
struct Active<'p> {
    slot: usize,
    rest: &'p str,
}

impl<'p> Active<'p> {
    /// Every path, whole, at the document's top level; path `i` fills slot `i`.
    fn top(paths: &[&'p str]) -> Vec<Self> {
        paths.iter().enumerate().map(|(slot, rest)| Active { slot, rest }).collect()
    }
}

/// Which active paths a key of the current object starts: bit `i` is `active[i]`.
#[derive(Default)]
struct KeyMatch {
    /// Paths that end at this key.
    leaf: u64,
    /// Paths that continue below this key.
    deeper: u64,
    key_len: usize,
}

impl KeyMatch {
    fn of(active: &[Active<'_>], key: &str) -> Self {
        let mut m = KeyMatch { key_len: key.len(), ..KeyMatch::default() };
        for (i, a) in active.iter().enumerate() {
            if let Some(r) = a.rest.strip_prefix(key) {
                if r.is_empty() {
                    m.leaf |= 1 << i;
                } else if r.starts_with('.') {
                    m.deeper |= 1 << i;
                }
            }
        }
        // A path's parts never contain a dot, so a key with one matches nothing.
        if (m.leaf | m.deeper) != 0 && key.contains('.') {
            return KeyMatch::default();
        }
        m
    }
}

impl KeyMatch {
    /// Active path `i` as it continues below the matched key.
    fn below<'p>(&self, active: &[Active<'p>], i: usize) -> Option<Active<'p>> {
        let a = active.get(i)?;
        Some(Active { slot: a.slot, rest: a.rest.get(self.key_len + 1..)? })
    }
}

/// Fills the slots of the paths `m` matched at a key whose value is `v`: a path ending at the key gets
/// `v`, one continuing below it what `v` holds there (nothing below a scalar or an array). A repeated key
/// replaces the earlier value whole, as in a parsed document.
fn assign(active: &[Active<'_>], out: &mut [Option<Value>], m: &KeyMatch, v: &Value) {
    for a in bits(m.deeper).filter_map(|i| m.below(active, i)) {
        if let Some(slot) = out.get_mut(a.slot) {
            *slot = keys::field(v, a.rest).cloned();
        }
    }
    for i in bits(m.leaf) {
        if let Some(slot) = active.get(i).and_then(|a| out.get_mut(a.slot)) {
            *slot = Some(v.clone());
        }
    }
}

/// The positions of the set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let i = mask.trailing_zeros();
        mask &= mask.checked_sub(1)?;
        Some(i as usize)
    })
}

/// Reads an object's keys as [`KeyMatch`]es without copying them.
struct Key<'a, 'p> {
    active: &'a [Active<'p>],
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = KeyMatch;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyMatch, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = KeyMatch;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<KeyMatch, E> {
        Ok(KeyMatch::of(self.active, key))
    }
}

/// An object whose fields hold the `active` paths; fills their slots of `out`.
struct Object<'a, 'p> {
    active: &'a [Active<'p>],
    out: &'a mut [Option<Value>],
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(m) = map.next_key_seed(Key { active: self.active })? {
            if m.leaf == 0 && m.deeper == 0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if m.leaf != 0 {
                let v: Value = map.next_value()?;
                assign(self.active, self.out, &m, &v);
            } else {
                // A repeated key replaces the earlier value whole, so what was found below it is forgotten.
                let nested: Vec<Active<'_>> = bits(m.deeper).filter_map(|i| m.below(self.active, i)).collect();
                for a in &nested {
                    if let Some(slot) = self.out.get_mut(a.slot) {
                        *slot = None;
                    }
                }
                map.next_value_seed(Nested { active: &nested, out: &mut *self.out })?;
            }
        }
        Ok(())
    }
}

/// A value below which paths continue: searched if it is an object, skipped otherwise (the paths are then
/// missing, as [`keys::field`] finds nothing below a scalar or an array).
struct Nested<'a, 'p> {
    active: &'a [Active<'p>],
    out: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Nested<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Object { active: self.active, out: self.out }.visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::json;

    fn expected(doc: &Value, paths: &[&str]) -> Vec<Option<Value>> {
        paths.iter().map(|p| keys::field(doc, p).cloned()).collect()
    }

    #[test]
    fn reads_top_level_nested_and_missing_paths() {
        let doc = json!({
            "status": "PENDING", "priority": 7, "skip": {"a": [1, {"b": "x\"y"}]},
            "resources": {"gpus": 2, "gpu_type": null, "deep": {"x": true}}, "tags": ["a", "b"], "n": 1.5
        });
        let paths = [
            "status",
            "priority",
            "resources.gpus",
            "resources",
            "resources.deep.x",
            "resources.cpus",
            "tags",
            "tags.0",
            "n.x",
            "absent",
            "status",
        ];
        let text = serde_json::to_vec(&doc).unwrap();
        assert_eq!(read_paths(&text, &paths).unwrap(), expected(&doc, &paths));
    }

    #[test]
    fn repeated_keys_resolve_to_the_last_value_as_a_parsed_document_does() {
        let text = br#"{"a": {"b": 1, "c": 2}, "x": 1, "a": {"b": 3}, "x": 2, "s": {"t": 1}, "s": 5}"#;
        let doc: Value = serde_json::from_slice(text).unwrap();
        let paths = ["a.b", "a.c", "x", "s.t"];
        assert_eq!(read_paths(text, &paths).unwrap(), expected(&doc, &paths));
        assert_eq!(read_paths(text, &paths).unwrap(), vec![Some(json!(3)), None, Some(json!(2)), None]);
    }

    #[test]
    fn keys_with_dots_and_escapes_match_as_parsed_documents_do() {
        let text = br#"{"a.b": 1, "a": {"b": 2}, "\u0073": "esc", "": {"": 4}}"#;
        let doc: Value = serde_json::from_slice(text).unwrap();
        let paths = ["a.b", "s", ".", ""];
        assert_eq!(read_paths(text, &paths).unwrap(), expected(&doc, &paths));
        assert_eq!(read_paths(text, &["a.b", "s"]).unwrap(), vec![Some(json!(2)), Some(json!("esc"))]);
    }

    #[test]
    fn rejects_what_is_not_one_json_object() {
        for bad in [&b"[1, 2]"[..], b"\"s\"", b"3", b"null", b"{\"a\": 1", b"{\"a\": 1} x", b""] {
            assert!(read_paths(bad, &["a"]).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(read_paths(b" {\"a\": 1} ", &["a"]).unwrap(), vec![Some(json!(1))]);
    }

    #[test]
    fn many_paths_fall_back_to_the_parsed_document() {
        let doc = json!({"f3": 3, "g": {"f70": 70}});
        let names: Vec<String> =
            (0..MAX_PATHS + 10).map(|i| if i < 66 { format!("f{i}") } else { format!("g.f{i}") }).collect();
        let paths: Vec<&str> = names.iter().map(String::as_str).collect();
        let got = read_paths(&serde_json::to_vec(&doc).unwrap(), &paths).unwrap();
        assert_eq!(got, expected(&doc, &paths));
        assert!(read_paths(b"[1]", &paths).is_err());
    }

    /// Both ways of reading `paths` of `record`, which must agree with its parsed JSON text.
    fn both<T: Serialize>(record: &T, paths: &[&str]) -> (Option<Vec<Option<Value>>>, Vec<Option<Value>>) {
        let text = serde_json::to_vec(record).unwrap();
        let parsed: Value = serde_json::from_slice(&text).unwrap();
        let read = read_paths(&text, paths).unwrap();
        assert_eq!(read, expected(&parsed, paths));
        (capture_paths(record, paths), read)
    }

    #[test]
    fn captures_what_the_serialized_text_holds() {
        #[derive(Serialize)]
        struct Resources {
            gpus: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            gpu_type: Option<String>,
        }
        #[derive(Serialize)]
        struct Extra {
            zone: &'static str,
        }
        #[derive(Serialize)]
        struct Rec {
            status: &'static str,
            #[serde(rename = "prio")]
            priority: i64,
            resources: Resources,
            #[serde(rename = "a.b")]
            dotted: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            absent: Option<u8>,
            score: f64,
            tags: Vec<&'static str>,
            #[serde(flatten)]
            extra: Extra,
        }
        let rec = Rec {
            status: "PENDING",
            priority: -3,
            resources: Resources { gpus: 2, gpu_type: None },
            dotted: 1,
            absent: None,
            score: 0.1 + 0.2,
            tags: vec!["x"],
            extra: Extra { zone: "eu" },
        };
        let paths = [
            "status",
            "prio",
            "priority",
            "resources.gpus",
            "resources.gpu_type",
            "resources",
            "a.b",
            "absent",
            "score",
            "tags",
            "zone",
            "status.x",
        ];
        let (captured, read) = both(&rec, &paths);
        assert_eq!(captured, Some(read.clone()));
        assert_eq!(read.first(), Some(&Some(json!("PENDING"))));
        // A newtype around a record is its record; a map with string keys is read as an object.
        #[derive(Serialize)]
        struct Wrapped(Rec);
        let (captured, read) = both(&Wrapped(rec), &paths);
        assert_eq!(captured, Some(read));
        let map = std::collections::BTreeMap::from([("status", 1), ("zone", 2)]);
        let (captured, read) = both(&map, &paths);
        assert_eq!(captured, Some(read));
    }

    #[test]
    fn leaves_to_the_text_what_is_not_a_plain_struct_or_map() {
        #[derive(Serialize)]
        enum Shape {
            Circle { status: &'static str },
        }
        let int_keys = std::collections::BTreeMap::from([(1, "a"), (2, "b")]);
        let paths = ["status", "1"];
        assert_eq!(capture_paths(&Shape::Circle { status: "x" }, &paths), None);
        assert_eq!(capture_paths(&int_keys, &paths), None);
        assert_eq!(both(&int_keys, &paths).1, vec![None, Some(json!("a"))]);
        assert_eq!(capture_paths(&Some(json!({"status": 1})), &paths), None);
        assert_eq!(capture_paths("status", &paths), None);
        assert_eq!(capture_paths(&[1, 2], &paths), None);
        assert_eq!(capture_paths(&(), &paths), None);
        // A field that serde_json cannot represent as a value leaves the record to its text too.
        let huge = std::collections::BTreeMap::from([("status", u128::MAX)]);
        assert_eq!(capture_paths(&huge, &paths), None);
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(capture_paths(&json!({"f1": 1}), &many), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c", "a.b", ""]).prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-c\"\\\\]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_the_parsed_document(
            fields in prop::collection::btree_map("[abc]", json_value(), 0..5),
            paths in prop::collection::vec("[abc]{1,2}(\\.[abc]{1,2}){0,2}", 1..8),
        ) {
            let doc = Value::Object(fields.into_iter().collect());
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let text = serde_json::to_vec(&doc).unwrap();
            prop_assert_eq!(read_paths(&text, &paths).unwrap(), expected(&doc, &paths));
            prop_assert_eq!(capture_paths(&doc, &paths), Some(expected(&doc, &paths)));
        }
    }
}
