//! `cairn`: the command-line tool for a Cairn data directory.
//!
//! Subcommands inspect (`stats`), maintain (`compact`), check (`check`) and exercise (`demo`) a database.
//! The HTTP server will join them in a later release. Exit status: 0 on success, 1 on failure (message on
//! stderr), 2 on a usage error (and, for `check`, when the directory cannot be opened).

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
