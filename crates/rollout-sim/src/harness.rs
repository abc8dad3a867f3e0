//! The `Harness`: the real `plan`/`decide` loop driven over an in-memory
//! load balancer and CloudWatch with a fake clock, for the story tests.
//! Behind the `harness` feature: a test fixture, not shipped.

use std::collections::BTreeMap;

use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::{
    decide, plan, Action, Command, CommandKind, Context, Event, ForwardWeights, IntervalResult,
    ObservationError, Observations, Observed, RolloutStatus, TargetHealth, Time, Weights,
};
use rollout_spec::{AnalysisTemplateSpec, Rollout, SpecSet};

use super::*;

/// The simulated load balancer: one forward action with two owned target
/// groups (and possibly others), and the canary's target health.
#[derive(Debug, Clone)]
pub struct SimLoadBalancer {
    /// The forward action's weights.
    pub weights: ForwardWeights,
    /// The canary target group's health.
    pub canary_health: TargetHealth,
    /// Every write, with its time and the canary's share afterwards.
    pub writes: Vec<(Time, Weights)>,
    /// The next this many reads fail with a transient error.
    pub fail_reads: u32,
    /// The next this many writes fail with a transient error.
    pub fail_writes: u32,
    /// Reads fail with this fatal error (a deleted listener, a denied role).
    pub fatal: Option<String>,
}

impl SimLoadBalancer {
    /// A load balancer whose stable target group takes all traffic and whose
    /// canary has `healthy` of 3 targets healthy.
    pub fn new(healthy: u32) -> Self {
        SimLoadBalancer {
            weights: ForwardWeights {
                stable: 1,
                canary: 0,
                other: 0,
            },
            canary_health: TargetHealth { healthy, total: 3 },
            writes: Vec::new(),
            fail_reads: 0,
            fail_writes: 0,
            fatal: None,
        }
    }

    /// Reads the forward weights, as `DescribeListeners` would.
    pub fn read(&mut self) -> Observed<ForwardWeights> {
        if let Some(message) = &self.fatal {
            return Observed::Err(ObservationError {
                fatal: true,
                message: message.clone(),
            });
        }
        if self.fail_reads > 0 {
            self.fail_reads -= 1;
            return Observed::Err(ObservationError {
                fatal: false,
                message: "Throttling: Rate exceeded".into(),
            });
        }
        Observed::Ok(self.weights)
    }

