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

use rollout_core::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rollout_core::ports::{FaultInjector, MetricSource, TrafficRouter};
use rollout_core::Time;
use rollout_store::{Lease, Store, StoreError};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::specs;

mod notifications;
mod reconcile;
mod targets;

/// How long a reconcile waits for AWS before the wait is shown (a call
/// that waits this long is queued behind the API budget, or AWS is slow).
pub const WAIT_NOTED_AFTER: StdDuration = StdDuration::from_secs(2);

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
pub enum Reconciled {
    /// Done; look again within `after`.
    Requeue {
        /// When to look again, at the latest.
        after: StdDuration,
        /// Whether a status was written.
        wrote: bool,
    },
    /// Another replica holds the lease.
    NotMine,
    /// The rollout no longer exists.
    Gone,
}

/// The daemon's clock: the wall clock, or one that follows tokio's clock
/// from a given instant (under `tokio::time::pause` it stands still until
/// the runtime advances it, so a test of pauses, leases or outages runs in
/// milliseconds).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The wall clock.
    System,
    /// `epoch` when tokio's clock read `start`, running with tokio's clock.
    Tokio {
        /// The time at `start`.
        epoch: Time,
        /// Tokio's instant at `epoch`.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock at `epoch` now, running with tokio's clock.
    pub fn following_tokio(epoch: Time) -> Clock {
        Clock::Tokio {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }

    /// The time now.
    pub fn now(&self) -> Time {
        match self {
            Clock::System => now(),
            Clock::Tokio { epoch, start } => {
                epoch.plus_ms(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// Called after every reconcile: the rollout, how long it took, and whether
/// it wrote a status.
pub type Observer = Box<dyn Fn(&str, StdDuration, bool) + Send + Sync>;

/// The daemon's shared state.
pub struct Daemon<R, M> {
    store: Store,
    router: R,
    /// The metric source (CloudWatch, or a simulation).
    source: M,
    config: Config,
    clock: Clock,
    /// This process's name in leases: `--replica` and a random suffix.
    holder: String,
    /// Leases held, each with the local instant until which it is used
    /// without asking the database again (a third of the lease time before
    /// it runs out, by this process's monotonic clock).
    leases: Mutex<HashMap<String, (Lease, tokio::time::Instant)>>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    /// Poked for a rollout that has no task yet (applied through the
    /// API): the main loop starts its task at once, not at its next turn.
    unstarted: Notify,
    /// When each rollout's forward weights were last read (the drift check's
    /// cadence; forgotten on restart, which only means an early check).
    last_read: Mutex<HashMap<String, Time>>,
    /// When each rollout's alarms were last read.
    last_alarms: Mutex<HashMap<String, Time>>,
    /// The client of webhook steps.
    hooks: crate::hooks::Hooks,
    /// Notification delivery.
    notifications: Arc<crate::notify::Delivery>,
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

impl<R: TrafficRouter + FaultInjector, M: MetricSource> Daemon<R, M> {
    /// A daemon over `store`, acting through `router` and reading
    /// `source`, on the wall clock.
    pub fn new(
        store: Store,
        router: R,
        source: M,
        config: Config,
        counters: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_observer(store, router, source, config, counters, None, Clock::System)
    }

    /// The same, calling `observer` after every reconcile, on `clock`.
    pub fn with_observer(
        store: Store,
        router: R,
        source: M,
        config: Config,
        counters: Arc<Metrics>,
        observer: Option<Observer>,
        clock: Clock,
    ) -> Arc<Self> {
        let permits = Semaphore::new(config.concurrency);
        // One HTTP client (its root certificates read once) for webhooks
        // and notifications.
        let hooks = crate::hooks::Hooks::new();
        let notifications = crate::notify::Delivery::new(
            config.notifiers.clone(),
            config.public_url.clone(),
            hooks.clone(),
        );
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{}~{}", config.replica, &suffix[..12]);
        info!(replica = %config.replica, holder = %holder, "lease holder name of this process");
        Arc::new(Daemon {
            store,
            router,
            source,
            holder,
            config,
            clock,
            leases: Mutex::new(HashMap::new()),
            wake: Mutex::new(HashMap::new()),
            unstarted: Notify::new(),
            last_read: Mutex::new(HashMap::new()),
            last_alarms: Mutex::new(HashMap::new()),
            hooks,
            notifications,
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
        {
            let mut leases = lock(&self.leases);
            match &taken {
                Some(l) => {
                    if leases.get(name).is_none_or(|(old, _)| old.token != l.token) {
                        info!(rollout = name, token = l.token, holder = %self.holder, "took the lease");
                        // Deliveries a previous holder left undone.
                        self.notifications.wake(name);
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
        lock(&self.leases)
            .get(name)
            .filter(|(_, until)| *until > now)
            .map(|(l, _)| l.clone())
    }

    fn forget_lease(&self, name: &str) {
        debug!(rollout = name, "lease forgotten");
        {
            let mut l = lock(&self.leases);
            l.remove(name);
            self.counters.leases_held.set(l.len() as i64);
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

    /// Wakes a rollout's task now (after an apply or a command); a
    /// rollout with no task yet has one started now.
    pub fn poke(&self, name: &str) {
        match lock(&self.wake).get(name).cloned() {
            Some(n) => n.notify_one(),
            None => self.unstarted.notify_one(),
        }
    }

    /// How long a rollout waits before its next reconcile after one that
    /// failed (`failures` in a row): 200 ms, doubling, at most the
    /// reconcile interval. The failure is counted and logged.
    fn error_policy(&self, name: &str, e: &ReconcileError, failures: u32) -> StdDuration {
        self.counters
            .reconcile_errors
            .with_label_values(&[name, e.kind()])
            .inc();
        let backoff = StdDuration::from_millis(200u64 << failures.min(6)).min(self.interval());
        warn!(rollout = %name, kind = e.kind(), error = %e, retry_in_ms = backoff.as_millis() as u64, "reconcile failed");
        backoff
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
                Ok(Reconciled::Requeue { after, wrote }) => {
                    failures = 0;
                    if let Some(observe) = &self.observer {
                        observe(&name, elapsed, wrote);
                    }
                    after
                }
                Ok(Reconciled::NotMine) => {
                    failures = 0;
                    StdDuration::from_millis(self.ttl_ms() / 3).min(self.regular())
                }
                Ok(Reconciled::Gone) => break,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.error_policy(&name, &e, failures)
                }
            };
            due = started + next;
        }
        {
            let mut w = lock(&self.wake);
            w.remove(&name);
        }
        // A rollout that is gone leaves no series behind.
        self.counters.forget_rollout(&name);
        // A rollout that is gone keeps no read time (a name applied again
        // is a new rollout, read at once).
        {
            let mut m = lock(&self.last_read);
            m.remove(&name);
        }
        {
            let mut m = lock(&self.last_alarms);
            m.remove(&name);
        }
    }

    /// Renews this replica's leases every third of the lease time (and
    /// takes its share of the fleet's AWS budget by the live replicas).
    fn spawn_renewer(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let d = self;
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
                if let Ok(n) = d.store.live_holders(d.clock.now()).await {
                    d.counters.set_budget_share(n.max(1));
                }
                match d
                    .store
                    .renew_leases(&d.holder, d.clock.now(), d.ttl_ms())
                    .await
                {
                    Ok(held) => {
                        // A set, built before taking the lock every
                        // reconcile needs: with 10,000 leases, a list
                        // lookup per lease held that lock for ~50M string
                        // comparisons every renewal.
                        let held: std::collections::HashSet<String> = held.into_iter().collect();
                        let until = d.good_until(asked);
                        {
                            let mut leases = lock(&d.leases);
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
    }

    /// Applies the specs directory once (when there is one) and wakes the
    /// rollouts it changed.
    async fn sync_specs_dir(&self) {
        let Some(dir) = &self.config.specs_dir else {
            return;
        };
        let removal = specs::Removal {
            scans: self.config.specs_removal_scans,
            grace_ms: self.config.specs_removal_grace.as_millis(),
        };
        let synced = {
            let mut state = self.specs.lock().await;
            specs::sync(&self.store, dir, &mut state, removal, self.clock.now()).await
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
                for name in synced.changed.iter().chain(&synced.removed) {
                    self.poke(name);
                }
            }
            Err(e) => {
                self.counters.specs_scan_failures.inc();
                self.counters.specs_scan_ok.set(0);
                warn!(error = %e, "applying the specs directory failed");
            }
        }
    }

    /// Starts a task for every stored rollout that has none.
    async fn start_tasks(
        self: Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        stop_rx: &watch::Receiver<bool>,
    ) {
        match self.store.rollout_names().await {
            Ok(names) => {
                let mut wake = lock(&self.wake);
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
    }

    /// Runs until `shutdown` resolves: applies the specs directory, keeps one
    /// task per rollout, renews leases; then lets in-flight reconciles finish
    /// and hands the leases back. Nothing stops it but `shutdown`: a failing
    /// database or world is retried (and logged) for as long as it fails.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let renewer = Arc::clone(&self).spawn_renewer(stop_rx.clone());
        let notifier = Arc::clone(&self).spawn_notifications(stop_rx.clone());

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
            self.sync_specs_dir().await;
            Arc::clone(&self).start_tasks(&mut tasks, &stop_rx).await;
            while tasks.try_join_next().is_some() {}
            let next_turn = tokio::time::Instant::now() + self.interval();
            let stopping = loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_turn) => break false,
                    Some(()) = fs_rx.recv() => {
                        settle(&mut fs_rx).await;
                        debug!("the specs directory changed");
                        break false;
                    }
                    // Applied through the API: its task starts now; the
                    // turn keeps its time.
                    () = self.unstarted.notified() => {
                        Arc::clone(&self).start_tasks(&mut tasks, &stop_rx).await;
                    }
                    _ = &mut shutdown => break true,
                }
            };
            if stopping {
                break;
            }
        }
        info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        renewer.abort();
        notifier.abort();
        match self.store.release_leases(&self.holder).await {
            Ok(n) => info!(released = n, "leases handed back"),
            Err(e) => warn!(error = %e, "could not hand leases back; they expire by themselves"),
        }
    }
}

/// After a change under the specs directory: waits until 300 ms pass
/// without another, 2 s at most, so a checkout that writes many files is
/// applied once.
async fn settle(fs_rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    let until = tokio::time::Instant::now() + StdDuration::from_secs(2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_millis(300)) => return,
            _ = tokio::time::sleep_until(until) => return,
            more = fs_rx.recv() => if more.is_none() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under paused time the daemon's clock stands still until the runtime
    /// advances it, and then moves by exactly as much.
    #[tokio::test(start_paused = true)]
    async fn a_clock_following_tokio_stops_with_it() {
        let clock = Clock::following_tokio(Time::from_millis(1_000));
        assert_eq!(clock.now(), Time::from_millis(1_000));
        tokio::time::advance(StdDuration::from_secs(90)).await;
        assert_eq!(clock.now(), Time::from_millis(91_000));
        tokio::time::sleep(StdDuration::from_secs(3_600)).await;
        assert_eq!(clock.now(), Time::from_millis(3_691_000));
    }
}
