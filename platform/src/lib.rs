//! The compute platform's built-in record types: jobs; ML experiments with their runs, model versions and
//! templates; host templates, host requests and the machines that fulfil them. They sit on Cairn's record
//! store (`cairn-store`); the server, the demo and the benchmarks use them. What this crate is not: a
//! storage layer: reading, writing, querying and claiming are the record store's (a worker takes jobs from
//! the store's job queue, `cairn_store::queue`, or claims records with `Collection::claim`).
//!
//! Each type implements [`Record`](cairn_store::Record): a collection name, a primary key and the
//! secondary indexes its queries need, and each status type its lifecycle.
//!
//! Collections and their indexes (index name, then its fields when they differ from the name):
//!
//! - [`Job`] in `jobs`: `status`, `owner`, `project`, `status_priority` (status, priority descending),
//!   `project_created` (project, created_at), `status_lease` (status, lease_expires_at).
//! - [`Experiment`] in `experiments`: `owner`, `project`, `status`, `project_created` (project, created_at).
//! - [`Run`] in `runs`: `experiment_created` (experiment_id, created_at), `status`.
//! - [`ModelVersion`] in `model_versions`: `model_version` (model_name, version), `experiment_id`, `stage`.
//! - [`ExperimentTemplate`] in `experiment_templates`: `name`.
//! - [`HostTemplate`] in `host_templates`: `name`.
//! - [`HostRequest`] in `host_requests`: `template_created` (template_id, created_at), `status`.
//! - [`Machine`] in `machines`: `request_created` (request_id, created_at), `status`.
//!
//! # Conventions
//!
//! - Ids are strings chosen by the application; references to other records (`experiment_id`,
//!   `template_id`, ...) hold the other record's id.
//! - Timestamps are `i64` milliseconds since the Unix epoch, in fields whose names end in `_at`. They are the
//!   domain's times, set by the application; the store's own bookkeeping (`created_at_ms` and
//!   `updated_at_ms` of a stored record) is separate.
//! - An absent optional value serializes as `null` rather than being left out, so every field an index names
//!   is present in every document.
//! - Schema evolution: the fields that define a record, which every writer has always set (ids and
//!   references, names, owners, status or stage, sizes, `created_at` and `updated_at`), are required; the
//!   rest (optional values, maps and lists, counters, priorities, descriptions, metrics) are
//!   `#[serde(default)]`, so documents from older writers decode. Unknown fields are ignored, so documents
//!   from newer writers decode too, unless they hold an enum value this version does not know (a status
//!   added later fails to decode; [`Framework`] falls back to `OTHER`). Field names and enum names never
//!   change meaning once written.
//! - Status types serialize as upper-case names (`"PENDING"`) and carry their lifecycle: `next_states`,
//!   `can_transition_to`, `is_terminal` (see each type's state diagram).
//! - Metric maps ([`Run::metrics`], [`ModelVersion::metrics`]) may hold NaN, common in training: JSON has no
//!   NaN and serde_json writes it as `null`, so these maps read `null` back as NaN.

mod experiment;
mod host;
mod job;
mod status;

pub use experiment::{
    Experiment, ExperimentStatus, ExperimentTemplate, Framework, ModelStage, ModelVersion, Run, RunStatus,
};
pub use host::{HostRequest, HostRequestStatus, HostTemplate, Machine, MachineStatus};
pub use job::{Environment, Job, JobMetrics, JobStatus, Resources};
pub use status::ParseStatusError;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Deserializes a metric map in which `null` stands for NaN. serde_json writes non-finite floats (NaN,
/// infinities) as `null`; without this a single diverged loss would make the whole record unreadable.
fn metrics_with_nulls<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(name, value)| (name, value.unwrap_or(f64::NAN))).collect())
}

/// Checks shared by every record type's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;

    use serde_json::Value;

    use cairn_store::Record;

    /// A collection or index name: ASCII letters, digits, `_` and `-`, 1 to 64 bytes.
    fn is_valid_name(name: &str) -> bool {
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// The value at a dot-separated path of `doc`, if every step exists (a `null` leaf counts as present).
    pub(crate) fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(doc, |value, segment| value.as_object()?.get(segment))
    }

    /// Asserts that `R`'s declarations are well formed and fit `sample`: the collection and index names are
    /// valid and unique, every index field path exists in the sample's JSON object, the `id` field is the
    /// primary key, and the record survives a round trip through JSON text.
    pub(crate) fn check_record<R: Record + PartialEq + Debug>(sample: &R) {
        assert!(is_valid_name(R::COLLECTION), "collection name {:?}", R::COLLECTION);
        let doc = serde_json::to_value(sample).unwrap();
        assert!(doc.is_object(), "{} documents must be JSON objects", R::COLLECTION);
        assert_eq!(doc.get("id"), Some(&Value::String(sample.id())), "the id field is the primary key");

        let indexes = R::indexes();
        for (i, index) in indexes.iter().enumerate() {
            assert!(is_valid_name(&index.name), "index name {:?}", index.name);
            assert!(indexes.iter().skip(i + 1).all(|other| other.name != index.name), "duplicate index {}", index.name);
            assert!(!index.fields.is_empty(), "index {} has no fields", index.name);
            for field in &index.fields {
                let field = field.strip_prefix('-').unwrap_or(field);
                assert!(
                    lookup(&doc, field).is_some(),
                    "index {}.{}: field path {field:?} is not in the serialized record {doc}",
                    R::COLLECTION,
                    index.name
                );
            }
        }

        let text = serde_json::to_string(sample).unwrap();
        assert_eq!(&serde_json::from_str::<R>(&text).unwrap(), sample, "round trip through {text}");
    }

    #[test]
    fn lookup_walks_dot_paths() {
        let doc = serde_json::json!({"a": {"b": {"c": 1}, "n": null}, "x": 2});
        assert_eq!(lookup(&doc, "a.b.c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&doc, "a.n"), Some(&Value::Null));
        assert_eq!(lookup(&doc, "x"), Some(&serde_json::json!(2)));
        assert_eq!(lookup(&doc, "a.b.d"), None);
        assert_eq!(lookup(&doc, "x.y"), None);
        assert_eq!(lookup(&doc, "a."), None);
    }
}
