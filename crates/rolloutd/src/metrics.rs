//! Prometheus metrics, by the contract's names and labels. The state of
//! every rollout (phase, weights, step, last analysis values) is rendered at
//! scrape time from the store, so every replica shows all rollouts as they
//! are recorded; counters and the reconcile-time histogram are this
//! process's own.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use rollout_core::sync::lock;
use rollout_core::Phase;
use rollout_store::StoredRollout;

mod effects;

/// The process's counters and histogram.
pub struct Metrics {
    registry: Registry,
    /// `rolloutd_analysis_verdicts_total{rollout, metric, verdict}`.
    pub verdicts: IntCounterVec,
    /// `rolloutd_reconcile_duration_seconds`.
    pub reconcile_seconds: Histogram,
    /// `rolloutd_reconcile_errors_total{rollout, kind}`.
    pub reconcile_errors: IntCounterVec,
    /// `rolloutd_aws_requests_total{service, operation, outcome}`.
    pub aws_requests: IntCounterVec,
    /// `rolloutd_notifications_total{notifier, outcome}`: deliveries
    /// (`delivered`) and failed attempts (`failed`).
    pub notifications: IntCounterVec,
    /// `rolloutd_leases_held`: rollouts this replica holds the lease of.
    pub leases_held: IntGauge,
    /// `rolloutd_reconcile_queue_depth`: reconciles due and waiting for a turn.
    pub queue_depth: IntGauge,
    /// `rolloutd_weight_drift_total{rollout}`: weights seen that rolloutd did
    /// not write.
    pub drift: IntCounterVec,
    /// `rolloutd_fenced_writes_total{rollout}`: load-balancer writes not made
    /// because the lease was no longer good by the database's clock.
    pub fenced_writes: IntCounterVec,
    /// `rolloutd_specs_scan_failures_total`: scans of the specs directory
    /// that failed (and changed nothing).
    pub specs_scan_failures: prometheus::IntCounter,
    /// `rolloutd_specs_scan_ok`: 1 when the last scan of the specs directory
    /// was complete, 0 when it failed.
    pub specs_scan_ok: IntGauge,
    /// The AWS API budget, when the daemon talks to AWS
    /// (`rolloutd_aws_budget_*{class}`, rendered at scrape time).
    budget: std::sync::OnceLock<std::sync::Arc<rollout_aws::budget::Budget>>,
    /// Rollouts whose reconcile has been waiting for AWS for a while now
    /// (`rolloutd_rollouts_waiting_for_aws`, and the API's status message).
    waiting: std::sync::Mutex<std::collections::HashMap<String, Waiting>>,
    /// The current runs' measured effects, recomputed when a status moved.
    effects: std::sync::Mutex<effects::EffectCache>,
}

/// A reconcile waiting for AWS: since when, for what.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    since: std::time::Instant,
    what: &'static str,
}

/// The reconciles waiting for AWS at one moment, and the API budget's
/// queues then.
pub struct Waits {
    waiting: std::collections::HashMap<String, Waiting>,
    queued: Vec<String>,
}

impl Waits {
    /// What `name`'s reconcile waits for, if it has been waiting: how long,
    /// and whether calls are queued for the API budget or AWS is slow.
    pub fn message(&self, name: &str) -> Option<String> {
        let w = self.waiting.get(name)?;
        let secs = w.since.elapsed().as_secs();
        Some(if self.queued.is_empty() {
            format!("{}: AWS has not answered for {secs} s", w.what)
        } else {
            format!(
                "{}: waiting {secs} s for the AWS API budget ({})",
                w.what,
                self.queued.join(", ")
            )
        })
    }
}

/// While held, the rollout counts as waiting for AWS; dropped (the wait
/// ended, or the reconcile was started over), it no longer does.
pub struct WaitNote<'a> {
    metrics: &'a Metrics,
    name: String,
}

