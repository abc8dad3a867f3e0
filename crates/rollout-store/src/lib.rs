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

use std::collections::BTreeMap;

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

/// The fenced, versioned status write: an insert when none was read
/// (`expected` 0; only for the rollout identity read), an update of the
/// version read otherwise; `suffix` ends it (` RETURNING version` on
/// PostgreSQL). The fence: the writer still holds the rollout's lease with
/// its token, unexpired by `clock` (the database's, in production).
/// Parameters: `$1` status, `$2` now, `$3` rollout, `$4` expected version,
/// `$5` holder, `$6` token, `$7` the rollout's identity.
fn status_statement(expected: i64, clock: &str, suffix: &str) -> String {
    let fenced = format!(
        "EXISTS (SELECT 1 FROM leases WHERE rollout = $3 AND holder = $5 AND token = $6 AND expires_at > {clock})"
    );
    if expected == 0 {
        format!(
            "INSERT INTO rollout_status (name, status, version, updated_at)
             SELECT $3, $1, 1, $2 WHERE $4 = 0 AND {fenced}
               AND EXISTS (SELECT 1 FROM rollouts WHERE name = $3 AND uid = $7)
             ON CONFLICT (name) DO NOTHING{suffix}"
        )
    } else {
        format!(
            "UPDATE rollout_status SET status = $1, version = version + 1, updated_at = $2
             WHERE name = $3 AND version = $4 AND {fenced}
               AND EXISTS (SELECT 1 FROM rollouts WHERE name = $3 AND uid = $7){suffix}"
        )
    }
}

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

/// Binds an event's columns after `rollout` (and its identity), in the
/// events table's order.
fn bind_event<'q>(q: AnyQuery<'q>, e: &Event) -> AnyQuery<'q> {
    q.bind(e.at.millis())
        .bind(i64::from(e.run))
        .bind(e.revision.clone())
        .bind(kind_name(e.kind))
        .bind(e.message.clone())
        .bind(e.actor.clone())
        .bind(i64::from(e.weight_before))
        .bind(i64::from(e.weight_after))
}

