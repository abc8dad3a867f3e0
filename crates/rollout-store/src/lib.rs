//! rolloutd's durable state, on PostgreSQL (production, several replicas)
//! or SQLite (the embedded default for one machine), through one `sqlx`
//! `AnyPool` and one set of portable SQL statements. The schemas differ only
//! where the two must (`migrations/postgres`, `migrations/sqlite`).
//!
//! What is kept:
//! - the documents (Rollouts, AnalysisTemplates) as JSON, with a
//!   `generation` that grows when a Rollout's spec changes;
//! - each rollout's status, with a `version` for optimistic concurrency: a
//!   writer names the version it read and fails with [`StoreError::Conflict`]
//!   if it moved, instead of overwriting;
//! - leases: which replica reconciles which rollout, until when, and a
//!   fencing token that grows with every change of holder. Every status write
//!   checks, in the same statement, that the writer still holds the lease
//!   with its token, so a replica that lost its lease (paused, partitioned)
//!   can never overwrite its successor's decisions;
//! - the append-only event log, and the queue of manual commands, both
//!   written in the same transaction as the status they belong to.
//!
//! Times are milliseconds since the epoch, passed in by the caller (the same
//! clock the decision core is given), so the SQL is the same on both
//! backends and tests control time.
#![forbid(unsafe_code)]

pub mod testing;
pub use notify::{LoggedEvent, NotifyCursor};
pub use watch::{Fingerprint, WatchedEvent};

use std::collections::BTreeMap;

mod documents;
mod leases;
mod notify;
mod queue;
mod runs;
mod status;
mod watch;

pub use documents::traffic_targets;
pub use runs::DEFAULT_RUN_HISTORY;

use rollout_core::{Command, CommandKind, Event, EventKind, RolloutStatus, Time};
use rollout_spec::{AnalysisTemplate, AnalysisTemplateSpec, Rollout, SpecSet};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    Url(String),
    /// A stored document or status no longer parses.
    #[error("the stored {what} of `{name}` is unreadable: {message}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// Whose.
        name: String,
        /// The parser's complaint.
        message: String,
    },
    /// The status changed since it was read, or the writer lost its lease.
    #[error(
        "the status of `{0}` changed since it was read, or this replica no longer holds its lease"
    )]
    Conflict(String),
    /// Another rollout owns the traffic target a rollout names.
    #[error("{target} is owned by Rollout `{owner}`; `{rollout}` cannot shift it too (delete `{owner}` or point it elsewhere first)")]
    Owned {
        /// The rollout that was refused.
        rollout: String,
        /// The listener's default action or the rule.
        target: String,
        /// The rollout that owns it.
        owner: String,
    },
}

impl StoreError {
    /// A short label for metrics (`rolloutd_reconcile_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Database(_) => "database",
            StoreError::Migrate(_) => "migration",
            StoreError::Url(_) => "config",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Conflict(_) => "conflict",
            StoreError::Owned { .. } => "owned",
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// How many events one statement inserts: 9 parameters each stays far
/// below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
pub const EVENTS_PER_STATEMENT: usize = 500;

/// Whose clock judges lease expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseClock {
    /// The database's (production): replicas whose clocks disagree still
    /// agree on who holds a lease.
    Database,
    /// The time each call passes in (tests that control time).
    Caller,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A lease on one rollout: the right to reconcile it and write its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The rollout.
    pub rollout: String,
    /// The replica holding it.
    pub holder: String,
    /// The fencing token every status write must match.
    pub token: i64,
    /// When it runs out unless renewed (by the lease clock).
    pub expires_at: Time,
}

/// What [`Store::delete_or_hand_back`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The rollout is gone (it held no canary traffic, or `orphan`).
    Gone,
    /// Its run holds traffic: a `Delete` command was queued (or had been);
    /// the rollout is removed once stable carries all traffic again.
    HandingBack,
    /// No such rollout.
    NotFound,
}

/// A rollout as stored: its document, and its status when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    /// The document.
    pub rollout: Rollout,
    /// This rollout's identity: a name deleted and applied again is a new
    /// rollout, whose status and events never mix with the old one's.
    pub uid: String,
    /// Grows by one with every change of the spec.
    pub generation: i64,
    /// Where the document came from (a file, `api`).
    pub source: String,
    /// The status, once the rollout was reconciled.
    pub status: Option<RolloutStatus>,
    /// The status version (0 before the first write).
    pub version: i64,
    /// Whether manual commands were queued for it when it was read (read
    /// them with [`Store::commands`]; when false, there is nothing to read).
    pub commands_queued: bool,
}

