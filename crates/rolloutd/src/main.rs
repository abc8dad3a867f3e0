//! `rolloutd`: the daemon. `serve` reconciles every rollout until SIGINT or
//! SIGTERM; `migrate` applies the database migrations and exits.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollout_api::println;
use rollout_spec::Duration;
use rollout_store::Store;
use tracing::{error, info, warn};

use std::sync::Arc;

use rolloutd::config::{Config, LogFormat, Overrides};
use rolloutd::{daemon, Setup};

/// Progressive delivery for services behind AWS Application Load Balancers.
#[derive(Debug, Parser)]
#[command(name = "rolloutd", version, about)]
struct Cli {
    /// YAML config file; environment variables and flags override it.
    #[arg(long, env = "ROLLOUTD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// `sqlite://rolloutd.db` (default, created if missing) or `postgres://…`.
    #[arg(long, env = "ROLLOUTD_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// `text` (default) or `json` logs.
    #[arg(long, env = "ROLLOUTD_LOG_FORMAT", global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile every rollout and serve the HTTP API until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        over: Overrides,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// See rolloutd at work in a minute or two, with nothing to set up: the
    /// real daemon, store and API against a SIMULATED load balancer and
    /// CloudWatch (no AWS calls), running a healthy canary that succeeds and
    /// a bad one that is rolled back. State goes to a fresh SQLite file
    /// unless --database-url is given.
    Demo {
        /// The HTTP API and `/metrics` (default 127.0.0.1:8080).
        #[arg(long, env = "ROLLOUTD_LISTEN")]
        listen: Option<String>,
        /// Serve the demo on a non-loopback address (it has no token).
        #[arg(long)]
        insecure_no_auth: bool,
    },
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLOUTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// What the command line asks for.
enum Mode {
    Serve,
    Migrate,
    Demo,
}

/// The configuration the command line, environment and file give, and
/// what to do with it.
fn configure(cli: Cli) -> anyhow::Result<(Mode, Config)> {
    let (mode, mut over) = match cli.command {
        Command::Migrate => (Mode::Migrate, Overrides::default()),
        Command::Serve { over } => (Mode::Serve, over),
        Command::Demo {
            listen,
            insecure_no_auth,
        } => {
            let file =
                std::env::temp_dir().join(format!("rolloutd-demo-{}.db", std::process::id()));
            let _ = std::fs::remove_file(&file);
            let over = Overrides {
                listen,
                insecure_no_auth: insecure_no_auth.then_some(true),
                database_url: Some(format!("sqlite://{}", file.display())),
                reconcile_interval: Some(Duration::from_secs(1)),
                ..Overrides::default()
            };
            (Mode::Demo, over)
        }
    };
    if cli.database_url.is_some() {
        over.database_url = cli.database_url;
    }
    over.log_format = cli.log_format;
    let config = Config::load(cli.config.as_deref(), over)
        .map_err(|errs| anyhow::anyhow!(errs.join("\n")))?;
    Ok((mode, config))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (mode, config) = configure(cli)?;
    // The demo prints its own progress; its logs say only what goes wrong
    // (ROLLOUTD_LOG=info for everything).
    let demo = matches!(mode, Mode::Demo);
    init_logs(config.log_format, if demo { "warn" } else { "info" });
    // A process-wide setting, made once by the process: the HTTP server's
    // connection cap follows from the raised limit.
    #[cfg(unix)]
    match rolloutd::http::raise_open_files_limit() {
        Ok((before, after)) if after > before => {
            info!(
                before,
                after, "raised the open-files limit to its hard limit"
            )
        }
        Ok(_) => {}
        Err(e) => warn!("{e}"),
    }
    #[cfg(not(feature = "simulated-world"))]
    if config.simulate_world.is_some() {
        anyhow::bail!("{NO_SIMULATED_WORLD}");
    }
    match mode {
        Mode::Migrate => migrate(&config).await,
        Mode::Demo => demo_mode(config).await,
        Mode::Serve => serve_mode(config).await,
    }
}

/// `rolloutd migrate`.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::connect_with(&config.database_url, 1).await?;
    store.migrate().await?;
    info!(database = %redact(&config.database_url), "migrations applied");
    store.close().await;
    Ok(())
}

/// Refuses to serve beyond loopback without a token (or the explicit
/// choice), then binds the listener.
async fn listen(config: &Config, demo: bool) -> anyhow::Result<tokio::net::TcpListener> {
    let token_given =
        config.api_token_file.is_some() || rolloutd::serve::token_from_env().is_some();
    rolloutd::serve::exposure_allowed(&config.listen, token_given, config.insecure_no_auth).await?;
    if !token_given && !demo {
        warn!("no API token (--api-token-file): every request is accepted unauthenticated");
    }
    rolloutd::http::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))
}

