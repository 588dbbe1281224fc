//! The job collection's indexes, read straight from the engine: a claim is one seek to the head of
//! `(queue, "available")` in index `ready`; due jobs, expired leases and old finished jobs are ranges of
//! `due`, `lease` and `finished` ending at a time.

use serde_json::Value;

use crate::error::StoreError;
use crate::keys;
use crate::store::Store;

use super::model::{parse_job_key, JobState};
use super::names::JOBS;

/// `(queue, state, priority)`, then the id.
pub(crate) const READY: &str = "ready";
/// `due_at_ms` (set while scheduled or retryable).
pub(crate) const DUE: &str = "due_at";
/// `lease_until_ms` (set while running).
pub(crate) const LEASE: &str = "lease";
/// `(state, finished_at_ms)`.
pub(crate) const FINISHED: &str = "finished";

fn encoded(prefix: Vec<u8>, values: &[Value]) -> Vec<u8> {
    let mut k = prefix;
    for v in values {
        keys::encode_value(&mut k, Some(v));
    }
    k
}

/// Prefix of the entries of `queue`'s jobs in `state`, in claim order.
pub(crate) fn ready_prefix(queue: &str, state: JobState) -> Vec<u8> {
    encoded(keys::index_prefix(JOBS, READY), &[Value::from(queue), Value::from(state.as_str())])
}

/// The job id an index entry names (its value is the record id).
pub(crate) fn entry_job(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(parse_job_key)
        .ok_or_else(|| StoreError::undecodable(key, "job index entry"))
}

/// Visits the index entries in `[lo, end)` in order at a new snapshot, while `visit` returns `true`.
/// Deleted entries at the head of the range (claimed jobs, promoted ones, finished leases) are skipped
/// with the store's scan hints, as queries skip them (`hints.rs`): the scan reads the entries inserted
/// before where an earlier scan found the first live entry by key, starts its range there, and records
/// where this one finds it.
pub(crate) fn scan(
    store: &Store,
    lo: &[u8],
    end: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let hints = store.hints();
    let ticket = hints.begin_scan();
    let snap = store.db().snapshot();
    let (start, exceptions) = hints.resume(&snap, lo, |key| key < end)?;
    for (key, value) in &exceptions {
        if !visit(key, value)? {
            return Ok(());
        }
    }
    let live_exceptions = || exceptions.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>();
    let mut first = true;
    let mut iter = snap.range(start..end.to_vec())?;
    while let Some(pair) = iter.next_ref() {
        let (key, value) = pair?;
        if first {
            hints.record(ticket, lo, key, snap.sequence(), live_exceptions());
            first = false;
        }
        if !visit(key, value)? {
            return Ok(());
        }
    }
    if first {
        hints.record(ticket, lo, end, snap.sequence(), live_exceptions());
    }
    Ok(())
}

/// The ids of up to `limit` jobs whose time in index `index` (after `prefix` values) is at most `until_ms`,
/// earliest first, with the first time after `until_ms` found, if any (`limit` reached: the last time
/// looked at).
pub(crate) fn until(
    store: &Store,
    index: &str,
    prefix: &[Value],
    until_ms: i64,
    limit: usize,
) -> Result<(Vec<u64>, Option<i64>), StoreError> {
    let base = encoded(keys::index_prefix(JOBS, index), prefix);
    // Null (no time) sorts before every number: start at the numbers.
    let lo = [base.as_slice(), &[0x30]].concat();
    let end = keys::after_prefix(&base).unwrap_or_default();
    let bound = encoded(base.clone(), &[Value::from(until_ms)]);
    let (mut ids, mut next) = (Vec::new(), None);
    scan(store, &lo, &end, |key, value| {
        if (key > bound.as_slice() && !key.starts_with(&bound)) || ids.len() >= limit {
            next = time_of(key, base.len());
            return Ok(false);
        }
        ids.push(entry_job(key, value)?);
        Ok(true)
    })?;
    Ok((ids, next))
}

/// The time (ms) encoded right after `at` in an index key.
#[expect(clippy::big_endian_bytes, reason = "order-preserving encoding of numbers")]
fn time_of(key: &[u8], at: usize) -> Option<i64> {
    let bytes: [u8; 8] = key.get(at + 1..at + 9)?.try_into().ok()?;
    let ordered = u64::from_be_bytes(bytes);
    let bits = if ordered >> 63 == 1 { ordered & !(1 << 63) } else { !ordered };
    Some(f64::from_bits(bits) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_decode_from_index_keys() {
        for t in [0i64, 1, 1_700_000_000_123, 4_102_444_800_000] {
            let k = encoded(b"p".to_vec(), &[Value::from(t)]);
            assert_eq!(time_of(&k, 1), Some(t));
        }
    }
}
