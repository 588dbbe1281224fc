//! Tests of the metrics store: the encoding against plain vectors, the store against a model, pagination,
//! downsampling against a direct computation, deletion and retention, corruption, crashes, concurrency.

use std::path::Path;
use std::sync::Arc;

use cairn_engine::{CrashMode, Db, Durability, MemStorage};
use proptest::prelude::*;

use super::bits::{read_dod, read_xor, write_dod, write_xor, BitReader, BitWriter};
use super::block::{self, BLOCK_POINTS};
use super::layout;
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

/// Values that stress the XOR encoding: NaNs with payloads, infinities, signed zeros, extremes.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
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

/// Buckets computed directly from the model's points.
fn direct_buckets(pts: &[Point], lo: i64, hi: i64, n: usize) -> Vec<Bucket> {
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
        out.push(Bucket {
            start_step: start as i64,
            end_step: (start + width - 1).min(i128::from(hi)) as i64,
            count: m.len() as u64,
            nan_count: (m.len() - numeric.len()) as u64,
            min: numeric.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
            max: numeric.iter().copied().fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a }),
            mean: if numeric.is_empty() { f64::NAN } else { numeric.iter().sum::<f64>() / numeric.len() as f64 },
            last_step: last.step,
            last: last.value,
        });
    }
    out
}

fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Means are sums taken in another order: equal up to rounding.
fn close(a: f64, b: f64) -> bool {
    same_f64(a, b) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_buckets(got: &[Bucket], want: &[Bucket]) {
    assert_eq!(got.len(), want.len(), "bucket count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.start_step, g.end_step, g.count, g.nan_count, g.last_step),
            (w.start_step, w.end_step, w.count, w.nan_count, w.last_step)
        );
        assert!(same_f64(g.min, w.min) && same_f64(g.max, w.max), "min/max {g:?} vs {w:?}");
        assert_eq!(g.last.to_bits(), w.last.to_bits(), "last {g:?} vs {w:?}");
        assert!(close(g.mean, w.mean), "mean {g:?} vs {w:?}");
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
    fn any_flipped_bit_of_a_block_is_detected(pts in proptest::collection::vec(point(), 1..200), at in any::<usize>(), bit in 0u8..8) {
        let mut pts = pts;
        pts.sort_by_key(|p| p.step);
        let mut bytes = block::encode(&pts);
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        prop_assert!(block::decode(&bytes).is_err());
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

/// The worked example of `docs/format/metrics.md`, byte for byte.
#[test]
fn the_documented_example_block() {
    let pts = [
        Point { step: 0, timestamp_ms: 1000, value: 1.0 },
        Point { step: 1, timestamp_ms: 2000, value: 0.5 },
        Point { step: 2, timestamp_ms: 3000, value: 0.5 },
    ];
    let bytes = block::encode(&pts);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let want_body = concat!(
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
    );
    assert_eq!(&hex[..want_body.len()], want_body);
    assert_eq!(&hex[want_body.len()..], "80779c33", "CRC-32C 0x339c7780, little-endian");
    assert_eq!(bytes.len(), 104);
}
