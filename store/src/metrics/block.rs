//! A block: up to [`BLOCK_POINTS`] points of one series, ordered by step then log order, under a fixed
//! header of statistics and a CRC-32C (`docs/format/metrics.md`). Version 2 is written; version 1 blocks
//! (written before it) are read as they are and replaced by version 2 when an append rewrites them.
//!
//! A version 2 payload is two bit streams, steps and values then timestamps, so that downsampling decodes
//! the first alone. A [`Builder`] encodes points one at a time; [`Builder::resume`] picks up a version 2
//! block where its streams end, so appending to the open block writes only the new points' bits.

use super::bits::{read_dod, read_xor, unzigzag, write_xor, zigzag, BitReader, BitWriter, Rice};
use super::model::Point;

/// Most points in a block.
pub(crate) const BLOCK_POINTS: usize = 1024;
/// The format version written.
const VERSION: u8 = 2;
/// The format version before it, still read.
const VERSION_1: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 78;

/// Flag (version 2): the steps are `min_step + i * stride` and not in the streams.
const REGULAR_STEPS: u8 = 0x01;
/// Flag bits (version 2) of the value code: [`VALUES_XOR`], [`VALUES_DELTA`] or [`VALUES_DELTA_29`].
const VALUE_CODE: u8 = 0x06;
/// Values XOR-encoded as in Gorilla.
const VALUES_XOR: u8 = 0x00;
/// Values as differences of their bit patterns, Rice-coded.
const VALUES_DELTA: u8 = 0x02;
/// Values as differences of their bit patterns shifted right by 29 bits, Rice-coded: every value's low 29
/// bits are zero, as those of every `f32` widened to `f64` are.
const VALUES_DELTA_29: u8 = 0x04;
/// The bits of the values' shift in [`VALUES_DELTA_29`].
const SHIFT_29: u32 = 29;

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

impl Header {
    /// Appends the block's 78 header bytes ("Block" in `docs/format/metrics.md`) with `version`, `flags` and
    /// `payload_len`.
    fn encode_into(&self, out: &mut Vec<u8>, version: u8, flags: u8, payload_len: usize) {
        out.push(version);
        out.push(flags);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.nan_count.to_le_bytes());
        for v in [self.min_step, self.max_step, self.min_ts, self.max_ts] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.min, self.max, self.sum, self.last] {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        out.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    }

    /// The statistics of a block holding `first` alone.
    fn start(first: &Point) -> Header {
        let mut h = Header {
            count: 0,
            nan_count: 0,
            min_step: first.step,
            max_step: first.step,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            min: f64::NAN,
            max: f64::NAN,
            sum: 0.0,
            last: f64::NAN,
        };
        h.add(first);
        h
    }

    /// Adds a point after the block's last.
    fn add(&mut self, p: &Point) {
        self.count += 1;
        self.max_step = p.step;
        self.min_ts = self.min_ts.min(p.timestamp_ms);
        self.max_ts = self.max_ts.max(p.timestamp_ms);
        self.last = p.value;
        if p.value.is_nan() {
            self.nan_count += 1;
            return;
        }
        if self.min.is_nan() || p.value < self.min {
            self.min = p.value;
        }
        if self.max.is_nan() || p.value > self.max {
            self.max = p.value;
        }
        self.sum += p.value;
    }
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
    let Some((first, rest)) = points.split_first() else {
        return Header::start(&Point { step: 0, timestamp_ms: 0, value: f64::NAN });
    };
    let mut h = Header::start(first);
    for p in rest {
        h.add(p);
    }
    h
}

/// How a version 2 block codes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueCode {
    /// Gorilla's XOR code.
    Xor,
    /// Differences of the bit patterns shifted right by `shift` (0 or 29), Rice-coded.
    Delta { shift: u32 },
}

/// The codes of a version 2 block, its header's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Modes {
    /// Steps are evenly spaced and left out of the stream.
    pub(crate) regular_steps: bool,
    pub(crate) values: ValueCode,
}

impl Modes {
    fn flags(self) -> u8 {
        let steps = if self.regular_steps { REGULAR_STEPS } else { 0 };
        let values = match self.values {
            ValueCode::Xor => VALUES_XOR,
            ValueCode::Delta { shift: 0 } => VALUES_DELTA,
            ValueCode::Delta { .. } => VALUES_DELTA_29,
        };
        steps | values
    }

