//! Bit streams, most significant bit first, and the variable-length codes of a block's payload
//! (`docs/format/metrics.md`, "Payload").

/// Appends bits to a byte vector, most significant bit of each byte first; the last byte is padded with
/// zero bits.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte, 0 to 7 (0: a new byte is needed for the next bit).
    used: u32,
}

impl BitWriter {
    /// Appends the low `n` bits of `v` (`n` ≤ 64), highest first.
    pub(crate) fn write(&mut self, v: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.used;
            let take = room.min(left);
            let chunk = (v >> (left - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bytes.last_mut() {
                *last |= u8::try_from(chunk << (room - take)).unwrap_or(0);
            }
            self.used = (self.used + take) % 8;
            left -= take;
        }
    }

    /// Appends one bit.
    pub(crate) fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// The bytes written, the last one padded.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads bits as [`BitWriter`] wrote them; reading past the end is an error (`None`).
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte to load into `buf`.
    next: usize,
    /// The next `have` bits, from the most significant bit.
    buf: u64,
    have: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, next: 0, buf: 0, have: 0 }
    }

    /// Loads whole bytes into `buf` while they fit.
    fn refill(&mut self) {
        while self.have <= 56 {
            let Some(b) = self.bytes.get(self.next) else { return };
            self.buf |= u64::from(*b) << (56 - self.have);
            self.have += 8;
            self.next += 1;
        }
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
        if self.have < n {
            self.refill();
            if self.have < n {
                return None;
            }
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.have -= n;
        Some(v)
    }

    /// The next bit.
    pub(crate) fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }

    /// Bits read so far.
    pub(crate) fn position(&self) -> usize {
        self.next * 8 - self.have as usize
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

/// Writes a delta of deltas: `0` for zero, `10` + 7 bits, `110` + 12 bits, `1110` + 20 bits of its zigzag
/// form, or `1111` + 64 bits.
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
    let width = if !r.bit()? {
        return Some(0);
    } else if !r.bit()? {
        7
    } else if !r.bit()? {
        12
    } else if !r.bit()? {
        20
    } else {
        64
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
    w.bit(true);
    let lead = x.leading_zeros();
    let trail = x.trailing_zeros();
    if let Some((pl, pm)) = *window {
        if lead >= pl && trail >= 64 - pl - pm {
            w.bit(false);
            w.write(x >> (64 - pl - pm), pm);
            return;
        }
    }
    let meaningful = 64 - lead - trail;
    w.bit(true);
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
