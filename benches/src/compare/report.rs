//! The report: a markdown table in the style of redb's README (workloads down, engines across, the
//! fastest in bold), Cairn's ratio to each peer, the sustained workload's latencies, peak memory, and the
//! same numbers as JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use super::runner::SetOutcome;
use super::sustained::{Latency, SUSTAINED_BATCH, SUSTAINED_VALUE_LEN, SUSTAINED_WRITERS};
use super::workloads::{KvPlan, Measurement, KEY_LEN, LARGE_VALUE_LEN, VALUE_LEN};
use super::{Config, EngineSpec, Result, WorkloadSet};

/// The machine a report was made on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Total memory, from `/proc/meminfo`.
    pub memory_bytes: Option<u64>,
    /// Operating system (`PRETTY_NAME` of `/etc/os-release`) and kernel release.
    pub os: String,
    /// File system holding the data directory.
    pub filesystem: Option<String>,
    /// When the report was made, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// The kernel's transparent huge page mode (`always`, `madvise` or `never`), if it has them.
    pub transparent_huge_pages: Option<String>,
    /// `GLIBC_TUNABLES` as this process (and the engines' child processes) got it: with
    /// `glibc.malloc.hugetlb=1`, glibc asks for huge pages for its heap, which moves Cairn's reads (see
    /// `docs/benchmarks.md`), so a report says whether it was set.
    pub glibc_tunables: Option<String>,
}

impl Machine {
    /// Reads what can be read about this machine; `dir` is the data directory.
    pub fn probe(dir: &Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let cpu_model = read("/proc/cpuinfo").and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?.to_owned();
            Some(line.split_once(':')?.1.trim().to_owned())
        });
        let memory_bytes = read("/proc/meminfo").and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        });
        let distro = read("/etc/os-release")
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with("PRETTY_NAME="))?.to_owned();
                Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned());
        let os = match kernel {
            Some(k) => format!("{distro}, Linux {k}"),
            None => distro,
        };
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_bytes,
            os,
            filesystem: filesystem(dir),
            date: utc_now(),
            transparent_huge_pages: read("/sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|modes| selected_mode(&modes)),
            glibc_tunables: std::env::var("GLIBC_TUNABLES").ok(),
        }
    }
}

/// The selected mode of a kernel setting listed as `always [madvise] never`: the one in brackets.
fn selected_mode(modes: &str) -> Option<String> {
    let start = modes.find('[')? + 1;
    let end = start + modes.get(start..)?.find(']')?;
    modes.get(start..end).map(str::to_owned)
}

/// The type of the file system holding `path`: the longest mount point that contains it.
fn filesystem(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount).then(|| (mount.len(), fstype.to_owned()))
        })
        .max()
        .map(|(_, fstype)| fstype)
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// One row of the JSON report's `results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// `kv` or `docs`.
    pub set: String,
    /// The workload.
    pub workload: String,
    /// The engine.
    pub engine: String,
    /// Wall-clock seconds; `null` for a size.
    pub seconds: Option<f64>,
    /// Operations performed.
    pub ops: u64,
    /// Operations per second; `null` for a size.
    pub ops_per_sec: Option<f64>,
    /// Bytes on disk, where relevant.
    pub bytes_on_disk: Option<u64>,
    /// Peak RSS of the process that ran the engine's set, when measured.
    pub peak_rss_bytes: Option<u64>,
    /// The answer's checksum, where the workload reads.
    pub checksum: Option<String>,
    /// A caveat, e.g. `not available`.
    pub note: Option<String>,
    /// Latency percentiles, for the sustained workload.
    pub latency: Option<Latency>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The run's configuration.
    pub config: Config,
    /// Each engine's sets.
    pub outcomes: Vec<SetOutcome>,
    /// Engines that failed a set, and workloads on which engines disagreed (empty when all went well).
    pub mismatches: Vec<String>,
}

/// Writes a markdown table's two header lines: `lead` (the first columns, e.g. `| workload |`) and one
/// right-aligned column per item of `columns`, under `rule` (the first columns' separators).
pub(super) fn table_header<T: std::fmt::Display>(
    s: &mut String,
    lead: &str,
    rule: &str,
    columns: impl IntoIterator<Item = T>,
) {
    let columns: Vec<T> = columns.into_iter().collect();
    s.push_str(lead);
    for c in &columns {
        let _ = write!(s, " {c} |");
    }
    s.push('\n');
    s.push_str(rule);
    for _ in &columns {
        s.push_str("---:|");
    }
    s.push('\n');
}

fn fmt_time(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// Two decimals, four below 0.1 (so that a tiny ratio does not read as zero).
fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.4}x")
    }
}

