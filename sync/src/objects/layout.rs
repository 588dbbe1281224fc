//! Object names and formats (specified in `docs/sync.md`, "Object store layout"). All names are relative
//! to the location's prefix; sequence numbers are zero-padded to 20 digits so names sort numerically.
//!
//! ```text
//! snapshots/SEQ/manifest.json                 manifest JSON, "\n", SHA-256 hex of the JSON, "\n"
//! snapshots/SEQ/COLLECTION/PART.jsonl.zst     zstd( one SnapshotLine JSON per line )        PART: 6 digits
//! snapshots/SEQ/metrics-PART.jsonl.zst        zstd( one MetricsLine JSON per line )         PART: 6 digits
//! segments/AFTER-THROUGH-SHA256.jsonl.zst     zstd( SegmentHeader line, then one Change per line )
//! blobs/sha256/HEX                            an artifact object's bytes, as stored (not compressed)
//! ```

use std::io::BufRead;

use cairn_store::{Change, CollectionSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::sha256_hex;
use crate::error::SyncError;

/// The format version written in manifests and segment headers.
pub(crate) const FORMAT: u32 = 1;
/// zstd level of snapshot chunks and segments.
const ZSTD_LEVEL: i32 = 3;

pub(crate) const SNAPSHOTS: &str = "snapshots/";
pub(crate) const SEGMENTS: &str = "segments/";
pub(crate) const BLOBS: &str = "blobs/sha256/";

/// `blobs/sha256/HEX`: the bytes whose SHA-256 is `sha256` (64 lower-case hex digits).
pub(crate) fn blob_name(sha256: &str) -> String {
    format!("{BLOBS}{sha256}")
}

/// The SHA-256 of a blob's name, if `name` (relative) is one.
pub(crate) fn parse_blob_name(name: &str) -> Option<&str> {
    let hex = name.strip_prefix(BLOBS)?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// `snapshots/SEQ/`.
pub(crate) fn snapshot_dir(seq: u64) -> String {
    format!("{SNAPSHOTS}{seq:020}/")
}

/// `snapshots/SEQ/manifest.json`.
pub(crate) fn manifest_name(seq: u64) -> String {
    format!("{}manifest.json", snapshot_dir(seq))
}

/// `COLLECTION/PART.jsonl.zst`, relative to the snapshot's directory.
pub(crate) fn chunk_name(collection: &str, part: u32) -> String {
    format!("{collection}/{part:06}.jsonl.zst")
}

/// `metrics-PART.jsonl.zst`, relative to the snapshot's directory (beside the collections' directories, so
/// no collection name can take it).
pub(crate) fn metrics_chunk_name(part: u32) -> String {
    format!("metrics-{part:06}.jsonl.zst")
}

/// The sequence of a manifest's name, if `name` (relative) is one.
pub(crate) fn parse_manifest_name(name: &str) -> Option<u64> {
    let seq = name.strip_prefix(SNAPSHOTS)?.strip_suffix("/manifest.json")?;
    (seq.len() == 20).then(|| seq.parse().ok()).flatten()
}

/// A segment's name: the sequence range `(after, through]` it covers and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentName {
    pub after: u64,
    pub through: u64,
    pub sha256: String,
}

impl SegmentName {
    pub fn name(&self) -> String {
        format!("{SEGMENTS}{:020}-{:020}-{}.jsonl.zst", self.after, self.through, self.sha256)
    }

    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_prefix(SEGMENTS)?.strip_suffix(".jsonl.zst")?;
        let mut parts = stem.splitn(3, '-');
        let after = parts.next().filter(|p| p.len() == 20)?.parse().ok()?;
        let through = parts.next().filter(|p| p.len() == 20)?.parse().ok()?;
        let sha256 = parts.next().filter(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))?;
        Some(Self { after, through, sha256: sha256.to_owned() })
    }
}

/// The snapshot's manifest: what it holds and every object with its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    /// The commit sequence the snapshot was read at.
    pub seq: u64,
    /// Wall-clock time the snapshot was read, ms since the Unix epoch.
    pub taken_at_ms: i64,
    /// The collections' declarations.
    pub collections: Vec<CollectionSpec>,
    /// Every chunk, in the order to read them.
    pub objects: Vec<ChunkEntry>,
    /// Total records.
    pub records: u64,
    /// The metrics, at the same sequence; absent when the export left them out (or predates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsListing>,
}

/// The metrics of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricsListing {
    /// Series, in all chunks.
    pub series: u64,
    /// Points, in all chunks.
    pub points: u64,
    /// SHA-256 (hex) over every series' run, key and store fingerprint (`crate::metrics::Fingerprint`):
    /// what an export compares with the store's to tell whether the metrics changed since. Readers do not
    /// need it.
    pub fingerprint: String,
    /// Every chunk, in the order to read them.
    pub objects: Vec<MetricsChunkEntry>,
}

