//! Prometheus metrics, by the contract's names and labels. The state of
//! every rollout (phase, weights, step, last analysis values) is rendered at
//! scrape time from the store, so every replica shows all rollouts as they
//! are recorded; counters and the reconcile-time histogram are this
//! process's own.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use rollout_core::Phase;
use rollout_store::StoredRollout;

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
            drift,
            fenced_writes,
            specs_scan_failures,
            specs_scan_ok,
            registry,
            verdicts,
            reconcile_seconds,
            reconcile_errors,
            aws_requests,
            leases_held,
            queue_depth,
        }
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

    /// The text exposition: the rollouts' state, then this process's counters.
    pub fn render(&self, rollouts: &[StoredRollout]) -> String {
        let state = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("gauge {name}: {e}"));
            let _ = state.register(Box::new(g.clone()));
            g
        };
        let info = gauge(
            "rolloutd_rollout_info",
            "1 per rollout, with its revision, strategy and phase.",
            &["rollout", "revision", "strategy", "phase"],
        );
        let phase = gauge(
            "rolloutd_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            &["rollout", "phase"],
        );
        let weight = gauge(
            "rolloutd_rollout_canary_weight",
            "The desired canary weight.",
            &["rollout"],
        );
        let observed = gauge(
            "rolloutd_rollout_observed_canary_weight",
            "The canary weight last read from the load balancer.",
            &["rollout"],
        );
        let step = gauge(
            "rolloutd_rollout_step",
            "The current step index.",
            &["rollout"],
        );
        let value = gauge(
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
        if let Some(budget) = self.budget.get() {
            let config = budget.config();
            let configured = gauge(
                "rolloutd_aws_budget_configured_per_second",
                "The fleet's AWS API budget per class of call, calls per second.",
                &["class"],
            );
            let rate = gauge(
                "rolloutd_aws_budget_rate_per_second",
                "This replica's AWS API rate in force per class: its share of the fleet's, after any throttling back-off.",
                &["class"],
            );
            let queued = gauge(
                "rolloutd_aws_budget_queued",
                "AWS calls waiting for a token now, per class.",
                &["class"],
            );
            let count = |name: &str, help: &str| {
                let c = prometheus::CounterVec::new(Opts::new(name, help), &["class"])
                    .unwrap_or_else(|e| panic!("counter {name}: {e}"));
                let _ = state.register(Box::new(c.clone()));
                c
            };
            let used = count(
                "rolloutd_aws_budget_tokens_used_total",
                "Tokens taken (AWS calls made) per class.",
            );
            let waits = count(
                "rolloutd_aws_budget_waits_total",
                "AWS calls that waited for a token, per class.",
            );
            let waited = count(
                "rolloutd_aws_budget_wait_seconds_total",
                "Seconds AWS calls spent waiting for a token, per class.",
            );
            let skipped = count(
                "rolloutd_aws_budget_skipped_total",
                "Optional reads (drift checks before their cadence) skipped for want of spare tokens, per class.",
            );
            let throttled = count(
                "rolloutd_aws_budget_throttled_total",
                "Throttling answers from AWS per class (each halves the rate for a while).",
            );
            for (class, s) in budget.stats() {
                let c = [class.as_str()];
                let conf = match class {
                    rollout_aws::budget::Class::ElbRead => config.elb_read,
                    rollout_aws::budget::Class::ElbWrite => config.elb_write,
                    rollout_aws::budget::Class::CloudWatch => config.cloudwatch,
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
        let mut families = state.gather();
        families.extend(self.registry.gather());
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