pub(crate) fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// Operations per second, without decimals from 100 on.
fn fmt_rate(ops_per_sec: f64) -> String {
    if ops_per_sec >= 100.0 {
        format!("{ops_per_sec:.0}/s")
    } else {
        format!("{ops_per_sec:.1}/s")
    }
}

/// Microseconds, as milliseconds from 1 ms on.
fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 10.0 {
        format!("{us:.0} us")
    } else {
        format!("{us:.1} us")
    }
}

/// The number a table cell compares, smaller being better: seconds per operation for timed workloads (the
/// workload's time where engines did the same operations, the inverse of the rate where they ran for the
/// same time), bytes for sizes; `None` when the engine could not do the workload.
fn metric(m: &Measurement) -> Option<f64> {
    if m.note.is_some() {
        return None;
    }
    match m.seconds {
        Some(s) if m.ops > 0 => Some(s / m.ops as f64),
        Some(s) => Some(s),
        None => m.bytes_on_disk.map(|b| b as f64),
    }
}

/// The text of a cell: the time, the rate (sustained workload) or the size, with the note if any.
pub(crate) fn cell(m: &Measurement) -> String {
    let text = match (m.seconds, m.bytes_on_disk) {
        (Some(_), _) if m.latency.is_some() => m.ops_per_sec().map_or("—".to_owned(), fmt_rate),
        (Some(t), _) => fmt_time(t),
        (None, Some(b)) => fmt_mib(b),
        (None, None) => "—".to_owned(),
    };
    match (&m.note, m.seconds, m.bytes_on_disk) {
        (None, _, _) => text,
        (Some(note), Some(_), _) => format!("{text} ({note})"),
        (Some(note), None, Some(_)) => format!("{note}, {text}"),
        (Some(note), None, None) => note.clone(),
    }
}

/// Cairn's ratio to a peer on one workload: peer / Cairn seconds per operation (above 1: Cairn faster),
/// or for sizes Cairn / peer bytes (below 1: Cairn smaller).
fn ratio(cairn: &Measurement, peer: &Measurement) -> Option<f64> {
    let (c, o) = (metric(cairn)?, metric(peer)?);
    if c <= 0.0 || o <= 0.0 {
        return None;
    }
    Some(if peer.seconds.is_none() { c / o } else { o / c })
}

impl Report {
    /// A report of `outcomes`.
    pub fn new(config: &Config, machine: Machine, outcomes: Vec<SetOutcome>, mismatches: Vec<String>) -> Self {
        Self { machine, config: config.clone(), outcomes, mismatches }
    }