    fn from_flags(flags: u8) -> Option<Modes> {
        let values = match flags & VALUE_CODE {
            VALUES_XOR => ValueCode::Xor,
            VALUES_DELTA => ValueCode::Delta { shift: 0 },
            VALUES_DELTA_29 => ValueCode::Delta { shift: SHIFT_29 },
            _ => return None,
        };
        if flags & !(REGULAR_STEPS | VALUE_CODE) != 0 {
            return None;
        }
        Some(Modes { regular_steps: flags & REGULAR_STEPS != 0, values })
    }

    /// The codes that take `points` (sorted by step) in the fewest bits: regular steps if they are evenly
    /// spaced, and the value code that writes their values shortest (tried in turn).
    pub(crate) fn best_for(points: &[Point]) -> Modes {
        let stride = match points {
            [a, b, ..] => Some(b.step.wrapping_sub(a.step)),
            _ => None,
        };
        let regular_steps = points.windows(2).all(|w| match w {
            [a, b] => Some(b.step.wrapping_sub(a.step)) == stride && b.step >= a.step,
            _ => true,
        });
        let mut candidates = Vec::with_capacity(3);
        if points.iter().all(|p| p.value.to_bits().trailing_zeros() >= SHIFT_29) {
            candidates.push(ValueCode::Delta { shift: SHIFT_29 });
        }
        candidates.extend([ValueCode::Delta { shift: 0 }, ValueCode::Xor]);
        let mut best: Option<(usize, ValueCode)> = None;
        for code in candidates {
            let bits = value_bits(code, points);
            if best.is_none_or(|(b, _)| bits < b) {
                best = Some((bits, code));
            }
        }
        Modes { regular_steps, values: best.map_or(ValueCode::Xor, |(_, c)| c) }
    }
}

/// Bits the values of `points` take in `code`.
fn value_bits(code: ValueCode, points: &[Point]) -> usize {
    let mut w = BitWriter::default();
    let mut coder = ValueCoder::new(code, points.first().map_or(0, |p| p.value.to_bits()));
    for p in points.iter().skip(1) {
        coder.write(&mut w, p.value.to_bits());
    }
    w.len()
}

/// The state of a value code after a block's last value.
#[derive(Debug, Clone, Copy)]
struct ValueCoder {
    code: ValueCode,
    prev: u64,
    window: Option<(u32, u32)>,
    rice: Rice,
}

impl ValueCoder {
    fn new(code: ValueCode, first: u64) -> Self {
        Self { code, prev: first, window: None, rice: Rice::START }
    }

    /// Whether a value with bits `v` can be written in this code.
    fn takes(&self, v: u64) -> bool {
        match self.code {
            ValueCode::Delta { shift } => v.trailing_zeros() >= shift,
            ValueCode::Xor => true,
        }
    }

    fn write(&mut self, w: &mut BitWriter, v: u64) {
        match self.code {
            ValueCode::Xor => write_xor(w, self.prev, v, &mut self.window),
            ValueCode::Delta { shift } => {
                let d = (v >> shift).wrapping_sub(self.prev >> shift) as i64;
                self.rice.write(w, zigzag(d));
            }
        }
        self.prev = v;
    }

    #[inline(always)]
    fn read(&mut self, r: &mut BitReader<'_>) -> Option<u64> {
        let v = match self.code {
            ValueCode::Xor => read_xor(r, self.prev, &mut self.window)?,
            ValueCode::Delta { shift } => {
                let n = (self.prev >> shift).wrapping_add(unzigzag(self.rice.read(r)?) as u64);
                if shift > 0 && n >> (64 - shift) != 0 {
                    return None;
                }
                n << shift
            }
        };
        self.prev = v;
        Some(v)
    }
}

/// The state of a version 2 block's first stream (steps and values) after its last point: what the next
/// point is coded against.
#[derive(Debug, Clone, Copy)]
struct StepValueCoder {
    regular_steps: bool,
    /// Step spacing of a block of regular steps, known from its second point on.
    stride: Option<u64>,
    step: i64,
    step_delta: i64,
    steps: Rice,
    values: ValueCoder,
}

impl StepValueCoder {
    fn new(modes: Modes, first_step: i64, first_value: u64) -> Self {
        Self {
            regular_steps: modes.regular_steps,
            stride: None,
            step: first_step,
            step_delta: 0,
            steps: Rice::START,
            values: ValueCoder::new(modes.values, first_value),
        }
    }

    /// Whether `p` can come next in these codes: its step is not below the last, continues the spacing of
    /// regular steps, and its value fits the value code.
    fn takes(&self, p: &Point) -> bool {
        if p.step < self.step || !self.values.takes(p.value.to_bits()) {
            return false;
        }
        !self.regular_steps || self.stride.is_none_or(|s| p.step.wrapping_sub(self.step) as u64 == s)
    }

