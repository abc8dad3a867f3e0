//! `rolloutctl`: the command line of rolloutd.
//!
//! Exit codes (the contract's): 0 success, 1 the request was refused or
//! invalid, 2 usage error (clap's own), 3 the server could not be reached.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod remote;
mod replay;
mod report;
mod status;
mod validate;
mod yaml;

/// Progressive delivery for services behind AWS Application Load Balancers.
#[derive(Debug, Parser)]
#[command(name = "rolloutctl", version, about)]
struct Cli {
    /// The rolloutd API.
    #[arg(
        long,
        env = "ROLLOUTD_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// A file holding the API token, sent on every request (else the
    /// `ROLLOUTD_TOKEN` variable).
    #[arg(long, env = "ROLLOUTD_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// PEM certificates to trust for an `https://` server (else the
    /// system's roots).
    #[arg(long, env = "ROLLOUTD_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
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
    /// failureLimit, as the daemon does. Stable's rows at t ≤ 0 (before
    /// the run) are its history: the judge learns from them how much the
    /// 5xx rate wanders, as the daemon does from the hour before a run.
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
        /// Pace the intervals as pauses of this duration, one after another,
        /// and say when each would have ended (with --minimum: evidence-driven).
        #[arg(long, value_parser = parse_duration)]
        pause: Option<rollout_spec::Duration>,
        /// An evidence-driven pause may end from this long on (needs --pause).
        #[arg(long, value_parser = parse_duration, requires = "pause")]
        minimum: Option<rollout_spec::Duration>,
    },
    /// Send specs to the server (all or nothing); --dry-run shows what would change.
    Apply {
        /// Files or directories.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<std::path::PathBuf>,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List rollouts, or show one, with their status.
    Get {
        /// One rollout.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json", "yaml"])]
        output: String,
    },
    /// One rollout's progress: steps, weights, the latest verdicts.
    Status {
        /// The rollout.
        name: String,
        /// Follow it live until the run ends.
        #[arg(long)]
        watch: bool,
    },
    /// The target group the next revision must be deployed into (for CI):
    /// prints its ARN (a rollout over several load balancers: each one's,
    /// a line each), or refuses (exit 1) when that group serves all
    /// traffic, where a deploy would replace production without a canary.
    Target {
        /// The rollout.
        name: String,
    },
    /// What a run did: how it ended, and each check's effect (canary/stable
    /// − 1) with its 95% interval and a verdict.
    Report {
        /// The rollout.
        name: String,
        /// The run (default: the newest).
        #[arg(long)]
        run: Option<u32>,
        /// Output: `table`, `json`, or `markdown` (for a pull request).
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json", "markdown"])]
        output: String,
    },
    /// Return all traffic to stable at once; the run ends Aborted.
    Abort(Override),
    /// Skip the current pause (--full: straight to 100%).
    Promote {
        #[command(flatten)]
        target: Override,
        /// Jump to 100% (still verified on the load balancer).
        #[arg(long)]
        full: bool,
    },
    /// Hold the run where it is.
    Pause(Override),
    /// Go on after a pause.
    Resume(Override),
    /// Start an aborted, rolled-back or failed run again from step 0.
    Retry(Override),
    /// Stop managing a rollout. A run holding canary traffic first returns
    /// it to stable; this waits until the rollout is gone.
    Delete {
        /// The rollout.
        name: String,
        /// Delete at once and leave the load balancer's weights as they are.
        #[arg(long)]
        orphan: bool,
        /// Do not wait for the traffic to be returned.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct Override {
    /// The rollout.
    name: String,
    /// Why, for the event log.
    #[arg(long)]
    reason: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = || {
        let token = match &cli.token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                Ok(_) => {
                    eprintln!(
                        "rolloutctl: --token-file {}: the file is empty",
                        path.display()
                    );
                    std::process::exit(2);
                }
                Err(e) => {
                    eprintln!("rolloutctl: --token-file {}: {e}", path.display());
                    std::process::exit(2);
                }
            },
            None => std::env::var("ROLLOUTD_TOKEN")
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        match remote::Client::new(&cli.server, token, cli.ca_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rolloutctl: {e}");
                std::process::exit(2);
            }
        }
    };
    match cli.command {
        Command::Apply { ref paths, dry_run } => remote::apply(&client(), paths, dry_run),
        Command::Get {
            ref name,
            ref output,
        } => remote::get(&client(), name.as_deref(), output),
        Command::Status { ref name, watch } => status::status(&client(), name, watch),
        Command::Target { ref name } => remote::target(&client(), name),
        Command::Report {
            ref name,
            run,
            ref output,
        } => report::report(&client(), name, run, output),
        Command::Abort(ref o) => {
            remote::command(&client(), "abort", &o.name, o.reason.as_deref(), false)
        }
        Command::Promote { ref target, full } => remote::command(
            &client(),
            "promote",
            &target.name,
            target.reason.as_deref(),
            full,
        ),
        Command::Pause(ref o) => {
            remote::command(&client(), "pause", &o.name, o.reason.as_deref(), false)
        }
        Command::Resume(ref o) => {
            remote::command(&client(), "resume", &o.name, o.reason.as_deref(), false)
        }
        Command::Retry(ref o) => {
            remote::command(&client(), "retry", &o.name, o.reason.as_deref(), false)
        }
        Command::Delete {
            ref name,
            orphan,
            no_wait,
        } => remote::delete(&client(), name, orphan, no_wait),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rolloutctl",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Validate { ref paths } => validate::run(paths),
        Command::Replay {
            ref template,
            ref observations,
            ref output,
            pause,
            minimum,
        } => {
            if let (Some(p), Some(m)) = (pause, minimum) {
                if m > p {
                    eprintln!("rolloutctl: --minimum {m} is longer than --pause {p}");
                    return ExitCode::from(2);
                }
            }
            let pacing = pause.map(|duration| replay::Pacing {
                duration,
                minimum: minimum.unwrap_or(duration),
            });
            replay::run(template, observations, output == "json", pacing)
        }
    }
}

/// A duration flag (`90s`, `5m`, `1h30m`).
fn parse_duration(s: &str) -> Result<rollout_spec::Duration, String> {
    s.parse().map_err(|e: String| e)
}
