//! `rolloutd`: the daemon. `serve` reconciles every rollout until SIGINT or
//! SIGTERM; `migrate` applies the database migrations and exits.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollout_spec::Duration;
use rollout_store::Store;
use tracing::{error, info};

use std::future::IntoFuture;
use std::sync::Arc;

use rolloutd::api::Api;
use rolloutd::config::{Config, LogFormat, Overrides};
use rolloutd::metrics::Metrics;
use rolloutd::{daemon, world};

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
        /// The HTTP API, `/metrics` and health checks (default 127.0.0.1:8080).
        #[arg(long, env = "ROLLOUTD_LISTEN")]
        listen: Option<String>,
        /// A file with the bearer token every mutating request must carry.
        #[arg(long, env = "ROLLOUTD_API_TOKEN_FILE")]
        api_token_file: Option<PathBuf>,
        /// A file with a read-only token; when set, reads need a token too.
        #[arg(long, env = "ROLLOUTD_API_READ_TOKEN_FILE")]
        api_read_token_file: Option<PathBuf>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key-file).
        #[arg(long, env = "ROLLOUTD_TLS_CERT_FILE")]
        tls_cert_file: Option<PathBuf>,
        /// The PEM private key of --tls-cert-file.
        #[arg(long, env = "ROLLOUTD_TLS_KEY_FILE")]
        tls_key_file: Option<PathBuf>,
        /// Apply every *.yaml/*.yml under DIR at start and whenever it changes.
        #[arg(long, env = "ROLLOUTD_SPECS_DIR")]
        specs_dir: Option<PathBuf>,
        /// A rollout leaves the specs directory after this many complete
        /// scans without it in a row (default 3)…
        #[arg(long, env = "ROLLOUTD_SPECS_REMOVAL_SCANS")]
        specs_removal_scans: Option<u32>,
        /// …spanning at least this long (default 60s).
        #[arg(long, env = "ROLLOUTD_SPECS_REMOVAL_GRACE")]
        specs_removal_grace: Option<Duration>,
        /// How often every rollout is re-examined, at the latest (default 10s).
        #[arg(long, env = "ROLLOUTD_RECONCILE_INTERVAL")]
        reconcile_interval: Option<Duration>,
        /// How long a replica's lease on a rollout lasts (default 15s).
        #[arg(long, env = "ROLLOUTD_LEASE_TTL")]
        lease_ttl: Option<Duration>,
        /// This replica's name in leases (default: host name and process id).
        #[arg(long, env = "ROLLOUTD_REPLICA")]
        replica: Option<String>,
        /// How many reconciles run at once (default 12; the database pool matches it).
        #[arg(long, env = "ROLLOUTD_CONCURRENCY")]
        concurrency: Option<usize>,
        /// A holding run reads the load balancer at least this often for
        /// drift; more often only when the AWS budget has tokens to spare
        /// (default 60s).
        #[arg(long, env = "ROLLOUTD_DRIFT_CHECK_INTERVAL")]
        drift_check_interval: Option<Duration>,
        /// The fleet's budget of ELBv2 reads per second (default 4; AWS's
        /// shared bucket refills 10 a second).
        #[arg(long, env = "ROLLOUTD_AWS_ELB_READS_PER_SECOND")]
        aws_elb_reads_per_second: Option<f64>,
        /// The fleet's budget of ELBv2 writes per second (default 2).
        #[arg(long, env = "ROLLOUTD_AWS_ELB_WRITES_PER_SECOND")]
        aws_elb_writes_per_second: Option<f64>,
        /// The fleet's budget of CloudWatch GetMetricData calls per second (default 5).
        #[arg(long, env = "ROLLOUTD_AWS_GET_METRIC_DATA_PER_SECOND")]
        aws_get_metric_data_per_second: Option<f64>,
        /// Run against a simulated ALB and CloudWatch kept in this database
        /// (simulated: no AWS calls).
        #[arg(long, env = "ROLLOUTD_SIMULATE_WORLD")]
        simulate_world: Option<String>,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut over = Overrides {
        database_url: cli.database_url,
        log_format: cli.log_format,
        ..Overrides::default()
    };
    let mut demo = false;
    let serve = match cli.command {
        Command::Migrate => false,
        Command::Demo { listen } => {
            demo = true;
            over.listen = listen;
            if over.database_url.is_none() {
                let file =
                    std::env::temp_dir().join(format!("rolloutd-demo-{}.db", std::process::id()));
                let _ = std::fs::remove_file(&file);
                over.database_url = Some(format!("sqlite://{}", file.display()));
            }
            over.reconcile_interval = Some(Duration::from_secs(1));
            true
        }
        Command::Serve {
            listen,
            api_token_file,
            api_read_token_file,
            tls_cert_file,
            tls_key_file,
            specs_dir,
            specs_removal_scans,
            specs_removal_grace,
            reconcile_interval,
            lease_ttl,
            replica,
            concurrency,
            drift_check_interval,
            aws_elb_reads_per_second,
            aws_elb_writes_per_second,
            aws_get_metric_data_per_second,
            simulate_world,
        } => {
            over.drift_check_interval = drift_check_interval;
            over.aws_elb_reads_per_second = aws_elb_reads_per_second;
            over.aws_elb_writes_per_second = aws_elb_writes_per_second;
            over.aws_get_metric_data_per_second = aws_get_metric_data_per_second;
            over.specs_removal_scans = specs_removal_scans;
            over.specs_removal_grace = specs_removal_grace;
            over.listen = listen;
            over.api_token_file = api_token_file;
            over.api_read_token_file = api_read_token_file;
            over.tls_cert_file = tls_cert_file;
            over.tls_key_file = tls_key_file;
            over.specs_dir = specs_dir;
            over.reconcile_interval = reconcile_interval;
            over.lease_ttl = lease_ttl;
            over.replica = replica;
            over.concurrency = concurrency;
            over.simulate_world = simulate_world;
            true
        }
    };
    let config = Config::load(cli.config.as_deref(), over)
        .map_err(|errs| anyhow::anyhow!(errs.join("\n")))?;
    // The demo prints its own progress; its logs say only what goes wrong
    // (ROLLOUTD_LOG=info for everything).
    init_logs(config.log_format, if demo { "warn" } else { "info" });
    let store = Store::connect_with(&config.database_url, config.concurrency as u32).await?;
    store.migrate().await?;
    if !serve {
        info!(database = %redact(&config.database_url), "migrations applied");
        return Ok(());
    }
    let read_token_file = |path: &Option<PathBuf>, flag: &str| -> anyhow::Result<Option<String>> {
        let Some(path) = path else {
            return Ok(None);
        };
        let t = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?
            .trim()
            .to_string();
        anyhow::ensure!(!t.is_empty(), "{flag} {} is empty", path.display());
        Ok(Some(t))
    };
    let token = read_token_file(&config.api_token_file, "--api-token-file")?;
    let read_token = read_token_file(&config.api_read_token_file, "--api-read-token-file")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    info!(
        replica = %config.replica,
        listen = %listener.local_addr()?,
        database = %redact(&config.database_url),
        interval = %config.reconcile_interval,
        auth = token.is_some(),
        tls = config.tls_cert_file.is_some(),
        "rolloutd serving"
    );
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(rolloutd::tls::server_config(cert, key)?),
        _ => None,
    };
    let counters = Arc::new(Metrics::new());
    // On PostgreSQL the API has a pool of its own, so a read never waits for
    // a connection a reconcile holds (SQLite has one writer anyway).
    let api_store = match store.backend() {
        rollout_store::Backend::Postgres => Store::connect_with(&config.database_url, 8).await?,
        rollout_store::Backend::Sqlite => store.clone(),
    };
    let surface = Surface {
        store: store.clone(),
        api_store,
        listener,
        tls,
        token,
        read_token,
        counters: Arc::clone(&counters),
    };
    if demo {
        let set = rolloutd::demo::specs()?;
        store.apply(&set, "demo", daemon::now(), false).await?;
        let world = rolloutd::demo::world(&set, daemon::now);
        rolloutd::demo::spawn_regression(Arc::clone(&world), &set);
        let base = format!("http://{}", surface.listener.local_addr()?);
        println!(
            "rolloutd demo: a SIMULATED load balancer and CloudWatch in memory (no AWS calls)."
        );
        println!(
            "Two rollouts, 5% -> 10% -> 25% -> 50% -> 100% with analysis every 5 s: `{}` ships a healthy canary, `{}` one whose 5xx rate climbs.",
            rolloutd::demo::GOOD,
            rolloutd::demo::BAD
        );
        println!(
            "State: {}   API and /metrics: {base}",
            redact(&config.database_url)
        );
        println!();
        rolloutd::demo::spawn_progress(store.clone(), base);
        serve_with(surface, config, Arc::clone(&world), world).await?;
        store.close().await;
        return Ok(());
    }
    match config.simulate_world.clone() {
        Some(world_url) => {
            info!(world = %redact(&world_url), "SIMULATED load balancer and CloudWatch: no AWS calls are made");
            let world = world::World::open(&world_url, 1000.0, daemon::now).await?;
            serve_with(surface, config, world.clone(), world).await?;
        }
        None => {
            let aws = rollout_aws::load_config().await;
            info!(
                region = aws
                    .region()
                    .map_or("(none: set AWS_REGION or a profile)", |r| r.as_ref()),
                "AWS: ELBv2 and CloudWatch through the standard configuration chain"
            );
            let observer: rollout_aws::CallObserver = {
                let counters = Arc::clone(&counters);
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
                },
            ));
            counters.show_budget(Arc::clone(&budget));
            info!(
                elb_reads_per_second = config.aws_elb_reads_per_second,
                elb_writes_per_second = config.aws_elb_writes_per_second,
                get_metric_data_per_second = config.aws_get_metric_data_per_second,
                "AWS API budget (the fleet's; each replica takes its share)"
            );
            let (router, source) = rollout_aws::adapters(&aws, observer, budget);
            // Intervals of different rollouts that fall due together are
            // read in one GetMetricData call (500 queries a call).
            let source = rollout_aws::Coalescing::new(source, std::time::Duration::from_secs(5));
            serve_with(surface, config, router, source).await?;
        }
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