    /// Writes the step and value of `p`, which [`StepValueCoder::takes`].
    fn write(&mut self, w: &mut BitWriter, p: &Point) {
        let d = p.step.wrapping_sub(self.step);
        if self.regular_steps {
            self.stride = Some(d as u64);
        } else {
            self.steps.write(w, zigzag(d.wrapping_sub(self.step_delta)));
            self.step_delta = d;
        }
        self.step = p.step;
        self.values.write(w, p.value.to_bits());
    }

    /// Reads the next step and value bits; `None` if the stream ends inside them. Steps of a regular block
    /// come from the stride set from its header.
    #[inline(always)]
    fn read(&mut self, r: &mut BitReader<'_>) -> Option<(i64, u64)> {
        if let Some(stride) = self.stride.filter(|_| self.regular_steps) {
            self.step = (self.step as u64).wrapping_add(stride) as i64;
        } else {
            self.step_delta = self.step_delta.wrapping_add(unzigzag(self.steps.read(r)?));
            self.step = self.step.wrapping_add(self.step_delta);
        }
        Some((self.step, self.values.read(r)?))
    }
}

/// The state of a version 2 block's second stream (timestamps) after its last point.
#[derive(Debug, Clone, Copy)]
struct TimeCoder {
    ts: i64,
    /// Moving average of the timestamp deltas in sixteenths, from the second point on.
    average: Option<i64>,
    times: Rice,
}

impl TimeCoder {
    fn new(first_ts: i64) -> Self {
        Self { ts: first_ts, average: None, times: Rice::START }
    }

    /// The timestamp delta predicted for the next point.
    #[inline(always)]
    fn predicted(&self) -> i64 {
        self.average.map_or(0, |a| a >> 4)
    }

    #[inline(always)]
    fn advance(&mut self, ts: i64) {
        let scaled = ts.wrapping_sub(self.ts).wrapping_shl(4);
        self.average = Some(match self.average {
            None => scaled,
            Some(a) => a.wrapping_add(scaled.wrapping_sub(a) >> 3),
        });
        self.ts = ts;
    }

    fn write(&mut self, w: &mut BitWriter, ts: i64) {
        let residual = ts.wrapping_sub(self.ts).wrapping_sub(self.predicted());
        self.times.write(w, zigzag(residual));
        self.advance(ts);
    }

    #[inline(always)]
    fn read(&mut self, r: &mut BitReader<'_>) -> Option<i64> {
        let ts = self.ts.wrapping_add(self.predicted()).wrapping_add(unzigzag(self.times.read(r)?));
        self.advance(ts);
        Some(ts)
    }
}

/// A version 2 block being written: its header, its two streams so far and the state of their codes.
#[derive(Debug, Clone)]
pub(crate) struct Builder {
    modes: Modes,
    header: Header,
    first: StepValueCoder,
    second: TimeCoder,
    /// Steps and values.
    values: BitWriter,
    /// Timestamps.
    times: BitWriter,
}

impl Builder {
    /// A block of `first` alone, in `modes`.
    pub(crate) fn new(modes: Modes, first: &Point) -> Self {
        let (mut values, mut times) = (BitWriter::default(), BitWriter::default());
        values.write(first.value.to_bits(), 64);
        times.write(first.timestamp_ms as u64, 64);
        Self {
            modes,
            header: Header::start(first),
            first: StepValueCoder::new(modes, first.step, first.value.to_bits()),
            second: TimeCoder::new(first.timestamp_ms),
            values,
            times,
        }
    }

    /// The block `b` ready for more points, after checking it and decoding it to the end of its streams;
    /// `None` for a version 1 block, which cannot be appended to.
    pub(crate) fn resume(b: &[u8]) -> Result<Option<Self>, BlockError> {
        let (header, end) = walk(b, true, |_| {})?;
        let Some(End { modes, first, second, values_bits, times_bits }) = end else { return Ok(None) };
        let (a, t) = streams(b)?;
        Ok(Some(Self {
            modes,
            header,
            first,
            second: second.unwrap_or(TimeCoder::new(0)),
            values: BitWriter::resume(a, values_bits),
            times: BitWriter::resume(t, times_bits),
        }))
    }

    /// Points in the block.
    pub(crate) fn len(&self) -> usize {
        self.header.count as usize
    }

    /// Step of the block's last point.
    pub(crate) fn last_step(&self) -> i64 {
        self.header.max_step
    }

