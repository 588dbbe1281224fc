//! WAL sync markers: records that say how much of the WAL was durable when they were written, so that
//! recovery can tell damage in synced bytes (corruption) from a torn tail. See `docs/format/wal.md`, "Sync
//! markers".
//!
//! A marker is a write-batch header with a count of 0 whose sequence field holds `synced_through`.

use crate::batch::{self, BATCH_HEADER_LEN};

/// The payload of a WAL *sync marker*: a batch header with count 0 whose sequence field holds the file
/// offset through which the WAL had been synced when the marker was written. Written at the start of the
/// first append after each sync; recovery uses it to tell damage in synced data from a torn tail.
pub(crate) fn sync_marker(synced_through: u64) -> [u8; BATCH_HEADER_LEN] {
    let mut out = [0u8; BATCH_HEADER_LEN];
    if let Some(seq) = out.get_mut(..8) {
        seq.copy_from_slice(&synced_through.to_le_bytes());
    }
    out
}

/// The offset a sync marker vouches for, if `payload` is one.
pub(crate) fn marker_synced_through(payload: &[u8]) -> Option<u64> {
    let d = batch::decode(payload).ok()?;
    (payload.len() == BATCH_HEADER_LEN && d.count == 0).then_some(d.first_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_a_batch_is_not_one() {
        assert_eq!(marker_synced_through(&sync_marker(4096)), Some(4096));
        let mut b = crate::WriteBatch::new();
        b.put(b"k", b"v");
        assert_eq!(marker_synced_through(b.stamp(1)), None);
        assert_eq!(marker_synced_through(&[0; 11]), None);
    }
}
