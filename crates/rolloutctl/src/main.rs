//! `rolloutctl`: the command line of rolloutd.
//!
//! Exit codes (the contract's): 0 success, 1 the request was refused or
//! invalid, 2 usage error (clap's own), 3 the server could not be reached.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod replay;
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
    /// Replay an AnalysisTemplate's judge over recorded per-interval ALB
    /// metrics, offline: no server, no AWS, no clock.
    ///
    /// OBS.csv has the header `t,arm,requests,errors,latency_avg,latency_p99`,
    /// one row per arm per interval, in time order; a missing row (or an
    /// empty cell) is no datapoint. The decision applies the template's
    /// failureLimit, as the daemon does.
    Replay {
        /// The file with the AnalysisTemplate.
        #[arg(short = 'f', long = "filename")]
        template: std::path::PathBuf,
        /// The recorded metrics.
        #[arg(long)]
        observations: std::path::PathBuf,
        /// Output: `table` for people, `json` for one object per line.
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate::run(&paths),
        Command::Replay {
            template,
            observations,
            output,
        } => replay::run(&template, &observations, output == "json"),
    }
}