/// `$b, $b+1, …` (`n` placeholders).
fn placeholders(b: usize, n: usize) -> String {
    (b..b + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The traffic target a rollout owns: its listener rule, or its listener's
/// default action.
pub fn traffic_target(r: &Rollout) -> String {
    let alb = &r.spec.traffic_routing.alb;
    match &alb.rule_arn {
        Some(rule) => rule.as_str().to_string(),
        None => alb.listener_arn.as_str().to_string(),
    }
}

fn describe_target(r: &Rollout) -> String {
    let alb = &r.spec.traffic_routing.alb;
    match &alb.rule_arn {
        Some(rule) => format!("listener rule {}", rule.as_str()),
        None => format!(
            "the default action of listener {}",
            alb.listener_arn.as_str()
        ),
    }
}

/// A new rollout identity.
fn new_uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code()
                .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
                || d.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

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
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    statements: std::sync::Arc<Statements>,
    clock: LeaseClock,
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

fn kind_name(kind: EventKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
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
        Ok(Store {
            pool,
            backend,
            statements: Default::default(),
            clock: LeaseClock::Database,
        })
    }

    /// The same store judging lease expiry by the times callers pass in
    /// (for tests that control time).
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Store {
        self.clock = clock;
        self
    }

    /// The SQL for "now" in milliseconds by the lease clock: the database's
    /// own, or the parameter `param` (the caller's time).
    fn clock_sql(&self, param: &str) -> String {
        match (self.clock, self.backend) {
            (LeaseClock::Caller, _) => param.to_string(),
            (LeaseClock::Database, Backend::Postgres) => {
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)".into()
            }
            (LeaseClock::Database, Backend::Sqlite) => {
                "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)".into()
            }
        }
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

    /// What writing `spec` under `name` in `table` would change (and counts
    /// the write it will take).
    async fn change(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: &str,
        name: &str,
        spec: &str,
        dry_run: bool,
    ) -> Result<Change> {
        let old: Option<String> = sqlx::query(&format!("SELECT spec FROM {table} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let change = match old {
            None => Change::Created,
            Some(o) if o == spec => Change::Unchanged,
            Some(_) => Change::Configured,
        };
        if change != Change::Unchanged && !dry_run {
            self.statements.write(1);
        }
        Ok(change)
    }

    /// Creates or updates the documents of `set`, all or nothing. With
    /// `dry_run`, reports what would change and changes nothing.
    pub async fn apply(
        &self,
        set: &SpecSet,
        source: &str,
        now: Time,
        dry_run: bool,
    ) -> Result<Vec<Applied>> {
        self.statements.read(set.len() as u64);
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        for t in &set.templates {
            let name = t.value.metadata.name.to_string();
            let spec =
                serde_json::to_string(&t.value).map_err(|e| corrupt("template", &name, e))?;
            let change = self
                .change(&mut tx, "analysis_templates", &name, &spec, dry_run)
                .await?;
            if change != Change::Unchanged {
                sqlx::query(
                    "INSERT INTO analysis_templates (name, spec, source, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, source = excluded.source, updated_at = excluded.updated_at",
                )
                .bind(&name)
                .bind(&spec)
                .bind(source)
                .bind(now.millis())
                .execute(&mut *tx)
                .await?;
            }
            out.push(Applied {
                kind: "AnalysisTemplate",
                name,
                change,
            });
        }
        for r in &set.rollouts {
            let name = r.value.metadata.name.to_string();
            let spec = serde_json::to_string(&r.value).map_err(|e| corrupt("rollout", &name, e))?;
            let target = traffic_target(&r.value);
            // One rollout per traffic target, across every apply, the specs
            // directory and every replica: checked here for a clear answer,
            // and held by the unique index on `traffic_target` against
            // concurrent applies.
            let owner: Option<String> =
                sqlx::query("SELECT name FROM rollouts WHERE traffic_target = $1 AND name <> $2")
                    .bind(&target)
                    .bind(&name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
            if let Some(owner) = owner {
                tx.rollback().await?;
                return Err(StoreError::Owned {
                    rollout: name,
                    target: describe_target(&r.value),
                    owner,
                });
            }
            let change = self
                .change(&mut tx, "rollouts", &name, &spec, dry_run)
                .await?;
            let written = match change {
                Change::Created => {
                    sqlx::query(
                        "INSERT INTO rollouts (name, spec, source, generation, created_at, updated_at, uid, traffic_target) VALUES ($1, $2, $3, 1, $4, $4, $5, $6)",
                    )
                    .bind(&name)
                    .bind(&spec)
                    .bind(source)
                    .bind(now.millis())
                    .bind(new_uid())
                    .bind(&target)
                    .execute(&mut *tx)
                    .await
                }
                Change::Configured => {
                    sqlx::query(
                        "UPDATE rollouts SET spec = $2, source = $3, generation = generation + 1, updated_at = $4, traffic_target = $5 WHERE name = $1",
                    )
                    .bind(&name)
                    .bind(&spec)
                    .bind(source)
                    .bind(now.millis())
                    .bind(&target)
                    .execute(&mut *tx)
                    .await
                }
                // A rollout stored before ownership was recorded takes its
                // target now.
                Change::Unchanged => {
                    sqlx::query(
                        "UPDATE rollouts SET traffic_target = $2 WHERE name = $1 AND (traffic_target IS NULL OR traffic_target <> $2)",
                    )
                    .bind(&name)
                    .bind(&target)
                    .execute(&mut *tx)
                    .await
                }
            };
            if let Err(e) = written {
                if is_unique_violation(&e) {
                    // Another apply took the target between our check and
                    // our write.
                    return Err(StoreError::Owned {
                        rollout: name,
                        target: describe_target(&r.value),
                        owner: "another rollout applied at the same moment".into(),
                    });
                }
                return Err(e.into());
            }
            out.push(Applied {
                kind: "Rollout",
                name,
                change,
            });
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(out)
    }

    fn read_rollout(row: &AnyRow) -> Result<StoredRollout> {
        let uid: Option<String> = row.try_get("uid")?;
        let name: String = row.try_get("name")?;
        let spec: String = row.try_get("spec")?;
        let rollout: Rollout =
            serde_json::from_str(&spec).map_err(|e| corrupt("rollout", &name, e))?;
        let status: Option<String> = row.try_get("status")?;
        let status = status
            .map(|s| serde_json::from_str::<RolloutStatus>(&s))
            .transpose()
            .map_err(|e| corrupt("status", &name, e))?;
        Ok(StoredRollout {
            rollout,
            uid: uid.unwrap_or_default(),
            generation: row.try_get("generation")?,
            source: row.try_get("source")?,
            status,
            version: row.try_get::<Option<i64>, _>("version")?.unwrap_or(0),
            commands_queued: row.try_get::<i64, _>("queued")? != 0,
        })
    }

    const ROLLOUT_SELECT: &'static str =
        "SELECT r.name, r.spec, r.source, r.generation, r.uid, s.status, s.version,
           CAST(CASE WHEN EXISTS (SELECT 1 FROM commands c WHERE c.rollout = r.name) THEN 1 ELSE 0 END AS BIGINT) AS queued
         FROM rollouts r LEFT JOIN rollout_status s ON s.name = r.name";

    /// Every rollout, by name.
    pub async fn rollouts(&self) -> Result<Vec<StoredRollout>> {
        self.statements.read(1);
        let rows = sqlx::query(&format!("{} ORDER BY r.name", Self::ROLLOUT_SELECT))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::read_rollout).collect()
    }

    /// The names of every rollout (without reading their documents).
    pub async fn rollout_names(&self) -> Result<Vec<String>> {
        self.statements.read(1);
        let rows = sqlx::query("SELECT name FROM rollouts ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// One rollout.
    pub async fn rollout(&self, name: &str) -> Result<Option<StoredRollout>> {
        self.statements.read(1);
        let row = sqlx::query(&format!("{} WHERE r.name = $1", Self::ROLLOUT_SELECT))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::read_rollout).transpose()
    }

    /// Every AnalysisTemplate's spec, by name.
    pub async fn templates(&self) -> Result<BTreeMap<String, AnalysisTemplateSpec>> {
        self.statements.read(1);
        let rows = sqlx::query("SELECT name, spec FROM analysis_templates")
            .fetch_all(&self.pool)
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let spec: String = row.try_get(1)?;
            let t: AnalysisTemplate =
                serde_json::from_str(&spec).map_err(|e| corrupt("template", &name, e))?;
            out.insert(name, t.spec);
        }
        Ok(out)
    }

    /// `DELETE`, from the API or the specs directory: a rollout whose run
    /// holds canary traffic is not removed at once; a `Delete` command is
    /// queued, its reconcile returns all traffic to stable and then removes
    /// it. Otherwise (or with `orphan`, which leaves the weights as they
    /// are) it is removed now. The removal happens only if the status did
    /// not move since it was read here.
    pub async fn delete_or_hand_back(
        &self,
        name: &str,
        actor: &str,
        orphan: bool,
        now: Time,
    ) -> Result<Deleted> {
        for _ in 0..5 {
            let Some(stored) = self.rollout(name).await? else {
                return Ok(Deleted::NotFound);
            };
            let holds = stored
                .status
                .as_ref()
                .is_some_and(RolloutStatus::holds_canary_traffic);
            if holds && !orphan {
                let queued = stored.status.as_ref().is_some_and(|s| s.deleting.is_some());
                if !queued {
                    self.enqueue_command(name, CommandKind::Delete, actor, None, now)
                        .await?;
                }
                return Ok(Deleted::HandingBack);
            }
            if self
                .delete_rollout_at(name, &stored.uid, stored.version)
                .await?
            {
                return Ok(Deleted::Gone);
            }
            // The status moved (a reconcile wrote): look again.
        }
        Err(StoreError::Conflict(name.to_string()))
    }

    /// Removes the rollout identified by `uid` if its status version is
    /// still `version` (0: none written). Returns whether it did.
    pub async fn delete_rollout_at(&self, name: &str, uid: &str, version: i64) -> Result<bool> {
        self.statements.write(4);
        let mut tx = self.pool.begin().await?;
        let current: i64 = sqlx::query(
            "SELECT CAST(COALESCE((SELECT version FROM rollout_status WHERE name = $1), 0) AS BIGINT)
             WHERE EXISTS (SELECT 1 FROM rollouts WHERE name = $1 AND uid = $2)",
        )
        .bind(name)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(-1);
        if current != version {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::delete_rows(&mut tx, name).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stops managing a rollout at once, whatever its run holds: its
    /// document, status, queued commands and lease go; its events stay
    /// (under its identity, never shown for a rollout applied later under
    /// the same name). Returns whether it existed.
    pub async fn delete_rollout(&self, name: &str) -> Result<bool> {
        self.statements.write(4);
        let mut tx = self.pool.begin().await?;
        let gone = Self::delete_rows(&mut tx, name).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn delete_rows(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> Result<bool> {
        for table in ["rollout_status", "commands", "leases"] {
            let column = if table == "rollout_status" {
                "name"
            } else {
                "rollout"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM rollouts WHERE name = $1")
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(gone > 0)
    }

    /// Records a rollout's new status with its events, if and only if the
    /// stored version is still `write.expected` and `lease` is still held with
    /// its token (by the lease clock). With `applied_commands`, the queued
    /// commands up to the status's `last_command_id` are removed in the same
    /// transaction. Returns the new version; [`StoreError::Conflict`]
    /// otherwise, and then nothing was written.
    pub async fn write_status(
        &self,
        name: &str,
        write: StatusWrite<'_>,
        lease: &Lease,
        now: Time,
    ) -> Result<i64> {
        let json = serde_json::to_string(write.status).map_err(|e| corrupt("status", name, e))?;
        self.statements.write(
            1 + write.events.len().div_ceil(EVENTS_PER_STATEMENT) as u64
                + u64::from(write.applied_commands),
        );
        if self.backend == Backend::Postgres && write.events.len() <= EVENTS_PER_STATEMENT {
            return self
                .write_status_at_once(name, &json, write, lease, now)
                .await;
        }
        let StatusWrite {
            expected,
            status,
            events,
            applied_commands,
            uid,
        } = write;
        let mut tx = self.pool.begin().await?;
        let sql = status_statement(expected, &self.clock_sql("$2"), "");
        let written = sqlx::query(&sql)
            .bind(&json)
            .bind(now.millis())
            .bind(name)
            .bind(expected)
            .bind(&lease.holder)
            .bind(lease.token)
            .bind(uid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if written != 1 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(name.to_string()));
        }
        // The events in statements of at most EVENTS_PER_STATEMENT rows.
        for chunk in events.chunks(EVENTS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO events (rollout, rollout_uid, at, run, revision, kind, message, actor, weight_before, weight_after) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = 3 + i * 8;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, $2, {})", placeholders(b, 8)));
            }
            let mut q = sqlx::query(&sql).bind(name).bind(uid);
            for e in chunk {
                q = bind_event(q, e);
            }
            q.execute(&mut *tx).await?;
        }
        if applied_commands {
            let applied = i64::try_from(status.last_command_id).unwrap_or(i64::MAX);
            sqlx::query("DELETE FROM commands WHERE rollout = $1 AND id <= $2")
                .bind(name)
                .bind(applied)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(expected + 1)
    }

    /// [`Store::write_status`] on PostgreSQL: one statement (its own
    /// transaction), so a write costs one round trip instead of four
    /// (BEGIN, status, events, COMMIT). The status update is fenced and
    /// versioned as on SQLite; the events and the command removal happen
    /// only when it did. Used for up to [`EVENTS_PER_STATEMENT`] events.
    async fn write_status_at_once(
        &self,
        name: &str,
        json: &str,
        write: StatusWrite<'_>,
        lease: &Lease,
        now: Time,
    ) -> Result<i64> {
        let StatusWrite {
            expected,
            status,
            events,
            applied_commands,
            uid,
        } = write;
        let mut sql = format!(
            "WITH s AS ({})",
            status_statement(expected, &self.clock_sql("$2"), " RETURNING version")
        );
        // $8: the last applied command; events from $9 on, 8 parameters each.
        if applied_commands {
            sql.push_str(
                ", c AS (DELETE FROM commands WHERE rollout = $3 AND id <= $8 AND EXISTS (SELECT 1 FROM s))",
            );
        }
        if !events.is_empty() {
            sql.push_str(
                ", e AS (INSERT INTO events (rollout, rollout_uid, at, run, revision, kind, message, actor, weight_before, weight_after) SELECT $3, $7, v.at, v.run, v.revision, v.kind, v.message, v.actor, v.weight_before, v.weight_after FROM (VALUES ",
            );
            for i in 0..events.len() {
                let b = 9 + i * 8;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}::BIGINT, ${}::BIGINT, ${}::TEXT, ${}::TEXT, ${}::TEXT, ${}::TEXT, ${}::BIGINT, ${}::BIGINT, {i})",
                    b,
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                ));
            }
            sql.push_str(
                ") AS v(at, run, revision, kind, message, actor, weight_before, weight_after, ord) WHERE EXISTS (SELECT 1 FROM s) ORDER BY v.ord)",
            );
        }
        sql.push_str(" SELECT version FROM s");
        let mut q = sqlx::query(&sql)
            .bind(json)
            .bind(now.millis())
            .bind(name)
            .bind(expected)
            .bind(&lease.holder)
            .bind(lease.token)
            .bind(uid)
            .bind(i64::try_from(status.last_command_id).unwrap_or(i64::MAX));
        for e in events {
            q = bind_event(q, e);
        }
        match q.fetch_optional(&self.pool).await? {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::Conflict(name.to_string())),
        }
    }

    /// Queues a manual command; returns its id.
    pub async fn enqueue_command(
        &self,
        name: &str,
        kind: CommandKind,
        actor: &str,
        reason: Option<&str>,
        now: Time,
    ) -> Result<u64> {
        self.statements.write(1);
        let kind = serde_json::to_string(&kind).map_err(|e| corrupt("command", name, e))?;
        let row = sqlx::query(
            "INSERT INTO commands (rollout, kind, actor, reason, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(kind)
        .bind(actor)
        .bind(reason.map(str::to_string))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get(0)?;
        Ok(u64::try_from(id).unwrap_or(0))
    }

    /// The commands queued for a rollout, oldest first; at most as many as
    /// one decision applies (`rollout_core::decide::MAX_COMMANDS_PER_DECISION`),
    /// the rest are read by the next reconcile.
    pub async fn commands(&self, name: &str) -> Result<Vec<Command>> {
        self.statements.read(1);
        let rows = sqlx::query(
            "SELECT id, kind, actor, reason, at FROM commands WHERE rollout = $1 ORDER BY id LIMIT $2",
        )
        .bind(name)
        .bind(rollout_core::decide::MAX_COMMANDS_PER_DECISION as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                Ok(Command {
                    id: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                    kind: serde_json::from_str(&kind).map_err(|e| corrupt("command", name, e))?,
                    actor: r.try_get(2)?,
                    reason: r.try_get(3)?,
                    at: Time::from_millis(r.try_get(4)?),
                })
            })
            .collect()
    }

    /// A rollout's events, oldest first: those of the rollout that now has
    /// this name (a deleted rollout's events stay in the table under its
    /// own identity).
    pub async fn events(&self, name: &str) -> Result<Vec<Event>> {
        self.statements.read(1);
        let rows = sqlx::query(
            "SELECT at, run, revision, kind, message, actor, weight_before, weight_after
             FROM events WHERE rollout = $1
               AND rollout_uid = (SELECT uid FROM rollouts WHERE name = $1) ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(3)?;
                let to_u8 = |v: i64| u8::try_from(v).unwrap_or(u8::MAX);
                Ok(Event {
                    at: Time::from_millis(r.try_get(0)?),
                    run: u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                    revision: r.try_get(2)?,
                    kind: serde_json::from_value(serde_json::Value::String(kind))
                        .map_err(|e| corrupt("event", name, e))?,
                    message: r.try_get(4)?,
                    actor: r.try_get(5)?,
                    weight_before: to_u8(r.try_get(6)?),
                    weight_after: to_u8(r.try_get(7)?),
                })
            })
            .collect()
    }

    /// Takes (or keeps) the lease on `rollout` for `holder` for `ttl_ms`, if
    /// it is free, expired, or already `holder`'s. A new holder gets a
    /// larger token than any before it. Expiry is judged, and the new
    /// expiry computed, by the lease clock (the database's in production;
    /// `now` with [`LeaseClock::Caller`]).
    pub async fn acquire_lease(
        &self,
        rollout: &str,
        holder: &str,
        now: Time,
        ttl_ms: u64,
    ) -> Result<Option<Lease>> {
        self.statements.lease();
        let clock = self.clock_sql("$4");
        let row = sqlx::query(&format!(
            "INSERT INTO leases (rollout, holder, token, expires_at) VALUES ($1, $2, 1, {clock} + $3)
             ON CONFLICT (rollout) DO UPDATE SET
                 token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= {clock}
             RETURNING token, expires_at"
        ))
        .bind(rollout)
        .bind(holder)
        .bind(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Lease {
                rollout: rollout.to_string(),
                holder: holder.to_string(),
                token: r.try_get(0)?,
                expires_at: Time::from_millis(r.try_get(1)?),
            })
        })
        .transpose()
    }

    /// Whether `lease` is still held, with its token, for at least
    /// `margin_ms` more by the lease clock: asked right before every write
    /// to the load balancer, so a replica that was paused or partitioned
    /// past its lease writes nothing.
    pub async fn lease_valid(&self, lease: &Lease, now: Time, margin_ms: u64) -> Result<bool> {
        self.statements.read(1);
        let clock = self.clock_sql("$4");
        let row = sqlx::query(&format!(
            "SELECT 1 FROM leases WHERE rollout = $1 AND holder = $2 AND token = $3 AND expires_at > {clock} + $5"
        ))
        .bind(&lease.rollout)
        .bind(&lease.holder)
        .bind(lease.token)
        .bind(now.millis())
        .bind(i64::try_from(margin_ms).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Extends every unexpired lease of `holder` by `ttl_ms` from now (by the
    /// lease clock), in one statement; returns the rollouts it still holds.
    pub async fn renew_leases(&self, holder: &str, now: Time, ttl_ms: u64) -> Result<Vec<String>> {
        self.statements.lease();
        let clock = self.clock_sql("$3");
        let rows = sqlx::query(&format!(
            "UPDATE leases SET expires_at = {clock} + $1 WHERE holder = $2 AND expires_at > {clock} RETURNING rollout"
        ))
        .bind(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .bind(holder)
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// How many replicas hold unexpired leases now (by the lease clock).
    pub async fn live_holders(&self, now: Time) -> Result<usize> {
        self.statements.read(1);
        let clock = self.clock_sql("$1");
        let n: i64 = sqlx::query(&format!(
            "SELECT CAST(COUNT(DISTINCT holder) AS BIGINT) FROM leases WHERE expires_at > {clock}"
        ))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Hands back every lease of `holder` (at shutdown), so another replica
    /// takes over at once instead of after the lease time.
    pub async fn release_leases(&self, holder: &str) -> Result<u64> {
        self.statements.lease();
        Ok(
            sqlx::query("UPDATE leases SET expires_at = 0 WHERE holder = $1")
                .bind(holder)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
