//! The one entry to the daemon: [`serve`] runs the reconcile loop and the
//! HTTP API on a listener until `shutdown` resolves, against any load
//! balancer and metric source (the AWS adapters, the demo's simulation, a
//! test's world). `main.rs`, the demo, the benchmarks and the in-process
//! tests all go through it (mini-redis's `server::run(listener, shutdown)`).
//!
//! [`Setup::connect`] does what comes before: the stores (the daemon's and
//! the API's own connections), migrations, the tokens, TLS and the
//! metrics; a caller may adjust it (a test's tokens, a benchmark's
//! observer) before serving.

use std::path::Path;
use std::sync::Arc;

use rollout_core::ports::{FaultInjector, MetricSource, TrafficRouter};
use rollout_store::Store;
use tracing::info;

use crate::api::Api;
use crate::config::Config;
use crate::daemon::{Clock, Daemon, Observer};
use crate::metrics::Metrics;

/// Why serving could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database.
    #[error(transparent)]
    Store(#[from] rollout_store::StoreError),
    /// A token file is missing, unreadable or empty.
    #[error("{flag} {path}: {why}")]
    TokenFile {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The TLS files.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The address to listen on.
    #[error("cannot listen on {listen}: {why}")]
    Listen {
        /// The address.
        listen: String,
        /// What is wrong.
        why: String,
    },
    /// Serving beyond loopback without a token, not chosen explicitly.
    #[error("refusing to serve on {0} without an API token: anyone who can reach it could abort, promote or delete rollouts. Give a token with --api-token-file FILE (ROLLOUTD_API_TOKEN_FILE, or the token itself in ROLLOUTD_API_TOKEN; make one with `head -c 32 /dev/urandom | base64 > FILE`), listen on a loopback address (127.0.0.1), or, behind something that authenticates for you, say --insecure-no-auth (ROLLOUTD_INSECURE_NO_AUTH=true)")]
    Exposed(String),
    /// The listener or the HTTP server's task.
    #[error("the HTTP server: {0}")]
    Server(String),
}

/// Everything serving needs besides the listener and the world.
pub struct Setup {
    /// The configuration.
    pub config: Config,
    /// The daemon's store.
    pub store: Store,
    /// The API's store: connections of its own, so a request never waits
    /// for one a reconcile holds, nor a reconcile for one a request holds.
    pub api_store: Store,
    /// The bearer token mutating requests need, if any.
    pub token: Option<String>,
    /// The read-only token, if any.
    pub read_token: Option<String>,
    /// TLS for the API, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The metrics (shared with the AWS adapters' call counts).
    pub metrics: Arc<Metrics>,
    /// Called after every reconcile (benchmarks).
    pub observer: Option<Observer>,
    /// The daemon's clock.
    pub clock: Clock,
}

impl Setup {
    /// Connects to the configured database (migrating it), opens the API's
    /// connections, reads the token files and the TLS files.
    pub async fn connect(config: Config) -> Result<Setup, ServeError> {
        let store = Store::connect_with(&config.database_url, config.concurrency as u32).await?;
        store.migrate().await?;
        let api_store = api_store(&store, &config.database_url)
            .await?
            .with_run_history(config.run_history);
        let token = match read_token_file(config.api_token_file.as_deref(), "--api-token-file")? {
            Some(t) => Some(t),
            None => token_from_env(),
        };
        let read_token = read_token_file(
            config.api_read_token_file.as_deref(),
            "--api-read-token-file",
        )?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        Ok(Setup {
            api_store,
            token,
            read_token,
            tls,
            ..Setup::on_store(config, store)
        })
    }
}

impl Setup {
    /// Serving on `store` (the API shares it), with no token, no TLS, new
    /// metrics and the wall clock: for benchmarks and in-process tests,
    /// which set what they need on top.
    pub fn on_store(config: Config, store: Store) -> Setup {
        let store = store.with_run_history(config.run_history);
        Setup {
            config,
            api_store: store.clone(),
            store,
            token: None,
            read_token: None,
            tls: None,
            metrics: Arc::new(Metrics::new()),
            observer: None,
            clock: Clock::System,
        }
    }
}

/// The API's store: 8 connections of its own on PostgreSQL, one more
/// connection to the same file on SQLite (an in-memory database exists
/// only on its own connection, so it is shared).
async fn api_store(store: &Store, url: &str) -> Result<Store, ServeError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    Ok(match store.backend() {
        rollout_store::Backend::Postgres => Store::connect_with(url, 8).await?,
        rollout_store::Backend::Sqlite if !in_memory => Store::connect_with(url, 1).await?,
        rollout_store::Backend::Sqlite => store.clone(),
    })
}

