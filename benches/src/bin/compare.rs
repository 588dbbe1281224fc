//! `compare`: Cairn side by side with redb, LMDB, fjall and SQLite on the same data, with the same
//! durability and cache budget; prints a markdown table and writes `target/bench/compare.json`.
//!
//! ```text
//! cargo run --release -p cairn-bench --bin compare -- [--n 1000000] [--jobs 200000] [--quick]
//!     [--non-durable] [--engines cairn,redb,lmdb,fjall,sqlite] [--sets kv,kv4k,sustained,docs] [--dir DIR]
//!     [--cache BYTES] [--seed N] [--sustained-secs 20] [--runs 1] [--json PATH] [--no-isolate]
//! ```
//!
//! Each engine's workload set runs in a child process (this binary again, `--child-run`), one after the
//! other, so peak RSS is per engine; `--no-isolate` runs them all in this process. `--runs 3` makes three
//! full runs one after another and adds each run's ratios and their median. See `docs/benchmarks.md` and
//! the `cairn_bench::compare` module.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_bench::compare::{
    child_load, child_run, run, run_repeated, Config, EngineKind, EngineSpec, WorkloadSet, DEFAULT_CACHE_BYTES,
};
use cairn_bench::DEFAULT_SEED;

const USAGE: &str = "usage: compare [--n KEYS] [--jobs JOBS] [--quick] [--non-durable] [--engines LIST] \
[--sets kv,kv4k,sustained,docs] [--dir DIR] [--cache BYTES] [--seed N] [--sustained-secs SECONDS] [--runs N] \
[--json PATH] [--no-isolate]";

enum Mode {
    Compare { json: Option<PathBuf>, runs: usize },
    ChildRun { set: WorkloadSet, spec: EngineSpec },
    ChildLoad { spec: EngineSpec, dir: PathBuf, n: usize, batch: usize },
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value.replace('_', "").parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"))
}

fn engine(text: &str) -> Result<EngineSpec, String> {
    EngineSpec::parse(text).ok_or_else(|| {
        format!("unknown engine {text} (cairn, redb, lmdb, fjall, sqlite, each with optional -nosync; native_db)")
    })
}

