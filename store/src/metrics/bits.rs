//! Bit streams, most significant bit first, and the variable-length codes of a block's payload
//! (`docs/format/metrics.md`, "Payload").

/// Appends bits to a byte vector, most significant bit of each byte first; the last byte is padded with
/// zero bits.
#[derive(Debug, Default, Clone)]
pub(crate) struct BitWriter {
    /// Whole bytes written.
    bytes: Vec<u8>,
    /// The `pending` bits not yet in `bytes`, in the low bits (higher bits are stale).
    acc: u64,
    /// Bits in `acc`, 0 to 7 between calls.
    pending: u32,
}

impl BitWriter {
    /// A writer that goes on after the first `bits` bits of `bytes` (the bits after them are dropped).
    pub(crate) fn resume(bytes: &[u8], bits: usize) -> Self {
        let whole = bits / 8;
        let pending = (bits % 8) as u32;
        let mut out = Vec::with_capacity(bytes.len() + 512);
        out.extend_from_slice(bytes.get(..whole).unwrap_or_default());
        let last = bytes.get(whole).copied().unwrap_or(0);
        let acc = if pending == 0 { 0 } else { u64::from(last >> (8 - pending)) };
        Self { bytes: out, acc, pending }
    }

    /// Appends the low `n` bits of `v` (`n` ≤ 64), highest first.
    #[inline]
    #[expect(clippy::big_endian_bytes, reason = "the stream is most significant bit first")]
    pub(crate) fn write(&mut self, v: u64, n: u32) {
        if n > 56 {
            self.write(v >> 32, n - 32);
            self.write(v & 0xffff_ffff, 32);
            return;
        }
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | (v & ((1u64 << n) - 1));
        self.pending += n;
        if self.pending >= 32 {
            self.pending -= 32;
            self.bytes.extend_from_slice(&((self.acc >> self.pending) as u32).to_be_bytes());
        }
        while self.pending >= 8 {
            self.pending -= 8;
            self.bytes.push((self.acc >> self.pending) as u8);
        }
    }

    /// Appends one bit.
    pub(crate) fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// Bits written so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() * 8 + self.pending as usize
    }

    /// Bytes that [`BitWriter::finish`] would return.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len() + usize::from(self.pending > 0)
    }

    /// Appends to `out` the bytes written, the last one padded, leaving the writer as it was.
    pub(crate) fn copy_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        if self.pending > 0 {
            out.push((self.acc << (8 - self.pending)) as u8);
        }
    }

    /// The bytes written, the last one padded.
    #[cfg(test)]
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.pending > 0 {
            self.bytes.push((self.acc << (8 - self.pending)) as u8);
        }
        self.bytes
    }
}

/// Reads bits as [`BitWriter`] wrote them; reading past the end is an error (`None`).
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The next 57 or more bits from the most significant bit, zeros past the end.
    #[inline(always)]
    #[expect(clippy::big_endian_bytes, reason = "the stream is most significant bit first")]
    fn peek(&self) -> u64 {
        let at = self.pos / 8;
        let word = match self.bytes.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(s) => u64::from_be_bytes(s),
            None => self.peek_tail(at),
        };
        word << (self.pos % 8)
    }

    /// The bytes from `at` to the end, fewer than 8, as the high bytes of a word.
    #[cold]
    #[expect(clippy::big_endian_bytes, reason = "the stream is most significant bit first")]
    fn peek_tail(&self, at: usize) -> u64 {
        let mut buf = [0u8; 8];
        let tail = self.bytes.get(at..).unwrap_or_default();
        if let Some(head) = buf.get_mut(..tail.len()) {
            head.copy_from_slice(tail);
        }
        u64::from_be_bytes(buf)
    }

    /// Bits left.
    #[inline(always)]
    fn left(&self) -> usize {
        (self.bytes.len() * 8).saturating_sub(self.pos)
    }

    /// The next `n` bits (`n` ≤ 64), as the low bits of the result.
    pub(crate) fn read(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let hi = self.read(n - 32)?;
            let lo = self.read(32)?;
            return Some((hi << 32) | lo);
        }
        if self.left() < n as usize {
            return None;
        }
        let v = self.peek() >> (64 - n);
        self.pos += n as usize;
        Some(v)
    }

    /// The next bit.
    pub(crate) fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }

    /// Counts and skips one bits, at most `max` (≤ 56), and the zero bit that ends them if fewer.
    fn ones(&mut self, max: u32) -> Option<u32> {
        let q = (!self.peek()).leading_zeros().min(max);
        let used = if q < max { q + 1 } else { q };
        if self.left() < used as usize {
            return None;
        }
        self.pos += used as usize;
        Some(q)
    }

    /// A Rice code with parameter `k` whose quotient is under [`RICE_LIMIT`] and which lies in the next 57
    /// bits, read from one look at the stream; `None` (nothing read) for any other.
    #[inline(always)]
    fn rice_short(&mut self, k: u32) -> Option<u64> {
        let w = self.peek();
        let q = (!w).leading_zeros();
        let used = q + 1 + k;
        if q >= RICE_LIMIT || used > 57 || self.left() < used as usize {
            return None;
        }
        let low = if k == 0 { 0 } else { (w << (q + 1)) >> (64 - k) };
        self.pos += used as usize;
        Some((u64::from(q) << k) | low)
    }

    /// Bits read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

