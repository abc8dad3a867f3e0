//! One reconcile of one rollout: read, observe, decide, record, act (steps
//! 2 to 6 of the module's list).

use rollout_core::sync::lock;
use std::time::Duration as StdDuration;

use rollout_core::observe::TargetObservations;
use rollout_core::ports::{FaultInjector, MetricSource, TrafficRouter};
use rollout_core::{
    decide, plan_reads, with_roles, Action, Context, Decision, ForwardWeights, ObservationPlan,
    Observations, Observed, Reads, TargetHealth, Time, WebhookOutcome,
};
use rollout_spec::RolloutSpec;
use rollout_store::{Lease, StatusWrite, StoreError, StoredRollout};
use tokio::sync::{Notify, SemaphorePermit};
use tracing::{info, warn};

use super::{Daemon, ReconcileError, Reconciled, WAIT_NOTED_AFTER};

/// The main target's listener (alarms and experiments are read in its
/// region and account).
fn main_listener(targets: &[RolloutSpec]) -> &str {
    targets
        .first()
        .map_or("", |t| t.traffic_routing.alb.listener_arn.as_str())
}

/// How soon a reconcile that found its status moved, or its lease gone,
/// looks again.
const LOOK_AGAIN: StdDuration = StdDuration::from_millis(200);

impl<R: TrafficRouter + FaultInjector, M: MetricSource> Daemon<R, M> {
    /// Awaits `f`, noting the rollout as waiting for AWS (`what`) once it
    /// has taken [`WAIT_NOTED_AFTER`]: the API's status message and
    /// `rolloutd_rollouts_waiting_for_aws` show it until it is done.
    async fn noting_wait<F: std::future::Future>(
        &self,
        name: &str,
        what: &'static str,
        f: F,
    ) -> F::Output {
        let since = std::time::Instant::now();
        tokio::pin!(f);
        tokio::select! {
            biased;
            r = &mut f => return r,
            _ = tokio::time::sleep(WAIT_NOTED_AFTER) => {}
        }
        let _note = self.counters.note_wait(name, since, what);
        f.await
    }

