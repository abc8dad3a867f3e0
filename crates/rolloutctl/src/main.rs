//! `rolloutctl`: the command line of rolloutd.
//!
//! Exit codes (the contract's): 0 success, 1 the request was refused or
//! invalid, 2 usage error (clap's own), 3 the server could not be reached.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod validate;

/// Progressive delivery for services behind AWS Application Load Balancers.
#[derive(Debug, Parser)]
#[command(name = "rolloutctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Rollout and AnalysisTemplate files offline, with no server.
    ///
    /// Files and directories (searched for *.yaml and *.yml), multi-document
    /// YAML. All documents form one set: a template may be defined in another
    /// file than the rollout that names it. Prints one `FILE:LINE:COLUMN:
    /// message` line per error and exits 1, or exits 0 when all are valid.
    Validate {
        /// Files or directories to check.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate::run(&paths),
    }
}