    /// Appends `p` if the block has room and its codes take it (see [`StepValueCoder::takes`]); `false`
    /// leaves the block as it was.
    pub(crate) fn push(&mut self, p: &Point) -> bool {
        if self.len() >= BLOCK_POINTS || !self.first.takes(p) {
            return false;
        }
        self.first.write(&mut self.values, p);
        self.second.write(&mut self.times, p.timestamp_ms);
        self.header.add(p);
        true
    }

    /// The block's bytes.
    #[cfg(test)]
    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes()
    }

    /// The block's bytes as they stand; more points may be pushed after.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let values_len = self.values.byte_len();
        let payload_len = 4 + values_len + self.times.byte_len();
        let h = &self.header;
        let mut out = Vec::with_capacity(HEADER_LEN + payload_len + 4);
        h.encode_into(&mut out, VERSION, self.modes.flags(), payload_len);
        out.extend_from_slice(&u32::try_from(values_len).unwrap_or(u32::MAX).to_le_bytes());
        self.values.copy_to(&mut out);
        self.times.copy_to(&mut out);
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Encodes `points` (1 to [`BLOCK_POINTS`], sorted by step) as a block in the codes that suit them best.
#[cfg(test)]
pub(crate) fn encode(points: &[Point]) -> Vec<u8> {
    build(points).map_or_else(Vec::new, Builder::finish)
}

/// A builder of `points` (1 to [`BLOCK_POINTS`], sorted by step) in the codes that suit them best; `None`
/// for no points.
pub(crate) fn build(points: &[Point]) -> Option<Builder> {
    build_in(Modes::best_for(points), points)
}

/// Encodes `points` (1 to [`BLOCK_POINTS`], sorted by step, fitting `modes`) as a block in `modes`.
#[cfg(test)]
pub(crate) fn encode_in(modes: Modes, points: &[Point]) -> Vec<u8> {
    build_in(modes, points).map_or_else(Vec::new, Builder::finish)
}

