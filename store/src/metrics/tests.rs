//! Tests of the metrics store: the encoding against plain vectors, the store against a model, pagination,
//! downsampling against a direct computation, deletion and retention, corruption, crashes, concurrency.

use std::path::Path;
use std::sync::Arc;

use cairn_engine::{CrashMode, Db, Durability, MemStorage};
use proptest::prelude::*;

use super::bits::{read_dod, read_xor, write_dod, write_xor, BitReader, BitWriter, Rice};
use super::block::{self, Modes, BLOCK_POINTS};
use super::layout;
use super::write;
use super::*;
use crate::{Store, StoreOptions};

fn open_mem(fs: &MemStorage) -> Metrics {
    let db = Db::builder()
        .storage(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .memtable_size(64 * 1024)
        .open(Path::new("/db"))
        .unwrap();
    Metrics::new(Store::with_db(db, StoreOptions::default()).unwrap())
}

fn mem() -> Metrics {
    open_mem(&MemStorage::new())
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Values that stress the value codes: NaNs with payloads (some only in the low bits, which no `f32` has),
/// infinities, signed zeros, extremes, subnormals, and `f32` values widened (what most frameworks log).
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        4 => any::<f32>().prop_map(f64::from),
        2 => (-1e3f32..1e3).prop_map(f64::from),
        1 => (1u32..1 << 23).prop_map(|m| f64::from(f32::from_bits(m))),
        1 => (1u64..1 << 52).prop_map(f64::from_bits),
        1 => (1u64..1 << 29).prop_map(|p| f64::from_bits(0x7ff8_0000_0000_0000 | p)),
        1 => Just(f64::NAN),
        1 => any::<u64>().prop_map(|p| f64::from_bits(0x7ff0_0000_0000_0001 | (p & 0x000f_ffff_ffff_ffff))),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(0.0),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN),
        2 => any::<u64>().prop_map(f64::from_bits),
        2 => (0u32..4).prop_map(f64::from),
    ]
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 0i64..50, 1 => any::<i64>(), 1 => Just(i64::MIN), 1 => Just(i64::MAX), 1 => -1i64..2]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 1_700_000_000_000i64..1_700_000_100_000, 1 => any::<i64>()]
}

fn point() -> impl Strategy<Value = Point> {
    (step(), timestamp(), value()).prop_map(|(step, timestamp_ms, value)| Point { step, timestamp_ms, value })
}

/// The model of a series: every point logged, ordered by step then log order.
fn model_history(log: &[(String, Point)], key: &str) -> Vec<Point> {
    let mut pts: Vec<Point> = log.iter().filter(|(k, _)| k == key).map(|(_, p)| *p).collect();
    pts.sort_by_key(|p| p.step);
    pts
}

fn all(m: &Metrics, run: &str, key: &str) -> Vec<Point> {
    m.history(&HistoryRequest::new(run, key)).unwrap().points
}

/// Every page of a request, concatenated; checks each page's size.
fn paged(m: &Metrics, req: HistoryRequest) -> Vec<Point> {
    let limit = req.limit;
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let page = m.history(&req.clone().cursor(cursor)).unwrap();
        assert!(page.points.len() <= limit);
        out.extend(page.points.iter().copied());
        match page.next_cursor {
            Some(c) => {
                assert_eq!(page.points.len(), limit, "only a full page has a next one");
                cursor = Some(c);
            }
            None => return out,
        }
    }
    panic!("pagination does not end");
}

/// A bucket computed directly from the model's points, with the sum of its values' magnitudes, which
/// bounds how far sums taken in another order may differ.
struct Want {
    bucket: Bucket,
    magnitude: f64,
}

/// Buckets computed directly from the model's points.
fn direct_buckets(pts: &[Point], lo: i64, hi: i64, n: usize) -> Vec<Want> {
    let span = i128::from(hi) - i128::from(lo) + 1;
    let width = (span + n as i128 - 1) / n as i128;
    let count = ((span + width - 1) / width) as usize;
    let mut members: Vec<Vec<Point>> = vec![Vec::new(); count];
    for p in pts.iter().filter(|p| p.step >= lo && p.step <= hi) {
        members[((i128::from(p.step) - i128::from(lo)) / width) as usize].push(*p);
    }
    let mut out = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let Some(last) = m.last() else { continue };
        let numeric: Vec<f64> = m.iter().map(|p| p.value).filter(|v| !v.is_nan()).collect();
        let start = i128::from(lo) + i as i128 * width;
        let bucket = Bucket {
            start_step: start as i64,
            end_step: (start + width - 1).min(i128::from(hi)) as i64,
            count: m.len() as u64,
            nan_count: (m.len() - numeric.len()) as u64,
            min: numeric.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
            max: numeric.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a }),
            mean: if numeric.is_empty() { f64::NAN } else { numeric.iter().sum::<f64>() / numeric.len() as f64 },
            last_step: last.step,
            last: last.value,
        };
        out.push(Want { bucket, magnitude: numeric.iter().map(|v| v.abs()).sum::<f64>() });
    }
    out
}

fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Means are sums taken in another order: they differ by at most a small multiple of the values'
/// magnitudes (and say nothing when those overflow, where the order decides what the sum is).
fn close(a: f64, b: f64, magnitude: f64) -> bool {
    !magnitude.is_finite()
        || same_f64(a, b)
        || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        || (a - b).abs() <= 1e-12 * magnitude
}

