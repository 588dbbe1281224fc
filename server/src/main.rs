//! `cairn`: the command-line tool for a Cairn data directory.
//!
//! Subcommands inspect (`stats`), maintain (`compact`), check (`check`), exercise (`demo`) and serve
//! (`serve`, the HTTP server) a database. Exit status: 0 on success, 1 on failure (message on
//! stderr), 2 on a usage error (and, for `check`, when the directory cannot be opened).

mod cli;
mod http;

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