/// What serving needs besides the world.
struct Surface {
    store: Store,
    api_store: Store,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    token: Option<String>,
    read_token: Option<String>,
    counters: Arc<Metrics>,
}

/// Runs the daemon and the API on any load balancer and metric source (the
/// AWS adapters or the simulation: the engine takes the same path).
async fn serve_with<R, M>(s: Surface, config: Config, router: R, source: M) -> anyhow::Result<()>
where
    R: rollout_core::ports::TrafficRouter,
    M: rollout_core::ports::MetricSource,
{
    let specs_dir = config.specs_dir.is_some();
    let d = daemon::Daemon::new(
        s.store.clone(),
        router,
        source,
        config,
        Arc::clone(&s.counters),
    );
    let api = Arc::new(Api {
        store: s.api_store.clone(),
        poke: {
            let d = Arc::clone(&d);
            Box::new(move |name: &str| d.poke(name))
        },
        token: s.token,
        read_token: s.read_token,
        metrics: s.counters,
        last_known: Default::default(),
        templates_changed: {
            let d = Arc::clone(&d);
            Box::new(move || d.templates_changed())
        },
        sources: specs_dir.then(|| d.specs_state()),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let app = rolloutd::api::router(api);
    let server = match s.tls {
        Some(tls) => tokio::spawn(
            axum::serve(rolloutd::tls::TlsListener::new(s.listener, tls)?, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        ),
        None => tokio::spawn(
            axum::serve(s.listener, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        ),
    };
    d.run(stopped(stop_rx)).await?;
    server.await??;
    Ok(())
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

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
            error!("{e:#}");
            eprintln!("rolloutd: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/r"),
            "postgres://app:***@db:5432/r"
        );
        assert_eq!(redact("postgres://app@db/r"), "postgres://app@db/r");
        assert_eq!(redact("sqlite://rolloutd.db"), "sqlite://rolloutd.db");
    }
}