    /// One reconcile of one rollout.
    pub async fn reconcile(&self, name: &str) -> Result<Reconciled, ReconcileError> {
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
    pub(super) async fn reconcile_inner(
        &self,
        name: &str,
        mut permit: Option<SemaphorePermit<'_>>,
        outside: &mut StdDuration,
        wake: Option<&Notify>,
    ) -> Result<Reconciled, ReconcileError> {
        let now = self.clock.now();
        let Some(lease) = self.lease(name, now).await? else {
            return Ok(Reconciled::NotMine);
        };
        let Some(stored) = self.store.rollout(name).await? else {
            return Ok(Reconciled::Gone);
        };
        // Ping-pong target groups: the roles the status records.
        let rollout = with_roles(&stored.rollout, stored.status.as_ref());
        let spec = &rollout.spec;
        let templates = self.templates(&spec.template_names()).await?;
        // One statement fewer for the many reconciles with nothing queued.
        let commands = if stored.commands_queued {
            self.store.commands(name).await?
        } else {
            Vec::new()
        };
        let ctx = Context {
            rollout: &rollout,
            templates: &templates,
        };
        let reads = Reads {
            last_traffic: lock(&self.last_read).get(name).copied(),
            drift_check_ms: self.config.drift_check_interval.as_millis(),
            last_alarms: lock(&self.last_alarms).get(name).copied(),
            alarm_check_ms: self.config.reconcile_interval.as_millis(),
            commands_queued: !commands.is_empty(),
        };
        let wanted = plan_reads(ctx, stored.status.as_ref(), now, reads);
        // Every traffic target as a spec of its own (the spec itself, not
        // a copy, when it moves one).
        let several;
        let targets: &[RolloutSpec] = if spec.has_several_targets() {
            several = spec.target_specs();
            &several
        } else {
            std::slice::from_ref(spec)
        };
        let queries = super::targets::queries(spec, targets, &wanted.intervals, &templates);
        let (obs, waited) = self
            .observe(name, targets, &wanted, &queries, &mut permit, wake)
            .await;
        *outside += waited;
        // A command or an apply arrived while the reads waited: start over.
        let Some(obs) = obs else {
            return Ok(Reconciled::Requeue {
                after: StdDuration::ZERO,
                wrote: false,
            });
        };
        if matches!(obs.traffic, Observed::Ok(_)) {
            {
                let mut m = lock(&self.last_read);
                m.insert(name.to_string(), now);
            }
        }
        if matches!(obs.alarms, Observed::Ok(_)) {
            {
                let mut m = lock(&self.last_alarms);
                m.insert(name.to_string(), now);
            }
        }
        // Decide at the time we observed.
        let decision = decide(ctx, stored.status.as_ref(), &obs, &commands, now);
        let Some(version) = self.record(name, &stored, &decision, &lease, now).await? else {
            return Ok(Reconciled::Requeue {
                after: LOOK_AGAIN,
                wrote: false,
            });
        };
        if decision.forget {
            return self.forget(name, &stored, version).await;
        }
        let (fenced, wrote_for) = self
            .act(name, targets, &decision.actions, &lease, now, &mut permit)
            .await?;
        *outside += wrote_for;
        if fenced {
            return Ok(Reconciled::Requeue {
                after: LOOK_AGAIN,
                wrote: false,
            });
        }
        let wait = decision
            .requeue_after_ms
            .map_or(self.regular(), StdDuration::from_millis)
            .min(self.regular());
        Ok(Reconciled::Requeue {
            after: wait,
            wrote: decision.changed,
        })
    }

    /// Reads what `wanted` asks for: the weights, the canary's health and
    /// the metric intervals, together, with the reconcile slot handed back
    /// while they are in flight (a reconcile waiting for AWS, a slow or
    /// retried call, holds no slot, so it never delays the others; and the
    /// metric source can gather the reads of every rollout that asks at the
    /// same time into one call, which only works if they all can ask).
    /// Returns `None` when `wake` fired first (a command such as an abort,
    /// or an apply: the reconcile starts over at once with what it asks,
    /// never waiting behind this rollout's routine reads), and how long it
    /// waited.
    async fn observe<'p>(
        &'p self,
        name: &str,
        targets: &[RolloutSpec],
        wanted: &ObservationPlan,
        queries: &super::targets::Queries<'_>,
        permit: &mut Option<SemaphorePermit<'p>>,
        wake: Option<&Notify>,
    ) -> (Option<Observations>, StdDuration) {
        let observing = tokio::time::Instant::now();
        let reads_the_world = wanted.traffic
            || wanted.canary_health
            || !queries.queries.is_empty()
            || !wanted.alarms.is_empty()
            || wanted.webhook.is_some()
            || wanted.experiment.is_some();
        let held = if reads_the_world { permit.take() } else { None };
        let slot_given_back = held.is_some();
        drop(held);
        let reading = async {
            tokio::join!(
                // Every target's weights and canary health, together.
                self.read_targets(targets, wanted),
                async {
                    if queries.queries.is_empty() {
                        Vec::new()
                    } else {
                        self.source.intervals(&queries.queries).await
                    }
                },
                async {
                    if wanted.alarms.is_empty() {
                        Observed::Missing
                    } else {
                        let place = main_listener(targets);
                        self.source.alarms(place, &wanted.alarms).await
                    }
                },
                self.call_webhook(wanted),
                async {
                    let call = wanted.experiment.as_ref()?;
                    let place = main_listener(targets);
                    let seen = self.router.experiment(place, call).await;
                    info!(rollout = name, call = ?call, seen = ?seen, "fault injection");
                    Some((call.clone(), seen))
                },
            )
        };
        let reading = self.noting_wait(name, "reading the load balancer and metrics", reading);
        let ((traffic, canary_health), results, alarms, webhook, experiment) = match wake {
            Some(wake) => tokio::select! {
                r = reading => r,
                _ = wake.notified() => return (None, observing.elapsed()),
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
        let intervals = queries.results(results);
        let mut traffic = traffic.into_iter();
        let mut canary_health = canary_health.into_iter();
        let main_traffic = traffic.next().unwrap_or_default();
        let main_health = canary_health.next().unwrap_or_default();
        let more_targets = (1..targets.len())
            .map(|_| TargetObservations {
                traffic: traffic.next().unwrap_or_default(),
                canary_health: canary_health.next().unwrap_or_default(),
            })
            .collect();
        let obs = Observations {
            traffic: main_traffic,
            canary_health: main_health,
            intervals,
            alarms,
            webhook,
            experiment,
            more_targets,
        };
        (Some(obs), observing.elapsed())
    }

    /// Every target's weights and canary health as `wanted` asks (none
    /// when not asked), all read together, in the targets' order.
    async fn read_targets(
        &self,
        targets: &[RolloutSpec],
        wanted: &ObservationPlan,
    ) -> (Vec<Observed<ForwardWeights>>, Vec<Observed<TargetHealth>>) {
        let weights = async {
            if wanted.traffic {
                let reads = targets
                    .iter()
                    .map(|t| self.router.forward_weights(t, wanted.urgency));
                super::targets::all(reads.collect()).await
            } else {
                Vec::new()
            }
        };
        let health = async {
            if wanted.canary_health {
                let reads = targets.iter().map(|t| self.router.canary_health(t));
                super::targets::all(reads.collect()).await
            } else {
                Vec::new()
            }
        };
        tokio::join!(weights, health)
    }

    /// Calls the webhook the plan asks for: its step, attempt and outcome.
    async fn call_webhook(&self, wanted: &ObservationPlan) -> Option<(u32, u32, WebhookOutcome)> {
        let call = wanted.webhook.as_ref()?;
        let outcome = self.hooks.call(&call.hook, call.body.clone()).await;
        info!(webhook = %call.hook.name, step = call.step + 1, attempt = call.attempt, outcome = ?outcome, "webhook called");
        Some((call.step, call.attempt, outcome))
    }

    /// Writes a changed status with its events (the intent, fenced by the
    /// lease token and the version read). Returns the version now stored,
    /// or `None` when the status moved or the lease is gone: then nothing
    /// may be acted on.
    async fn record(
        &self,
        name: &str,
        stored: &StoredRollout,
        decision: &Decision,
        lease: &Lease,
        now: Time,
    ) -> Result<Option<i64>, ReconcileError> {
        if !decision.changed {
            return Ok(Some(stored.version));
        }
        let write = StatusWrite {
            ended_runs: &decision.ended_runs,
            expected: stored.version,
            status: &decision.status,
            events: &decision.events,
            applied_commands: decision.status.last_command_id
                > stored.status.as_ref().map_or(0, |s| s.last_command_id),
            uid: &stored.uid,
        };
        let version = match self.store.write_status(name, write, lease, now).await {
            Ok(v) => v,
            Err(StoreError::Conflict(_)) => {
                // Someone else wrote, or our lease is gone: act on nothing,
                // read again.
                self.forget_lease(name);
                warn!(rollout = name, "status moved or lease lost; not acting");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        self.count_verdicts(name, stored.status.as_ref(), &decision.status);
        for e in &decision.events {
            if e.kind == rollout_core::EventKind::WeightDrift {
                self.counters.drift.with_label_values(&[name]).inc();
            }
            info!(rollout = name, run = e.run, kind = ?e.kind, actor = e.actor.as_deref(), "{}", e.message);
        }
        if !decision.events.is_empty() {
            self.notifications.wake(name);
        }
        Ok(Some(version))
    }

    /// A deleted rollout whose traffic is back on stable (or that held
    /// none) is removed, unless its status moved meanwhile.
    async fn forget(
        &self,
        name: &str,
        stored: &StoredRollout,
        version: i64,
    ) -> Result<Reconciled, ReconcileError> {
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
            return Ok(Reconciled::Gone);
        }
        Ok(Reconciled::Requeue {
            after: LOOK_AGAIN,
            wrote: true,
        })
    }

    /// Carries out the decision's actions (weight writes), each only while
    /// the lease is good by the database's clock for longer than the
    /// margin. Returns whether a write was fenced off (the lease is no
    /// longer good: nothing more is done) and how long the writes waited.
    async fn act(
        &self,
        name: &str,
        targets: &[RolloutSpec],
        actions: &[Action],
        lease: &Lease,
        now: Time,
        permit: &mut Option<SemaphorePermit<'_>>,
    ) -> Result<(bool, StdDuration), ReconcileError> {
        if actions.is_empty() {
            return Ok((false, StdDuration::ZERO));
        }
        if !self.store.lease_valid(lease, now, self.margin_ms()).await? {
            self.counters.fenced_writes.with_label_values(&[name]).inc();
            self.forget_lease(name);
            warn!(
                rollout = name,
                token = lease.token,
                "lease no longer good by the database's clock; weights not written"
            );
            return Ok((true, StdDuration::ZERO));
        }
        // The writes (and their wait for the API budget) hold no reconcile
        // slot: a run starting, queued behind the steps of others for a
        // write token, must not keep due steps of other rollouts from
        // being decided. A rollout's targets are written together, so that
        // its load balancers change at the same moment.
        drop(permit.take());
        let writing_since = tokio::time::Instant::now();
        let writes = actions
            .iter()
            .filter_map(|action| {
                let Action::SetWeights {
                    weights,
                    seen,
                    target,
                    urgency,
                } = action;
                let Some(place) = targets.get(*target as usize) else {
                    warn!(
                        rollout = name,
                        target, "a weight write for a target the spec does not have; not written"
                    );
                    return None;
                };
                Some(async move {
                    let written = self
                        .router
                        .set_weights(place, *weights, *seen, *urgency)
                        .await;
                    (*target, *weights, written)
                })
            })
            .collect();
        let writing = super::targets::all(writes);
        let written = self.noting_wait(name, "writing the weights", writing).await;
        for (target, weights, result) in written {
            match result {
                Err(e) => {
                    warn!(rollout = name, token = lease.token, target, stable = weights.stable, canary = weights.canary, fatal = e.fatal, error = %e.message, "weight write not made or not confirmed; the next reconcile looks again")
                }
                Ok(()) => info!(
                    rollout = name,
                    token = lease.token,
                    holder = %self.holder,
                    target,
                    stable = weights.stable,
                    canary = weights.canary,
                    "weights written"
                ),
            }
        }
        Ok((false, writing_since.elapsed()))
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
}
