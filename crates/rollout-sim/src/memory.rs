//! A simulated ALB and CloudWatch in memory (simulated: no AWS calls),
//! implementing the daemon's ports. For the demo and for benchmarks that
//! measure rolloutd without AWS.

use std::collections::HashMap;
use std::sync::Mutex;

use rollout_analysis::IntervalMetrics;
use rollout_core::ports::{MetricQuery, MetricSource, TrafficRouter};
use rollout_core::sync::lock;
use rollout_core::{
    AlarmState, ForwardWeights, ObservationError, Observed, TargetHealth, Time, Weights,
};
use rollout_spec::RolloutSpec;

use crate::{synth, ArmBehaviour};

/// One forward action: weights by target group ARN (so ping-pong target
/// groups, whose roles change between runs, read what they hold), and the
/// history of writes: (when, the canary ARN written, its percent).
#[derive(Debug, Clone, Default)]
struct Route {
    weights: HashMap<String, u32>,
    other: u32,
    history: Vec<(i64, String, f64)>,
}

impl Route {
    fn read(&self, spec: &RolloutSpec) -> ForwardWeights {
        let w = |arn: &str| self.weights.get(arn).copied().unwrap_or(0);
        ForwardWeights {
            stable: w(spec.stable.target_group_arn.as_str()),
            canary: w(spec.canary.target_group_arn.as_str()),
            other: self.other,
        }
    }

    /// The history as `spec`'s canary share.
    fn canary_history(&self, spec: &RolloutSpec) -> Vec<(i64, f64)> {
        self.history
            .iter()
            .map(|(t, arn, pct)| {
                if arn == spec.canary.target_group_arn.as_str() {
                    (*t, *pct)
                } else {
                    (*t, 100.0 - pct)
                }
            })
            .collect()
    }
}

/// How one target group is doing.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Healthy targets.
    pub healthy: u32,
    /// All targets.
    pub total: u32,
    /// How it serves.
    pub behaviour: ArmBehaviour,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            healthy: 3,
            total: 3,
            behaviour: ArmBehaviour::HEALTHY,
        }
    }
}

/// The in-memory world.
#[derive(Debug)]
pub struct MemoryWorld {
    routes: Mutex<HashMap<String, Route>>,
    targets: Mutex<HashMap<String, Target>>,
    alarms: Mutex<HashMap<String, AlarmState>>,
    rps: f64,
    clock: fn() -> Time,
}

/// The forward action a rollout shifts: its rule's ARN, or its listener's
/// (the key both simulated worlds keep weights and history under).
pub fn route_key(spec: &RolloutSpec) -> String {
    let alb = &spec.traffic_routing.alb;
    alb.rule_arn
        .as_ref()
        .map_or_else(|| alb.listener_arn.to_string(), |r| r.to_string())
}

fn poisoned() -> ObservationError {
    ObservationError {
        fatal: false,
        message: "simulated world: lock poisoned".into(),
    }
}

impl MemoryWorld {
    /// A world where every route starts with stable carrying all traffic and
    /// every target group is healthy, serving `rps` requests a second a route.
    pub fn new(rps: f64, clock: fn() -> Time) -> Self {
        MemoryWorld {
            routes: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            alarms: Mutex::new(HashMap::new()),
            rps,
            clock,
        }
    }

    /// Sets how a target group (by ARN) behaves.
    pub fn set_target(&self, tg: &str, target: Target) {
        if let Ok(mut t) = self.targets.lock() {
            t.insert(tg.to_string(), target);
        }
    }

    /// Creates or sets a CloudWatch alarm (`OK`, `ALARM`,
    /// `INSUFFICIENT_DATA`) with its reason.
    pub fn set_alarm(&self, name: &str, state: &str, reason: &str) {
        lock(&self.alarms).insert(
            name.to_string(),
            AlarmState {
                name: name.to_string(),
                state: state.to_string(),
                reason: reason.to_string(),
            },
        );
    }

    fn target(&self, tg: &str) -> Target {
        self.targets
            .lock()
            .ok()
            .and_then(|t| t.get(tg).copied())
            .unwrap_or_default()
    }

    /// The canary share of the route of `spec`, in percent.
    pub fn canary_share(&self, spec: &RolloutSpec) -> f64 {
        self.routes
            .lock()
            .ok()
            .and_then(|r| r.get(&route_key(spec)).map(|r| r.read(spec)))
            .map_or(0.0, |w| {
                let t = f64::from(w.stable + w.canary + w.other);
                if t == 0.0 {
                    0.0
                } else {
                    f64::from(w.canary) * 100.0 / t
                }
            })
    }
}

/// The in-memory world has no Fault Injection Service.
impl rollout_core::ports::FaultInjector for MemoryWorld {}

impl TrafficRouter for MemoryWorld {
    async fn forward_weights(
        &self,
        spec: &RolloutSpec,
        _urgency: rollout_core::Urgency,
    ) -> Observed<ForwardWeights> {
        match self.routes.lock() {
            Ok(mut routes) => Observed::Ok(
                routes
                    .entry(route_key(spec))
                    .or_insert_with(|| Route {
                        weights: HashMap::from([(spec.stable.target_group_arn.to_string(), 1)]),
                        ..Route::default()
                    })
                    .read(spec),
            ),
            Err(_) => Observed::Err(poisoned()),
        }
    }

    async fn set_weights(
        &self,
        spec: &RolloutSpec,
        w: Weights,
        seen: ForwardWeights,
        _urgency: rollout_core::Urgency,
    ) -> Result<(), ObservationError> {
        let now = (self.clock)();
        let mut routes = self.routes.lock().map_err(|_| poisoned())?;
        let r = routes.entry(route_key(spec)).or_default();
        // As the ALB router: never over someone else's write, never
        // changing target groups the rollout does not name.
        r.read(spec).may_write(&seen, "simulated route")?;
        let canary = spec.canary.target_group_arn.to_string();
        r.weights.insert(
            spec.stable.target_group_arn.to_string(),
            u32::from(w.stable),
        );
        r.weights.insert(canary.clone(), u32::from(w.canary));
        r.history.push((now.millis(), canary, f64::from(w.canary)));
        Ok(())
    }

    async fn canary_health(&self, spec: &RolloutSpec) -> Observed<TargetHealth> {
        let t = self.target(spec.canary.target_group_arn.as_str());
        Observed::Ok(TargetHealth {
            healthy: t.healthy,
            total: t.total,
        })
    }
}

impl MetricSource for MemoryWorld {
    async fn intervals(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> Vec<Result<IntervalMetrics, ObservationError>> {
        let now = (self.clock)();
        queries
            .iter()
            .map(|q| {
                let key = route_key(q.spec);
                let history = self
                    .routes
                    .lock()
                    .map_err(|_| poisoned())?
                    .get(&key)
                    .map(|r| r.canary_history(q.spec))
                    .unwrap_or_default();
                let stable = self
                    .target(q.spec.stable.target_group_arn.as_str())
                    .behaviour;
                let canary = self
                    .target(q.spec.canary.target_group_arn.as_str())
                    .behaviour;
                Ok(synth::window(
                    &key,
                    &history,
                    self.rps,
                    (stable, canary),
                    q.window,
                    now,
                ))
            })
            .collect()
    }

    async fn alarms(&self, _place: &str, names: &[String]) -> Observed<Vec<AlarmState>> {
        let alarms = lock(&self.alarms);
        Observed::Ok(
            names
                .iter()
                .filter_map(|n| alarms.get(n).cloned())
                .collect(),
        )
    }
}
