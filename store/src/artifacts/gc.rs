//! Maintenance: retention (objects past their bucket's age limit are deleted), garbage collection of blob
//! files, and the check of every object's bytes.
//!
//! Garbage collection finds the blobs that records point to (objects and uploaded parts) and, per blob
//! file that is no longer appended to: removes it when nothing points into it; when at least
//! `gc_garbage_ratio` of it is garbage, copies its live blobs into new blobs, points their records at the
//! copies (a record changed meanwhile keeps its old blob: that file stays for the next round), and removes
//! it. The decision to remove is taken with new references held off (`Inner::references`, which every
//! commit adding a reference holds shared) from a snapshot taken after that, so that no record can come to
//! point into a removed file; a file pinned by a writer not yet committed, or by a reader, is left alone.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_engine::BlobRef;

use crate::keys;

use super::buckets::{decode, encode};
use super::digest::io_storage;
use super::model::{ArtifactCheckReport, BucketDoc, GcReport, ObjectDoc, PartDoc, Segment};
use super::names::{object_id, BUCKETS, OBJECTS, PARTS, UPLOADS};
use super::{now_ms, stats, ArtifactError, Artifacts};

const DAY_MS: i64 = 86_400_000;

/// A record that points to blobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Referrer {
    Object(String),
    Part(String),
}

/// Every blob records point to at the current state, by file: the blob and who points to it.
fn references(artifacts: &Artifacts) -> Result<BTreeMap<u64, Vec<(BlobRef, Referrer)>>, ArtifactError> {
    let snap = artifacts.inner.store.db().snapshot();
    let mut out: BTreeMap<u64, Vec<(BlobRef, Referrer)>> = BTreeMap::new();
    for pair in snap.prefix(keys::record_prefix(OBJECTS))? {
        let (k, v) = pair?;
        let e = crate::envelope::decode_as::<ObjectDoc>(&k, &v)?;
        let id = object_id(&e.doc.bucket, &e.doc.key);
        for s in &e.doc.segments {
            out.entry(s.0).or_default().push((s.blob(), Referrer::Object(id.clone())));
        }
    }
    for pair in snap.prefix(keys::record_prefix(PARTS))? {
        let (k, v) = pair?;
        let e = crate::envelope::decode_as::<PartDoc>(&k, &v)?;
        let id = super::names::part_id(&e.doc.upload_id, e.doc.part_number);
        out.entry(e.doc.segment.0).or_default().push((e.doc.segment.blob(), Referrer::Part(id)));
    }
    Ok(out)
}

impl Artifacts {
    /// Deletes the objects older than their bucket's retention; returns how many.
    pub fn expire(&self) -> Result<u64, ArtifactError> {
        let now = now_ms();
        let mut expired = 0;
        let snap = self.inner.store.db().snapshot();
        let mut buckets = Vec::new();
        for pair in snap.prefix(keys::record_prefix(BUCKETS))? {
            let (k, v) = pair?;
            let doc = crate::envelope::decode_as::<BucketDoc>(&k, &v)?.doc;
            if let Some(days) = doc.retention_days {
                buckets.push((doc.name, now - i64::from(days) * DAY_MS));
            }
        }
        for (bucket, cutoff) in buckets {
            let mut old = Vec::new();
            for pair in snap.prefix(keys::record_key(OBJECTS, &object_id(&bucket, "")))? {
                let (k, v) = pair?;
                let doc = crate::envelope::decode_as::<ObjectDoc>(&k, &v)?.doc;
                if doc.modified_ms < cutoff {
                    old.push(doc.key);
                }
            }
            for key in old {
                let id = object_id(&bucket, &key);
                // Deleted only if still old: an object written again meanwhile stays.
                let deleted = self.commit(|tx| {
                    let Some(stored) = tx.get_doc(OBJECTS, &id)? else { return Ok(false) };
                    let doc: ObjectDoc = decode(stored.doc, &id)?;
                    if doc.modified_ms >= cutoff {
                        return Ok(false);
                    }
                    tx.delete_doc(OBJECTS, &id, None)?;
                    stats::add(tx, &bucket, -1, -(doc.size as i64));
                    Ok(true)
                })?;
                expired += u64::from(deleted);
            }
        }
        Ok(expired)
    }