/// Zigzag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Writes a delta of deltas (version 1 blocks): `0` for zero, `10` + 7 bits, `110` + 12 bits, `1110` + 20
/// bits of its zigzag form, or `1111` + 64 bits.
#[cfg(test)]
pub(crate) fn write_dod(w: &mut BitWriter, dod: i64) {
    let z = zigzag(dod);
    if z == 0 {
        w.bit(false);
    } else if z < 1 << 7 {
        w.write(0b10, 2);
        w.write(z, 7);
    } else if z < 1 << 12 {
        w.write(0b110, 3);
        w.write(z, 12);
    } else if z < 1 << 20 {
        w.write(0b1110, 4);
        w.write(z, 20);
    } else {
        w.write(0b1111, 4);
        w.write(z, 64);
    }
}

/// Reads what [`write_dod`] wrote.
pub(crate) fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    let width = match r.ones(4)? {
        0 => return Some(0),
        1 => 7,
        2 => 12,
        3 => 20,
        _ => 64,
    };
    r.read(width).map(unzigzag)
}

/// Gorilla's XOR encoding of a value after the previous one; `window` is the previous (leading zeros,
/// meaningful bits), `None` before the first non-zero XOR.
pub(crate) fn write_xor(w: &mut BitWriter, prev: u64, v: u64, window: &mut Option<(u32, u32)>) {
    let x = prev ^ v;
    if x == 0 {
        w.bit(false);
        return;
    }
    let lead = x.leading_zeros();
    let trail = x.trailing_zeros();
    if let Some((pl, pm)) = *window {
        if lead >= pl && trail >= 64 - pl - pm {
            w.write(0b10, 2);
            w.write(x >> (64 - pl - pm), pm);
            return;
        }
    }
    let meaningful = 64 - lead - trail;
    w.write(0b11, 2);
    w.write(u64::from(lead), 6);
    w.write(u64::from(meaningful - 1), 6);
    w.write(x >> trail, meaningful);
    *window = Some((lead, meaningful));
}

/// Reads what [`write_xor`] wrote: the next value's bits.
pub(crate) fn read_xor(r: &mut BitReader<'_>, prev: u64, window: &mut Option<(u32, u32)>) -> Option<u64> {
    if !r.bit()? {
        return Some(prev);
    }
    let (lead, meaningful) = if r.bit()? {
        let lead = u32::try_from(r.read(6)?).ok()?;
        let meaningful = u32::try_from(r.read(6)?).ok()? + 1;
        if lead + meaningful > 64 {
            return None;
        }
        *window = Some((lead, meaningful));
        (lead, meaningful)
    } else {
        (*window)?
    };
    let bits = r.read(meaningful)?;
    Some(prev ^ (bits << (64 - lead - meaningful)))
}

/// Longest unary part of a [`Rice`] code: a quotient this large is written out in full instead.
const RICE_LIMIT: u32 = 16;
/// A [`Rice`] coder halves its statistics when it has seen this many values.
const RICE_RESET: u64 = 64;

/// An adaptive Rice code for unsigned integers (as LOCO-I's): with `k` the smallest parameter for which
/// `n << k >= sum`, a value `z` is written as `z >> k` in unary (that many one bits and a zero bit) then
/// its low `k` bits; a quotient of [`RICE_LIMIT`] or more as that many one bits, the bit length `m` of `z`
/// less one in 6 bits, and `z` in `m` bits. Then `sum += z`, `n += 1`, both halved when `n` reaches
/// [`RICE_RESET`]. Encoder and decoder keep the same state, so small values cost few bits and the code
/// follows their size as it drifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rice {
    /// Sum of the recent values (saturating).
    sum: u64,
    /// How many values `sum` holds, plus one.
    n: u64,
}

impl Rice {
    /// The state before the first value.
    pub(crate) const START: Rice = Rice { sum: 0, n: 1 };

    /// The parameter: the smallest `k` (at most 63) with `n << k >= sum`.
    #[inline(always)]
    fn k(&self) -> u32 {
        // n << k has bit length len(n) + k, so k is len(sum) - len(n), or one more.
        let k = (64 - self.sum.leading_zeros()).saturating_sub(64 - self.n.leading_zeros());
        let k = if self.n << k >= self.sum { k } else { k + 1 };
        k.min(63)
    }

    #[inline(always)]
    fn update(&mut self, z: u64) {
        self.sum = self.sum.saturating_add(z);
        self.n += 1;
        if self.n >= RICE_RESET {
            self.sum >>= 1;
            self.n >>= 1;
        }
    }

    /// Writes `z` and updates the state.
    pub(crate) fn write(&mut self, w: &mut BitWriter, z: u64) {
        let k = self.k();
        let q = z >> k;
        if q < u64::from(RICE_LIMIT) {
            // q one bits and a zero bit.
            w.write((1u64 << (q + 1)) - 2, q as u32 + 1);
            w.write(z, k);
        } else {
            let m = 64 - z.leading_zeros();
            w.write((1u64 << RICE_LIMIT) - 1, RICE_LIMIT);
            w.write(u64::from(m - 1), 6);
            w.write(z, m);
        }
        self.update(z);
    }

    /// Reads what [`Rice::write`] wrote, from the same state.
    #[inline(always)]
    pub(crate) fn read(&mut self, r: &mut BitReader<'_>) -> Option<u64> {
        let k = self.k();
        let z = match r.rice_short(k) {
            Some(z) => z,
            None => Self::read_long(r, k)?,
        };
        self.update(z);
        Some(z)
    }

    /// [`Rice::read`] of a code that [`BitReader::rice_short`] does not take.
    #[cold]
    fn read_long(r: &mut BitReader<'_>, k: u32) -> Option<u64> {
        let q = r.ones(RICE_LIMIT)?;
        if q < RICE_LIMIT {
            Some((u64::from(q) << k) | r.read(k)?)
        } else {
            let m = u32::try_from(r.read(6)?).ok()? + 1;
            r.read(m)
        }
    }
}