/// A token file's token (trimmed; an empty file is an error).
fn read_token_file(path: Option<&Path>, flag: &'static str) -> Result<Option<String>, ServeError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bad = |why: String| ServeError::TokenFile {
        flag,
        path: path.display().to_string(),
        why,
    };
    let t = std::fs::read_to_string(path)
        .map_err(|e| bad(e.to_string()))?
        .trim()
        .to_string();
    if t.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(Some(t))
}

/// The API token from `ROLLOUTD_API_TOKEN`, for platforms that hand secrets
/// to a process as environment variables (ECS task secrets); the file wins.
pub fn token_from_env() -> Option<String> {
    std::env::var("ROLLOUTD_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Serving without a token is allowed on loopback addresses only, unless
/// `insecure` says so: an API anyone on the network can reach must not let
/// anyone abort, promote or delete rollouts by mistake of omission.
pub async fn exposure_allowed(listen: &str, token: bool, insecure: bool) -> Result<(), ServeError> {
    if token || insecure {
        return Ok(());
    }
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| ServeError::Listen {
            listen: listen.to_string(),
            why: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(ServeError::Exposed(listen.to_string()));
    }
    Ok(())
}

/// The HTTP server's limits from the configuration (the connection cap
/// from the process's open-files limit, which the binary raises at start).
fn http_limits(config: &Config) -> crate::http::HttpLimits {
    let ms = |d: rollout_spec::Duration| std::time::Duration::from_millis(d.as_millis());
    let limits = crate::http::HttpLimits {
        header_timeout: ms(config.http_header_timeout),
        request_timeout: ms(config.http_request_timeout),
        idle_timeout: ms(config.http_idle_timeout),
        max_connections: config
            .http_max_connections
            .unwrap_or_else(|| crate::http::default_max_connections(crate::http::soft_nofile())),
        shutdown_grace: ms(config.http_shutdown_grace),
    };
    info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        request_timeout = ?limits.request_timeout,
        idle_timeout = ?limits.idle_timeout,
        "HTTP limits"
    );
    limits
}

/// Runs the daemon and the API on `listener` until `shutdown` resolves:
/// in-flight reconciles finish, leases are handed back, open connections
/// get the shutdown grace.
pub async fn serve<R, M>(
    listener: tokio::net::TcpListener,
    setup: Setup,
    router: R,
    source: M,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    R: TrafficRouter + FaultInjector,
    M: MetricSource,
{
    info!(
        replica = %setup.config.replica,
        listen = %listener.local_addr().map_err(|e| ServeError::Server(e.to_string()))?,
        database = %crate::redact::redact(&setup.config.database_url),
        interval = %setup.config.reconcile_interval,
        auth = setup.token.is_some(),
        tls = setup.tls.is_some(),
        "rolloutd serving"
    );
    let limits = http_limits(&setup.config);
    let specs_dir = setup.config.specs_dir.is_some();
    let d = Daemon::with_observer(
        setup.store.clone(),
        router,
        source,
        setup.config,
        Arc::clone(&setup.metrics),
        setup.observer,
        setup.clock,
    );
    let api = Arc::new(Api {
        store: setup.api_store,
        poke: {
            let d = Arc::clone(&d);
            Box::new(move |name: &str| d.poke(name))
        },
        token: setup.token,
        read_token: setup.read_token,
        metrics: setup.metrics,
        last_known: Default::default(),
        watchers: Default::default(),
        templates_changed: {
            let d = Arc::clone(&d);
            Box::new(move || d.templates_changed())
        },
        sources: specs_dir.then(|| d.specs_state()),
        clock: setup.clock,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    {
        let api = Arc::clone(&api);
        let mut stopping = stop_rx.clone();
        tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            api.watchers.close_all();
        });
    }
    let app = crate::api::router(api);
    let server = match setup.tls {
        Some(tls) => tokio::spawn(crate::http::serve(
            crate::tls::TlsListener::new(listener, tls)
                .map_err(|e| ServeError::Server(e.to_string()))?,
            app,
            limits,
            stop_rx.clone(),
        )),
        None => tokio::spawn(crate::http::serve(listener, app, limits, stop_rx.clone())),
    };
    let mut stopped = stop_rx;
    d.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await;
    server
        .await
        .map_err(|e| ServeError::Server(e.to_string()))?;
    Ok(())
}
