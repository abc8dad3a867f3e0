//! The reconcile loop: every rollout is observed, decided and acted on at
//! least every `reconcile_interval`, at once after a change, by exactly one
//! replica at a time.
//!
//! One reconcile ([`Daemon::reconcile`]):
//! 1. hold the rollout's lease (kept in memory; the renewer extends all of
//!    this replica's leases in one statement every third of the lease time);
//! 2. read the rollout, its status and version, its templates and queued
//!    commands;
//! 3. observe what `rollout_core::plan` asks for (weights, health, intervals);
//! 4. decide (`rollout_core::decide`);
//! 5. if the status changed, write it with its events: the intent, fenced by
//!    the lease token and the version read in 2 — a lost lease or a moved
//!    version writes nothing and acts on nothing;
//! 6. only then act (weight writes), each right after checking that the
//!    lease is still good by the database's clock with a margin (a replica
//!    paused or partitioned past its lease writes nothing), and only if the
//!    load balancer still holds what the decision saw. A crash between 5
//!    and 6 is repaired by the next reconcile, which sees the desired
//!    weights are not applied.
//!
//! A rollout being deleted is removed by its own reconcile once its traffic
//! is back on stable. Each process holds leases under a name of its own
//! (`--replica` plus a random suffix), so two processes started with the
//! same `--replica` never share a lease.
//!
//! A reconcile that changes nothing writes nothing. Rollouts run as one task
//! each (a slow one never delays another), at most `concurrency` at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rollout_core::ports::{MetricQuery, MetricSource, TrafficRouter};
use rollout_core::{
    decide, plan_reads, Action, Context, Observations, Observed, Reads, Time, WindowResult,
};
use rollout_store::{Lease, StatusWrite, Store, StoreError};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::specs;

/// The wall clock, as the core's `Time`.
pub fn now() -> Time {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Time::from_millis(ms)
}

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReconcileError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Store(e) => e.kind(),
        }
    }
}

/// What a reconcile came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; look again within this long. `true` when a status was written.
    Requeue(StdDuration, bool),
    /// Another replica holds the lease.
    NotMine,
    /// The rollout no longer exists.
    Gone,
}

/// Called after every reconcile: the rollout, how long it took, and whether
/// it wrote a status.
pub type Observer = Box<dyn Fn(&str, StdDuration, bool) + Send + Sync>;

/// The daemon's shared state.
pub struct Daemon<R, M> {
    store: Store,
    router: R,
    metrics: M,
    config: Config,
    /// This process's name in leases: `--replica` and a random suffix.
    holder: String,
    /// Leases held, each with the local instant until which it is used
    /// without asking the database again (a third of the lease time before
    /// it runs out, by this process's monotonic clock).
    leases: Mutex<HashMap<String, (Lease, tokio::time::Instant)>>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    /// When each rollout's forward weights were last read (the drift check's
    /// cadence; forgotten on restart, which only means an early check).
    last_read: Mutex<HashMap<String, Time>>,
    permits: Semaphore,
    observer: Option<Observer>,
    counters: Arc<Metrics>,
    /// What the last sync of the specs directory found.
    specs: Arc<tokio::sync::Mutex<specs::DirState>>,
    /// Set when an apply changed a template: re-read before the next use.
    templates_stale: std::sync::atomic::AtomicBool,
    /// The AnalysisTemplates, re-read once per interval (and after an apply)
    /// rather than by every reconcile.
    templates: tokio::sync::RwLock<Option<Arc<Templates>>>,
}

type Templates = std::collections::BTreeMap<String, rollout_spec::AnalysisTemplateSpec>;

impl<R: TrafficRouter, M: MetricSource> Daemon<R, M> {
    /// A daemon over `store`, acting through `router` and `metrics`.
    pub fn new(
        store: Store,
        router: R,
        metrics: M,
        config: Config,
        counters: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_observer(store, router, metrics, config, counters, None)
    }

