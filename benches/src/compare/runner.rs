//! Playing the workload sets: engine after engine, each set optionally in a child process of its own (a
//! re-execution of the `compare` binary) so that its peak RSS is that engine's alone; the crash test, whose
//! loader is another child killed with SIGKILL; and the check that every engine gave the same answers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::{Machine, Report};
use super::sustained::{run_sustained, sustained_data};
use super::workloads::{
    jobs, kv_data, large_data, run_docs, run_kv, run_large_reads, Checksum, DocPlan, KvPlan, Measurement,
};
use super::{open_kv, Config, EngineSpec, Result, WorkloadSet};

/// The prefix of the line a child prints with its results (as JSON) on stdout.
pub const RESULT_PREFIX: &str = "COMPARE-RESULT ";
/// What the crash-test loader prints once its data is committed, before it is killed.
pub const LOADED: &str = "loaded";

/// One engine's run of one workload set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetOutcome {
    /// `kv` or `docs`.
    pub set: String,
    /// The engine, e.g. `cairn` or `sqlite-nosync`.
    pub engine: String,
    /// The workloads, in the order they ran.
    pub measurements: Vec<Measurement>,
    /// Peak resident set (`VmHWM`) of the child process that ran the set, when isolated.
    pub peak_rss_bytes: Option<u64>,
    /// Resident set of that child after it generated the data and before it opened the engine: the part
    /// of the peak that is the harness's, not the engine's.
    pub baseline_rss_bytes: Option<u64>,
}

/// Runs every set for every engine, checks the answers, and returns the report, whose `mismatches` list
/// the engines that failed and the workloads on which engines disagreed.
pub fn run(cfg: &Config) -> Result<Report> {
    std::fs::create_dir_all(&cfg.dir)?;
    let machine = Machine::probe(&cfg.dir);
    let (mut outcomes, mut failures) = (Vec::new(), Vec::new());
    for &set in &cfg.sets {
        for &spec in &cfg.engines {
            if !spec.runs(set) {
                continue;
            }
            let dir = cfg.dir.join(format!("{spec}-{}", set.name()));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            eprintln!("== {} / {spec}", set.name());
            let outcome = match (&cfg.exe, cfg.isolate) {
                (Some(exe), true) => run_child(exe, cfg, set, spec, &dir),
                _ => run_set(cfg, set, spec, &dir),
            };
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            // One engine failing does not throw away the others' results: it is reported with them.
            match outcome {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    eprintln!("compare: {} / {spec} failed: {e}", set.name());
                    failures.push(format!("{} / {spec}: {e}", set.name()));
                }
            }
        }
    }
    let mut problems = failures;
    problems.extend(mismatches(&outcomes));
    Ok(Report::new(cfg, machine, outcomes, problems))
}

/// Runs one set in this process (the child's side of an isolated run, or a run without isolation).
pub fn run_set(cfg: &Config, set: WorkloadSet, spec: EngineSpec, dir: &Path) -> Result<SetOutcome> {
    let (measurements, baseline) = match set {
        WorkloadSet::Kv => {
            let plan = KvPlan::new(cfg.n, cfg.quick, cfg.sustained);
            let data = kv_data(cfg.seed, plan.total_keys());
            let baseline = vm_status("VmRSS:");
            let mut ms = run_kv(spec, &dir.join("kv"), cfg.cache_bytes, &plan, cfg.seed, &data)?;
            if let Some(exe) = &cfg.exe {
                ms.push(crash_reopen(exe, cfg, &plan, spec, &dir.join("crash"), &data[..plan.n])?);
            }
            (ms, baseline)
        }
        WorkloadSet::Kv4k => {
            let plan = KvPlan::new(cfg.n, cfg.quick, cfg.sustained);
            let data = large_data(cfg.seed, plan.large_values);
            let baseline = vm_status("VmRSS:");
            (run_large_reads(spec, &dir.join("kv4k"), cfg.cache_bytes, &plan, cfg.seed, &data)?, baseline)
        }
        WorkloadSet::Sustained => {
            let plan = KvPlan::new(cfg.n, cfg.quick, cfg.sustained);
            let loaded = sustained_data(cfg.seed, plan.sustained_keys);
            let baseline = vm_status("VmRSS:");
            (run_sustained(spec, &dir.join("sustained"), cfg.cache_bytes, &plan, cfg.seed, &loaded)?, baseline)
        }
        WorkloadSet::Docs => {
            let plan = DocPlan::new(cfg.jobs, cfg.quick, cfg.seed);
            let all = jobs(cfg.seed, plan.jobs);
            let baseline = vm_status("VmRSS:");
            let ms = run_docs(spec, &dir.join("docs"), cfg.cache_bytes, &plan, &all)?
                .ok_or_else(|| format!("{spec} has no documents"))?;
            (ms, baseline)
        }
    };
    Ok(SetOutcome {
        set: set.name().to_owned(),
        engine: spec.to_string(),
        measurements,
        peak_rss_bytes: None,
        baseline_rss_bytes: baseline,
    })
}

/// The child's side of an isolated set: runs it, then prints the outcome with the process's peak RSS.
pub fn child_run(cfg: &Config, set: WorkloadSet, spec: EngineSpec, dir: &Path) -> Result<()> {
    let mut outcome = run_set(cfg, set, spec, dir)?;
    outcome.peak_rss_bytes = vm_status("VmHWM:");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{RESULT_PREFIX}{}", serde_json::to_string(&outcome)?)?;
    out.flush()?;
    Ok(())
}

