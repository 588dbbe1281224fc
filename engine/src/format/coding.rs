//! Little-endian encoding and a bounds-checked decoding cursor.
//!
//! Nothing decoded from disk is indexed directly: every read goes through [`Cursor`], which returns a
//! [`DecodeError`] with the offset at which the input ran out or made no sense.

/// Why a byte string could not be decoded, and where (relative to the start of the decoded buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub offset: usize,
    pub reason: &'static str,
}

impl DecodeError {
    pub fn new(offset: usize, reason: &'static str) -> Self {
        Self { offset, reason }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Unsigned LEB128, at most 5 bytes for a `u32`.
pub(crate) fn put_varint32(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A `u32` length followed by that many bytes.
pub(crate) fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Reads a little-endian `u32` at `offset`, if the slice is long enough.
pub(crate) fn read_u32_at(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a little-endian `u64` at `offset`, if the slice is long enough.
pub(crate) fn read_u64_at(buf: &[u8], offset: usize) -> Option<u64> {
    let bytes = buf.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A forward reader over a byte slice whose every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::new(self.pos, what))?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::new(self.pos, what))?;
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?.first().copied().unwrap_or_default())
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| DecodeError::new(self.pos, what))?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| DecodeError::new(self.pos, what))?))
    }

    pub fn varint32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut result: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.u8(what)?;
            let bits = u32::from(byte & 0x7f);
            if shift == 28 && bits > 0x0f {
                return Err(DecodeError::new(start, "varint overflows u32"));
            }
            result |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(result);
            }
        }
        Err(DecodeError::new(start, "varint longer than 5 bytes"))
    }

    pub fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.bytes(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_limits() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            put_varint32(&mut buf, v);
            let mut c = Cursor::new(&buf);
            assert_eq!(c.varint32("v").unwrap(), v);
            assert!(c.is_empty());
        }
        // Six continuation bytes never decode.
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(c.varint32("v").is_err());
        // A 5th byte carrying more than 4 bits overflows a u32.
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert!(c.varint32("v").is_err());
    }

    #[test]
    fn truncated_reads_report_offset() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u8("a").unwrap(), 1);
        let err = c.u32("b").unwrap_err();
        assert_eq!(err, DecodeError::new(1, "b"));
        assert_eq!(read_u32_at(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(read_u64_at(&[1, 0, 0, 0], 0), None);
    }
}