fn assert_buckets(got: &[Bucket], want: &[Want]) {
    assert_eq!(got.len(), want.len(), "bucket count");
    for (g, Want { bucket: w, magnitude }) in got.iter().zip(want) {
        assert_eq!(
            (g.start_step, g.end_step, g.count, g.nan_count, g.last_step),
            (w.start_step, w.end_step, w.count, w.nan_count, w.last_step)
        );
        assert!(same_f64(g.min, w.min) && same_f64(g.max, w.max), "min/max {g:?} vs {w:?}");
        assert_eq!(g.last.to_bits(), w.last.to_bits(), "last {g:?} vs {w:?}");
        assert!(close(g.mean, w.mean, *magnitude), "mean {g:?} vs {w:?}");
    }
}

fn mp(key: &str, p: Point) -> MetricPoint {
    MetricPoint::new(key, p.step, p.timestamp_ms, p.value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dod_and_xor_codes_round_trip(dods in proptest::collection::vec(any::<i64>(), 0..50),
                                    values in proptest::collection::vec(any::<u64>(), 1..50)) {
        let mut w = BitWriter::default();
        for d in &dods { write_dod(&mut w, *d); }
        let mut window = None;
        for pair in values.windows(2) { write_xor(&mut w, pair[0], pair[1], &mut window); }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for d in &dods { prop_assert_eq!(read_dod(&mut r), Some(*d)); }
        let mut window = None;
        for pair in values.windows(2) { prop_assert_eq!(read_xor(&mut r, pair[0], &mut window), Some(pair[1])); }
        prop_assert!(bytes.len() * 8 - r.position() < 8);
    }

    #[test]
    fn rice_codes_round_trip(values in proptest::collection::vec(prop_oneof![
            4 => 0u64..64, 2 => 0u64..1 << 20, 1 => any::<u64>(), 1 => Just(u64::MAX)], 0..300),
        split in any::<usize>()) {
        // Written in two goes, the second after resuming where the first ended, as an append does.
        let at = if values.is_empty() { 0 } else { split % (values.len() + 1) };
        let mut w = BitWriter::default();
        let mut rice = Rice::START;
        for z in &values[..at] { rice.write(&mut w, *z); }
        let bits = w.len();
        let mut w = BitWriter::resume(&w.finish(), bits);
        for z in &values[at..] { rice.write(&mut w, *z); }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        let mut rice = Rice::START;
        for z in &values { prop_assert_eq!(rice.read(&mut r), Some(*z)); }
        prop_assert!(bytes.len() * 8 - r.position() < 8);
    }

    #[test]
    fn blocks_round_trip_bit_for_bit(mut pts in proptest::collection::vec(point(), 1..BLOCK_POINTS)) {
        pts.sort_by_key(|p| p.step);
        let bytes = block::encode(&pts);
        let (h, back) = block::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &pts);
        prop_assert_eq!(format!("{h:?}"), format!("{:?}", block::header_of(&pts)), "NaN sums compare as text");
        prop_assert_eq!(h.count as usize, pts.len());
        prop_assert_eq!(h.min_ts, pts.iter().map(|p| p.timestamp_ms).min().unwrap());
        prop_assert_eq!(h.max_ts, pts.iter().map(|p| p.timestamp_ms).max().unwrap());
    }

    #[test]
    fn blocks_in_every_code_round_trip(mut pts in proptest::collection::vec(point(), 1..300), steps in any::<bool>()) {
        pts.sort_by_key(|p| p.step);
        if steps {
            // Evenly spaced steps, so that the regular-steps code is tried too.
            for (i, p) in pts.iter_mut().enumerate() { p.step = 100 + 3 * i as i64; }
        }
        let best = Modes::best_for(&pts);
        let regular = pts.windows(2).all(|w| w[1].step.wrapping_sub(w[0].step) == pts[1].step.wrapping_sub(pts[0].step));
        prop_assert_eq!(best.regular_steps, pts.len() < 2 || regular);
        let narrow = pts.iter().all(|p| p.value.to_bits().trailing_zeros() >= 29);
        for values in [block::ValueCode::Xor, block::ValueCode::Delta { shift: 0 }, block::ValueCode::Delta { shift: 29 }] {
            if values == (block::ValueCode::Delta { shift: 29 }) && !narrow { continue; }
            for regular_steps in [false, best.regular_steps] {
                let bytes = block::encode_in(Modes { regular_steps, values }, &pts);
                let (h, back) = block::decode(&bytes).unwrap();
                prop_assert_eq!(&back, &pts);
                prop_assert_eq!(format!("{h:?}"), format!("{:?}", block::header_of(&pts)));
                // Steps and values alone, as downsampling reads them.
                let mut sv = Vec::new();
                block::decode_values_each(&bytes, |p| sv.push((p.step, p.value.to_bits()))).unwrap();
                prop_assert_eq!(sv, pts.iter().map(|p| (p.step, p.value.to_bits())).collect::<Vec<_>>());
            }
        }
    }

    /// Appending to a block resumed from its bytes writes the same bytes as encoding every point at once.
    #[test]
    fn a_resumed_block_appends_as_if_written_at_once(mut pts in proptest::collection::vec(point(), 2..400),
                                                     split in any::<usize>()) {
        pts.sort_by_key(|p| p.step);
        let at = 1 + split % (pts.len() - 1);
        let modes = Modes::best_for(&pts);
        let whole = block::encode_in(modes, &pts);
        let mut b = block::Builder::resume(&block::encode_in(modes, &pts[..at])).unwrap().unwrap();
        for p in &pts[at..] { prop_assert!(b.push(p)); }
        prop_assert_eq!(b.finish(), whole);
    }

    /// A block refuses what its codes cannot take, and is left as it was.
    #[test]
    fn a_block_refuses_points_its_codes_cannot_take(mut pts in proptest::collection::vec(point(), 1..100), next in point()) {
        pts.sort_by_key(|p| p.step);
        let modes = Modes::best_for(&pts);
        let bytes = block::encode_in(modes, &pts);
        let mut b = block::Builder::resume(&bytes).unwrap().unwrap();
        let last = pts.last().unwrap();
        let fits_value = match modes.values {
            block::ValueCode::Delta { shift } => next.value.to_bits().trailing_zeros() >= shift,
            block::ValueCode::Xor => true,
        };
        let fits_step = next.step >= last.step
            && (!modes.regular_steps || pts.len() < 2 || next.step.wrapping_sub(last.step) == pts[1].step.wrapping_sub(pts[0].step));
        prop_assert_eq!(b.push(&next), fits_value && fits_step);
        let mut all = pts.clone();
        if fits_value && fits_step { all.push(next); }
        prop_assert_eq!(block::decode(&b.finish()).unwrap().1, all);
    }

    /// Version 1 blocks, as written before version 2, still decode bit for bit.
    #[test]
    fn version_1_blocks_still_decode(mut pts in proptest::collection::vec(point(), 1..BLOCK_POINTS)) {
        pts.sort_by_key(|p| p.step);
        let bytes = block::encode_v1(&pts);
        prop_assert_eq!(bytes[0], 1);
        let (h, back) = block::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &pts);
        prop_assert_eq!(format!("{h:?}"), format!("{:?}", block::header_of(&pts)));
        prop_assert!(block::Builder::resume(&bytes).unwrap().is_none(), "a version 1 block is rewritten, not resumed");
    }

    /// Bytes that pass the checksum but hold anything decode to an error or to points, never a panic.
    #[test]
    fn any_bytes_under_a_valid_checksum_decode_or_fail(version in 1u8..3, flags in any::<u8>(), count in 1u32..40,
            steps in (any::<i64>(), 0i64..100), mut payload in proptest::collection::vec(any::<u8>(), 16..200),
            split in any::<u32>()) {
        if version == 2 {
            // A first stream's length within the payload, so that both streams are decoded.
            let len = split % (payload.len() as u32 - 3);
            payload[..4].copy_from_slice(&len.to_le_bytes());
        }
        let mut b = vec![version, flags];
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        let max = steps.0.saturating_add(steps.1);
        for v in [steps.0, max, 0, 0, 0, 0, 0, 0] { b.extend_from_slice(&v.to_le_bytes()); }
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&payload);
        let crc = block::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        if let Ok((h, pts)) = block::decode(&b) {
            prop_assert_eq!(pts.len() as u32, h.count);
        }
        let mut n = 0u32;
        if let Ok(h) = block::decode_values_each(&b, |_| n += 1) {
            prop_assert_eq!(n, h.count);
        }
        if let Ok(Some(mut builder)) = block::Builder::resume(&b) {
            let next = Point { step: max, timestamp_ms: 0, value: 0.0 };
            builder.push(&next);
            let _ = builder.finish();
        }
    }

    #[test]
    fn any_flipped_bit_of_a_block_is_detected(pts in proptest::collection::vec(point(), 1..200), at in any::<usize>(), bit in 0u8..8) {
        let mut pts = pts;
        pts.sort_by_key(|p| p.step);
        for mut bytes in [block::encode(&pts), block::encode_v1(&pts)] {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            prop_assert!(block::decode(&bytes).is_err());
            prop_assert!(block::Builder::resume(&bytes).is_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The store against a plain vector: batches of out-of-order points with duplicate steps, huge gaps and
    /// i64 extremes, to two keys; full reads, pages, step and time ranges, latest values, downsampling.
    #[test]
    fn store_matches_a_model(batches in proptest::collection::vec(
            proptest::collection::vec((prop_oneof![Just("a"), Just("b")], point()), 1..400), 1..8),
        limit in 1usize..300, lo in step(), span in 0i64..60, buckets in 1usize..40) {
        let m = mem();
        let mut log: Vec<(String, Point)> = Vec::new();
        for batch in &batches {
            let pts: Vec<MetricPoint> = batch.iter().map(|(k, p)| mp(k, *p)).collect();
            let r = m.log("run", &pts).unwrap();
            prop_assert_eq!(r.points as usize, pts.len());
            log.extend(batch.iter().map(|(k, p)| ((*k).to_owned(), *p)));
        }
        for key in ["a", "b"] {
            let want = model_history(&log, key);
            prop_assert_eq!(&all(&m, "run", key), &want);
            prop_assert_eq!(&paged(&m, HistoryRequest::new("run", key).limit(limit)), &want);
            let hi = lo.saturating_add(span);
            let ranged: Vec<Point> = want.iter().filter(|p| p.step >= lo && p.step <= hi).copied().collect();
            prop_assert_eq!(&paged(&m, HistoryRequest::new("run", key).steps(lo, hi).limit(limit)), &ranged);
            let (t0, t1) = (1_700_000_020_000, 1_700_000_060_000);
            let timed: Vec<Point> = want.iter().filter(|p| p.timestamp_ms >= t0 && p.timestamp_ms <= t1).copied().collect();
            prop_assert_eq!(&paged(&m, HistoryRequest::new("run", key).time(t0, t1).limit(limit)), &timed);
            if let (Some(first), Some(last)) = (want.first(), want.last()) {
                let got = m.downsample(&DownsampleRequest::new("run", key, buckets)).unwrap();
                assert_buckets(&got, &direct_buckets(&want, first.step, last.step, buckets));
                let got = m.downsample(&DownsampleRequest::new("run", key, buckets).steps(lo, hi)).unwrap();
                assert_buckets(&got, &direct_buckets(&want, lo, hi, buckets));
            }
        }
        let latest = m.latest("run").unwrap();
        let keys: Vec<&str> = latest.iter().map(|l| l.key.as_str()).collect();
        let mut want_keys: Vec<&str> = log.iter().map(|(k, _)| k.as_str()).collect();
        want_keys.sort_unstable();
        want_keys.dedup();
        prop_assert_eq!(keys, want_keys);
        for l in &latest {
            let want = model_history(&log, &l.key);
            prop_assert_eq!(l.point, *want.last().unwrap());
            prop_assert_eq!(l.points as usize, want.len());
        }
    }
}

/// Values of one series: mostly `f32` values (so blocks start in the 29-bit delta code), with some that are
/// not (an `f64` fraction, a NaN with a low payload, an `f64` subnormal) or are special.
fn series_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        20 => (0f32..4.0).prop_map(f64::from),
        1 => Just(0.1f64),
        1 => Just(f64::from_bits(0x7ff8_0000_0000_0001)),
        1 => Just(f64::from_bits(1)),
        1 => Just(f64::NAN),
        1 => Just(-0.0),
        1 => Just(f64::INFINITY),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Batches mostly in step order, as a training loop logs them, so that appends go on the open block's
    /// stream: some batches steady (steps one apart, `f32` values), others with steps repeated, skipped or
    /// going back and values of every kind, so that blocks change codes; batches of 1 to 300 points across
    /// the 64-point and full-block thresholds. Against a plain vector, with the check's comparison of every
    /// block's header with its points.
    #[test]
    fn appends_in_step_order_match_a_model(batches in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), proptest::collection::vec(
                (prop_oneof![20 => Just(1i64), 1 => Just(0), 1 => 2i64..5, 1 => Just(-3)], 0i64..200,
                 (0f32..4.0).prop_map(f64::from), series_value()), 1..300)), 1..16),
        buckets in 1usize..50, limit in 1usize..700) {
        let m = mem();
        let mut log = Vec::new();
        let (mut step, mut ts) = (0i64, 1_700_000_000_000i64);
        for (steady, pure, batch) in &batches {
            let pts: Vec<MetricPoint> = batch.iter().map(|(ds, dt, narrow, any)| {
                step += if *steady { 1 } else { *ds };
                ts += 1000 + dt;
                MetricPoint::new("loss", step, ts, if *pure { *narrow } else { *any })
            }).collect();
            m.log("run", &pts).unwrap();
            log.extend(pts.iter().map(|p| ("loss".to_owned(), Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })));
        }
        let want = model_history(&log, "loss");
        prop_assert_eq!(&all(&m, "run", "loss"), &want);
        prop_assert_eq!(&paged(&m, HistoryRequest::new("run", "loss").limit(limit)), &want);
        let (lo, hi) = (want[0].step, want.last().unwrap().step);
        let (mid, top) = (lo + (hi - lo) / 3, (hi - 5).max(lo + (hi - lo) / 3));
        let ranged: Vec<Point> = want.iter().filter(|p| p.step >= mid && p.step <= top).copied().collect();
        prop_assert_eq!(&paged(&m, HistoryRequest::new("run", "loss").steps(mid, top).limit(limit)), &ranged);
        assert_buckets(&m.downsample(&DownsampleRequest::new("run", "loss", buckets)).unwrap(), &direct_buckets(&want, lo, hi, buckets));
        let check = m.check().unwrap();
        prop_assert_eq!(check.problems, Vec::<String>::new());
        prop_assert_eq!(check.points as usize, want.len());
    }
}