    /// Whether every engine ran and gave the same answers.
    pub fn answers_match(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// The measurement of `engine` on `workload` of `set`.
    pub fn find(&self, set: &str, workload: &str, engine: &EngineSpec) -> Option<&Measurement> {
        let engine = engine.to_string();
        self.outcomes
            .iter()
            .filter(|o| o.set == set && o.engine == engine)
            .flat_map(|o| &o.measurements)
            .find(|m| m.workload == workload)
    }

    /// Cairn's ratio to `peer` on `workload` of `set` (see [`Report::markdown`]), against the Cairn variant
    /// with the same durability.
    pub fn ratio(&self, set: &str, workload: &str, peer: &EngineSpec) -> Option<f64> {
        ratio(self.find(set, workload, &peer.cairn_peer())?, self.find(set, workload, peer)?)
    }

    /// The peers Cairn's ratios are given against: every engine but Cairn whose Cairn variant ran too.
    pub fn peers(&self) -> Vec<EngineSpec> {
        let engines = &self.config.engines;
        engines
            .iter()
            .filter(|e| e.kind != super::EngineKind::Cairn && engines.contains(&e.cairn_peer()))
            .copied()
            .collect()
    }

    /// (set, workload, ops) of every row, in the order the workloads ran; `ops` is 0 where it differs
    /// between engines (the sustained workload) or the row is a size.
    pub fn rows(&self) -> Vec<(String, String, u64)> {
        let mut rows: Vec<(String, String, u64)> = Vec::new();
        for o in &self.outcomes {
            for m in &o.measurements {
                if !rows.iter().any(|(s, w, _)| *s == o.set && *w == m.workload) {
                    let ops = if m.latency.is_some() { 0 } else { m.ops };
                    rows.push((o.set.clone(), m.workload.clone(), ops));
                }
            }
        }
        rows
    }

    /// The report as markdown: context, the results table, Cairn's ratios, peak memory, mismatches.
    pub fn markdown(&self) -> String {
        let cfg = &self.config;
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "## Cairn side by side\n");
        let _ = writeln!(s, "- date: {}", m.date);
        let _ = writeln!(
            s,
            "- machine: {} CPUs ({}), {} memory, {}; data on {}",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("unknown CPU"),
            m.memory_bytes.map_or("unknown".to_owned(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)),
            m.os,
            m.filesystem.as_deref().unwrap_or("unknown file system")
        );
        let _ = writeln!(
            s,
            "- memory pages: transparent huge pages {}; GLIBC_TUNABLES {}",
            m.transparent_huge_pages.as_deref().unwrap_or("unavailable"),
            m.glibc_tunables.as_deref().map_or("unset".to_owned(), |t| format!("`{t}`"))
        );
        let _ = writeln!(
            s,
            "- data: {} keys of {KEY_LEN} random bytes with {VALUE_LEN}-byte random values; {} jobs; seed {:#x}; {} plan",
            cfg.n,
            cfg.jobs,
            cfg.seed,
            if cfg.quick { "quick" } else { "full" }
        );
        let plan = KvPlan::new(cfg.n, cfg.quick, cfg.sustained);
        let mut extra = Vec::new();
        if cfg.sets.contains(&WorkloadSet::Kv4k) {
            extra.push(format!(
                "kv4k: {} pairs with {LARGE_VALUE_LEN}-byte random values in a database of their own",
                plan.large_values
            ));
        }
        if cfg.sets.contains(&WorkloadSet::Sustained) {
            extra.push(format!(
                "sustained: {SUSTAINED_WRITERS} writers committing batches of {SUSTAINED_BATCH} pairs of \
                 {SUSTAINED_VALUE_LEN} bytes for {:.1} s beside one reader of {} such pairs loaded first",
                cfg.sustained.as_secs_f64(),
                plan.sustained_keys
            ));
        }
        if !extra.is_empty() {
            let _ = writeln!(s, "- {}", extra.join("; "));
        }
        let _ = writeln!(
            s,
            "- cache budget: {} per engine (LMDB has none: it reads through the page cache)",
            fmt_mib(cfg.cache_bytes as u64)
        );
        let _ = writeln!(
            s,
            "- times are wall-clock for the whole workload (operations per second for the sustained rows, whose \
             engines ran for the same time); sizes are allocated bytes; bold is best\n"
        );

        let engines = &cfg.engines;
        table_header(&mut s, "| workload | ops |", "|---|---:|", engines);
        let rows = self.rows();
        for (set, workload, ops) in &rows {
            let cells: Vec<Option<&Measurement>> = engines.iter().map(|e| self.find(set, workload, e)).collect();
            let best = cells.iter().filter_map(|c| c.and_then(metric)).fold(f64::INFINITY, f64::min);
            let ops = if *ops == 0 { String::new() } else { ops.to_string() };
            let _ = write!(s, "| {workload} | {ops} |");
            for c in cells {
                let text = match c {
                    None => "—".to_owned(),
                    Some(m) if metric(m) == Some(best) && engines.len() > 1 => format!("**{}**", cell(m)),
                    Some(m) => cell(m),
                };
                let _ = write!(s, " {text} |");
            }
            s.push('\n');
        }

        let peers = self.peers();
        if !peers.is_empty() {
            let _ = writeln!(
                s,
                "\nCairn's ratio to each peer (peer time / Cairn time, so above 1 means Cairn is faster; for the \
                 sustained rows Cairn's rate / peer's rate; for sizes Cairn bytes / peer bytes, so below 1 means \
                 Cairn is smaller; `-nosync` peers against cairn-nosync):\n"
            );
            table_header(&mut s, "| workload |", "|---|", &peers);
            for (set, workload, _) in &rows {
                let _ = write!(s, "| {workload} |");
                for p in &peers {
                    let text = self.ratio(set, workload, p).map_or("—".to_owned(), fmt_ratio);
                    let _ = write!(s, " {text} |");
                }
                s.push('\n');
            }
        }

        let latency_rows: Vec<&(String, String, u64)> = rows
            .iter()
            .filter(|(set, workload, _)| {
                engines.iter().any(|e| self.find(set, workload, e).is_some_and(|m| m.latency.is_some()))
            })
            .collect();
        if !latency_rows.is_empty() {
            let _ = writeln!(
                s,
                "\nLatency of every operation of the sustained workload (nearest-rank percentiles; a commit is one \
                 batch of {SUSTAINED_BATCH} pairs):\n"
            );
            table_header(&mut s, "| workload | |", "|---|---|", engines);
            type Pick = fn(&Measurement) -> Option<String>;
            let lines: [(&str, Pick); 5] = [
                ("rate", |m| m.ops_per_sec().map(fmt_rate)),
                ("p50", |m| m.latency.as_ref().map(|l| fmt_us(l.p50_us))),
                ("p99", |m| m.latency.as_ref().map(|l| fmt_us(l.p99_us))),
                ("p99.9", |m| m.latency.as_ref().map(|l| fmt_us(l.p999_us))),
                ("max", |m| m.latency.as_ref().map(|l| fmt_us(l.max_us))),
            ];
            for (set, workload, _) in latency_rows {
                for (i, (label, pick)) in lines.iter().enumerate() {
                    let _ = write!(s, "| {} | {label} |", if i == 0 { workload.as_str() } else { "" });
                    for e in engines {
                        let text = self.find(set, workload, e).and_then(pick).unwrap_or_else(|| "—".to_owned());
                        let _ = write!(s, " {text} |");
                    }
                    s.push('\n');
                }
            }
        }

        if self.outcomes.iter().any(|o| o.peak_rss_bytes.is_some()) {
            let _ = writeln!(
                s,
                "\nPeak RSS (VmHWM) of the process that ran each set; in brackets, its RSS after generating the \
                 data and before opening the engine (the harness's share):\n"
            );
            table_header(&mut s, "| set |", "|---|", engines);
            for set in &cfg.sets {
                let _ = write!(s, "| {} |", set.name());
                for e in engines {
                    let name = e.to_string();
                    let o = self.outcomes.iter().find(|o| o.set == set.name() && o.engine == name);
                    let text = match o.and_then(|o| o.peak_rss_bytes.map(|p| (p, o.baseline_rss_bytes))) {
                        Some((peak, Some(base))) => format!("{} ({})", fmt_mib(peak), fmt_mib(base)),
                        Some((peak, None)) => fmt_mib(peak),
                        None => "—".to_owned(),
                    };
                    let _ = write!(s, " {text} |");
                }
                s.push('\n');
            }
        }

        if self.mismatches.is_empty() {
            let _ = writeln!(s, "\nAll engines returned the same answers (checksums of every read workload match).");
        } else {
            let _ = writeln!(s, "\n**Engines failed or disagreed:**\n");
            for m in &self.mismatches {
                let _ = writeln!(s, "- {m}");
            }
        }
        s
    }