    /// The same, calling `observer` after every reconcile.
    pub fn with_observer(
        store: Store,
        router: R,
        metrics: M,
        config: Config,
        counters: Arc<Metrics>,
        observer: Option<Observer>,
    ) -> Arc<Self> {
        let permits = Semaphore::new(config.concurrency);
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{}~{}", config.replica, &suffix[..12]);
        info!(replica = %config.replica, holder = %holder, "lease holder name of this process");
        Arc::new(Daemon {
            store,
            router,
            metrics,
            holder,
            config,
            leases: Mutex::new(HashMap::new()),
            wake: Mutex::new(HashMap::new()),
            last_read: Mutex::new(HashMap::new()),
            permits,
            observer,
            counters,
            templates: tokio::sync::RwLock::new(None),
            specs: Arc::new(tokio::sync::Mutex::new(specs::DirState::default())),
            templates_stale: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn ttl_ms(&self) -> u64 {
        self.config.lease_ttl.as_millis()
    }

    fn interval(&self) -> StdDuration {
        self.config.reconcile_interval.to_std()
    }

    /// The regular requeue: nine tenths of the interval, so that with
    /// scheduling delay every rollout is still examined within the interval.
    fn regular(&self) -> StdDuration {
        self.interval().mul_f64(0.9)
    }

    /// The templates, from the cache unless it is stale or lacks one that
    /// `needed` names (applied a moment ago, here or on another replica).
    async fn templates(&self, needed: &[&str]) -> Result<Arc<Templates>, StoreError> {
        let stale = self
            .templates_stale
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if !stale {
            if let Some(t) = self.templates.read().await.as_ref() {
                if needed.iter().all(|n| t.contains_key(*n)) {
                    return Ok(Arc::clone(t));
                }
            }
        }
        self.refresh_templates().await
    }

    async fn refresh_templates(&self) -> Result<Arc<Templates>, StoreError> {
        let fresh = Arc::new(self.store.templates().await?);
        *self.templates.write().await = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// This process's name in leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long before a lease runs out it is no longer used without asking
    /// the database, and no load-balancer write is made on it.
    fn margin_ms(&self) -> u64 {
        self.ttl_ms() / 3
    }

    /// The local instant until which a lease taken or renewed at `asked`
    /// is used without asking again.
    fn good_until(&self, asked: tokio::time::Instant) -> tokio::time::Instant {
        asked + StdDuration::from_millis(self.ttl_ms().saturating_sub(self.margin_ms()))
    }

    /// The lease on `name`, from memory or freshly taken.
    async fn lease(&self, name: &str, now: Time) -> Result<Option<Lease>, StoreError> {
        if let Some(l) = self.held(name) {
            return Ok(Some(l));
        }
        let asked = tokio::time::Instant::now();
        let taken = self
            .store
            .acquire_lease(name, &self.holder, now, self.ttl_ms())
            .await?;
        if let Ok(mut leases) = self.leases.lock() {
            match &taken {
                Some(l) => {
                    if leases.get(name).is_none_or(|(old, _)| old.token != l.token) {
                        info!(rollout = name, token = l.token, holder = %self.holder, "took the lease");
                    }
                    leases.insert(name.to_string(), (l.clone(), self.good_until(asked)));
                }
                None => {
                    leases.remove(name);
                }
            }
            self.counters.leases_held.set(leases.len() as i64);
        }
        Ok(taken)
    }

    fn held(&self, name: &str) -> Option<Lease> {
        let now = tokio::time::Instant::now();
        self.leases.lock().ok().and_then(|l| {
            l.get(name)
                .filter(|(_, until)| *until > now)
                .map(|(l, _)| l.clone())
        })
    }

    fn forget_lease(&self, name: &str) {
        debug!(rollout = name, "lease forgotten");
        if let Ok(mut l) = self.leases.lock() {
            l.remove(name);
            self.counters.leases_held.set(l.len() as i64);
        }
    }

    /// One reconcile of one rollout.
    pub async fn reconcile(&self, name: &str) -> Result<Outcome, ReconcileError> {
        let mut outside = StdDuration::ZERO;
        self.reconcile_inner(name, None, &mut outside, None).await
    }

    /// One reconcile, holding a concurrency slot when `permit` is given; the
    /// slot is handed back while the metric source answers (a reconcile
    /// waiting for CloudWatch holds no database connection, and the metric
    /// source gathers the reads of many rollouts into one call, which only
    /// works when they can all ask). `outside` gets the time spent waiting
    /// for the world (the load balancer and metric reads, and the slot
    /// handed back meanwhile): the reconcile-time histogram measures
    /// rolloutd's own work.
    async fn reconcile_inner(
        &self,
        name: &str,
        mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
        outside: &mut StdDuration,
        wake: Option<&Notify>,
    ) -> Result<Outcome, ReconcileError> {
        let now = now();
        let Some(lease) = self.lease(name, now).await? else {
            return Ok(Outcome::NotMine);
        };
        let Some(stored) = self.store.rollout(name).await? else {
            return Ok(Outcome::Gone);
        };
        let spec = &stored.rollout.spec;
        let templates = self.templates(&spec.template_names()).await?;
        // One statement fewer for the many reconciles with nothing queued.
        let commands = if stored.commands_queued {
            self.store.commands(name).await?
        } else {
            Vec::new()
        };
        let ctx = Context {
            rollout: &stored.rollout,
            templates: &templates,
        };
        let reads = Reads {
            last_traffic: self
                .last_read
                .lock()
                .ok()
                .and_then(|m| m.get(name).copied()),
            drift_check_ms: self.config.drift_check_interval.as_millis(),
            commands_queued: !commands.is_empty(),
        };
        let wanted = plan_reads(ctx, stored.status.as_ref(), now, reads);
        let queries: Vec<MetricQuery<'_>> = wanted
            .windows
            .iter()
            .filter_map(|w| {
                templates.get(&w.template).map(|t| MetricQuery {
                    spec,
                    template: t,
                    window: w,
                })
            })
            .collect();
        // The three reads go out together, and the reconcile slot is handed
        // back while they are in flight: a reconcile waiting for AWS (a slow
        // or retried call) holds no slot, so it never delays the others, and
        // the metric source can gather the reads of every rollout that asks
        // at the same time into one call, which only works if they all can
        // ask.
        let observing = tokio::time::Instant::now();
        let reads_the_world = wanted.traffic || wanted.canary_health || !queries.is_empty();
        let held = if reads_the_world { permit.take() } else { None };
        let slot_given_back = held.is_some();
        drop(held);
        let reading = async {
            tokio::join!(
                async {
                    if wanted.traffic {
                        self.router.forward_weights(spec, wanted.urgency).await
                    } else {
                        Observed::Missing
                    }
                },
                async {
                    if wanted.canary_health {
                        self.router.canary_health(spec).await
                    } else {
                        Observed::Missing
                    }
                },
                async {
                    if queries.is_empty() {
                        Vec::new()
                    } else {
                        self.metrics.windows(&queries).await
                    }
                },
            )
        };
        // A command (an abort) or an apply arriving while the reads wait for
        // the AWS budget starts the reconcile over at once, with what it
        // asks: it never waits behind this rollout's routine reads.
        let (traffic, canary_health, results) = match wake {
            Some(wake) => tokio::select! {
                r = reading => r,
                _ = wake.notified() => {
                    *outside += observing.elapsed();
                    return Ok(Outcome::Requeue(StdDuration::ZERO, false));
                }
            },
            None => reading.await,
        };
        if slot_given_back {
            self.counters.queue_depth.inc();
            let again = self.permits.acquire().await;
            self.counters.queue_depth.dec();
            // Closed only while stopping: finish this reconcile without a slot.
            if let Ok(p) = again {
                permit.replace(p);
            }
        }
        *outside += observing.elapsed();
        if matches!(traffic, Observed::Ok(_)) {
            if let Ok(mut m) = self.last_read.lock() {
                m.insert(name.to_string(), now);
            }
        }
        let windows = queries
            .iter()
            .zip(results)
            .map(|(q, metrics)| WindowResult {
                template: q.window.template.clone(),
                end: q.window.end,
                metrics,
            })
            .collect();
        let obs = Observations {
            traffic,
            canary_health,
            windows,
        };
        // Decide at the time we observed.
        let decision = decide(ctx, stored.status.as_ref(), &obs, &commands, now);
        let mut version = stored.version;
        if decision.changed {
            let written = self
                .store
                .write_status(
                    name,
                    StatusWrite {
                        expected: stored.version,
                        status: &decision.status,
                        events: &decision.events,
                        applied_commands: decision.status.last_command_id
                            > stored.status.as_ref().map_or(0, |s| s.last_command_id),
                        uid: &stored.uid,
                    },
                    &lease,
                    now,
                )
                .await;
            match written {
                Ok(v) => version = v,
                Err(StoreError::Conflict(_)) => {
                    // Someone else wrote, or our lease is gone: act on nothing,
                    // read again.
                    self.forget_lease(name);
                    warn!(rollout = name, "status moved or lease lost; not acting");
                    return Ok(Outcome::Requeue(StdDuration::from_millis(200), false));
                }
                Err(e) => return Err(e.into()),
            }
            self.count_verdicts(name, stored.status.as_ref(), &decision.status);
            for e in &decision.events {
                if e.kind == rollout_core::EventKind::WeightDrift {
                    self.counters.drift.with_label_values(&[name]).inc();
                }
                info!(rollout = name, run = e.run, kind = ?e.kind, actor = e.actor.as_deref(), "{}", e.message);
            }
        }
        if decision.forget {
            // Deleted, and its traffic is back on stable (or it held none):
            // removed now, unless its status moved meanwhile.
            if self
                .store
                .delete_rollout_at(name, &stored.uid, version)
                .await?
            {
                self.forget_lease(name);
                info!(
                    rollout = name,
                    "deleted: stable carries all traffic; no longer managed"
                );
                return Ok(Outcome::Gone);
            }
            return Ok(Outcome::Requeue(StdDuration::from_millis(200), true));
        }
        for action in &decision.actions {
            match action {
                Action::SetWeights { weights, seen } => {
                    // Fenced: only while the lease is good, by the
                    // database's clock, for longer than the margin.
                    if !self
                        .store
                        .lease_valid(&lease, now, self.margin_ms())
                        .await?
                    {
                        self.counters.fenced_writes.with_label_values(&[name]).inc();
                        self.forget_lease(name);
                        warn!(
                            rollout = name,
                            token = lease.token,
                            "lease no longer good by the database's clock; weights not written"
                        );
                        return Ok(Outcome::Requeue(StdDuration::from_millis(200), false));
                    }
                    match self.router.set_weights(spec, *weights, *seen).await {
                        Err(e) => {
                            warn!(rollout = name, token = lease.token, stable = weights.stable, canary = weights.canary, fatal = e.fatal, error = %e.message, "weight write not made or not confirmed; the next reconcile looks again")
                        }
                        Ok(()) => info!(
                            rollout = name,
                            token = lease.token,
                            holder = %self.holder,
                            stable = weights.stable,
                            canary = weights.canary,
                            "weights written"
                        ),
                    }
                }
            }
        }
        let wait = decision
            .requeue_after_ms
            .map_or(self.regular(), StdDuration::from_millis)
            .min(self.regular());
        Ok(Outcome::Requeue(wait, decision.changed))
    }

    /// Counts the verdicts of intervals judged by this reconcile. (After an
    /// outage a reconcile may judge several intervals; only the last one's
    /// per-metric verdicts are kept in the status, so those are counted.)
    fn count_verdicts(
        &self,
        name: &str,
        before: Option<&rollout_core::RolloutStatus>,
        after: &rollout_core::RolloutStatus,
    ) {
        for (template, state) in &after.analysis.templates {
            let Some(last) = &state.last else { continue };
            let seen = before
                .and_then(|b| b.analysis.templates.get(template))
                .and_then(|t| t.last.as_ref())
                .is_some_and(|l| l.end == last.end);
            if !seen {
                for m in &last.result.metrics {
                    self.counters
                        .verdicts
                        .with_label_values(&[name, &m.metric, m.verdict.as_str()])
                        .inc();
                }
            }
        }
    }

    /// Marks the cached templates stale (after an apply changed one).
    pub fn templates_changed(&self) {
        self.templates_stale
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the last sync of the specs directory found (shared with the API).
    pub fn specs_state(&self) -> Arc<tokio::sync::Mutex<specs::DirState>> {
        Arc::clone(&self.specs)
    }

    /// Wakes a rollout's task now (after an apply or a command).
    pub fn poke(&self, name: &str) {
        if let Some(n) = self.wake.lock().ok().and_then(|w| w.get(name).cloned()) {
            n.notify_one();
        }
    }

    async fn rollout_task(
        self: Arc<Self>,
        name: String,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut due = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            self.counters.queue_depth.inc();
            let permit = self.permits.acquire().await;
            self.counters.queue_depth.dec();
            let Ok(permit) = permit else {
                break;
            };
            let started = tokio::time::Instant::now();
            let mut outside = StdDuration::ZERO;
            let outcome = self
                .reconcile_inner(&name, Some(permit), &mut outside, Some(&wake))
                .instrument(tracing::info_span!("reconcile", rollout = %name))
                .await;
            // rolloutd's own time: without the waits for AWS (or the
            // simulation standing in for it).
            let elapsed = started.elapsed().saturating_sub(outside);
            self.counters
                .reconcile_seconds
                .observe(elapsed.as_secs_f64());
            debug!(rollout = %name, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "reconciled");
            // The next reconcile is due counted from this one's start, so a
            // rollout is examined at least every interval, however long the
            // reconcile took.
            let next = match outcome {
                Ok(Outcome::Requeue(d, wrote)) => {
                    failures = 0;
                    if let Some(observe) = &self.observer {
                        observe(&name, elapsed, wrote);
                    }
                    d
                }
                Ok(Outcome::NotMine) => {
                    failures = 0;
                    StdDuration::from_millis(self.ttl_ms() / 3).min(self.regular())
                }
                Ok(Outcome::Gone) => break,
                Err(e) => {
                    self.counters
                        .reconcile_errors
                        .with_label_values(&[&name, e.kind()])
                        .inc();
                    failures = failures.saturating_add(1);
                    let backoff =
                        StdDuration::from_millis(200u64 << failures.min(6)).min(self.interval());
                    warn!(rollout = %name, kind = e.kind(), error = %e, retry_in_ms = backoff.as_millis() as u64, "reconcile failed");
                    backoff
                }
            };
            due = started + next;
        }
        if let Ok(mut w) = self.wake.lock() {
            w.remove(&name);
        }
        // A rollout that is gone keeps no read time (a name applied again
        // is a new rollout, read at once).
        if let Ok(mut m) = self.last_read.lock() {
            m.remove(&name);
        }
    }

    /// Runs until `shutdown` resolves: applies the specs directory, keeps one
    /// task per rollout, renews leases; then lets in-flight reconciles finish
    /// and hands the leases back.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let renewer = {
            let d = Arc::clone(&self);
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let every = StdDuration::from_millis(d.ttl_ms() / 3);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => break,
                    }
                    let asked = tokio::time::Instant::now();
                    // The AWS budget is the fleet's: each replica takes its
                    // share, by the replicas holding leases now.
                    if let Ok(n) = d.store.live_holders(now()).await {
                        d.counters.set_budget_share(n.max(1));
                    }
                    match d.store.renew_leases(&d.holder, now(), d.ttl_ms()).await {
                        Ok(held) => {
                            // A set, built before taking the lock every
                            // reconcile needs: with 10,000 leases, a list
                            // lookup per lease held that lock for ~50M string
                            // comparisons every renewal.
                            let held: std::collections::HashSet<String> =
                                held.into_iter().collect();
                            let until = d.good_until(asked);
                            if let Ok(mut leases) = d.leases.lock() {
                                leases.retain(|k, _| held.contains(k));
                                d.counters.leases_held.set(leases.len() as i64);
                                for (_, good) in leases.values_mut() {
                                    *good = until;
                                }
                            }
                        }
                        Err(e) => warn!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };

        tokio::pin!(shutdown);
        // Changes under the specs directory are applied at once (after
        // 300 ms without another change, 2 s at most), besides the full
        // re-read every interval.
        let (fs_tx, mut fs_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let _watcher = match &self.config.specs_dir {
            Some(dir) => match specs::watch(dir, fs_tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot watch the specs directory; it is re-read every interval");
                    None
                }
            },
            None => None,
        };
        loop {
            if let Err(e) = self.refresh_templates().await {
                warn!(error = %e, "reading the analysis templates failed");
            }
            if let Some(dir) = &self.config.specs_dir {
                let removal = specs::Removal {
                    scans: self.config.specs_removal_scans,
                    grace_ms: self.config.specs_removal_grace.as_millis(),
                };
                let synced = {
                    let mut state = self.specs.lock().await;
                    specs::sync(&self.store, dir, &mut state, removal, now()).await
                };
                match synced {
                    Ok(synced) => {
                        if synced.failed.is_some() {
                            self.counters.specs_scan_failures.inc();
                            self.counters.specs_scan_ok.set(0);
                        } else {
                            self.counters.specs_scan_ok.set(1);
                        }
                        if !synced.changed.is_empty() {
                            let _ = self.refresh_templates().await;
                        }
                        for name in synced.changed {
                            self.poke(&name);
                        }
                    }
                    Err(e) => {
                        self.counters.specs_scan_failures.inc();
                        self.counters.specs_scan_ok.set(0);
                        warn!(error = %e, "applying the specs directory failed");
                    }
                }
            }
            match self.store.rollout_names().await {
                Ok(names) => {
                    let mut wake = self
                        .wake
                        .lock()
                        .map_err(|_| anyhow::anyhow!("wake map poisoned"))?;
                    for name in names {
                        if !wake.contains_key(&name) {
                            let n = Arc::new(Notify::new());
                            wake.insert(name.clone(), Arc::clone(&n));
                            tasks.spawn(Arc::clone(&self).rollout_task(name, n, stop_rx.clone()));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "listing rollouts failed"),
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(self.interval()) => {}
                Some(()) = fs_rx.recv() => {
                    let settle = tokio::time::Instant::now() + StdDuration::from_secs(2);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(StdDuration::from_millis(300)) => break,
                            _ = tokio::time::sleep_until(settle) => break,
                            more = fs_rx.recv() => if more.is_none() { break },
                        }
                    }
                    debug!("the specs directory changed");
                }
                _ = &mut shutdown => break,
            }
        }
        info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        renewer.abort();
        match self.store.release_leases(&self.holder).await {
            Ok(n) => info!(released = n, "leases handed back"),
            Err(e) => warn!(error = %e, "could not hand leases back; they expire by themselves"),
        }
        Ok(())
    }
}