    /// Removes parts whose upload is gone (a part committed just before its upload was completed or
    /// aborted), so that their blobs become garbage.
    fn remove_orphan_parts(&self) -> Result<(), ArtifactError> {
        let snap = self.inner.store.db().snapshot();
        let mut orphans = Vec::new();
        for pair in snap.prefix(keys::record_prefix(PARTS))? {
            let (k, v) = pair?;
            let doc = crate::envelope::decode_as::<PartDoc>(&k, &v)?.doc;
            if snap.get(keys::record_key(UPLOADS, &doc.upload_id))?.is_none() {
                orphans.push(super::names::part_id(&doc.upload_id, doc.part_number));
            }
        }
        for id in orphans {
            self.commit(|tx| {
                let Some(part) = tx.get_doc(PARTS, &id)? else { return Ok(()) };
                let part: PartDoc = decode(part.doc, &id)?;
                if tx.get_doc(UPLOADS, &part.upload_id)?.is_none() {
                    tx.delete_doc(PARTS, &id, None)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Collects garbage in the blob files now (the maintenance thread does it every interval).
    pub fn collect_garbage(&self) -> Result<GcReport, ArtifactError> {
        let _collecting = self.inner.collecting.lock();
        self.remove_orphan_parts()?;
        let mut report = GcReport::default();
        let all = self.inner.blobs.files();
        let refs = references(self)?;
        let ratio = self.inner.opts.gc_garbage_ratio;
        let live_in = |file: u64| -> u64 {
            refs.get(&file).map_or(0, |r| {
                let distinct: HashSet<BlobRef> = r.iter().map(|(b, _)| *b).collect();
                distinct.iter().map(|b| b.len).sum()
            })
        };
        let worth_rewriting =
            |len: u64, live: u64| ratio < 1.0 && (len.saturating_sub(live)) as f64 >= ratio * len as f64;
        let mut files: Vec<_> = all.iter().filter(|f| !f.active).copied().collect();
        // The shared file is sealed once it is an eighth of its full size and holds enough garbage, so that
        // it is collected now rather than after it fills (appends in flight finish in it; their blobs are not
        // in `refs`, so they are not moved, and they keep the file from being removed).
        if let Some(shared) = self.inner.blobs.shared_file() {
            let long_enough = |len: u64| len >= self.inner.blobs.options().shared_file_size() / 8;
            if let Some(f) = all.iter().find(|f| f.number == shared) {
                if long_enough(f.len) && worth_rewriting(f.len, live_in(shared)) && self.inner.blobs.seal_shared(shared)
                {
                    files.push(*f);
                }
            }
        }
        let mut candidates = Vec::new();
        for f in &files {
            let live = live_in(f.number);
            if live == 0 {
                candidates.push(f.number);
            } else if worth_rewriting(f.len, live) {
                if let Some(r) = refs.get(&f.number) {
                    report.blobs_moved += self.relocate(r)?;
                }
                candidates.push(f.number);
            }
        }
        // Removal: no commit adds a reference meanwhile, and the references are read after that.
        let mut live_bytes = 0;
        {
            let _no_new_references = self.inner.references.write();
            let now = references(self)?;
            for number in candidates {
                if now.contains_key(&number) {
                    continue;
                }
                let len = files.iter().find(|f| f.number == number).map_or(0, |f| f.len);
                // Refused while a writer or a reader holds the file: it is retried at the next round.
                if self.inner.blobs.remove_file(number).is_ok() {
                    report.files_removed += 1;
                    report.bytes_reclaimed += len;
                }
            }
            for r in now.values() {
                let distinct: HashSet<BlobRef> = r.iter().map(|(b, _)| *b).collect();
                live_bytes += distinct.iter().map(|b| b.len).sum::<u64>();
            }
        }
        let mut m = self.inner.maintenance.lock();
        m.live_bytes = live_bytes;
        m.last_gc_ms = Some(now_ms());
        Ok(report)
    }

    /// Copies each blob of `refs` once into a new blob and points its records at the copy. Returns how
    /// many blobs were copied.
    fn relocate(&self, refs: &[(BlobRef, Referrer)]) -> Result<u64, ArtifactError> {
        let mut by_blob: HashMap<BlobRef, Vec<&Referrer>> = HashMap::new();
        for (b, r) in refs {
            by_blob.entry(*b).or_default().push(r);
        }
        let mut moved = 0;
        for (old, referrers) in by_blob {
            let mut reader = self.inner.blobs.read(&old, 0..old.len)?;
            let mut writer = self.inner.blobs.writer()?;
            std::io::copy(&mut reader, &mut writer).map_err(|e| ArtifactError::Store(io_storage(e).into()))?;
            let (new, _pin) = writer.finish()?;
            for referrer in referrers {
                self.repoint(referrer, old, new)?;
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// Points a record's segments in `old` at `new`, if it still points to `old`.
    fn repoint(&self, referrer: &Referrer, old: BlobRef, new: BlobRef) -> Result<(), ArtifactError> {
        let (from, to) = (Segment::of(old), Segment::of(new));
        self.commit_referencing(|tx| match referrer {
            Referrer::Object(id) => {
                let Some(stored) = tx.get_doc(OBJECTS, id)? else { return Ok(()) };
                let mut doc: ObjectDoc = decode(stored.doc, id)?;
                if !doc.segments.contains(&from) {
                    return Ok(());
                }
                for s in &mut doc.segments {
                    if *s == from {
                        *s = to;
                    }
                }
                // Same version semantics as a restore: the object's content did not change.
                tx.restore_doc(OBJECTS, id, stored.version, encode(&doc)?)?;
                Ok(())
            }
            Referrer::Part(id) => {
                let Some(stored) = tx.get_doc(PARTS, id)? else { return Ok(()) };
                let mut doc: PartDoc = decode(stored.doc, id)?;
                if doc.segment != from {
                    return Ok(());
                }
                doc.segment = to;
                tx.restore_doc(PARTS, id, stored.version, encode(&doc)?)?;
                Ok(())
            }
        })
    }

    /// Reads every blob file and verifies every checksum, and reads every blob an object or part points to
    /// through its checksums: a damaged, missing or incomplete one is a problem naming the record and the
    /// file and offset.
    pub fn check(&self) -> Result<ArtifactCheckReport, ArtifactError> {
        let blob_report = self.inner.blobs.check();
        let mut report = ArtifactCheckReport {
            blobs: blob_report.blobs,
            bytes: blob_report.bytes,
            problems: blob_report.problems.iter().map(ToString::to_string).collect(),
            ..ArtifactCheckReport::default()
        };
        for pointed in references(self)?.values() {
            let mut verified: HashSet<BlobRef> = HashSet::new();
            for (blob, referrer) in pointed {
                report.objects += 1;
                if !verified.insert(*blob) {
                    continue;
                }
                let read = self.inner.blobs.read(blob, 0..blob.len).map_err(|e| e.to_string()).and_then(|mut r| {
                    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| io_storage(e).to_string())
                });
                if let Err(e) = read {
                    report.problems.push(format!("{}: {e}", describe(referrer)));
                }
            }
        }
        Ok(report)
    }
}

fn describe(r: &Referrer) -> String {
    match r {
        Referrer::Object(id) => format!("object {id}"),
        Referrer::Part(id) => format!("part {id}"),
    }
}