impl Drop for WaitNote<'_> {
    fn drop(&mut self) {
        {
            let mut w = lock(&self.metrics.waiting);
            w.remove(&self.name);
        }
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let verdicts = counter(
            "rolloutd_analysis_verdicts_total",
            "Analysis verdicts, by rollout, metric and verdict.",
            &["rollout", "metric", "verdict"],
        );
        let reconcile_errors = counter(
            "rolloutd_reconcile_errors_total",
            "Reconciles that failed, by rollout and kind of error.",
            &["rollout", "kind"],
        );
        let aws_requests = counter(
            "rolloutd_aws_requests_total",
            "Requests to AWS, by service, operation and outcome.",
            &["service", "operation", "outcome"],
        );
        let notifications = counter(
            "rolloutd_notifications_total",
            "Notification deliveries (delivered) and failed attempts (failed), by notifier.",
            &["notifier", "outcome"],
        );
        let reconcile_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "rolloutd_reconcile_duration_seconds",
                "Time of one reconcile, from its turn to its end, without the waits for the load balancer and metric reads.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )
        .unwrap_or_else(|e| panic!("histogram: {e}"));
        let drift = counter(
            "rolloutd_weight_drift_total",
            "Weights seen on the load balancer that rolloutd did not write, by rollout.",
            &["rollout"],
        );
        let fenced_writes = counter(
            "rolloutd_fenced_writes_total",
            "Load-balancer writes not made because this replica's lease was no longer good by the database's clock.",
            &["rollout"],
        );
        let specs_scan_failures = prometheus::IntCounter::new(
            "rolloutd_specs_scan_failures_total",
            "Scans of the specs directory that failed and changed nothing.",
        )
        .unwrap_or_else(|e| panic!("counter: {e}"));
        let _ = registry.register(Box::new(specs_scan_failures.clone()));
        for c in [
            &verdicts,
            &reconcile_errors,
            &aws_requests,
            &drift,
            &fenced_writes,
            &notifications,
        ] {
            let _ = registry.register(Box::new(c.clone()));
        }
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("gauge {name}: {e}"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let leases_held = gauge(
            "rolloutd_leases_held",
            "Rollouts whose lease this replica holds.",
        );
        let queue_depth = gauge(
            "rolloutd_reconcile_queue_depth",
            "Reconciles that are due and wait for a turn.",
        );
        let specs_scan_ok = gauge(
            "rolloutd_specs_scan_ok",
            "1 when the last scan of the specs directory was complete and applied, 0 when it failed.",
        );
        let _ = registry.register(Box::new(reconcile_seconds.clone()));
        Metrics {
            budget: std::sync::OnceLock::new(),
            waiting: Default::default(),
            effects: Default::default(),
            drift,
            fenced_writes,
            specs_scan_failures,
            specs_scan_ok,
            registry,
            verdicts,
            reconcile_seconds,
            reconcile_errors,
            aws_requests,
            notifications,
            leases_held,
            queue_depth,
        }
    }

    /// Removes every series of rollout `name` from this process's counters
    /// (a deleted rollout leaves nothing behind in `/metrics`; its state
    /// gauges are rendered from the store and go with it).
    pub fn forget_rollout(&self, name: &str) {
        use prometheus::core::Collector;
        for vec in [
            &self.verdicts,
            &self.reconcile_errors,
            &self.drift,
            &self.fenced_writes,
        ] {
            for family in vec.collect() {
                for m in family.get_metric() {
                    let labels: std::collections::HashMap<&str, &str> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("rollout") == Some(&name) {
                        let _ = vec.remove(&labels);
                    }
                }
            }
        }
        {
            let mut w = lock(&self.waiting);
            w.remove(name);
        }
    }

    /// Notes that `name`'s reconcile has been waiting for AWS since `since`
    /// (`what`: what it does, "writing the weights"), until the note is
    /// dropped.
    pub fn note_wait(
        &self,
        name: &str,
        since: std::time::Instant,
        what: &'static str,
    ) -> WaitNote<'_> {
        {
            let mut w = lock(&self.waiting);
            w.insert(name.to_string(), Waiting { since, what });
        }
        WaitNote {
            metrics: self,
            name: name.to_string(),
        }
    }

    /// What the reconciles wait for now (the API adds it to the status
    /// messages): taken once per answer, so a list of thousands of rollouts
    /// reads the budget's queues once.
    pub fn waits(&self) -> Waits {
        let waiting = lock(&self.waiting).clone();
        let queued = if waiting.is_empty() {
            Vec::new()
        } else {
            self.budget
                .get()
                .map(|b| {
                    b.stats()
                        .into_iter()
                        .filter(|(_, s)| s.queued > 0)
                        .map(|(c, s)| format!("{} {} queued", s.queued, c.as_str()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Waits { waiting, queued }
    }

    /// Shows `budget` in `/metrics` (once).
    pub fn show_budget(&self, budget: std::sync::Arc<rollout_aws::budget::Budget>) {
        let _ = self.budget.set(budget);
    }

    /// This replica's share of the fleet's AWS budget: one of `replicas`.
    pub fn set_budget_share(&self, replicas: usize) {
        if let Some(b) = self.budget.get() {
            b.set_share(replicas);
        }
    }

    /// The text exposition: the rollouts' state (with their current runs'
    /// effects, judged by `templates`), then this process's counters.
    pub fn render(
        &self,
        rollouts: &[StoredRollout],
        templates: &std::collections::BTreeMap<String, rollout_spec::AnalysisTemplateSpec>,
    ) -> String {
        let state = Registry::new();
        render_rollouts(&state, rollouts);
        lock(&self.effects).render(&state, rollouts, templates);
        self.render_waits(&state);
        self.render_budget(&state);
        let mut families = state.gather();
        families.extend(self.registry.gather());
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The rollouts waiting for AWS now, and the longest wait.
    fn render_waits(&self, state: &Registry) {
        {
            let w = lock(&self.waiting);
            let waiting = gauge(
                state,
                "rolloutd_rollouts_waiting_for_aws",
                "Rollouts whose reconcile has waited more than 2 s for AWS (the API budget, or a slow answer) and still waits.",
                &[],
            );
            waiting
                .with_label_values(&[] as &[&str])
                .set(w.len() as f64);
            let longest = gauge(
                state,
                "rolloutd_aws_wait_longest_seconds",
                "The longest such wait going on now, in seconds (0: none).",
                &[],
            );
            longest.with_label_values(&[] as &[&str]).set(
                w.values()
                    .map(|x| x.since.elapsed().as_secs_f64())
                    .fold(0.0, f64::max),
            );
        }
    }

    /// The AWS API budget: configured and current rates, queues, tokens.
    fn render_budget(&self, state: &Registry) {
        if let Some(budget) = self.budget.get() {
            let config = budget.config();
            let configured = gauge(
                state,
                "rolloutd_aws_budget_configured_per_second",
                "The fleet's AWS API budget per class of call, calls per second.",
                &["class"],
            );
            let rate = gauge(
                state,
                "rolloutd_aws_budget_rate_per_second",
                "This replica's AWS API rate in force per class: its share of the fleet's, after any throttling back-off.",
                &["class"],
            );
            let queued = gauge(
                state,
                "rolloutd_aws_budget_queued",
                "AWS calls waiting for a token now, per class.",
                &["class"],
            );
            let used = class_counter(
                state,
                "rolloutd_aws_budget_tokens_used_total",
                "Tokens taken (AWS calls made) per class.",
            );
            let waits = class_counter(
                state,
                "rolloutd_aws_budget_waits_total",
                "AWS calls that waited for a token, per class.",
            );
            let waited = class_counter(
                state,
                "rolloutd_aws_budget_wait_seconds_total",
                "Seconds AWS calls spent waiting for a token, per class.",
            );
            let skipped = class_counter(
                state,
                "rolloutd_aws_budget_skipped_total",
                "Optional reads (drift checks before their cadence) skipped for want of spare tokens, per class.",
            );
            let throttled = class_counter(
                state,
                "rolloutd_aws_budget_throttled_total",
                "Throttling answers from AWS per class (each halves the rate for a while).",
            );
            for (class, s) in budget.stats() {
                let c = [class.as_str()];
                let conf = match class {
                    rollout_aws::budget::Class::ElbRead => config.elb_read,
                    rollout_aws::budget::Class::ElbWrite => config.elb_write,
                    rollout_aws::budget::Class::CloudWatch => config.cloudwatch,
                    rollout_aws::budget::Class::Alarms => config.alarms,
                    rollout_aws::budget::Class::Fis => config.fis,
                };
                configured.with_label_values(&c).set(conf.per_second);
                rate.with_label_values(&c).set(s.rate);
                queued.with_label_values(&c).set(s.queued as f64);
                used.with_label_values(&c).inc_by(s.used as f64);
                waits.with_label_values(&c).inc_by(s.waits as f64);
                waited.with_label_values(&c).inc_by(s.wait_seconds);
                skipped.with_label_values(&c).inc_by(s.skipped as f64);
                throttled.with_label_values(&c).inc_by(s.throttled as f64);
            }
        }
    }
}

/// A gauge family registered in `state` (a scrape's own registry).
fn gauge(state: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("gauge {name}: {e}"));
    let _ = state.register(Box::new(g.clone()));
    g
}

/// A counter family by AWS API class registered in `state`.
fn class_counter(state: &Registry, name: &str, help: &str) -> prometheus::CounterVec {
    let c = prometheus::CounterVec::new(Opts::new(name, help), &["class"])
        .unwrap_or_else(|e| panic!("counter {name}: {e}"));
    let _ = state.register(Box::new(c.clone()));
    c
}

/// Each rollout's phase, weights, step and last judged values.
fn render_rollouts(state: &Registry, rollouts: &[StoredRollout]) {
    let info = gauge(
        state,
        "rolloutd_rollout_info",
        "1 per rollout, with its revision, strategy and phase.",
        &["rollout", "revision", "strategy", "phase"],
    );
    let phase = gauge(
        state,
        "rolloutd_rollout_phase",
        "1 for the rollout's current phase, 0 for the others.",
        &["rollout", "phase"],
    );
    let weight = gauge(
        state,
        "rolloutd_rollout_canary_weight",
        "The desired canary weight.",
        &["rollout"],
    );
    let observed = gauge(
        state,
        "rolloutd_rollout_observed_canary_weight",
        "The canary weight last read from the load balancer.",
        &["rollout"],
    );
    let step = gauge(
        state,
        "rolloutd_rollout_step",
        "The current step index.",
        &["rollout"],
    );
    let value = gauge(
        state,
        "rolloutd_analysis_metric_value",
        "The last judged interval's value of a metric, per arm.",
        &["rollout", "metric", "arm"],
    );
    for r in rollouts {
        let name = r.rollout.metadata.name.as_str();
        let strategy = r.rollout.spec.strategy_name();
        let Some(st) = &r.status else {
            info.with_label_values(&[name, &r.rollout.spec.revision, strategy, "Pending"])
                .set(1.0);
            continue;
        };
        info.with_label_values(&[name, &st.revision, strategy, st.phase.as_str()])
            .set(1.0);
        for p in Phase::ALL {
            phase
                .with_label_values(&[name, p.as_str()])
                .set(if p == st.phase { 1.0 } else { 0.0 });
        }
        weight
            .with_label_values(&[name])
            .set(f64::from(st.canary_weight));
        if let Some(o) = st.observed_weights {
            observed.with_label_values(&[name]).set(f64::from(o.canary));
        }
        step.with_label_values(&[name])
            .set(f64::from(st.current_step_index));
        for t in st.analysis.templates.values() {
            for m in t.last.iter().flat_map(|l| &l.result.metrics) {
                if let Some(v) = m.stable {
                    value.with_label_values(&[name, &m.metric, "stable"]).set(v);
                }
                if let Some(v) = m.canary {
                    value.with_label_values(&[name, &m.metric, "canary"]).set(v);
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