fn parse_args() -> Result<(Config, Mode), String> {
    let mut it = std::env::args().skip(1);
    let (mut n, mut jobs, mut quick, mut non_durable, mut isolate) = (None, None, false, false, true);
    let (mut engines, mut sets, mut dir, mut json) = (None, None, None, None);
    let (mut cache, mut seed, mut batch) = (DEFAULT_CACHE_BYTES, DEFAULT_SEED, 10_000);
    let (mut sustained, mut runs) = (None, 1);
    let mut child: Option<Mode> = None;
    let default_json = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let mut json_path = Some(default_json.join("bench").join("compare.json"));
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--quick" => quick = true,
            "--non-durable" => non_durable = true,
            "--no-isolate" => isolate = false,
            "--n" => n = Some(number(&flag, &value()?)?),
            "--jobs" => jobs = Some(number(&flag, &value()?)?),
            "--cache" => cache = number(&flag, &value()?)?,
            "--seed" => seed = number(&flag, &value()?)? as u64,
            "--batch" => batch = number(&flag, &value()?)?,
            "--runs" => runs = number(&flag, &value()?)?.max(1),
            "--sustained-secs" => {
                let text = value()?;
                let secs: f64 = text.parse().map_err(|e| format!("{flag} {text}: {e}"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(format!("{flag} must be a positive number of seconds"));
                }
                sustained = Some(Duration::from_secs_f64(secs));
            }
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--json" => json = Some(PathBuf::from(value()?)),
            "--engines" => {
                engines = Some(value()?.split(',').map(engine).collect::<Result<Vec<_>, _>>()?);
            }
            "--sets" => {
                let list = value()?;
                sets = Some(
                    list.split(',')
                        .map(|s| {
                            WorkloadSet::parse(s).ok_or_else(|| format!("unknown set {s} (kv, kv4k, sustained, docs)"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            "--child-run" => {
                let set = value()?;
                let set = WorkloadSet::parse(&set).ok_or_else(|| format!("unknown set {set}"))?;
                child = Some(Mode::ChildRun { set, spec: engine(&value()?)? });
            }
            "--child-load" => {
                let spec = engine(&value()?)?;
                let dir = PathBuf::from(value()?);
                let n = number(&flag, &value()?)?;
                child = Some(Mode::ChildLoad { spec, dir, n, batch: 0 });
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if json.is_some() {
        json_path = json;
    }
    let mut engines = engines
        .unwrap_or_else(|| EngineKind::ALL.into_iter().filter(|k| k.available()).map(EngineSpec::durable).collect());
    if let Some(e) = engines.iter().find(|e| !e.kind.available()) {
        return Err(format!("{e} needs a build with `--features {}`", e.kind.name()));
    }
    if non_durable {
        let extra: Vec<EngineSpec> = engines
            .iter()
            .filter(|e| e.durable && e.kind != EngineKind::NativeDb)
            .map(|e| EngineSpec::nosync(e.kind))
            .collect();
        for e in extra {
            if !engines.contains(&e) {
                engines.push(e);
            }
        }
    }
    let n = n.unwrap_or(if quick { 20_000 } else { 1_000_000 });
    if n < 100 {
        return Err("--n must be at least 100".to_owned());
    }
    let cfg = Config {
        n,
        jobs: jobs.unwrap_or(if quick { 4_000 } else { 200_000 }).max(100),
        quick,
        engines,
        sets: sets.unwrap_or_else(|| WorkloadSet::ALL.to_vec()),
        dir: dir.unwrap_or_default(),
        cache_bytes: cache,
        seed,
        sustained: sustained.unwrap_or(Duration::from_secs(if quick { 2 } else { 20 })),
        exe: std::env::current_exe().ok(),
        isolate,
        json_path: None,
    };
    let mode = match child {
        Some(Mode::ChildLoad { spec, dir, n, .. }) => Mode::ChildLoad { spec, dir, n, batch },
        Some(mode) => mode,
        None => Mode::Compare { json: json_path, runs },
    };
    Ok((cfg, mode))
}

fn main() -> ExitCode {
    let (mut cfg, mode) = match parse_args() {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let outcome = match mode {
        Mode::ChildRun { set, spec } => child_run(&cfg, set, spec, &cfg.dir.clone()),
        Mode::ChildLoad { spec, dir, n, batch } => child_load(spec, &dir, n, batch, &cfg),
        Mode::Compare { json, runs } => {
            let _temp;
            if cfg.dir.as_os_str().is_empty() {
                match tempfile::Builder::new().prefix("cairn-compare").tempdir() {
                    Ok(t) => {
                        cfg.dir = t.path().to_path_buf();
                        _temp = t;
                    }
                    Err(e) => {
                        eprintln!("compare: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            cfg.json_path = json;
            if runs > 1 {
                compare_repeated(&cfg, runs)
            } else {
                compare(&cfg)
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare(cfg: &Config) -> cairn_bench::compare::Result<()> {
    let report = run(cfg)?;
    println!("{}", report.markdown());
    if let Some(path) = &cfg.json_path {
        report.write_json(path)?;
        eprintln!("compare: wrote {}", path.display());
    }
    if !report.answers_match() {
        return Err(format!("engines failed or disagreed: {}", report.mismatches.join("; ")).into());
    }
    Ok(())
}

fn compare_repeated(cfg: &Config, runs: usize) -> cairn_bench::compare::Result<()> {
    let repeated = run_repeated(cfg, runs)?;
    println!("{}", repeated.markdown());
    if let Some(path) = &cfg.json_path {
        repeated.write_json(path)?;
        eprintln!("compare: wrote {}", path.display());
    }
    if !repeated.answers_match() {
        return Err(format!("engines failed or disagreed: {}", repeated.mismatches().join("; ")).into());
    }
    Ok(())
}
