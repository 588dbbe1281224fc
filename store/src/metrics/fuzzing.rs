//! The metrics blocks' fuzz target (`fuzz/fuzz_targets/metrics_block_decode.rs`), built only with the
//! `fuzzing` feature and re-exported as `cairn_store::fuzzing::decode_metrics_block`.

use super::block::{self, Builder};
use super::model::Point;

/// Decodes arbitrary bytes as a metrics block, twice: as they are, and with their last four bytes replaced
/// by the CRC-32C of the rest, so that the decoder past the checksum sees them too. Panics if a decode
/// panics or the block's readers disagree:
///
/// - a block that decodes whole also decodes through the steps-and-values reader, to the same steps and
///   value bits, and its header counts its points;
/// - [`Builder::resume`] accepts exactly the version 2 blocks that decode, and a resumed block with points
///   pushed (steps and values taken from the input, so that the fuzzer steers them into and out of the
///   block's codes) decodes to its points followed by those it took.
///
/// Returns the points of the blocks that decoded, for the seed corpus's checks.
pub fn decode_block(data: &[u8]) -> usize {
    let mut decoded = check(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = block::crc32c(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        decoded += check(&fixed);
    }
    decoded
}

fn same(a: &Point, b: &Point) -> bool {
    a.step == b.step && a.timestamp_ms == b.timestamp_ms && a.value.to_bits() == b.value.to_bits()
}

fn check(b: &[u8]) -> usize {
    let whole = block::decode(b);
    let mut values = Vec::new();
    let by_values = block::decode_values_each(b, |p| values.push(p));
    let resumed = Builder::resume(b);
    let Ok((header, points)) = whole else {
        assert!(resumed.is_err(), "a block that does not decode was resumed");
        return 0;
    };
    assert_eq!(header.count as usize, points.len(), "the header's count and the points decoded disagree");
    assert!(by_values.is_ok(), "a block that decodes whole fails to decode its steps and values");
    assert_eq!(values.len(), points.len());
    for (v, p) in values.iter().zip(&points) {
        assert!(v.step == p.step && v.value.to_bits() == p.value.to_bits(), "the two readers disagree");
    }
    let Some(mut builder) = resumed.unwrap_or_else(|e| panic!("a block that decodes fails to resume: {e:?}")) else {
        return points.len();
    };
    assert_eq!(builder.len(), points.len());
    let last = *points.last().unwrap_or_else(|| unreachable!("a block holds at least one point"));
    let mut expected = points.clone();
    // Pushes steered by the block's own bytes: the next steps at gaps of 0 to 3, and values that are the
    // last one, the last with its low 29 bits cleared or set, or the bits of the input read as a number.
    for (i, &byte) in b.iter().take(64).enumerate() {
        let step_gap = i64::from(byte & 3);
        let Some(step) = builder.last_step().checked_add(step_gap) else { break };
        let bits = match (byte >> 2) & 3 {
            0 => last.value.to_bits(),
            1 => last.value.to_bits() & !((1 << 29) - 1),
            2 => last.value.to_bits() | ((1 << 29) - 1),
            _ => u64::from_le_bytes(std::array::from_fn(|k| b[(i + k) % b.len()])),
        };
        let p =
            Point { step, timestamp_ms: last.timestamp_ms.wrapping_add(i64::from(byte)), value: f64::from_bits(bits) };
        if builder.push(&p) {
            expected.push(p);
        }
    }
    let (header, after) =
        block::decode(&builder.bytes()).unwrap_or_else(|e| panic!("a resumed block fails to decode: {e:?}"));
    assert_eq!(header.count as usize, after.len());
    assert_eq!(after.len(), expected.len(), "a resumed block lost or gained points");
    assert!(after.iter().zip(&expected).all(|(a, e)| same(a, e)), "a resumed block changed its points");
    points.len()
}

/// Blocks as the store writes them, for the seed corpus: `f32` losses at regular steps with jittered
/// timestamps (the 29-bit delta code), irregular steps with duplicates, NaN, the infinities and `-0.0`, and
/// a block of one point.
pub fn block_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let losses: Vec<Point> = (0..200)
        .map(|i| Point {
            step: i * 10,
            timestamp_ms: 1_700_000_000_000 + i * 100 + (i * 7) % 5,
            value: f64::from(2.5f32 / (1.0 + i as f32 / 16.0)),
        })
        .collect();
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e300, f64::MIN_POSITIVE];
    let mut step = -5;
    let odd: Vec<Point> = (0..150)
        .map(|i: i64| {
            step += [0, 1, 3, 1000][(i % 4) as usize];
            let value = if i % 9 == 0 { specials[(i / 9) as usize % specials.len()] } else { (i as f64).sin() };
            Point { step, timestamp_ms: 1_000 + i * i, value }
        })
        .collect();
    let one = [Point { step: 7, timestamp_ms: 42, value: 0.125 }];
    [("losses", &losses[..]), ("irregular", &odd[..]), ("one", &one[..])]
        .into_iter()
        .filter_map(|(name, points)| Some((name, block::build(points)?.bytes())))
        .collect()
}