/// `rolloutd demo`: the daemon against the simulated world in memory.
async fn demo_mode(config: Config) -> anyhow::Result<()> {
    let listener = listen(&config, true).await?;
    let setup = Setup::connect(config).await?;
    let store = setup.store.clone();
    let set = rolloutd::demo::specs()?;
    store.apply(&set, "demo", daemon::now(), false).await?;
    let world = rolloutd::demo::world(&set, daemon::now);
    rolloutd::demo::spawn_regression(Arc::clone(&world), &set);
    let base = format!("http://{}", listener.local_addr()?);
    println!("rolloutd demo: a SIMULATED load balancer and CloudWatch in memory (no AWS calls).");
    println!(
        "Two rollouts, 5% -> 10% -> 25% -> 50% -> 100% with analysis every 5 s: `{}` ships a healthy canary, `{}` one whose 5xx rate climbs.",
        rolloutd::demo::GOOD,
        rolloutd::demo::BAD
    );
    println!(
        "State: {}   API and /metrics: {base}",
        redact(&setup.config.database_url)
    );
    println!("Dashboard: {base}/  (open it in a browser to watch both rollouts live)");
    println!();
    rolloutd::demo::spawn_progress(store.clone(), base);
    rolloutd::serve(
        listener,
        setup,
        Arc::clone(&world),
        world,
        shutdown_signal(),
    )
    .await?;
    store.close().await;
    Ok(())
}

/// `rolloutd serve`: against AWS, or the simulated world of the tests.
async fn serve_mode(config: Config) -> anyhow::Result<()> {
    let listener = listen(&config, false).await?;
    let setup = Setup::connect(config).await?;
    let store = setup.store.clone();
    match setup.config.simulate_world.clone() {
        Some(world_url) => serve_simulated(listener, setup, &world_url).await?,
        None => serve_aws(listener, setup).await?,
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Serves against AWS: the adapters behind the API budget, counted in the
/// metrics; metric reads of rollouts that fall due together coalesced.
async fn serve_aws(listener: tokio::net::TcpListener, setup: Setup) -> anyhow::Result<()> {
    let config = &setup.config;
    let aws = rollout_aws::load_config().await;
    info!(
        region = aws
            .region()
            .map_or("(none: set AWS_REGION or a profile)", |r| r.as_ref()),
        "AWS: ELBv2 and CloudWatch through the standard configuration chain"
    );
    let observer: rollout_aws::CallObserver = {
        let counters = Arc::clone(&setup.metrics);
        Arc::new(move |service, operation, outcome| {
            counters
                .aws_requests
                .with_label_values(&[service, operation, outcome.as_str()])
                .inc();
        })
    };
    let rate = |per_second: f64| rollout_aws::budget::Rate {
        per_second,
        burst: (per_second * 2.0).max(1.0),
    };
    let budget = Arc::new(rollout_aws::budget::Budget::new(
        rollout_aws::budget::BudgetConfig {
            elb_read: rate(config.aws_elb_reads_per_second),
            elb_write: rate(config.aws_elb_writes_per_second),
            cloudwatch: rate(config.aws_get_metric_data_per_second),
            alarms: rate(config.aws_describe_alarms_per_second),
            fis: rollout_aws::budget::FIS_RATE,
        },
    ));
    setup.metrics.show_budget(Arc::clone(&budget));
    info!(
        elb_reads_per_second = config.aws_elb_reads_per_second,
        elb_writes_per_second = config.aws_elb_writes_per_second,
        get_metric_data_per_second = config.aws_get_metric_data_per_second,
        describe_alarms_per_second = config.aws_describe_alarms_per_second,
        "AWS API budget (the fleet's; each replica takes its share)"
    );
    let accounts = rollout_aws::regional::accounts(&aws, &config.accounts).await;
    let (router, source) = rollout_aws::adapters(&aws, accounts, observer, budget);
    let router = match config.canary_health_source {
        rolloutd::config::HealthSource::Describe => router,
        rolloutd::config::HealthSource::Cloudwatch => {
            info!("the canary's health comes from CloudWatch's HealthyHostCount (DescribeTargetHealth when it has no recent datapoint)");
            router.with_cloudwatch_health(source.clone())
        }
    };
    // Intervals of different rollouts that fall due together are read in
    // one GetMetricData call (500 queries a call).
    let source = rollout_aws::Coalescing::new(source, std::time::Duration::from_secs(5));
    Ok(rolloutd::serve(listener, setup, router, source, shutdown_signal()).await?)
}

/// Serves against the simulated world kept in the database at `world_url`
/// (the tests that kill and restart processes).
#[cfg(feature = "simulated-world")]
async fn serve_simulated(
    listener: tokio::net::TcpListener,
    setup: Setup,
    world_url: &str,
) -> anyhow::Result<()> {
    info!(world = %redact(world_url), "SIMULATED load balancer and CloudWatch: no AWS calls are made");
    let world = rolloutd::world::World::open(world_url, 1000.0, daemon::now).await?;
    Ok(rolloutd::serve(listener, setup, world.clone(), world, shutdown_signal()).await?)
}

/// The shipped binary has no simulated world.
#[cfg(not(feature = "simulated-world"))]
async fn serve_simulated(_: tokio::net::TcpListener, _: Setup, _: &str) -> anyhow::Result<()> {
    anyhow::bail!("{}", NO_SIMULATED_WORLD)
}

/// Why `--simulate-world` is refused by a binary built without it.
#[cfg(not(feature = "simulated-world"))]
const NO_SIMULATED_WORLD: &str = "--simulate-world: this rolloutd was built without the simulated world (a test fixture; cargo build --features simulated-world, as scripts/test does)";

use rolloutd::redact::redact;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rolloutd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote a database URL (a mistyped one included).
            let e = redact(&format!("{e:#}"));
            error!("{e}");
            eprintln!("rolloutd: {e}");
            ExitCode::from(1)
        }
    }
}
