//! `cairn`: the command-line tool for a Cairn data directory.
//!
//! Subcommands inspect (`stats`), maintain (`compact`), check (`check`), exercise (`demo`) and serve
//! (`serve`, the HTTP server) a database. Exit status: 0 on success, 1 on failure (message on
//! stderr), 2 on a usage error (and, for `check`, when the directory cannot be opened).
//!
//! A thin binary: argument parsing and one module per subcommand under `cli/`; the HTTP server is the
//! `cairn_server` library, the engine, store and sync crates do the rest.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("cairn: {failure}");
            ExitCode::from(failure.code())
        }
    }
}