#[test]
fn appends_in_step_order_resume_the_open_block() {
    let m = mem();
    let before = write::appends();
    for start in (0..5000).step_by(100) {
        m.log("r", &regular(&["loss", "acc"], start, start + 100)).unwrap();
    }
    let after = write::appends();
    // Every append after the first (49 for each of the 2 series) finds the open block in memory, or
    // rewrites it when it holds fewer than 64 points; none decodes it.
    let (remembered, rewritten) = (after.remembered - before.remembered, after.rewritten - before.rewritten);
    assert_eq!(remembered + rewritten, 98, "{after:?}");
    assert!(rewritten <= 10 && after.decoded == before.decoded, "{after:?}");
    // A second handle on the same store has none of them in memory: it decodes the open block, and the
    // first handle, whose memory that made stale, decodes it again too.
    let other = Metrics::new(m.store().clone());
    other.log("r", &regular(&["loss"], 5000, 5100)).unwrap();
    m.log("r", &regular(&["loss"], 5100, 5200)).unwrap();
    other.log("r", &regular(&["loss"], 5200, 5300)).unwrap();
    let last = write::appends();
    assert_eq!((last.decoded - after.decoded, last.remembered - after.remembered), (3, 0), "{last:?}");
    let want: Vec<Point> = regular(&["loss"], 0, 5300)
        .iter()
        .map(|p| Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })
        .collect();
    assert_eq!(all(&m, "r", "loss"), want);
    assert_eq!(all(&other, "r", "loss"), want);
    assert!(m.check().unwrap().problems.is_empty());
}