fn build_in(modes: Modes, points: &[Point]) -> Option<Builder> {
    let (first, rest) = points.split_first()?;
    let mut b = Builder::new(modes, first);
    for p in rest {
        let pushed = b.push(p);
        debug_assert!(pushed, "points fit the modes chosen for them");
    }
    Some(b)
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
    let version = b.first().copied();
    if version != Some(VERSION) && version != Some(VERSION_1) {
        return Err(bad(0, format!("unknown block version {version:?}")));
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

/// The two streams of a version 2 block (steps and values; timestamps), after its length checks.
fn streams(b: &[u8]) -> Result<(&[u8], &[u8]), BlockError> {
    let payload = b.get(HEADER_LEN..b.len().saturating_sub(4)).unwrap_or_default();
    let values_len = payload.get(..4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
    let values_len = values_len.ok_or_else(|| bad(HEADER_LEN, "payload shorter than its stream length"))? as usize;
    let values = payload.get(4..4 + values_len);
    let times = payload.get(4 + values_len..);
    values.zip(times).ok_or_else(|| bad(HEADER_LEN, format!("stream length {values_len} beyond the payload")))
}

/// Where a version 2 block's streams end: its codes, their state after the last point, and the bits
/// used in each stream (`second` and `times_bits` only if the timestamps were read).
struct End {
    modes: Modes,
    first: StepValueCoder,
    second: Option<TimeCoder>,
    values_bits: usize,
    times_bits: usize,
}

/// Checks and decodes a block, handing each point to `f` in order (with timestamp 0 unless `times`): its
/// header and, for a version 2 block, the state after its last point. A version 1 block's timestamps are
/// always read. `f` may have seen points of a block that then fails.
fn walk(b: &[u8], times: bool, mut f: impl FnMut(Point)) -> Result<(Header, Option<End>), BlockError> {
    let h = decode_header(b)?;
    if b.first() == Some(&VERSION_1) {
        walk_v1(b, &h, f)?;
        return Ok((h, None));
    }
    let flags = b.get(1).copied().unwrap_or(0);
    let modes = Modes::from_flags(flags).ok_or_else(|| bad(1, format!("unknown flags {flags:#04x}")))?;
    let (a, t) = streams(b)?;
    let (a_at, t_at) = (HEADER_LEN + 4, HEADER_LEN + 4 + a.len());
    let (mut ra, mut rt) = (BitReader::new(a), BitReader::new(t));
    let first = ra.read(64).ok_or_else(|| bad(a_at, "value stream ends inside the first point"))?;
    let ts =
        if times { rt.read(64).ok_or_else(|| bad(t_at, "time stream ends inside the first point"))? as i64 } else { 0 };
    if let ValueCode::Delta { shift } = modes.values {
        if first.trailing_zeros() < shift {
            return Err(bad(a_at, "first value does not fit the value code"));
        }
    }
    let mut first_coder = StepValueCoder::new(modes, h.min_step, first);
    let mut second = TimeCoder::new(ts);
    if modes.regular_steps && h.count > 1 {
        let span = h.max_step.wrapping_sub(h.min_step) as u64;
        let gaps = u64::from(h.count - 1);
        if !span.is_multiple_of(gaps) {
            return Err(bad(18, "regular steps do not divide the header's step range"));
        }
        first_coder.stride = Some(span / gaps);
    }
    f(Point { step: h.min_step, timestamp_ms: ts, value: f64::from_bits(first) });
    let mut step = h.min_step;
    for _ in 1..h.count {
        let at = |r: &BitReader<'_>| a_at + r.position() / 8;
        let (next, v) = first_coder
            .read(&mut ra)
            .ok_or_else(|| bad(at(&ra), "value stream ends inside a point or is malformed"))?;
        if next < step {
            return Err(bad(at(&ra), "steps out of order"));
        }
        step = next;
        let ts = if times {
            second.read(&mut rt).ok_or_else(|| bad(t_at + rt.position() / 8, "time stream ends inside a point"))?
        } else {
            0
        };
        f(Point { step, timestamp_ms: ts, value: f64::from_bits(v) });
    }
    if step != h.max_step {
        return Err(bad(18, format!("last step {step} disagrees with the header's {}", h.max_step)));
    }
    if a.len() * 8 - ra.position() >= 8 {
        return Err(bad(a_at + ra.position() / 8, "bytes after the last point's value"));
    }
    if times && t.len() * 8 - rt.position() >= 8 {
        return Err(bad(t_at + rt.position() / 8, "bytes after the last point's timestamp"));
    }
    let end = End {
        modes,
        first: first_coder,
        second: times.then_some(second),
        values_bits: ra.position(),
        times_bits: rt.position(),
    };
    Ok((h, Some(end)))
}

/// [`walk`] for a version 1 block.
fn walk_v1(b: &[u8], h: &Header, mut f: impl FnMut(Point)) -> Result<(), BlockError> {
    let payload = b.get(HEADER_LEN..b.len() - 4).unwrap_or_default();
    let mut r = BitReader::new(payload);
    let at = |r: &BitReader<'_>| HEADER_LEN + r.position() / 8;
    let trunc = |r: &BitReader<'_>| bad(at(r), "payload ends inside a point");
    let mut ts = r.read(64).ok_or_else(|| trunc(&r))? as i64;
    let mut vb = r.read(64).ok_or_else(|| trunc(&r))?;
    f(Point { step: h.min_step, timestamp_ms: ts, value: f64::from_bits(vb) });
    let (mut step, mut sd, mut td) = (h.min_step, 0i64, 0i64);
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
        f(Point { step, timestamp_ms: ts, value: f64::from_bits(vb) });
    }
    if step != h.max_step {
        return Err(bad(18, format!("last step {step} disagrees with the header's {}", h.max_step)));
    }
    if payload.len().saturating_mul(8) - r.position() >= 8 {
        return Err(bad(at(&r), "bytes after the last point"));
    }
    Ok(())
}

/// Decodes a whole block: its header and points.
pub(crate) fn decode(b: &[u8]) -> Result<(Header, Vec<Point>), BlockError> {
    let mut points = Vec::with_capacity(BLOCK_POINTS);
    let (h, _) = walk(b, true, |p| points.push(p))?;
    Ok((h, points))
}

/// Decodes a block, handing each point to `f` in order; on an error `f` may have seen some points.
pub(crate) fn decode_each(b: &[u8], f: impl FnMut(Point)) -> Result<Header, BlockError> {
    walk(b, true, f).map(|(h, _)| h)
}

/// Decodes the steps and values of a block, handing each point to `f` in order with timestamp 0; the
/// timestamps of a version 2 block are not read (nor checked beyond its checksum).
pub(crate) fn decode_values_each(b: &[u8], f: impl FnMut(Point)) -> Result<Header, BlockError> {
    walk(b, false, f).map(|(h, _)| h)
}

/// Encodes `points` (1 to [`BLOCK_POINTS`], sorted by step) as a version 1 block, as blocks were written
/// before version 2: for tests that read old blocks.
#[cfg(test)]
pub(crate) fn encode_v1(points: &[Point]) -> Vec<u8> {
    use super::bits::write_dod;
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
    h.encode_into(&mut out, VERSION_1, 0, payload.len());
    out.extend_from_slice(&payload);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