/// What applying a document did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed with another spec.
    Configured,
    /// It existed with this spec.
    Unchanged,
}

impl Change {
    /// `created`, `configured`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One document's outcome of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `Rollout` or `AnalysisTemplate`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// What changed.
    pub change: Change,
}

/// How many statements the store has sent, by kind.
#[derive(Debug, Default)]
pub struct Statements {
    reads: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    lease_writes: std::sync::atomic::AtomicU64,
}

impl Statements {
    fn read(&self, n: u64) {
        self.reads
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn write(&self, n: u64) {
        self.writes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn lease(&self) {
        self.lease_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// (reads, writes of state, writes of leases) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.reads.load(Relaxed),
            self.writes.load(Relaxed),
            self.lease_writes.load(Relaxed),
        )
    }
}

/// A status to record, with what comes with it.
#[derive(Debug, Clone, Copy)]
pub struct StatusWrite<'a> {
    /// The version the writer read (0: no status yet).
    pub expected: i64,
    /// The new status.
    pub status: &'a RolloutStatus,
    /// The events of the decision.
    pub events: &'a [Event],
    /// Whether the decision applied queued commands (removed in the same
    /// transaction, up to `status.last_command_id`).
    pub applied_commands: bool,
    /// The identity of the rollout that was read ([`StoredRollout::uid`]).
    pub uid: &'a str,
    /// Runs the decision ended (recorded in the same transaction).
    pub ended_runs: &'a [rollout_core::status::RunRecord],
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    statements: std::sync::Arc<Statements>,
    clock: LeaseClock,
    run_history: u32,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

fn corrupt(what: &'static str, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        name: name.to_string(),
        message: e.to_string(),
    }
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`; a SQLite file is
    /// created when missing) with a pool of 16 connections. Does not migrate.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, 16).await
    }

    /// The same, with `connections` PostgreSQL connections (SQLite uses one).
    pub async fn connect_with(url: &str, connections: u32) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest.contains("mode=") || rest.contains(":memory:") {
                url.to_string()
            } else if rest.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let max = match backend {
            Backend::Postgres => connections.max(1),
            // One writer at a time: SQLite serialises writes anyway, and a
            // single connection avoids "database is locked" between our own.
            Backend::Sqlite => 1,
        };
        // Statements are never logged: a failed one could be hundreds of
        // kilobytes of SQL; the error says what failed.
        let options = <sqlx::any::AnyConnectOptions as std::str::FromStr>::from_str(&url)?;
        let options = sqlx::ConnectOptions::disable_statement_logging(options);
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        // A SQLite file is opened by the daemon and, separately, by the API:
        // in WAL mode readers never block the writer nor the writer them
        // (one writer at a time still; the busy timeout orders them). The
        // mode is kept in the file.
        if backend == Backend::Sqlite && !url.contains(":memory:") && !url.contains("mode=memory") {
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await?;
        }
        Ok(Store {
            pool,
            backend,
            statements: Default::default(),
            clock: LeaseClock::Database,
            run_history: DEFAULT_RUN_HISTORY,
        })
    }

    /// The same store judging lease expiry by the times callers pass in
    /// (for tests that control time).
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Store {
        self.clock = clock;
        self
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Statements sent so far (reads, writes of state, writes of leases),
    /// across clones of this store.
    pub fn statements(&self) -> (u64, u64, u64) {
        self.statements.get()
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers and every migration is applied.
    pub async fn ready(&self) -> Result<bool> {
        // Reachable first: an unreachable database is an error, not "not
        // migrated".
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        let applied: Vec<i64> =
            sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r.try_get::<i64, _>(0).ok())
                        .collect()
                })
                .unwrap_or_default();
        Ok(self.migrator().iter().all(|m| applied.contains(&m.version)))
    }

    const ROLLOUT_SELECT: &'static str =
        "SELECT r.name, r.spec, r.source, r.generation, r.uid, s.status, s.version,
           CAST(CASE WHEN EXISTS (SELECT 1 FROM commands c WHERE c.rollout = r.name) THEN 1 ELSE 0 END AS BIGINT) AS queued
         FROM rollouts r LEFT JOIN rollout_status s ON s.name = r.name";

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
