//! Command-line arguments, and dispatch to one module per subcommand.

mod backup;
mod check;
mod compact;
mod demo;
mod format;
mod hash_token;
mod remote;
mod serve;
mod stats;
mod sync;

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

/// Tools for a Cairn data directory.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the shape of the tree, caches and counters.
    Stats(stats::StatsArgs),
    /// Merge every table into one sorted run.
    Compact(DataDir),
    /// Verify checksums, tables against the manifest, WALs and indexes without changing anything. Exit status
    /// 0 healthy, 1 problems found, 2 usage or open errors.
    Check(check::CheckArgs),
    /// Copy a store, consistent at one commit, into a new directory while it is in use, and check the copy.
    Backup(backup::BackupArgs),
    /// Load synthetic compute jobs into the jobs collection, then query, claim and check them.
    Demo(demo::DemoArgs),
    /// Serve the data directory's collections over HTTP (see docs/server.md).
    Serve(serve::ServeArgs),
    /// Print the SHA-256 of a bearer token read from stdin, for the server's configuration.
    HashToken,
    /// Export collections to PostgreSQL or an object store (S3), once or following the change feed.
    Export(sync::ExportArgs),
    /// Import collections from PostgreSQL, or restore them from an object store to a sequence or time.
    Import(sync::ImportArgs),
    /// Compare the store with PostgreSQL or an object store. Exit status 1 if they differ.
    Verify(sync::VerifyArgs),
}

/// The data directory a subcommand works on.
#[derive(Debug, Args)]
pub struct DataDir {
    /// Data directory of the database.
    #[arg(long = "data", value_name = "DIR")]
    pub path: PathBuf,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Stats(args) => stats::run(&args),
        Command::Compact(dir) => compact::run(&dir.path),
        Command::Check(args) => check::run(&args),
        Command::Backup(args) => backup::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::HashToken => hash_token::run(),
        Command::Export(args) => sync::export(&args),
        Command::Import(args) => sync::import(&args),
        Command::Verify(args) => sync::verify(&args),
    }
}

/// Why a subcommand failed: what it was doing, and the error that stopped it.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A failure while doing `context`, caused by `error`.
    pub fn new(context: impl fmt::Display, error: impl fmt::Display) -> Self {
        Self { message: format!("{context}: {error}"), code: 1 }
    }

    /// The same failure with another exit status (default 1).
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The exit status to report it with.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Opens an existing database; the inspection commands never create one.
fn open_existing(dir: &Path) -> Result<cairn_engine::Db, Failure> {
    cairn_store::Store::engine_options()
        .create_if_missing(false)
        .open(dir)
        .map_err(|e| Failure::new(format_args!("cannot open {}", dir.display()), e))
}