/// The flags byte of every block of a series, in key order.
fn block_flags(m: &Metrics, run: &str, key: &str) -> Vec<(u8, u8)> {
    m.store()
        .db()
        .prefix(layout::blocks_prefix(run, key))
        .unwrap()
        .map(|kv| {
            let v = kv.unwrap().1;
            (v[0], v[1])
        })
        .collect()
}

#[test]
fn an_open_block_changes_codes_when_a_point_does_not_fit_them() {
    let m = mem();
    let p = |step: i64, value: f64| MetricPoint::new("x", step, 1_700_000_000_000 + step * 100, value);
    m.log("r", &(0..100).map(|s| p(s, f64::from(s as f32 / 7.0))).collect::<Vec<_>>()).unwrap();
    assert_eq!(block_flags(&m, "r", "x"), [(2, 0x05)], "regular steps, 29-bit deltas");
    // Appended in the same codes: the block is resumed.
    m.log("r", &(100..200).map(|s| p(s, f64::from(s as f32 / 7.0))).collect::<Vec<_>>()).unwrap();
    assert_eq!(block_flags(&m, "r", "x"), [(2, 0x05)]);
    // A value with low bits set: the block is rewritten with full-width values.
    m.log("r", &[p(200, 0.1), p(201, 0.2)]).unwrap();
    let flags = block_flags(&m, "r", "x");
    assert!(flags.len() == 1 && flags[0].1 & 0x06 != 0x04 && flags[0].1 & 1 == 1, "{flags:?}");
    // A repeated step: no longer regular.
    m.log("r", &[p(201, 0.3), p(202, 0.4)]).unwrap();
    let flags = block_flags(&m, "r", "x");
    assert!(flags.len() == 1 && flags[0].1 & 1 == 0, "{flags:?}");
    let got = all(&m, "r", "x");
    assert_eq!(got.len(), 204);
    assert_eq!(got[200].value, 0.1);
    assert_eq!(got[202].value, 0.3);
    assert!(m.check().unwrap().problems.is_empty());
}

