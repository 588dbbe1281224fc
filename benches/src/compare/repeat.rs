//! Several full runs of the comparison one after another (`compare --runs 3`): every run's figures and
//! Cairn's ratio to each peer in every run, the median of those ratios, and every set's peak RSS in every
//! run. A ratio quoted from one run can be the luck of that run; the median of three consecutive runs is
//! what `docs/benchmarks.md` quotes.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::report::{cell, fmt_mib, table_header, Report};
use super::{run, Config, Result};

/// The reports of consecutive full runs of one configuration.
#[derive(Debug, Clone)]
pub struct Repeated {
    /// Each run's report, in the order they ran.
    pub runs: Vec<Report>,
}

/// Runs the whole comparison `runs` times, one run after the other.
pub fn run_repeated(cfg: &Config, runs: usize) -> Result<Repeated> {
    let mut reports = Vec::with_capacity(runs);
    for i in 0..runs.max(1) {
        eprintln!("=== run {} of {runs}", i + 1);
        reports.push(run(cfg)?);
    }
    Ok(Repeated { runs: reports })
}

/// The median of the values present; the mean of the middle two when their count is even.
pub fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 0.1 => format!("{r:.2}x"),
        Some(r) => format!("{r:.4}x"),
        None => "—".to_owned(),
    }
}

impl Repeated {
    /// Whether every engine ran and gave the same answers in every run.
    pub fn answers_match(&self) -> bool {
        self.runs.iter().all(Report::answers_match)
    }

    /// Every run's failures and disagreements, each prefixed with its run.
    pub fn mismatches(&self) -> Vec<String> {
        self.runs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.mismatches.iter().map(move |m| format!("run {}: {m}", i + 1)))
            .collect()
    }

    /// (set, workload) of every row of any run, in the order they first appear.
    fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        for r in &self.runs {
            for (set, workload, _) in r.rows() {
                if !rows.iter().any(|(s, w)| *s == set && *w == workload) {
                    rows.push((set, workload));
                }
            }
        }
        rows
    }

    /// Cairn's ratio to `peer` in each run, and their median.
    fn ratios(&self, set: &str, workload: &str, peer: &super::EngineSpec) -> (Vec<Option<f64>>, Option<f64>) {
        let ratios: Vec<Option<f64>> = self.runs.iter().map(|r| r.ratio(set, workload, peer)).collect();
        let m = median(&ratios);
        (ratios, m)
    }

    /// Every run's report, then three tables over the runs: each engine's figure in each run, Cairn's ratio
    /// to each peer in each run with their median, and each set's peak RSS in each run.
    pub fn markdown(&self) -> String {
        let n = self.runs.len();
        let mut s = String::new();
        for (i, r) in self.runs.iter().enumerate() {
            let title = format!("## Cairn side by side: run {} of {n}", i + 1);
            s.push_str(&r.markdown().replacen("## Cairn side by side", &title, 1));
            s.push('\n');
        }
        let Some(first) = self.runs.first() else { return s };
        let engines = &first.config.engines;
        let rows = self.rows();

        let _ = writeln!(s, "## {n} runs one after another\n");
        let _ = writeln!(s, "Each engine's figure in run 1 / run 2 / ...:\n");
        table_header(&mut s, "| workload |", "|---|", engines);
        for (set, workload) in &rows {
            let _ = write!(s, "| {workload} |");
            for e in engines {
                let figures: Vec<String> =
                    self.runs.iter().map(|r| r.find(set, workload, e).map_or("—".to_owned(), cell)).collect();
                let _ = write!(s, " {} |", figures.join(" / "));
            }
            s.push('\n');
        }

        let peers = first.peers();
        if !peers.is_empty() {
            let _ = writeln!(
                s,
                "\nCairn's ratio to each peer in run 1 / run 2 / ..., then the median of those ratios in bold (as in \
                 each run's table: above 1 Cairn is faster, for sizes below 1 Cairn is smaller):\n"
            );
            table_header(&mut s, "| workload |", "|---|", &peers);
            for (set, workload) in &rows {
                let _ = write!(s, "| {workload} |");
                for p in &peers {
                    let (ratios, m) = self.ratios(set, workload, p);
                    let each: Vec<String> = ratios.into_iter().map(fmt_ratio).collect();
                    let _ = write!(s, " {} → **{}** |", each.join(" / "), fmt_ratio(m));
                }
                s.push('\n');
            }
        }

        if self.runs.iter().any(|r| r.outcomes.iter().any(|o| o.peak_rss_bytes.is_some())) {
            let _ = writeln!(s, "\nPeak RSS (VmHWM) of each set in run 1 / run 2 / ...:\n");
            table_header(&mut s, "| set |", "|---|", engines);
            for set in &first.config.sets {
                let _ = write!(s, "| {} |", set.name());
                for e in engines {
                    let name = e.to_string();
                    let peaks: Vec<String> = self
                        .runs
                        .iter()
                        .map(|r| {
                            r.outcomes
                                .iter()
                                .find(|o| o.set == set.name() && o.engine == name)
                                .and_then(|o| o.peak_rss_bytes)
                                .map_or("—".to_owned(), fmt_mib)
                        })
                        .collect();
                    let _ = write!(s, " {} |", peaks.join(" / "));
                }
                s.push('\n');
            }
        }

        let mismatches = self.mismatches();
        if mismatches.is_empty() {
            let _ = writeln!(s, "\nAll engines returned the same answers in every run.");
        } else {
            let _ = writeln!(s, "\n**Engines failed or disagreed:**\n");
            for m in &mismatches {
                let _ = writeln!(s, "- {m}");
            }
        }
        s
    }

    /// The runs as JSON: `runs` (each run's [`Report::json`]), `medians` (per set, workload and peer: the
    /// ratio in each run and their median) and `answers_match`.
    pub fn json(&self) -> Value {
        let peers = self.runs.first().map(Report::peers).unwrap_or_default();
        let mut medians = Vec::new();
        for (set, workload) in self.rows() {
            for p in &peers {
                let (ratios, m) = self.ratios(&set, &workload, p);
                medians.push(json!({
                    "set": set,
                    "workload": workload,
                    "peer": p.to_string(),
                    "ratios": ratios,
                    "median": m,
                }));
            }
        }
        json!({
            "answers_match": self.answers_match(),
            "mismatches": self.mismatches(),
            "runs": self.runs.iter().map(Report::json).collect::<Vec<_>>(),
            "medians": medians,
        })
    }

    /// Writes [`Repeated::json`] to `path`, creating its directory.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.json())? + "\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_what_is_there() {
        assert_eq!(median(&[Some(3.0), Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median(&[Some(3.0), None, Some(1.0)]), Some(2.0));
        assert_eq!(median(&[None, None]), None);
    }
}