/// One chunk of a snapshot's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricsChunkEntry {
    /// Name relative to the snapshot's directory.
    pub name: String,
    /// Lines (series, or parts of series).
    pub lines: u64,
    pub points: u64,
    /// Size of the object (compressed), bytes.
    pub bytes: u64,
    /// SHA-256 of the object's bytes, hex.
    pub sha256: String,
}

/// Consecutive points of one series in a snapshot's metrics chunk, in history order, as columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricsLine {
    pub run: String,
    pub key: String,
    /// Position of the line's first point in the series' history (0 for its first line).
    pub from: u64,
    pub steps: Vec<i64>,
    pub timestamps_ms: Vec<i64>,
    /// Each value's IEEE 754 bit pattern, as an unsigned integer.
    pub value_bits: Vec<u64>,
}

/// One chunk of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChunkEntry {
    /// Name relative to the snapshot's directory.
    pub name: String,
    pub collection: String,
    pub records: u64,
    /// Size of the object (compressed), bytes.
    pub bytes: u64,
    /// SHA-256 of the object's bytes, hex.
    pub sha256: String,
}

/// One record in a snapshot chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotLine {
    pub id: String,
    pub version: u64,
    pub seq: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub doc: Value,
}

/// The first line of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentHeader {
    pub format: u32,
    /// The segment holds every change with `after < seq <= through`.
    pub after: u64,
    pub through: u64,
    /// SHA-256 of the previous segment's bytes (the one whose `through` is this one's `after`); `null` for
    /// the first segment of a chain.
    pub prev_sha256: Option<String>,
    /// Number of change lines.
    pub changes: u64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
    /// The store's collection declarations when the segment was written.
    pub collections: Vec<CollectionSpec>,
}

pub(crate) fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = serde_json::to_vec(m).unwrap_or_default();
    let sum = sha256_hex(&out);
    out.push(b'\n');
    out.extend_from_slice(sum.as_bytes());
    out.push(b'\n');
    out
}

pub(crate) fn decode_manifest(name: &str, bytes: &[u8]) -> Result<Manifest, SyncError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SyncError::corrupt(name, "not UTF-8"))?;
    let mut lines = text.split('\n');
    let (Some(json), Some(sum)) = (lines.next(), lines.next()) else {
        return Err(SyncError::corrupt(name, "truncated manifest"));
    };
    if sha256_hex(json.as_bytes()) != sum {
        return Err(SyncError::corrupt(name, "manifest checksum mismatch"));
    }
    let m: Manifest = serde_json::from_str(json).map_err(|e| SyncError::corrupt(name, e.to_string()))?;
    if m.format != FORMAT {
        return Err(SyncError::corrupt(name, format!("unknown format {}", m.format)));
    }
    Ok(m)
}

/// Compresses JSON lines.
pub(crate) fn compress(lines: &[u8]) -> Result<Vec<u8>, SyncError> {
    Ok(zstd::encode_all(lines, ZSTD_LEVEL)?)
}

/// Checks `bytes` against the expected SHA-256, then decompresses them.
pub(crate) fn open_checked(name: &str, bytes: &[u8], sha256: &str) -> Result<Vec<u8>, SyncError> {
    let actual = sha256_hex(bytes);
    if actual != sha256 {
        return Err(SyncError::corrupt(name, format!("checksum mismatch: expected sha256 {sha256}, found {actual}")));
    }
    zstd::decode_all(bytes).map_err(|e| SyncError::corrupt(name, format!("zstd: {e}")))
}

/// Parses JSON lines of type `T`.
pub(crate) fn lines<T: for<'de> Deserialize<'de>>(name: &str, text: &[u8]) -> Result<Vec<T>, SyncError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| SyncError::corrupt(name, format!("line {}: {e}", i + 1)))?);
    }
    Ok(out)
}

/// A segment's bytes: the header line then one change per line, compressed.
pub(crate) fn encode_segment(header: &SegmentHeader, changes: &[Change]) -> Result<Vec<u8>, SyncError> {
    let mut text = serde_json::to_vec(header).map_err(|e| SyncError::invalid(e.to_string()))?;
    text.push(b'\n');
    for c in changes {
        serde_json::to_writer(&mut text, c).map_err(|e| SyncError::invalid(e.to_string()))?;
        text.push(b'\n');
    }
    compress(&text)
}

