//! Throwaway PostgreSQL 15 clusters for Cairn's tests: [`Postgres::start`] runs `initdb` and `pg_ctl` on a
//! temporary directory and a free loopback port and stops the cluster when dropped; [`Postgres::shared`]
//! uses the cluster `scripts/test.sh` started for the whole run (`CAIRN_TEST_POSTGRES`, a URL) and starts
//! one of its own only without it. [`Postgres::database`] makes a fresh database per test.
//!
//! The binaries are looked up in `CAIRN_PG_BIN` (default `/usr/lib/postgresql/15/bin`). `initdb` refuses to
//! run as root, so as root the cluster runs as the `postgres` user.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, reason = "test support: a failure is the test's failure")]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to a minute for something to listen on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn bin_dir() -> PathBuf {
    PathBuf::from(std::env::var("CAIRN_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

/// A PostgreSQL cluster on loopback: one this value started (stopped on drop), or the run's shared one.
pub struct Postgres {
    /// The cluster's directory, if this value started it.
    owned: Option<tempfile::TempDir>,
    as_postgres: bool,
    /// The port it listens on.
    pub port: u16,
}

impl Postgres {
    /// Starts a cluster in a temporary directory on a free port, with the C locale (byte-order strings) and
    /// `fsync` off (a test's data need not survive a power cut).
    pub fn start() -> Self {
        let bin = bin_dir();
        assert!(bin.join("initdb").exists(), "PostgreSQL binaries not found in {} (set CAIRN_PG_BIN)", bin.display());
        let dir = tempfile::Builder::new().prefix("cairn-pg-").tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let port = free_port();
        let data = dir.path().join("data").display().to_string();
        let pg = Postgres { owned: Some(dir), as_postgres, port };
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        let dir = pg.owned.as_ref().unwrap().path();
        let opts = format!("-p {port} -h 127.0.0.1 -k {} -F -c max_connections=300", dir.display());
        let log = dir.join("log").display().to_string();
        pg.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        wait_for_port(port, "postgres");
        pg
    }

    /// The cluster of the whole test run when `CAIRN_TEST_POSTGRES` names one
    /// (`postgres://postgres@127.0.0.1:PORT/postgres`, trust authentication), else a cluster of its own.
    pub fn shared() -> Self {
        match std::env::var("CAIRN_TEST_POSTGRES") {
            Ok(url) => {
                let port = url
                    .rsplit_once(':')
                    .and_then(|(_, rest)| rest.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("CAIRN_TEST_POSTGRES={url:?} does not name a port"));
                Postgres { owned: None, as_postgres: is_root(), port }
            }
            Err(_) => Self::start(),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let path = bin_dir().join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a new, empty database (named after this process, the time and a counter) and returns its URL.
    pub fn database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        // The time too: a shared cluster outlives test processes, whose ids the system reuses.
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let name = format!("t{}_{}_{}", std::process::id(), ms, N.fetch_add(1, Ordering::Relaxed));
        let port = self.port.to_string();
        let sql = format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(dir) = &self.owned else { return };
        let data = dir.path().join("data").display().to_string();
        let path = bin_dir().join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).status();
    }
}