    /// Writes the weights, as `ModifyListener` would.
    pub fn write(&mut self, now: Time, w: Weights) -> Result<(), String> {
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            return Err("Throttling: Rate exceeded".into());
        }
        self.weights = ForwardWeights {
            stable: u32::from(w.stable),
            canary: u32::from(w.canary),
            other: 0,
        };
        self.writes.push((now, w));
        Ok(())
    }

    /// The canary's share of traffic in percent.
    pub fn canary_percent(&self) -> f64 {
        let total = f64::from(self.weights.stable + self.weights.canary + self.weights.other);
        if total == 0.0 {
            0.0
        } else {
            f64::from(self.weights.canary) * 100.0 / total
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Second {
    requests: u64,
    errors: u64,
    latency_sum: f64,
}

/// Simulated CloudWatch: per-second samples of both arms.
#[derive(Debug, Clone)]
pub struct SimMetrics {
    rng: Rng,
    /// Requests a second across both arms.
    pub rps: f64,
    /// How stable behaves.
    pub stable: ArmBehaviour,
    /// How the canary behaves (see `canary_change`).
    pub canary: ArmBehaviour,
    /// From this time on the canary behaves like this instead.
    pub canary_change: Option<(Time, ArmBehaviour)>,
    /// Samples appear this long after their second (CloudWatch's lag).
    pub lag_ms: u64,
    /// Queries fail with this transient error while set.
    pub failing: Option<String>,
    /// Each arm's 5xx rate wanders from minute to minute by this
    /// coefficient of variation on its own (0: a steady rate).
    pub error_cv: f64,
    /// Each arm's latency wanders from minute to minute by this fraction
    /// on its own (a host's bad minute; 0: steady).
    pub latency_noise: f64,
    seed: u64,
    seconds: BTreeMap<i64, (Second, Second)>,
}

impl SimMetrics {
    /// Metrics of a service serving `rps` requests a second.
    pub fn new(seed: u64, rps: f64) -> Self {
        SimMetrics {
            rng: Rng::new(seed),
            rps,
            stable: ArmBehaviour::HEALTHY,
            canary: ArmBehaviour::HEALTHY,
            canary_change: None,
            lag_ms: 30_000,
            failing: None,
            error_cv: 0.0,
            latency_noise: 0.0,
            seed,
            seconds: BTreeMap::new(),
        }
    }

    /// The arm's behaviour in the minute holding second `t`, with the
    /// per-minute wander: a Gamma multiplier of mean 1 on the 5xx rate (the
    /// negative binomial's overdispersion), a lognormal one on latency.
    fn wander(&self, t: i64, canary: bool, b: ArmBehaviour) -> ArmBehaviour {
        if self.error_cv == 0.0 && self.latency_noise == 0.0 {
            return b;
        }
        let minute = t.div_euclid(60);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(self.seed, minute, canary), &mut h);
        let mut rng = Rng::new(std::hash::Hasher::finish(&h));
        let latency = (self.latency_noise * rng.normal()).exp();
        let errors = rng.gamma_mean_one(1.0 / (self.error_cv * self.error_cv));
        ArmBehaviour {
            error_rate: (b.error_rate * errors).min(1.0),
            latency: b.latency * latency,
        }
    }

    fn arm_second(&mut self, rate: f64, b: ArmBehaviour) -> Second {
        let requests = self.rng.poisson(rate);
        let errors = self
            .rng
            .poisson(requests as f64 * b.error_rate)
            .min(requests);
        let latency = b.latency * (1.0 + 0.05 * self.rng.normal()).max(0.1);
        Second {
            requests,
            errors,
            latency_sum: latency * requests as f64,
        }
    }

    /// Records the traffic of the second starting at `t` (epoch seconds),
    /// split by the canary's `share` (percent).
    pub fn record_second(&mut self, t: i64, canary_share: f64) {
        let canary_b = match self.canary_change {
            Some((from, b)) if t * 1000 >= from.millis() => b,
            _ => self.canary,
        };
        let share = canary_share.clamp(0.0, 100.0) / 100.0;
        let (stable_b, canary_b) = (
            self.wander(t, false, self.stable),
            self.wander(t, true, canary_b),
        );
        let stable = self.arm_second(self.rps * (1.0 - share), stable_b);
        let canary = self.arm_second(self.rps * share, canary_b);
        self.seconds.insert(t, (stable, canary));
    }

    fn arm(seconds: impl Iterator<Item = Second>) -> ArmSample {
        let mut total = Second::default();
        for s in seconds {
            total.requests += s.requests;
            total.errors += s.errors;
            total.latency_sum += s.latency_sum;
        }
        if total.requests == 0 {
            // ALB publishes no datapoint for a target group without requests.
            return ArmSample::default();
        }
        ArmSample {
            requests: Some(total.requests as f64),
            // ...and no 5xx datapoint when there were none.
            errors: (total.errors > 0).then_some(total.errors as f64),
            latency: Some(total.latency_sum / total.requests as f64),
            latency_cv: None,
        }
    }

    /// Both arms' metrics over `[start, end)` for the canary and
    /// `[stable_start, stable_end)` for stable, as published by `now`.
    pub fn query(
        &self,
        now: Time,
        (start, end): (Time, Time),
        (stable_start, stable_end): (Time, Time),
    ) -> Result<IntervalMetrics, ObservationError> {
        if let Some(message) = &self.failing {
            return Err(ObservationError {
                fatal: false,
                message: message.clone(),
            });
        }
        let published = now.millis() - self.lag_ms as i64;
        let range = |a: Time, b: Time| {
            let end = b.millis().min(published);
            self.seconds
                .range(
                    a.millis().div_euclid(1000)
                        ..end.div_euclid(1000).max(a.millis().div_euclid(1000)),
                )
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
        };
        let canary = Self::arm(range(start, end).into_iter().map(|(_, c)| c));
        let stable = Self::arm(range(stable_start, stable_end).into_iter().map(|(s, _)| s));
        // This CloudWatch holds only the ALB metrics: a template's custom
        // metrics read as no data.
        Ok(IntervalMetrics {
            stable,
            canary,
            custom: Vec::new(),
            merged: 0,
        })
    }
}

/// The daemon's loop, in memory: a rollout, its templates, a stored status
/// (kept as JSON, as a database would keep it), the simulated world and a
/// fake clock.
#[derive(Debug)]
pub struct Harness {
    /// The rollout being run.
    pub rollout: Rollout,
    /// Its templates.
    pub templates: BTreeMap<String, AnalysisTemplateSpec>,
    /// The stored status, serialised.
    pub stored: Option<String>,
    /// The simulated load balancer.
    pub lb: SimLoadBalancer,
    /// The simulated CloudWatch.
    pub metrics: SimMetrics,
    /// The fake clock.
    pub now: Time,
    /// Commands not yet applied, and the next id.
    pub commands: Vec<Command>,
    next_command: u64,
    /// Every event recorded.
    pub events: Vec<Event>,
    /// The canary share the load balancer held after every tick.
    pub seen: Vec<(Time, f64)>,
    /// How often a reconcile runs at the latest.
    pub reconcile_interval_ms: u64,
    last_second: i64,
    /// Reconciles run so far.
    pub ticks: u64,
}

/// How much of stable's traffic before the run the simulated CloudWatch
/// holds (the daemon reads an hour of it at a run's start to learn how
/// much its 5xx rate wanders).
const HISTORY_SECONDS: i64 = 3_600;

/// The simulation's start: 2026-11-28T06:00:00Z.
pub const EPOCH: Time = Time::from_millis(1_795_845_600_000);

impl Harness {
    /// A harness for the first Rollout of `set`, with its templates.
    pub fn new(set: &SpecSet, seed: u64, rps: f64) -> Self {
        let rollout = set.rollouts[0].value.clone();
        let templates = set
            .templates
            .iter()
            .map(|t| (t.value.metadata.name.to_string(), t.value.spec.clone()))
            .collect();
        Harness {
            rollout,
            templates,
            stored: None,
            lb: SimLoadBalancer::new(3),
            metrics: SimMetrics::new(seed, rps),
            now: EPOCH,
            commands: Vec::new(),
            next_command: 1,
            events: Vec::new(),
            seen: Vec::new(),
            reconcile_interval_ms: 10_000,
            last_second: EPOCH.millis() / 1000,
            ticks: 0,
        }
    }

    /// The stored status.
    pub fn status(&self) -> Option<RolloutStatus> {
        self.stored
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    /// Queues a command, as the API would.
    pub fn command(&mut self, kind: CommandKind, actor: &str, reason: Option<&str>) {
        self.commands.push(Command {
            id: self.next_command,
            kind,
            actor: actor.into(),
            reason: reason.map(str::to_string),
            at: self.now,
        });
        self.next_command += 1;
    }

    /// Lets simulated time pass until `to`, recording traffic each second.
    pub fn advance_to(&mut self, to: Time) {
        let end = to.millis().div_euclid(1000);
        while self.last_second < end {
            let share = self.lb.canary_percent();
            self.metrics.record_second(self.last_second, share);
            self.last_second += 1;
        }
        self.now = self.now.max(to);
    }

    /// One reconcile: plan, observe, decide, store the status, act.
    /// With `crash_before_acting`, the process "dies" right after storing the
    /// status (the intent) and before touching the load balancer.
    pub fn tick_with(&mut self, crash_before_acting: bool) -> Option<u64> {
        if self.ticks == 0 {
            // Stable's hour before the run, with the behaviour the test set
            // up (it is set after `new`, so recorded at the first tick).
            let start = EPOCH.millis() / 1000;
            for t in start - HISTORY_SECONDS..start {
                self.metrics.record_second(t, 0.0);
            }
        }
        self.ticks += 1;
        let ctx = Context {
            rollout: &self.rollout,
            templates: &self.templates,
        };
        let status = self.status();
        let want = plan(ctx, status.as_ref(), self.now);
        let intervals = want
            .intervals
            .iter()
            .map(|w| IntervalResult {
                template: w.template.clone(),
                end: w.end,
                metrics: self.metrics.query(
                    self.now,
                    (w.start, w.end),
                    (w.stable_start, w.stable_end),
                ),
            })
            .collect();
        let obs = Observations {
            traffic: self.lb.read(),
            canary_health: Observed::Ok(self.lb.canary_health),
            intervals,
            ..Default::default()
        };
        let decision = decide(ctx, status.as_ref(), &obs, &self.commands, self.now);
        if decision.changed {
            self.stored = serde_json::to_string(&decision.status).ok();
        }
        let applied = decision.status.last_command_id;
        self.commands.retain(|c| c.id > applied);
        self.events.extend(decision.events);
        if !crash_before_acting {
            for action in &decision.actions {
                match action {
                    Action::SetWeights { weights, .. } => {
                        // A failed write is retried by the next reconcile.
                        let _ = self.lb.write(self.now, *weights);
                    }
                }
            }
        }
        self.seen.push((self.now, self.lb.canary_percent()));
        decision.requeue_after_ms
    }

    /// One reconcile, then time passes until the next is due.
    pub fn step(&mut self) {
        let requeue = self.tick_with(false);
        let wait = requeue
            .unwrap_or(self.reconcile_interval_ms)
            .clamp(1_000, self.reconcile_interval_ms);
        self.advance_to(self.now.plus_ms(wait));
    }

    /// Steps until `done` holds or `limit_ms` of simulated time has passed.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&Harness) -> bool) -> bool {
        let until = self.now.plus_ms(limit_ms);
        while self.now < until {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// The phase of the stored status.
    pub fn phase(&self) -> Option<rollout_core::Phase> {
        self.status().map(|s| s.phase)
    }
}