/// Checks a segment's bytes against its name and decodes it; the header must agree with the name and the
/// changes with the header.
pub(crate) fn decode_segment(seg: &SegmentName, bytes: &[u8]) -> Result<(SegmentHeader, Vec<Change>), SyncError> {
    let name = seg.name();
    let text = open_checked(&name, bytes, &seg.sha256)?;
    let split = text.iter().position(|b| *b == b'\n').ok_or_else(|| SyncError::corrupt(&name, "no header"))?;
    let header: SegmentHeader = serde_json::from_slice(text.get(..split).unwrap_or_default())
        .map_err(|e| SyncError::corrupt(&name, format!("header: {e}")))?;
    if header.format != FORMAT {
        return Err(SyncError::corrupt(&name, format!("unknown format {}", header.format)));
    }
    if header.after != seg.after || header.through != seg.through {
        return Err(SyncError::corrupt(&name, "header range differs from the name"));
    }
    let changes: Vec<Change> = lines(&name, text.get(split + 1..).unwrap_or_default())?;
    if changes.len() as u64 != header.changes {
        return Err(SyncError::corrupt(&name, format!("{} changes, header says {}", changes.len(), header.changes)));
    }
    let mut last = header.after;
    for c in &changes {
        if c.seq <= header.after || c.seq > header.through || c.seq < last {
            return Err(SyncError::corrupt(&name, format!("change at seq {} out of range or order", c.seq)));
        }
        last = c.seq;
    }
    Ok((header, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let s = SegmentName { after: 5, through: 17, sha256: "ab".repeat(32) };
        assert_eq!(SegmentName::parse(&s.name()), Some(s.clone()));
        assert!(s.name().starts_with("segments/00000000000000000005-00000000000000000017-abab"));
        assert_eq!(parse_manifest_name(&manifest_name(42)), Some(42));
        assert_eq!(parse_manifest_name("snapshots/42/manifest.json"), None);
        assert_eq!(SegmentName::parse("segments/1-2-zz.jsonl.zst"), None);
        let sha = "0f".repeat(32);
        assert_eq!(blob_name(&sha), format!("blobs/sha256/{sha}"));
        assert_eq!(parse_blob_name(&blob_name(&sha)), Some(sha.as_str()));
        assert_eq!(parse_blob_name(&blob_name(&"0F".repeat(32))), None);
        assert_eq!(parse_blob_name("blobs/sha256/00"), None);
    }

    #[test]
    fn manifest_checksum_catches_edits() {
        let m = Manifest {
            format: FORMAT,
            seq: 9,
            taken_at_ms: 1,
            collections: vec![],
            objects: vec![],
            records: 0,
            metrics: None,
        };
        let bytes = encode_manifest(&m);
        assert_eq!(decode_manifest("m", &bytes).unwrap(), m);
        let edited = String::from_utf8(bytes).unwrap().replace("\"seq\":9", "\"seq\":8");
        assert!(matches!(decode_manifest("m", edited.as_bytes()), Err(SyncError::Corrupt { .. })));
    }

    #[test]
    fn metrics_are_optional_in_manifests() {
        // As written before metrics were exported, or by an export that left them out.
        let json = r#"{"format":1,"seq":9,"taken_at_ms":1,"collections":[],"objects":[],"records":0}"#;
        let old = format!("{json}\n{}\n", sha256_hex(json.as_bytes()));
        let m = decode_manifest("m", old.as_bytes()).unwrap();
        assert_eq!(m.metrics, None);
        assert_eq!(encode_manifest(&m), old.as_bytes(), "no metrics field is written for none");
        let listing = MetricsListing {
            series: 1,
            points: 3,
            fingerprint: "ab".repeat(32),
            objects: vec![MetricsChunkEntry {
                name: metrics_chunk_name(0),
                lines: 1,
                points: 3,
                bytes: 50,
                sha256: "cd".repeat(32),
            }],
        };
        let with = Manifest { metrics: Some(listing), ..m };
        assert_eq!(decode_manifest("m", &encode_manifest(&with)).unwrap(), with);
        assert_eq!(metrics_chunk_name(12), "metrics-000012.jsonl.zst");
        let line = MetricsLine {
            run: "r".into(),
            key: "loss".into(),
            from: 0,
            steps: vec![0],
            timestamps_ms: vec![5],
            value_bits: vec![f64::NAN.to_bits()],
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"run":"r","key":"loss","from":0,"steps":[0],"timestamps_ms":[5],"value_bits":[9221120237041090560]}"#
        );
    }

    #[test]
    fn segments_check_their_name_and_contents() {
        let header = SegmentHeader {
            format: FORMAT,
            after: 3,
            through: 7,
            prev_sha256: None,
            changes: 1,
            first_at_ms: 0,
            last_at_ms: 0,
            collections: vec![],
        };
        let change = Change {
            seq: 5,
            collection: "jobs".into(),
            id: "a".into(),
            op: cairn_store::ChangeOp::Insert,
            version: 1,
            at_ms: 0,
            doc: Some(serde_json::json!({"x": 1})),
            prev_project: None,
        };
        let bytes = encode_segment(&header, std::slice::from_ref(&change)).unwrap();
        let name = SegmentName { after: 3, through: 7, sha256: sha256_hex(&bytes) };
        let (h, cs) = decode_segment(&name, &bytes).unwrap();
        assert_eq!((h, cs), (header.clone(), vec![change.clone()]));
        let wrong_range = SegmentName { through: 8, ..name.clone() };
        assert!(decode_segment(&wrong_range, &bytes).is_err());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(decode_segment(&name, &flipped), Err(SyncError::Corrupt { .. })));
        let out_of_range = Change { seq: 9, ..change };
        let bad = encode_segment(&header, &[out_of_range]).unwrap();
        let bad_name = SegmentName { sha256: sha256_hex(&bad), ..name };
        assert!(decode_segment(&bad_name, &bad).is_err());
    }
}
