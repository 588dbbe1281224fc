//! `verify`: the store compared with PostgreSQL or an object store, record by record (counts, versions and
//! document hashes) and metric series by series (point counts and hashes of the points); against an object
//! store, also the artifact objects' bytes at the location.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_store::artifacts::OBJECTS;
use cairn_store::{Store, StoreSnapshot};
use futures_util::{pin_mut, TryStreamExt};
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{Json, Type};

use crate::digest::{record_digest_in, Records, SeriesDigests};
use crate::error::SyncError;
use crate::metrics::local_digests;
use crate::objects::{blob_name, list_blobs, remote_sha256, replay, DigestSink, ObjectLocation, RestoreTarget};
use crate::pg::{connect, remote_digests, table_ref, COLLECTIONS_TABLE};
use crate::progress::Progress;

/// Differences listed in a report, at most (all are counted).
const MAX_LISTED: usize = 100;

/// One record that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// What differs: `missing remotely`, `missing locally`, `version L != R` or `document differs`; for an
    /// artifact object verified against an object store, `bytes missing at the location (blobs/sha256/…)`,
    /// `bytes at the location (…) have N bytes, the record says M` or `bytes at the location (…) do not
    /// match their sha256 (…)`.
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: {}", self.collection, self.id, self.what)
    }
}

/// One metric series that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesDifference {
    /// The run.
    pub run: String,
    /// The metric key.
    pub key: String,
    /// What differs: `missing remotely`, `missing locally`, `L points != R` or `points differ` (same
    /// count, other steps, timestamps or value bits); in PostgreSQL, `value and value_bits disagree at step
    /// S` (a row's `value` is not the `f64` of its `value_bits`).
    pub what: String,
}

impl std::fmt::Display for SeriesDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metrics {}/{}: {}", self.run, self.key, self.what)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the store.
    pub local_records: u64,
    /// Records at the other end.
    pub remote_records: u64,
    /// Records that differ (missing on either side, other version, other document).
    pub differences: u64,
    /// The first differences, in collection and id order (at most 100).
    pub listed: Vec<Difference>,
    /// Artifact objects whose bytes were checked at the location (object stores only).
    pub blobs: u64,
    /// Metrics were compared: the other end carries them (PostgreSQL: the table `cairn_metrics` exists;
    /// object store: the newest snapshot has metrics). Exports that left them out carry none.
    pub metrics: bool,
    /// Metric series in the store (when compared).
    pub local_series: u64,
    /// Metric series at the other end.
    pub remote_series: u64,
    /// Metric points in the store (when compared).
    pub local_points: u64,
    /// Metric points at the other end.
    pub remote_points: u64,
    /// Metric series that differ.
    pub series_differences: u64,
    /// The first of them, in run and key order (at most 100).
    pub listed_series: Vec<SeriesDifference>,
}

/// How [`verify_objects`] checks the artifact objects' bytes at the location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BlobCheck {
    /// Each object's blob is listed at the location with the object's size: one listing, no byte read.
    #[default]
    Listed,
    /// As `Listed`, and every blob is downloaded and its SHA-256 compared with its name (reads every byte).
    Sha256,
}

impl VerifyReport {
    /// Both sides hold the same records with the same versions and documents, and (when compared) the
    /// same metric series with the same points.
    pub fn equal(&self) -> bool {
        self.differences == 0 && self.series_differences == 0
    }

    fn note_series(&mut self, (run, key): &(String, String), what: String) {
        self.series_differences += 1;
        if self.listed_series.len() < MAX_LISTED {
            self.listed_series.push(SeriesDifference { run: run.clone(), key: key.clone(), what });
        }
    }

    /// Compares the metric series of both sides; `disagree` are remote series whose stored values
    /// disagree with their bits, at the step given.
    fn compare_metrics(
        &mut self,
        local: &SeriesDigests,
        remote: &SeriesDigests,
        disagree: &BTreeMap<(String, String), i64>,
    ) {
        self.metrics = true;
        self.local_series = local.len() as u64;
        self.remote_series = remote.len() as u64;
        self.local_points = local.values().map(|v| v.0).sum();
        self.remote_points = remote.values().map(|v| v.0).sum();
        let ids: BTreeSet<&(String, String)> = local.keys().chain(remote.keys()).collect();
        for id in ids {
            let what = match (local.get(id), remote.get(id)) {
                (Some(_), None) => Some("missing remotely".to_owned()),
                (None, Some(_)) => Some("missing locally".to_owned()),
                (Some((l, _)), Some((r, _))) if l != r => Some(format!("{l} points != {r}")),
                (Some((_, l)), Some((_, r))) if l != r => Some("points differ".to_owned()),
                _ => disagree.get(id).map(|step| format!("value and value_bits disagree at step {step}")),
            };
            if let Some(what) = what {
                self.note_series(id, what);
            }
        }
    }

    fn note(&mut self, collection: &str, id: &str, what: String) {
        self.differences += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(Difference { collection: collection.to_owned(), id: id.to_owned(), what });
        }
    }
}