/// A store whose blocks are all version 1, as the code before version 2 wrote them: reads return the same
/// points, and appends rewrite its open block as version 2 and go on.
#[test]
fn a_store_of_version_1_blocks_reads_the_same_and_takes_appends() {
    let m = mem();
    let mut log = Vec::new();
    let mut rng = Rng(11);
    for b in 0..6 {
        let batch: Vec<MetricPoint> = (0..700)
            .map(|i| {
                let s = if b == 3 { rng.below(4000) as i64 } else { b * 700 + i };
                MetricPoint::new(
                    ["a", "b"][i as usize % 2],
                    s,
                    1_700_000_000_000 + s * 10,
                    rng.below(1000) as f64 / 3.0,
                )
            })
            .collect();
        m.log("r", &batch).unwrap();
        log.extend(
            batch.iter().map(|p| (p.key.clone(), Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })),
        );
    }
    let mut rewritten = 0;
    for key in ["a", "b"] {
        for kv in m.store().db().prefix(layout::blocks_prefix("r", key)).unwrap().collect::<Vec<_>>() {
            let (k, v) = kv.unwrap();
            let (_, pts) = block::decode(&v).unwrap();
            m.store().db().put(&k, block::encode_v1(&pts)).unwrap();
            rewritten += 1;
        }
        assert!(block_flags(&m, "r", key).iter().all(|f| *f == (1, 0)));
    }
    assert!(rewritten >= 4);
    for key in ["a", "b"] {
        let want = model_history(&log, key);
        assert_eq!(all(&m, "r", key), want);
        assert_buckets(
            &m.downsample(&DownsampleRequest::new("r", key, 37)).unwrap(),
            &direct_buckets(&want, want[0].step, want.last().unwrap().step, 37),
        );
    }
    assert!(m.check().unwrap().problems.is_empty());
    let more = regular(&["a", "b"], 4200, 4300);
    m.log("r", &more).unwrap();
    log.extend(
        more.iter().map(|p| (p.key.clone(), Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })),
    );
    for key in ["a", "b"] {
        assert_eq!(all(&m, "r", key), model_history(&log, key));
        let flags = block_flags(&m, "r", key);
        assert!(flags.contains(&(1, 0)) && flags.iter().any(|f| f.0 == 2), "{flags:?}");
    }
    assert!(m.check().unwrap().problems.is_empty());
}

/// Points of `keys` metrics at steps `from..to`, in order, a second apart, values like a decaying loss.
fn regular(keys: &[&str], from: i64, to: i64) -> Vec<MetricPoint> {
    (from..to)
        .flat_map(|s| {
            keys.iter().enumerate().map(move |(i, k)| {
                MetricPoint::new(
                    *k,
                    s,
                    1_700_000_000_000 + s * 1000,
                    f64::from((1.0 / (s as f32 + 1.0 + i as f32)) + 0.5),
                )
            })
        })
        .collect()
}

#[test]
fn many_blocks_out_of_order_and_duplicates() {
    let m = mem();
    let mut rng = Rng(7);
    let mut log = Vec::new();
    for _ in 0..12 {
        let batch: Vec<MetricPoint> = (0..1000)
            .map(|_| {
                let s = rng.below(3000) as i64;
                MetricPoint::new("loss", s, 1_700_000_000_000 + rng.below(1 << 20) as i64, rng.below(1000) as f64 / 7.0)
            })
            .collect();
        m.log("r", &batch).unwrap();
        log.extend(
            batch
                .iter()
                .map(|p| ("loss".to_owned(), Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })),
        );
    }
    let want = model_history(&log, "loss");
    assert_eq!(all(&m, "r", "loss"), want);
    assert_eq!(paged(&m, HistoryRequest::new("r", "loss").limit(333)), want);
    let ranged: Vec<Point> = want.iter().filter(|p| (1000..=1100).contains(&p.step)).copied().collect();
    assert_eq!(paged(&m, HistoryRequest::new("r", "loss").steps(1000, 1100).limit(7)), ranged);
    for n in [1, 7, 100, 1000, 5000] {
        assert_buckets(
            &m.downsample(&DownsampleRequest::new("r", "loss", n)).unwrap(),
            &direct_buckets(&want, want[0].step, want.last().unwrap().step, n),
        );
    }
}

