//! Where the metrics store keeps its entries in the engine's keyspace, and the series entry
//! (`docs/format/metrics.md`, "Keys" and "Series entry").

use super::block::crc32c;
use super::error::MetricsError;
use super::model::{Point, MAX_NAME_LEN};

/// Prefix of the series entries: `0x00 "mts" 0x00 run 0x00 key`.
pub(crate) const SERIES: &[u8] = b"\x00mts\x00";
/// Prefix of the blocks: `0x00 "mtb" 0x00 run 0x00 key 0x00 ord(first step) id`.
pub(crate) const BLOCKS: &[u8] = b"\x00mtb\x00";

/// Checks a run id or metric key (`what` names which, in the message): 1 to [`MAX_NAME_LEN`] bytes without
/// NUL, else [`MetricsError::Invalid`]. Public so that other implementations of the metrics' operations (the
/// server's PostgreSQL backend) refuse the same names with the same message.
pub fn check_name(what: &str, name: &str) -> Result<(), MetricsError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
        return Err(MetricsError::Invalid(format!(
            "{what} {:?} must be 1 to {MAX_NAME_LEN} bytes without NUL",
            name.get(..name.len().min(64)).unwrap_or_default()
        )));
    }
    Ok(())
}

/// Prefix of every series entry of `run`.
pub(crate) fn run_series_prefix(run: &str) -> Vec<u8> {
    [SERIES, run.as_bytes(), b"\0"].concat()
}

/// Key of the series entry of `key` in `run`.
pub(crate) fn series_key(run: &str, key: &str) -> Vec<u8> {
    [SERIES, run.as_bytes(), b"\0", key.as_bytes()].concat()
}

/// Prefix of every block of `key` in `run`.
pub(crate) fn blocks_prefix(run: &str, key: &str) -> Vec<u8> {
    [BLOCKS, run.as_bytes(), b"\0", key.as_bytes(), b"\0"].concat()
}

/// A step as 8 bytes that sort as the steps do: big-endian with the sign bit flipped.
#[expect(clippy::big_endian_bytes, reason = "order-preserving encoding: big-endian bytes sort numerically")]
pub(crate) fn ord_step(step: i64) -> [u8; 8] {
    ((step as u64) ^ (1 << 63)).to_be_bytes()
}

/// Key of a block: its series' prefix, its first step, its id.
#[expect(clippy::big_endian_bytes, reason = "block ids sort in numeric order")]
pub(crate) fn block_key(prefix: &[u8], first_step: i64, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&ord_step(first_step));
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The first step and id a block key (with its series prefix removed) holds.
#[expect(clippy::big_endian_bytes, reason = "as block_key writes them")]
pub(crate) fn parse_block_suffix(suffix: &[u8]) -> Option<(i64, u64)> {
    let step: [u8; 8] = suffix.get(..8)?.try_into().ok()?;
    let id: [u8; 8] = suffix.get(8..16)?.try_into().ok()?;
    if suffix.len() != 16 {
        return None;
    }
    Some(((u64::from_be_bytes(step) ^ (1 << 63)) as i64, u64::from_be_bytes(id)))
}

/// Length of a series entry.
const SERIES_LEN: usize = 81;
const SERIES_VERSION: u8 = 1;

/// A series entry: how to append to the series, and its latest point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Series {
    /// Id of the next block created.
    pub(crate) next_id: u64,
    /// Id of the open block (the one appended to), the highest id in use.
    pub(crate) open_id: u64,
    /// First step of the open block (its key).
    pub(crate) open_first_step: i64,
    /// Points in the open block; 0: there is none, the next append starts a block.
    pub(crate) open_count: u32,
    /// No block spans more steps than this (`max_step - first_step`): a read of steps from `lo` starts at
    /// blocks whose first step is `lo - max_span`.
    pub(crate) max_span: u64,
    /// Lowest step of the series.
    pub(crate) min_step: i64,
    /// Points in the series.
    pub(crate) points: u64,
    /// The point with the highest step, of those the last logged.
    pub(crate) latest: Point,
}

impl Series {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SERIES_LEN);
        out.push(SERIES_VERSION);
        out.extend_from_slice(&self.next_id.to_le_bytes());
        out.extend_from_slice(&self.open_id.to_le_bytes());
        out.extend_from_slice(&self.open_first_step.to_le_bytes());
        out.extend_from_slice(&self.open_count.to_le_bytes());
        out.extend_from_slice(&self.max_span.to_le_bytes());
        out.extend_from_slice(&self.min_step.to_le_bytes());
        out.extend_from_slice(&self.points.to_le_bytes());
        out.extend_from_slice(&self.latest.step.to_le_bytes());
        out.extend_from_slice(&self.latest.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.latest.value.to_bits().to_le_bytes());
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(key: &[u8], b: &[u8]) -> Result<Series, MetricsError> {
        let bad = |offset: u64, reason: &str| MetricsError::corruption(key, offset, reason);
        if b.len() != SERIES_LEN {
            return Err(bad(0, "series entry of the wrong length"));
        }
        let body = b.get(..SERIES_LEN - 4).unwrap_or_default();
        let stored = b.get(SERIES_LEN - 4..).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        if stored != Some(crc32c(body)) {
            return Err(bad(77, "series entry checksum mismatch"));
        }
        if b.first() != Some(&SERIES_VERSION) {
            return Err(bad(0, "unknown series entry version"));
        }
        let u8b = |at: usize| -> [u8; 8] { b.get(at..at + 8).and_then(|s| s.try_into().ok()).unwrap_or_default() };
        let open_count: [u8; 4] = b.get(25..29).and_then(|s| s.try_into().ok()).unwrap_or_default();
        Ok(Series {
            next_id: u64::from_le_bytes(u8b(1)),
            open_id: u64::from_le_bytes(u8b(9)),
            open_first_step: i64::from_le_bytes(u8b(17)),
            open_count: u32::from_le_bytes(open_count),
            max_span: u64::from_le_bytes(u8b(29)),
            min_step: i64::from_le_bytes(u8b(37)),
            points: u64::from_le_bytes(u8b(45)),
            latest: Point {
                step: i64::from_le_bytes(u8b(53)),
                timestamp_ms: i64::from_le_bytes(u8b(61)),
                value: f64::from_bits(u64::from_le_bytes(u8b(69))),
            },
        })
    }
}
