//! Checking the metrics (`cairn check`): every block decoded (its checksum, its encoding) and its header
//! compared with the points it holds; every series entry decoded and compared with its blocks.

use std::collections::BTreeMap;

use super::block::{self, Header};
use super::error::MetricsError;
use super::layout::{self, Series};
use super::Metrics;

/// What [`Metrics::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsCheck {
    /// Series entries read.
    pub series: u64,
    /// Blocks read and decoded.
    pub blocks: u64,
    /// Points in them.
    pub points: u64,
    /// What is wrong, one line each, naming the entry's key (escaped) and, for a bad checksum or encoding,
    /// the byte offset in its value.
    pub problems: Vec<String>,
}

/// What the blocks of one series add up to.
#[derive(Debug, Default)]
struct Seen {
    blocks: u64,
    points: u64,
    min_step: Option<i64>,
    max_step: Option<i64>,
    max_span: u64,
    max_id: u64,
    /// The point count of each block, by id.
    counts: BTreeMap<u64, u32>,
    /// A block of the series did not decode: it is reported, and the series entry is not compared.
    unreadable: bool,
}

/// Whether two headers are the same, values compared bit for bit.
fn same_header(a: &Header, b: &Header) -> bool {
    let ints = |h: &Header| (h.count, h.nan_count, h.min_step, h.max_step, h.min_ts, h.max_ts);
    let floats = |h: &Header| [h.min, h.max, h.sum, h.last].map(f64::to_bits);
    ints(a) == ints(b) && floats(a) == floats(b)
}

impl Metrics {
    /// Reads every series entry and every block of the store as of one snapshot: each block's checksum and
    /// encoding, its header against its points, each series' entry (point count, lowest and latest step,
    /// the open block, the longest block span, the next block id) against its blocks, and no block without
    /// a series. Problems are listed, not returned as errors: only storage failures fail the call.
    pub fn check(&self) -> Result<MetricsCheck, MetricsError> {
        let snap = self.store.db().snapshot();
        let mut report = MetricsCheck::default();
        let mut seen: BTreeMap<Vec<u8>, Seen> = BTreeMap::new();
        for pair in snap.prefix(layout::BLOCKS)? {
            let (k, v) = pair?;
            let name = k.escape_ascii().to_string();
            // The series' part of the key: between the prefix and the separator before the 16-byte suffix.
            let Some(series_part) = k.len().checked_sub(17).and_then(|end| k.get(layout::BLOCKS.len()..end)) else {
                report.problems.push(format!("metrics block {name}: malformed key"));
                continue;
            };
            let Some((first, id)) = k.get(k.len() - 16..).and_then(layout::parse_block_suffix) else {
                report.problems.push(format!("metrics block {name}: malformed key"));
                continue;
            };
            report.blocks += 1;
            let s = seen.entry(series_part.to_vec()).or_default();
            let (header, points) = match block::decode(&v) {
                Ok(d) => d,
                Err(e) => {
                    report.problems.push(format!("metrics block {name}: offset {}: {}", e.offset, e.reason));
                    s.unreadable = true;
                    continue;
                }
            };
            report.points += points.len() as u64;
            if points.is_empty() || !same_header(&header, &block::header_of(&points)) {
                report.problems.push(format!("metrics block {name}: its header does not match its points"));
                s.unreadable = true;
                continue;
            }
            if first != header.min_step {
                report.problems.push(format!(
                    "metrics block {name}: its key names first step {first}, its points start at {}",
                    header.min_step
                ));
            }
            s.blocks += 1;
            s.points += u64::from(header.count);
            s.min_step = Some(s.min_step.map_or(header.min_step, |m| m.min(header.min_step)));
            s.max_step = Some(s.max_step.map_or(header.max_step, |m| m.max(header.max_step)));
            s.max_span = s.max_span.max(header.max_step.abs_diff(header.min_step));
            s.max_id = s.max_id.max(id);
            s.counts.insert(id, header.count);
        }
        for pair in snap.prefix(layout::SERIES)? {
            let (k, v) = pair?;
            report.series += 1;
            let name = k.escape_ascii().to_string();
            let series = match Series::decode(&k, &v) {
                Ok(s) => s,
                Err(e) => {
                    report.problems.push(format!("metrics series {name}: {e}"));
                    continue;
                }
            };
            let part = k.get(layout::SERIES.len()..).unwrap_or_default();
            let Some(s) = seen.remove(part) else {
                report.problems.push(format!("metrics series {name}: no block holds its points"));
                continue;
            };
            if s.unreadable {
                continue;
            }
            let mut wrong = Vec::new();
            if series.points != s.points {
                wrong.push(format!("{} points, its blocks hold {}", series.points, s.points));
            }
            if Some(series.min_step) != s.min_step {
                wrong.push(format!("lowest step {}, its blocks' is {:?}", series.min_step, s.min_step));
            }
            if Some(series.latest.step) != s.max_step {
                wrong.push(format!("latest step {}, its blocks' highest is {:?}", series.latest.step, s.max_step));
            }
            if series.max_span < s.max_span {
                wrong.push(format!("longest span {}, a block spans {}", series.max_span, s.max_span));
            }
            if series.next_id <= s.max_id {
                wrong.push(format!("next block id {}, a block has id {}", series.next_id, s.max_id));
            }
            if series.open_count > 0 && s.counts.get(&series.open_id) != Some(&series.open_count) {
                wrong.push(format!(
                    "open block {} of {} points, its blocks have {:?}",
                    series.open_id,
                    series.open_count,
                    s.counts.get(&series.open_id)
                ));
            }
            for w in wrong {
                report.problems.push(format!("metrics series {name}: {w}"));
            }
        }
        for (part, s) in seen {
            let name = part.escape_ascii().to_string();
            report.problems.push(format!("metrics blocks of {name}: {} blocks without a series entry", s.blocks));
        }
        Ok(report)
    }
}