/// Arguments that give a child the same plan and data as its parent.
fn plan_args(cfg: &Config) -> Vec<String> {
    let mut args = vec![
        "--n".to_owned(),
        cfg.n.to_string(),
        "--jobs".to_owned(),
        cfg.jobs.to_string(),
        "--cache".to_owned(),
        cfg.cache_bytes.to_string(),
        "--seed".to_owned(),
        cfg.seed.to_string(),
        "--sustained-secs".to_owned(),
        cfg.sustained.as_secs_f64().to_string(),
    ];
    if cfg.quick {
        args.push("--quick".to_owned());
    }
    args
}

fn run_child(exe: &Path, cfg: &Config, set: WorkloadSet, spec: EngineSpec, dir: &Path) -> Result<SetOutcome> {
    let output = Command::new(exe)
        .arg("--child-run")
        .arg(set.name())
        .arg(spec.to_string())
        .arg("--dir")
        .arg(dir)
        .args(plan_args(cfg))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("{} set of {spec} failed in its child process ({})", set.name(), output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or_else(|| format!("the child running {spec} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

/// The crash test: a child loads the first `n` pairs in durable commits of `plan.crash_batch`, says so,
/// and is killed with SIGKILL without closing anything; then this process times opening the database and
/// reading the last key loaded.
fn crash_reopen(
    exe: &Path,
    cfg: &Config,
    plan: &KvPlan,
    spec: EngineSpec,
    dir: &Path,
    loaded: &[(Vec<u8>, Vec<u8>)],
) -> Result<Measurement> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut child = Command::new(exe)
        .arg("--child-load")
        .arg(spec.to_string())
        .arg(dir)
        .arg(plan.n.to_string())
        .arg("--batch")
        .arg(plan.crash_batch.to_string())
        .args(plan_args(cfg))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout from the loader")?;
    let said_loaded = BufReader::new(stdout).lines().map_while(|l| l.ok()).any(|l| l.trim() == LOADED);
    child.kill()?;
    let status = child.wait()?;
    if !said_loaded {
        return Err(format!("{spec}: the crash-test loader ended before loading ({status})").into());
    }

    let (last_key, last_value) = loaded.last().ok_or("nothing loaded")?;
    let start = Instant::now();
    let engine = open_kv(spec, dir, cfg.cache_bytes)?;
    let mut reader = engine.reader()?;
    let mut sum = Checksum::default();
    let found = reader.get(last_key, &mut sum)?;
    let elapsed = start.elapsed();
    let mut expected = Checksum::default();
    expected.add(last_value);
    // Every committed key must have survived; checked after the clock stopped. A non-durable engine may
    // lose commits even to a process crash (redb's `Durability::None` commits live in its cache until a
    // durable commit): that is reported, not an error.
    let step = (loaded.len() / 1000).max(1);
    let mut lost = usize::from(!found || sum != expected);
    for (k, _) in loaded.iter().step_by(step) {
        lost += usize::from(!reader.get(k, &mut Checksum::default())?);
    }
    if lost > 0 && spec.durable {
        return Err(format!("{spec}: after the crash, committed keys were lost").into());
    }
    drop(reader);
    engine.close()?;
    std::fs::remove_dir_all(dir)?;
    let m = Measurement {
        workload: "reopen after kill (open + 1 read)".to_owned(),
        ops: 1,
        seconds: Some(elapsed.as_secs_f64()),
        bytes_on_disk: None,
        checksum: spec.durable.then(|| expected.to_string()),
        note: (lost > 0).then(|| "lost commits".to_owned()),
        latency: None,
    };
    eprintln!("    {:<44} {:>10.3} s", m.workload, elapsed.as_secs_f64());
    Ok(m)
}

/// The crash-test loader's side: loads the first `n` pairs of the data in durable commits of `batch`,
/// prints `LOADED`, and waits to be killed. Returns only on error.
pub fn child_load(spec: EngineSpec, dir: &Path, n: usize, batch: usize, cfg: &Config) -> Result<()> {
    let data = kv_data(cfg.seed, n);
    let engine = open_kv(spec, dir, cfg.cache_bytes)?;
    for chunk in data.chunks(batch.max(1)) {
        engine.batch_put(chunk)?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LOADED}")?;
    out.flush()?;
    drop(out);
    // Keep the engine open (nothing closed, nothing flushed beyond what the commits did) until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = &engine;
    }
}

/// Workloads on which engines disagreed, with every engine's checksum.
fn mismatches(outcomes: &[SetOutcome]) -> Vec<String> {
    let mut by_workload: BTreeMap<(&str, &str), Vec<(&str, &str)>> = BTreeMap::new();
    for o in outcomes {
        for m in &o.measurements {
            if let Some(sum) = &m.checksum {
                by_workload.entry((&o.set, &m.workload)).or_default().push((&o.engine, sum));
            }
        }
    }
    by_workload
        .into_iter()
        .filter(|(_, sums)| sums.iter().any(|(_, s)| *s != sums[0].1))
        .map(|((set, workload), sums)| {
            let all: Vec<String> = sums.iter().map(|(e, s)| format!("{e} {s}")).collect();
            format!("{set} / {workload}: {}", all.join(", "))
        })
        .collect()
}

/// A size field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in bytes; `None` where there is no procfs.
fn vm_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