#[test]
fn regular_series_use_few_blocks_and_few_bytes() {
    let m = mem();
    for start in (0..20_000).step_by(1000) {
        m.log("r", &regular(&["loss"], start, start + 1000)).unwrap();
    }
    let prefix = layout::blocks_prefix("r", "loss");
    let (mut blocks, mut bytes) = (0u64, 0u64);
    for pair in m.store().db().prefix(&prefix).unwrap() {
        let (k, v) = pair.unwrap();
        blocks += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    assert_eq!(blocks, 20, "20,000 points in order fill blocks of {BLOCK_POINTS}");
    let per_point = bytes as f64 / 20_000.0;
    assert!(per_point < 4.5, "{per_point:.2} bytes per point");
    // Downsampling whole buckets from block headers matches the direct computation.
    let want = all(&m, "r", "loss");
    assert_eq!(want.len(), 20_000);
    for n in [1, 10, 19, 20, 1000] {
        assert_buckets(
            &m.downsample(&DownsampleRequest::new("r", "loss", n)).unwrap(),
            &direct_buckets(&want, 0, 19_999, n),
        );
    }
}

/// The first step of every block of a series, in key order.
fn block_starts(m: &Metrics, run: &str, key: &str) -> Vec<i64> {
    let prefix = layout::blocks_prefix(run, key);
    m.store()
        .db()
        .prefix(&prefix)
        .unwrap()
        .map(|kv| layout::parse_block_suffix(&kv.unwrap().0[prefix.len()..]).unwrap().0)
        .collect()
}

/// Downsampling into buckets that whole blocks lie in reads block headers only: a block whose payload is
/// garbage under a valid checksum does not fail it, while a history read that decodes it does.
#[test]
fn downsampling_into_buckets_holding_whole_blocks_reads_headers_only() {
    let m = mem();
    for start in (0..10_240).step_by(512) {
        m.log("r", &regular(&["loss"], start, start + 512)).unwrap();
    }
    let want = all(&m, "r", "loss");
    assert_eq!(block_starts(&m, "r", "loss"), (0..10).map(|b| b * 1024).collect::<Vec<_>>());
    let prefix = layout::blocks_prefix("r", "loss");
    let (k, mut v) = m.store().db().prefix(&prefix).unwrap().nth(3).unwrap().unwrap();
    let end = v.len() - 4;
    for b in &mut v[block::HEADER_LEN + 16..end] {
        *b = 0xff;
    }
    let crc = block::crc32c(&v[..end]);
    v[end..].copy_from_slice(&crc.to_le_bytes());
    m.store().db().put(&k, &v).unwrap();
    assert!(m.history(&HistoryRequest::new("r", "loss")).unwrap_err().is_corruption());
    // Buckets of 1,024, 2,048 and 10,240 steps.
    for n in [10, 5, 1] {
        assert_buckets(
            &m.downsample(&DownsampleRequest::new("r", "loss", n)).unwrap(),
            &direct_buckets(&want, 0, 10_239, n),
        );
    }
    // Buckets of 512 steps: the block is decoded.
    assert!(m.downsample(&DownsampleRequest::new("r", "loss", 20)).unwrap_err().is_corruption());
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let m = mem();
    let before = m.store().db().last_sequence();
    let invalid = |r: Result<LogReceipt, MetricsError>| assert!(matches!(r, Err(MetricsError::Invalid(_))), "{r:?}");
    invalid(m.log("", &regular(&["a"], 0, 3)));
    invalid(m.log("r\0x", &regular(&["a"], 0, 3)));
    invalid(m.log(&"r".repeat(MAX_NAME_LEN + 1), &regular(&["a"], 0, 3)));
    invalid(m.log("r", &[]));
    let mut pts = regular(&["a"], 0, 3);
    pts.push(MetricPoint::new("", 1, 1, 1.0));
    invalid(m.log("r", &pts));
    invalid(m.log("r", &regular(&["a"], 0, MAX_LOG_POINTS as i64 + 1)));
    assert_eq!(m.store().db().last_sequence(), before);
    m.log("r", &regular(&["a"], 0, 3)).unwrap();
    let bad = |r: Result<HistoryPage, MetricsError>| assert!(matches!(r, Err(MetricsError::Invalid(_))), "{r:?}");
    bad(m.history(&HistoryRequest::new("r", "a").limit(0)));
    bad(m.history(&HistoryRequest::new("r", "a").steps(5, 4)));
    bad(m.history(&HistoryRequest::new("r", "a").cursor(Some("nonsense".into()))));
    assert!(matches!(m.downsample(&DownsampleRequest::new("r", "a", 0)), Err(MetricsError::Invalid(_))));
    assert!(m.history(&HistoryRequest::new("nobody", "a")).unwrap().points.is_empty());
    assert!(m.downsample(&DownsampleRequest::new("nobody", "a", 10)).unwrap().is_empty());
    assert!(m.latest("nobody").unwrap().is_empty());
}

#[test]
fn latest_values_and_the_same_metric_across_runs() {
    let m = mem();
    for r in 0..5 {
        m.log(&format!("run-{r}"), &regular(&["loss", "acc"], 0, 100 + r)).unwrap();
    }
    // A late point at an earlier step does not replace the latest; one at the same step does.
    m.log("run-0", &[MetricPoint::new("loss", 50, 1, 9.0)]).unwrap();
    let l = m.latest("run-0").unwrap();
    assert_eq!(l.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["acc", "loss"]);
    assert_eq!(l[1].point.step, 99);
    assert_eq!(l[1].points, 101);
    m.log("run-0", &[MetricPoint::new("loss", 99, 2, 7.0), MetricPoint::new("loss", 99, 3, 8.0)]).unwrap();
    assert_eq!(m.latest("run-0").unwrap()[1].point, Point { step: 99, timestamp_ms: 3, value: 8.0 });
    let runs: Vec<String> = (0..6).map(|r| format!("run-{r}")).collect();
    let of = m.latest_of(&runs, "acc").unwrap();
    assert_eq!(of.len(), 6);
    assert_eq!(of[4].1.as_ref().unwrap().point.step, 103);
    assert!(of[5].1.is_none());
    let cmp = m.compare(&runs, &DownsampleRequest::new("", "acc", 10)).unwrap();
    assert_eq!(cmp.len(), 6);
    for (r, series) in cmp.iter().enumerate().take(5) {
        let want = all(&m, &runs[r], "acc");
        assert_buckets(&series.buckets, &direct_buckets(&want, 0, want.last().unwrap().step, 10));
    }
    assert!(cmp[5].buckets.is_empty());
}

#[test]
fn delete_run_and_retention() {
    let m = mem();
    m.log("a", &regular(&["loss", "acc"], 0, 5000)).unwrap();
    m.log("b", &regular(&["loss"], 0, 5000)).unwrap();
    let r = m.delete_run("a").unwrap();
    assert_eq!((r.points, r.series), (10_000, 2));
    assert!(m.latest("a").unwrap().is_empty());
    assert!(all(&m, "a", "loss").is_empty());
    assert_eq!(m.store().db().prefix(layout::blocks_prefix("a", "loss")).unwrap().count(), 0);
    assert_eq!(all(&m, "b", "loss").len(), 5000);
    // Points at steps 0..5000 are 1 s apart: a cutoff at step 2500 drops the blocks entirely before it.
    let cutoff = 1_700_000_000_000 + 2500 * 1000;
    let r = m.expire_before(cutoff).unwrap();
    assert_eq!(r.blocks, 2, "blocks [0, 1024) and [1024, 2048) are older than the cutoff");
    let left = all(&m, "b", "loss");
    assert_eq!(left.len(), 5000 - 2048);
    assert_eq!(left[0].step, 2048);
    assert_eq!(m.latest("b").unwrap()[0].points, 5000 - 2048);
    assert_eq!(m.downsample(&DownsampleRequest::new("b", "loss", 1)).unwrap()[0].start_step, 2048);
    // Appending after retention goes on; expiring everything removes the series.
    m.log("b", &regular(&["loss"], 5000, 5100)).unwrap();
    assert_eq!(all(&m, "b", "loss").len(), 5000 - 2048 + 100);
    let r = m.expire_before(i64::MAX).unwrap();
    assert_eq!((r.points, r.series), (5000 - 2048 + 100, 1));
    assert!(m.latest("b").unwrap().is_empty());
    m.log("b", &regular(&["loss"], 0, 10)).unwrap();
    assert_eq!(all(&m, "b", "loss").len(), 10);
}

#[test]
fn retention_of_selected_runs_leaves_the_others() {
    let m = mem();
    for run in ["keep-1", "drop-1", "drop-2"] {
        m.log(run, &regular(&["loss"], 0, 3000)).unwrap();
    }
    let r = m.expire_runs_before(i64::MAX, |run| run.starts_with("drop")).unwrap();
    assert_eq!((r.points, r.series), (6000, 2));
    assert_eq!(all(&m, "keep-1", "loss").len(), 3000);
    assert!(all(&m, "drop-1", "loss").is_empty() && all(&m, "drop-2", "loss").is_empty());
}

#[test]
fn the_check_reads_every_block_and_finds_what_is_wrong() {
    let m = mem();
    m.log("r", &regular(&["loss", "acc"], 0, 3000)).unwrap();
    m.log("r", &regular(&["loss"], 10, 20)).unwrap();
    m.log("q", &[mp("x", Point { step: 5, timestamp_ms: 1, value: f64::NAN })]).unwrap();
    let healthy = m.check().unwrap();
    assert_eq!(healthy.problems, Vec::<String>::new());
    assert_eq!((healthy.series, healthy.points), (3, 6011));
    assert!(healthy.blocks >= 6, "{healthy:?}");

    // A flipped bit in a block: its checksum, with the key and the offset.
    let prefix = layout::blocks_prefix("r", "loss");
    let (k, mut v) = m.store().db().prefix(&prefix).unwrap().nth(1).unwrap().unwrap();
    let original = v.clone();
    let middle = v.len() / 2;
    v[middle] ^= 0x10;
    m.store().db().put(&k, &v).unwrap();
    let found = m.check().unwrap();
    assert_eq!(found.problems.len(), 1, "the block, not its series again: {:?}", found.problems);
    assert!(found.problems[0].contains("mtb") && found.problems[0].contains("offset"), "{}", found.problems[0]);
    m.store().db().put(&k, &original).unwrap();
    assert!(m.check().unwrap().problems.is_empty());

    // A series entry whose count disagrees with its blocks (its checksum recomputed, so it decodes).
    let skey = layout::series_key("r", "acc");
    let entry = m.store().db().get(&skey).unwrap().unwrap();
    let mut series = layout::Series::decode(&skey, &entry).unwrap();
    series.points += 1;
    m.store().db().put(&skey, series.encode()).unwrap();
    let found = m.check().unwrap();
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(found.problems[0].contains("3001 points, its blocks hold 3000"), "{}", found.problems[0]);
    // Blocks left without their series entry.
    m.store().db().delete(&skey).unwrap();
    let found = m.check().unwrap();
    assert!(found.problems.iter().any(|p| p.contains("without a series entry")), "{:?}", found.problems);
}

#[test]
fn a_corrupted_block_is_an_error_naming_its_key_never_a_value() {
    let m = mem();
    m.log("r", &regular(&["loss"], 0, 3000)).unwrap();
    let prefix = layout::blocks_prefix("r", "loss");
    let (k, mut v) = m.store().db().prefix(&prefix).unwrap().nth(1).unwrap().unwrap();
    let at = v.len() / 2;
    v[at] ^= 0x10;
    m.store().db().put(&k, &v).unwrap();
    let err = m.history(&HistoryRequest::new("r", "loss")).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let text = err.to_string();
    assert!(text.contains("mtb") && text.contains("checksum"), "{text}");
    assert!(m.downsample(&DownsampleRequest::new("r", "loss", 3)).unwrap_err().is_corruption());
    // Reads that do not reach the block still work.
    assert_eq!(m.history(&HistoryRequest::new("r", "loss").steps(0, 1000)).unwrap().points.len(), 1001);
    // A corrupted series entry is reported too.
    let skey = layout::series_key("r", "loss");
    let mut s = m.store().db().get(&skey).unwrap().unwrap();
    s[5] ^= 1;
    m.store().db().put(&skey, &s).unwrap();
    assert!(m.latest("r").unwrap_err().is_corruption());
    assert!(m.log("r", &regular(&["loss"], 3000, 3001)).unwrap_err().is_corruption());
}

#[test]
fn acknowledged_batches_survive_crashes() {
    for (seed, mode) in [CrashMode::Drop, CrashMode::Tear, CrashMode::Garble, CrashMode::Mixed].into_iter().enumerate()
    {
        let fs = MemStorage::new();
        let m = open_mem(&fs);
        let mut log = Vec::new();
        let mut rng = Rng(seed as u64 + 1);
        for b in 0..20 {
            let batch: Vec<MetricPoint> = (0..300)
                .map(|i| MetricPoint::new(["x", "y", "z"][i % 3], rng.below(2000) as i64, b, rng.below(100) as f64))
                .collect();
            m.log("run", &batch).unwrap();
            log.extend(
                batch
                    .iter()
                    .map(|p| (p.key.clone(), Point { step: p.step, timestamp_ms: p.timestamp_ms, value: p.value })),
            );
        }
        let image = fs.crash(seed as u64, mode);
        drop(m);
        let again = open_mem(&image);
        for key in ["x", "y", "z"] {
            assert_eq!(all(&again, "run", key), model_history(&log, key), "{mode:?}: {key}");
        }
        again.log("run", &regular(&["x"], 5000, 5010)).unwrap();
        assert_eq!(again.latest("run").unwrap()[0].point.step, 5009);
    }
}

#[test]
fn many_runs_log_at_once() {
    let m = mem();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for b in 0..10 {
                    // Each thread has a run of its own and also logs to a shared run.
                    m.log(&format!("run-{t}"), &regular(&["loss", "acc", "lr"], b * 200, b * 200 + 200)).unwrap();
                    let shared: Vec<MetricPoint> =
                        (0..50).map(|i| MetricPoint::new("shared", b * 50 + i, t, f64::from(i as u32))).collect();
                    m.log("shared-run", &shared).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..8 {
        for key in ["loss", "acc", "lr"] {
            let got = all(&m, &format!("run-{t}"), key);
            assert_eq!(got.len(), 2000);
            assert!(got.iter().enumerate().all(|(i, p)| p.step == i as i64));
        }
    }
    let shared = all(&m, "shared-run", "shared");
    assert_eq!(shared.len(), 8 * 500);
    for (step, chunk) in shared.chunks(8).enumerate() {
        assert!(chunk.iter().all(|p| p.step == step as i64), "8 points at each step");
        let mut threads: Vec<i64> = chunk.iter().map(|p| p.timestamp_ms).collect();
        threads.sort_unstable();
        assert_eq!(threads, (0..8).collect::<Vec<_>>(), "one from each thread");
    }
    assert_eq!(m.latest("shared-run").unwrap()[0].points, 4000);
}

/// The version 1 example of `docs/format/metrics.md`: a block as the code before version 2 wrote it decodes
/// to its three points, and the version 1 encoder kept for tests writes it byte for byte.
#[test]
fn the_documented_version_1_block() {
    let pts = [
        Point { step: 0, timestamp_ms: 1000, value: 1.0 },
        Point { step: 1, timestamp_ms: 2000, value: 0.5 },
        Point { step: 2, timestamp_ms: 3000, value: 0.5 },
    ];
    let hex = concat!(
        "0100",
        "03000000",
        "00000000",
        "0000000000000000",
        "0200000000000000",
        "e803000000000000",
        "b80b000000000000",
        "000000000000e03f",
        "000000000000f03f",
        "0000000000000040",
        "000000000000e03f",
        "16000000",
        "00000000000003e8",
        "3ff0000000000000",
        "8167d0cb0200",
        "80779c33",
    );
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    assert_eq!(bytes.len(), 104);
    let (h, back) = block::decode(&bytes).unwrap();
    assert_eq!(back, pts);
    assert_eq!((h.count, h.min, h.max, h.sum, h.last), (3, 0.5, 1.0, 2.0, 0.5));
    assert_eq!(block::encode_v1(&pts), bytes);
}

/// The worked example of `docs/format/metrics.md` (version 2), byte for byte.
#[test]
fn the_documented_example_block() {
    let next_f32 = f64::from(f32::from_bits(1.0f32.to_bits() + 1));
    let pts = [
        Point { step: 0, timestamp_ms: 1000, value: 1.0 },
        Point { step: 1, timestamp_ms: 1100, value: next_f32 },
        Point { step: 2, timestamp_ms: 1203, value: 1.0 },
    ];
    assert_eq!(next_f32.to_bits(), 0x3ff0_0000_2000_0000);
    let bytes = block::encode(&pts);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let want_body = concat!(
        "0205",
        "03000000",
        "00000000",
        "0000000000000000",
        "0200000000000000",
        "e803000000000000",
        "b304000000000000",
        "000000000000f03f",
        "000000200000f03f",
        "0000001000000840",
        "000000000000f03f",
        "1a000000",
        "09000000",
        "3ff0000000000000",
        "d0",
        "00000000000003e8",
        "ffff1f2018",
    );
    assert_eq!(&hex[..want_body.len()], want_body);
    assert_eq!(&hex[want_body.len()..], "f9a3e6e6", "CRC-32C 0xe6e6a3f9, little-endian");
    assert_eq!(bytes.len(), 108);
    assert_eq!(block::decode(&bytes).unwrap().1, pts);
}
