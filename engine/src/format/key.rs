//! Internal keys: a user key followed by an 8-byte trailer `(sequence << 8) | kind`, little-endian.
//!
//! Internal keys sort by user key ascending (bytewise), then by trailer descending, so the newest version of a
//! key comes first. See `docs/format/README.md` (internal keys) and `docs/format/table.md`.

use std::cmp::Ordering;

use xxhash_rust::xxh3::xxh3_64;

/// The hash of a user key that bloom filters are built from: the tables' (`docs/format/table.md`) and the
/// memtables'. A point read computes it once for all of them.
pub(crate) fn key_hash(user_key: &[u8]) -> u64 {
    xxh3_64(user_key)
}

/// Length of the trailer appended to every user key.
pub(crate) const TRAILER_LEN: usize = 8;

/// What an entry records about its key. Values are written to disk and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ValueKind {
    /// The key was deleted at this sequence (a tombstone); the entry has an empty value.
    Delete = 0,
    /// The key was set to the entry's value at this sequence.
    Put = 1,
}

impl ValueKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Delete),
            1 => Some(Self::Put),
            _ => None,
        }
    }
}

/// The trailer used to seek to the newest version of a key visible at `seq`: it sorts before every
/// entry of that key whose sequence is `<= seq`.
pub(crate) fn seek_trailer(seq: u64) -> u64 {
    (seq << 8) | 0xff
}

pub(crate) fn make_trailer(seq: u64, kind: ValueKind) -> u64 {
    (seq << 8) | kind as u64
}

/// Appends the internal key for `(user_key, trailer)` to `out`.
pub(crate) fn append_internal_key(out: &mut Vec<u8>, user_key: &[u8], trailer: u64) {
    out.extend_from_slice(user_key);
    out.extend_from_slice(&trailer.to_le_bytes());
}

pub(crate) fn internal_key(user_key: &[u8], trailer: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    append_internal_key(&mut out, user_key, trailer);
    out
}

/// Splits an internal key into user key and trailer. Keys shorter than a trailer (only possible for
/// corrupt input, which decoders reject first) split as the whole key with trailer 0.
pub(crate) fn split(ikey: &[u8]) -> (&[u8], u64) {
    match ikey.len().checked_sub(TRAILER_LEN) {
        Some(n) => {
            let (user, trailer) = ikey.split_at(n);
            let trailer = trailer.try_into().map(u64::from_le_bytes).unwrap_or(0);
            (user, trailer)
        }
        None => (ikey, 0),
    }
}

pub(crate) fn user_key(ikey: &[u8]) -> &[u8] {
    split(ikey).0
}

pub(crate) fn trailer_seq(trailer: u64) -> u64 {
    trailer >> 8
}

pub(crate) fn trailer_kind(trailer: u64) -> Option<ValueKind> {
    ValueKind::from_u8((trailer & 0xff) as u8)
}

/// Eight bytes of a user key from `skip` on, big-endian and zero-padded: for keys that agree on their first
/// `skip` bytes, `window(a) < window(b)` implies `a < b`, so sorted keys have non-decreasing windows.
#[expect(clippy::big_endian_bytes, reason = "windows compare as integers in the keys' byte order")]
pub(crate) fn window(user_key: &[u8], skip: usize) -> u64 {
    let mut buf = [0u8; 8];
    let tail = user_key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), tail.get(..n)) {
        dst.copy_from_slice(src);
    }
    u64::from_be_bytes(buf)
}

/// The internal-key order: user key ascending, then trailer (sequence, kind) descending.
pub(crate) fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let (ua, ta) = split(a);
    let (ub, tb) = split(b);
    // Keys whose windows (first eight bytes) differ are ordered by them, compared as one integer, without a
    // call to `memcmp`: most neighbours a merge or a search compares differ early.
    let (wa, wb) = (window(ua, 0), window(ub, 0));
    if wa != wb {
        return wa.cmp(&wb);
    }
    ua.cmp(ub).then_with(|| tb.cmp(&ta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_sort_first() {
        let old = internal_key(b"k", make_trailer(5, ValueKind::Put));
        let new = internal_key(b"k", make_trailer(9, ValueKind::Delete));
        let other = internal_key(b"ka", make_trailer(1, ValueKind::Put));
        assert_eq!(compare(&new, &old), Ordering::Less);
        assert_eq!(compare(&old, &other), Ordering::Less);
        let seek = internal_key(b"k", seek_trailer(9));
        assert_eq!(compare(&seek, &new), Ordering::Less);
        let seek_older = internal_key(b"k", seek_trailer(8));
        assert_eq!(compare(&new, &seek_older), Ordering::Less);
        assert_eq!(compare(&seek_older, &old), Ordering::Less);
        let (u, t) = split(&new);
        assert_eq!(u, b"k");
        assert_eq!(trailer_seq(t), 9);
        assert_eq!(trailer_kind(t), Some(ValueKind::Delete));
    }

    proptest::proptest! {
        /// The order is user key ascending (bytes, a prefix first), then trailer descending, whatever the
        /// lengths: on either side of the eight bytes compared at once, and with a shared start.
        #[test]
        fn compare_is_user_key_then_newest_first(
            prefix in proptest::collection::vec(0u8..3, 0..12),
            a in proptest::collection::vec(0u8..3, 0..12),
            b in proptest::collection::vec(0u8..3, 0..12),
            ta in 0u64..4,
            tb in 0u64..4,
        ) {
            let (ua, ub) = ([prefix.as_slice(), &a].concat(), [prefix.as_slice(), &b].concat());
            let want = ua.cmp(&ub).then(tb.cmp(&ta));
            proptest::prop_assert_eq!(compare(&internal_key(&ua, ta), &internal_key(&ub, tb)), want);
        }
    }
}
