//! Progress of long exports and imports: a bar on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Reports records and bytes done. On a terminal (stderr) it draws an indicatif bar; otherwise it logs a
/// `tracing` info line at most every 2 seconds and at the end. [`Progress::hidden`] reports nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    log: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    what: String,
    total: Option<u64>,
    records: u64,
    bytes: u64,
    started: Instant,
    last_log: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(2);

/// Bytes of `doc` as compact JSON: what throughput figures count. Counted without building the text.
pub(crate) fn json_len(doc: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut count, doc);
    count.0
}

impl Progress {
    /// A bar when stderr is a terminal, log lines when it is not.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            Self { bar: Some(bar), log: false, state: Mutex::new(State::new()) }
        } else {
            Self { bar: None, log: true, state: Mutex::new(State::new()) }
        }
    }

    /// Reports nothing (library use, tests).
    pub fn hidden() -> Self {
        Self { bar: None, log: false, state: Mutex::new(State::new()) }
    }

    /// Starts a new phase named `what`, with `total` records expected when known.
    pub fn phase(&self, what: &str, total: Option<u64>) {
        let mut s = self.lock();
        *s = State::new();
        s.what = what.to_owned();
        s.total = total;
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total.unwrap_or(0));
            let template = if total.is_some() {
                "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})"
            } else {
                "{msg} {pos} records ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
        }
        if self.log {
            tracing::info!(phase = what, total, "started");
        }
    }

    /// Adds `records` records of `bytes` bytes to the current phase.
    pub fn add(&self, records: u64, bytes: u64) {
        let mut s = self.lock();
        s.records += records;
        s.bytes += bytes;
        if let Some(bar) = &self.bar {
            bar.inc(records);
        }
        if self.log && s.last_log.elapsed() >= LOG_EVERY {
            s.last_log = Instant::now();
            tracing::info!(phase = %s.what, records = s.records, total = s.total, mb = s.bytes as f64 / 1e6, "progress");
        }
    }

    /// Ends the current phase, logging its totals and rate.
    pub fn finish(&self) {
        let s = self.lock();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.log {
            let secs = s.started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                phase = %s.what,
                records = s.records,
                mb = s.bytes as f64 / 1e6,
                records_per_s = (s.records as f64 / secs).round(),
                "done"
            );
        }
    }

    /// Logs a line (above the bar on a terminal).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.log => tracing::info!("{line}"),
            None => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn new() -> Self {
        Self {
            what: String::new(),
            total: None,
            records: 0,
            bytes: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }
}