    /// The JSON rows, one per engine and workload.
    pub fn results(&self) -> Vec<ResultRow> {
        self.outcomes
            .iter()
            .flat_map(|o| {
                o.measurements.iter().map(move |m| ResultRow {
                    set: o.set.clone(),
                    workload: m.workload.clone(),
                    engine: o.engine.clone(),
                    seconds: m.seconds,
                    ops: m.ops,
                    ops_per_sec: m.ops_per_sec(),
                    bytes_on_disk: m.bytes_on_disk,
                    peak_rss_bytes: o.peak_rss_bytes,
                    checksum: m.checksum.clone(),
                    note: m.note.clone(),
                    latency: m.latency.clone(),
                })
            })
            .collect()
    }

    /// The report as JSON: `machine`, `n`, `results`, and the rest of the configuration.
    pub fn json(&self) -> Value {
        let cfg = &self.config;
        let memory = self.machine.memory_bytes;
        json!({
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "memory_bytes": memory,
                "memory": memory.map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)),
                "os": self.machine.os,
                "filesystem": self.machine.filesystem,
                "date": self.machine.date,
                "transparent_huge_pages": self.machine.transparent_huge_pages,
                "glibc_tunables": self.machine.glibc_tunables,
            },
            "n": cfg.n,
            "jobs": cfg.jobs,
            "quick": cfg.quick,
            "seed": cfg.seed,
            "cache_bytes": cfg.cache_bytes,
            "sustained_secs": cfg.sustained.as_secs_f64(),
            "engines": cfg.engines.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "answers_match": self.answers_match(),
            "mismatches": self.mismatches,
            "sets": self.outcomes.iter().map(|o| json!({
                "set": o.set,
                "engine": o.engine,
                "peak_rss_bytes": o.peak_rss_bytes,
                "baseline_rss_bytes": o.baseline_rss_bytes,
            })).collect::<Vec<_>>(),
            "results": self.results(),
        })
    }

    /// Writes [`Report::json`] to `path`, creating its directory.
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
    use super::selected_mode;

    #[test]
    fn the_selected_mode_is_the_one_in_brackets() {
        assert_eq!(selected_mode("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(selected_mode("[always] madvise never").as_deref(), Some("always"));
        assert_eq!(selected_mode("always madvise [never]").as_deref(), Some("never"));
        assert_eq!(selected_mode("always madvise never"), None);
        assert_eq!(selected_mode("always [madvise"), None);
    }
}