/// Every record of the store at one snapshot, and the names of the collections declared at it; and the
/// snapshot, to read the metrics at the same sequence.
fn local(store: &Store) -> Result<(Records, Vec<String>, StoreSnapshot), SyncError> {
    let snap = store.snapshot();
    let mut out = Records::new();
    let mut names = Vec::new();
    for spec in crate::exported(snap.collections()?) {
        for r in snap.records(&spec.name, None)? {
            let r = r?;
            out.insert((spec.name.clone(), r.id), (r.version, record_digest_in(&spec.name, r.version, &r.doc)));
        }
        names.push(spec.name);
    }
    Ok((out, names, snap))
}

fn compare(local: &Records, remote: &Records) -> VerifyReport {
    let mut report =
        VerifyReport { local_records: local.len() as u64, remote_records: remote.len() as u64, ..Default::default() };
    for ((collection, id), (version, digest)) in local {
        match remote.get(&(collection.clone(), id.clone())) {
            None => report.note(collection, id, "missing remotely".to_owned()),
            Some((v, _)) if v != version => report.note(collection, id, format!("version {version} != {v}")),
            Some((_, d)) if d != digest => report.note(collection, id, "document differs".to_owned()),
            Some(_) => {}
        }
    }
    for (collection, id) in remote.keys() {
        if !local.contains_key(&(collection.clone(), id.clone())) {
            report.note(collection, id, "missing locally".to_owned());
        }
    }
    report.listed.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    report
}

/// Compares the store with the tables `export_postgres` wrote to `schema` at `url`. Collections on either
/// side count: a collection without a table has all its records missing remotely. The metrics are compared
/// when the schema has the metrics tables: every series' point count and the digest of its points in
/// history order (steps, timestamps and value bits).
pub async fn verify_postgres(store: &Store, url: &str, schema: &str) -> Result<VerifyReport, SyncError> {
    let (mine, mut names, snap) = local(store)?;
    let client = connect(url).await?;
    let listed =
        client.query(&format!("SELECT name FROM {} ORDER BY name", table_ref(schema, COLLECTIONS_TABLE)), &[]).await?;
    for row in listed {
        names.push(row.try_get(0)?);
    }
    names.sort();
    names.dedup();
    let mut theirs = Records::new();
    for name in names {
        let table = table_ref(schema, &name);
        let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await?.try_get(0)?;
        if !exists {
            continue;
        }
        let stream =
            client.copy_out(&format!("COPY (SELECT id, version, doc FROM {table}) TO STDOUT (FORMAT binary)")).await?;
        let rows = BinaryCopyOutStream::new(stream, &[Type::TEXT, Type::INT8, Type::JSONB]);
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let id: String = row.try_get(0)?;
            let version = u64::try_from(row.try_get::<i64>(1)?).unwrap_or(0);
            let Json(doc): Json<Value> = row.try_get(2)?;
            theirs.insert((name.clone(), id), (version, record_digest_in(&name, version, &doc)));
        }
    }
    let mut report = compare(&mine, &theirs);
    if let Some((remote, disagree)) = remote_digests(&client, schema).await? {
        report.compare_metrics(&local_digests(&snap)?, &remote, &disagree);
    }
    Ok(report)
}

/// Compares the store with the newest state `location` holds (its newest snapshot and every segment after
/// it), checking every checksum on the way; then checks that the bytes of every artifact object of that
/// state are at the location, as `blobs` says. An artifact object's blob pointers (`segments`) do not
/// count in the comparison: they name one machine's blob files. The metrics are compared with those of the
/// newest snapshot, when it has any (segments carry none: metrics logged since differ).
pub async fn verify_objects(
    store: &Store,
    location: &ObjectLocation,
    blobs: BlobCheck,
) -> Result<VerifyReport, SyncError> {
    let (mine, _, snap) = local(store)?;
    let mut sink = DigestSink::default();
    let replayed = replay(location, RestoreTarget::Latest, &mut sink, &Progress::hidden()).await?;
    let mut report = compare(&mine, &sink.records);
    if replayed.with_metrics {
        report.compare_metrics(&local_digests(&snap)?, &sink.metrics.finish(), &BTreeMap::new());
    }
    if sink.objects.is_empty() {
        return Ok(report);
    }
    let listed = list_blobs(location).await?;
    // SHA-256 → what is wrong with the blob's bytes, for blobs downloaded once already.
    let mut hashed: HashMap<String, Option<String>> = HashMap::new();
    for (id, (sha256, size)) in &sink.objects {
        let name = blob_name(sha256);
        report.blobs += 1;
        let problem = match listed.get(sha256) {
            None => Some(format!("bytes missing at the location ({name})")),
            Some(&n) if n != *size => {
                Some(format!("bytes at the location ({name}) have {n} bytes, the record says {size}"))
            }
            Some(_) if blobs == BlobCheck::Sha256 => match hashed.get(sha256) {
                Some(known) => known.clone(),
                None => {
                    let found = match remote_sha256(location, sha256).await? {
                        None => Some(format!("bytes missing at the location ({name})")),
                        Some((found, _)) if found != *sha256 => {
                            Some(format!("bytes at the location ({name}) do not match their sha256 ({found})"))
                        }
                        Some(_) => None,
                    };
                    hashed.insert(sha256.clone(), found.clone());
                    found
                }
            },
            Some(_) => None,
        };
        if let Some(what) = problem {
            report.note(OBJECTS, id, what);
        }
    }
    report.listed.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    Ok(report)
}
