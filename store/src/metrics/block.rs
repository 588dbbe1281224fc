//! A block: up to [`BLOCK_POINTS`] points of one series, ordered by step then log order, under a fixed
//! header of statistics and a CRC-32C (`docs/format/metrics.md`).

use super::bits::{read_dod, read_xor, write_dod, write_xor, BitReader, BitWriter};
use super::model::Point;

/// Most points in a block.
pub(crate) const BLOCK_POINTS: usize = 1024;
/// Format version, the block's first byte.
const VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 78;

/// A block's header: what reads use to skip or summarize a block without decoding its points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Header {
    pub(crate) count: u32,
    pub(crate) nan_count: u32,
    pub(crate) min_step: i64,
    pub(crate) max_step: i64,
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    /// Smallest value other than NaN (NaN if every value is NaN).
    pub(crate) min: f64,
    /// Largest value other than NaN (NaN if every value is NaN).
    pub(crate) max: f64,
    /// Sum of the values other than NaN, in block order.
    pub(crate) sum: f64,
    /// Value of the block's last point.
    pub(crate) last: f64,
}

/// Why a block did not decode: the byte offset in the value and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockError {
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

fn bad(offset: usize, reason: impl Into<String>) -> BlockError {
    BlockError { offset: offset as u64, reason: reason.into() }
}

/// Statistics of `points` (non-empty, sorted by step).
pub(crate) fn header_of(points: &[Point]) -> Header {
    let mut h = Header {
        count: u32::try_from(points.len()).unwrap_or(u32::MAX),
        nan_count: 0,
        min_step: points.first().map_or(0, |p| p.step),
        max_step: points.last().map_or(0, |p| p.step),
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        min: f64::NAN,
        max: f64::NAN,
        sum: 0.0,
        last: points.last().map_or(f64::NAN, |p| p.value),
    };
    for p in points {
        h.min_ts = h.min_ts.min(p.timestamp_ms);
        h.max_ts = h.max_ts.max(p.timestamp_ms);
        if p.value.is_nan() {
            h.nan_count += 1;
            continue;
        }
        if h.min.is_nan() || p.value < h.min {
            h.min = p.value;
        }
        if h.max.is_nan() || p.value > h.max {
            h.max = p.value;
        }
        h.sum += p.value;
    }
    h
}

/// Encodes `points` (1 to [`BLOCK_POINTS`], sorted by step) as a block.
pub(crate) fn encode(points: &[Point]) -> Vec<u8> {
    let h = header_of(points);
    let mut w = BitWriter::default();
    let mut prev: Option<(i64, i64, i64, i64, u64)> = None; // step, step delta, ts, ts delta, value bits
    let mut window = None;
    for p in points {
        let bits = p.value.to_bits();
        match prev {
            None => {
                w.write(p.timestamp_ms as u64, 64);
                w.write(bits, 64);
                prev = Some((p.step, 0, p.timestamp_ms, 0, bits));
            }
            Some((step, sd, ts, td, vb)) => {
                let d = p.step.wrapping_sub(step);
                write_dod(&mut w, d.wrapping_sub(sd));
                let t = p.timestamp_ms.wrapping_sub(ts);
                write_dod(&mut w, t.wrapping_sub(td));
                write_xor(&mut w, vb, bits, &mut window);
                prev = Some((p.step, d, p.timestamp_ms, t, bits));
            }
        }
    }
    let payload = w.finish();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&h.count.to_le_bytes());
    out.extend_from_slice(&h.nan_count.to_le_bytes());
    for v in [h.min_step, h.max_step, h.min_ts, h.max_ts] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [h.min, h.max, h.sum, h.last] {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32C (Castagnoli) of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    u32::try_from(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes)).unwrap_or(0)
}

fn le8(b: &[u8], at: usize) -> Result<[u8; 8], BlockError> {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).ok_or_else(|| bad(at, "truncated header"))
}

fn le4(b: &[u8], at: usize) -> Result<[u8; 4], BlockError> {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).ok_or_else(|| bad(at, "truncated header"))
}

/// Checks a block's length, version and checksum, and decodes its header.
pub(crate) fn decode_header(b: &[u8]) -> Result<Header, BlockError> {
    if b.len() < HEADER_LEN + 4 {
        return Err(bad(0, format!("block of {} bytes is shorter than its header and checksum", b.len())));
    }
    let payload_len = u32::from_le_bytes(le4(b, 74)?) as usize;
    if b.len() != HEADER_LEN + payload_len + 4 {
        return Err(bad(74, format!("payload length {payload_len} disagrees with the block's {} bytes", b.len())));
    }
    let body = b.get(..HEADER_LEN + payload_len).unwrap_or_default();
    let stored = u32::from_le_bytes(le4(b, HEADER_LEN + payload_len)?);
    let actual = crc32c(body);
    if stored != actual {
        return Err(bad(
            HEADER_LEN + payload_len,
            format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
        ));
    }
    if b.first() != Some(&VERSION) {
        return Err(bad(0, format!("unknown block version {:?}", b.first())));
    }
    let i = |at| le8(b, at).map(i64::from_le_bytes);
    let f = |at| le8(b, at).map(|x| f64::from_bits(u64::from_le_bytes(x)));
    let h = Header {
        count: u32::from_le_bytes(le4(b, 2)?),
        nan_count: u32::from_le_bytes(le4(b, 6)?),
        min_step: i(10)?,
        max_step: i(18)?,
        min_ts: i(26)?,
        max_ts: i(34)?,
        min: f(42)?,
        max: f(50)?,
        sum: f(58)?,
        last: f(66)?,
    };
    if h.count == 0 || h.count as usize > BLOCK_POINTS || h.nan_count > h.count || h.min_step > h.max_step {
        return Err(bad(2, "header counts or step bounds out of range"));
    }
    Ok(h)
}

/// Decodes a whole block: its header and points.
pub(crate) fn decode(b: &[u8]) -> Result<(Header, Vec<Point>), BlockError> {
    let h = decode_header(b)?;
    let payload = b.get(HEADER_LEN..b.len() - 4).unwrap_or_default();
    let mut r = BitReader::new(payload);
    let at = |r: &BitReader<'_>| HEADER_LEN + r.position() / 8;
    let trunc = |r: &BitReader<'_>| bad(at(r), "payload ends inside a point");
    let mut points = Vec::with_capacity(h.count as usize);
    let ts = r.read(64).ok_or_else(|| trunc(&r))? as i64;
    let mut vb = r.read(64).ok_or_else(|| trunc(&r))?;
    points.push(Point { step: h.min_step, timestamp_ms: ts, value: f64::from_bits(vb) });
    let (mut step, mut sd, mut ts, mut td) = (h.min_step, 0i64, ts, 0i64);
    let mut window = None;
    for _ in 1..h.count {
        sd = sd.wrapping_add(read_dod(&mut r).ok_or_else(|| trunc(&r))?);
        let next = step.wrapping_add(sd);
        if next < step {
            return Err(bad(at(&r), "steps out of order"));
        }
        step = next;
        td = td.wrapping_add(read_dod(&mut r).ok_or_else(|| trunc(&r))?);
        ts = ts.wrapping_add(td);
        vb = read_xor(&mut r, vb, &mut window).ok_or_else(|| trunc(&r))?;
        points.push(Point { step, timestamp_ms: ts, value: f64::from_bits(vb) });
    }
    if step != h.max_step {
        return Err(bad(18, format!("last step {step} disagrees with the header's {}", h.max_step)));
    }
    if payload.len().saturating_mul(8) - r.position() >= 8 {
        return Err(bad(at(&r), "bytes after the last point"));
    }
    Ok((h, points))
}
