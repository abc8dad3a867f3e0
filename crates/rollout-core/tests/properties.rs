//! Properties of the decision over random specs, observation sequences and
//! override orders. At every tick:
//! - weights stay within 0–100 and every write sums to 100;
//! - the canary weight never rises without a healthy canary, the previous
//!   weight seen applied, and (where analysis gates the step) a passing
//!   verdict at the current weight or a person's promote;
//! - after abort, failure or an immediate rollback the desired canary weight is 0;
//! - a pending run never writes production weights (unless returning its own);
//! - deciding twice on the same inputs gives the same result;
//! - nothing panics;
//! - with two traffic targets (`additionalTargets`), every write of a
//!   decision carries the same weights, and the weight never rises unless
//!   every target was seen holding the previous one.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::observe::TargetObservations;
use rollout_core::{
    decide, plan, Action, Command, CommandKind, Context, EventKind, ForwardWeights, IntervalResult,
    ObservationError, Observations, Observed, Phase, RolloutStatus, TargetHealth, Time,
};
use rollout_spec::{load, AnalysisTemplateSpec, Rollout};

#[derive(Debug, Clone)]
enum Step {
    Weight(u8),
    Pause(Option<u16>),
}

#[derive(Debug, Clone)]
struct SpecShape {
    steps: Vec<Step>,
    analysis: bool,
    failure_limit: u32,
    blue_green: Option<(bool, bool, bool)>,
    rollback: Option<Vec<u8>>,
    deadline_min: u16,
    /// A second traffic target (canary strategy only).
    two_targets: bool,
}

fn spec_shape() -> impl Strategy<Value = SpecShape> {
    let step = prop_oneof![
        3 => (0u8..=100).prop_map(Step::Weight),
        1 => proptest::option::of(0u16..900).prop_map(Step::Pause),
    ];
    (
        proptest::collection::vec(step, 0..7),
        any::<bool>(),
        0u32..3,
        proptest::option::weighted(0.25, (any::<bool>(), any::<bool>(), any::<bool>())),
        proptest::option::weighted(0.2, proptest::collection::vec(0u8..=100, 1..4)),
        1u16..40,
        proptest::bool::weighted(0.3),
    )
        .prop_map(
            |(steps, analysis, failure_limit, blue_green, rollback, deadline_min, two)| SpecShape {
                steps,
                analysis,
                failure_limit,
                blue_green,
                rollback,
                deadline_min,
                two_targets: two && blue_green.is_none(),
            },
        )
}

fn yaml(shape: &SpecShape) -> String {
    let mut steps: Vec<String> = shape
        .steps
        .iter()
        .map(|s| match s {
            Step::Weight(w) => format!("{{setWeight: {w}}}"),
            Step::Pause(Some(d)) => format!("{{pause: {{duration: {d}s}}}}"),
            Step::Pause(None) => "{pause: {}}".into(),
        })
        .collect();
    steps.push("{setWeight: 100}".into());
    let strategy = match shape.blue_green {
        Some((auto, pre, post)) => {
            let mut s = format!("blueGreen: {{autoPromotion: {auto}");
            if pre {
                s.push_str(", prePromotionAnalysis: {templates: [t], duration: 2m}");
            }
            if post {
                s.push_str(", postPromotionAnalysis: {templates: [t], duration: 2m}");
            }
            s + "}"
        }
        None => format!("canary: {{steps: [{}]}}", steps.join(", ")),
    };
    let analysis = if shape.analysis && shape.blue_green.is_none() {
        "  analysis: {interval: 1m, templates: [t]}\n"
    } else {
        ""
    };
    let rollback = match &shape.rollback {
        Some(ws) => {
            let mut sorted = ws.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let steps: Vec<String> = sorted
                .iter()
                .map(|w| format!("{{setWeight: {w}}}, {{pause: {{duration: 30s}}}}"))
                .collect();
            format!("  rollback: {{steps: [{}]}}\n", steps.join(", "))
        }
        None => String::new(),
    };
    let second = if shape.two_targets {
        r#"  additionalTargets:
    - name: eu
      trafficRouting: {alb: {listenerArn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/6a7b8c9d0e1f2a3b/4c5d6e7f8a9b0c1d"}}
      stable: {targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/blue/1a2b3c4d5e6f7a8b"}
      canary: {targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/green/2b3c4d5e6f7a8b9c"}
"#
    } else {
        ""
    };
    format!(
        r#"apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: p}}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {{targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067"}}
  canary: {{targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60"}}
  progressDeadline: {}m
{second}  strategy:
    {strategy}
{analysis}{rollback}---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: t}}
spec:
  alb: {{delay: 30s, errorRate: {{maxIncrease: 50%}}}}
  failureLimit: {}
  inconclusiveLimit: 3
"#,
        shape.deadline_min, shape.failure_limit
    )
}

#[derive(Debug, Clone, Copy)]
enum Lb {
    /// The load balancer applied the last write.
    Follows,
    /// It has not caught up yet.
    Lags,
    /// Someone else set these weights.
    Tampered(u32, u32, u32),
    /// The read failed.
    Throttled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Nothing,
    Good,
    Bad,
    Thin,
    Error,
}

#[derive(Debug, Clone)]
struct TickInput {
    dt_s: u16,
    lb: Lb,
    /// The second target's load balancer (when the spec has one).
    lb2: Lb,
    healthy: u32,
    answer: Answer,
    command: Option<CommandKind>,
    new_revision: bool,
}

fn tick_input() -> impl Strategy<Value = TickInput> {
    let lb = || {
        prop_oneof![
            8 => Just(Lb::Follows),
            2 => Just(Lb::Lags),
            1 => (0u32..1000, 0u32..1000, 0u32..3).prop_map(|(a, b, c)| Lb::Tampered(a, b, c)),
            1 => Just(Lb::Throttled),
        ]
    };
    let answer = prop_oneof![
        2 => Just(Answer::Nothing),
        6 => Just(Answer::Good),
        1 => Just(Answer::Bad),
        2 => Just(Answer::Thin),
        1 => Just(Answer::Error),
    ];
    let command = proptest::option::weighted(
        0.1,
        prop_oneof![
            Just(CommandKind::Abort),
            any::<bool>().prop_map(|full| CommandKind::Promote { full }),
            Just(CommandKind::Pause),
            Just(CommandKind::Resume),
            Just(CommandKind::Retry),
        ],
    );
    (
        1u16..200,
        (lb(), lb()),
        prop_oneof![1 => Just(0u32), 5 => Just(2u32)],
        answer,
        command,
        proptest::bool::weighted(0.03),
    )
        .prop_map(
            |(dt_s, (lb, lb2), healthy, answer, command, new_revision)| TickInput {
                dt_s,
                lb,
                lb2,
                healthy,
                answer,
                command,
                new_revision,
            },
        )
}

fn arm(requests: f64, errors: f64) -> ArmSample {
    ArmSample {
        requests: Some(requests),
        errors: Some(errors),
        latency: Some(0.05),
        latency_cv: None,
    }
}

fn run(shape: &SpecShape, ticks: &[TickInput]) -> Result<(), TestCaseError> {
    let text = yaml(shape);
    let set = match load([("p.yaml", text.as_str())], &[]) {
        Ok(set) => set,
        // A generated shape the validator refuses (e.g. a rollback step
        // without room): not a case for the core.
        Err(_) => return Ok(()),
    };
    let mut rollout: Rollout = set.rollouts[0].value.clone();
    let templates: BTreeMap<String, AnalysisTemplateSpec> = set
        .templates
        .iter()
        .map(|t| (t.value.metadata.name.to_string(), t.value.spec.clone()))
        .collect();
    let gradual = shape.rollback.is_some();
    let mut now = Time::from_millis(1_795_845_600_000);
    let mut lb = ForwardWeights {
        stable: 1,
        canary: 0,
        other: 0,
    };
    let mut last_write: Option<ForwardWeights> = None;
    let mut lb2 = lb;
    let mut last_write2: Option<ForwardWeights> = None;
    // The desired weight each target was last seen holding (two targets).
    let mut held: [Option<u8>; 2] = [None, None];
    let mut status: Option<RolloutStatus> = None;
    let mut next_id = 0;
    let mut revision = 1;
    for t in ticks {
        now = now.plus_ms(u64::from(t.dt_s) * 1000);
        if t.new_revision {
            revision += 1;
            rollout.spec.revision = format!("r{revision}");
        }
        follow(&mut lb, t.lb, last_write);
        follow(&mut lb2, t.lb2, last_write2);
        let ctx = Context {
            rollout: &rollout,
            templates: &templates,
        };
        let wanted = plan(ctx, status.as_ref(), now);
        let intervals: Vec<IntervalResult> = wanted
            .intervals
            .iter()
            .filter(|_| t.answer != Answer::Nothing)
            .map(|w| IntervalResult {
                template: w.template.clone(),
                end: w.end,
                metrics: match t.answer {
                    Answer::Good => Ok(IntervalMetrics {
                        stable: arm(1000.0, 1.0),
                        canary: arm(1000.0, 1.0),
                        custom: Vec::new(),
                        merged: 0,
                    }),
                    Answer::Bad => Ok(IntervalMetrics {
                        stable: arm(1000.0, 1.0),
                        canary: arm(1000.0, 90.0),
                        custom: Vec::new(),
                        merged: 0,
                    }),
                    Answer::Thin => Ok(IntervalMetrics {
                        stable: arm(5.0, 0.0),
                        canary: ArmSample::default(),
                        custom: Vec::new(),
                        merged: 0,
                    }),
                    _ => Err(ObservationError {
                        fatal: false,
                        message: "unavailable".into(),
                    }),
                },
            })
            .collect();
        // Only what the plan asked for, as the daemon does.
        let health = if wanted.canary_health {
            Observed::Ok(TargetHealth {
                healthy: t.healthy,
                total: 2,
            })
        } else {
            Observed::Missing
        };
        let obs = Observations {
            traffic: read(t.lb, lb),
            canary_health: health.clone(),
            intervals,
            more_targets: if shape.two_targets {
                vec![TargetObservations {
                    traffic: read(t.lb2, lb2),
                    canary_health: health,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let commands: Vec<Command> = t
            .command
            .map(|kind| {
                next_id += 1;
                Command {
                    id: next_id,
                    kind,
                    actor: "p".into(),
                    reason: None,
                    at: now,
                }
            })
            .into_iter()
            .collect();

        let reads = [
            obs.traffic.clone(),
            obs.more_targets
                .first()
                .map_or_else(|| obs.traffic.clone(), |m| m.traffic.clone()),
        ];
        if let Some(prev) = &status {
            see(&mut held, &reads, prev.canary_weight);
        }
        let d = decide(ctx, status.as_ref(), &obs, &commands, now);
        prop_assert_eq!(
            &d,
            &decide(ctx, status.as_ref(), &obs, &commands, now),
            "deterministic"
        );
        let st = &d.status;
        prop_assert!(st.canary_weight <= 100);
        if let Some(o) = st.observed_weights {
            // Whole percentages; 0 only for a forward action whose weights
            // are all 0 (then nothing is pretended).
            let sum = u32::from(o.stable) + u32::from(o.canary) + u32::from(o.other);
            let all_zero = obs
                .traffic
                .ok()
                .is_some_and(|fw| fw.stable + fw.canary + fw.other == 0);
            prop_assert!(sum == 100 || (sum == 0 && all_zero), "observed {:?}", o);
        }
        for a in &d.actions {
            let Action::SetWeights { weights, .. } = a;
            prop_assert_eq!(u32::from(weights.stable) + u32::from(weights.canary), 100);
            prop_assert_eq!(weights.other, 0);
            prop_assert_eq!(weights.canary, st.canary_weight);
        }
        if matches!(st.phase, Phase::Aborted | Phase::Failed)
            || (st.phase == Phase::RolledBack && !gradual)
        {
            prop_assert_eq!(st.canary_weight, 0, "phase {:?}", st.phase);
        }
        if st.phase == Phase::Pending && st.returning_from.is_none() {
            prop_assert!(d.actions.is_empty(), "a pending run wrote weights");
        }
        if let Some(prev) = &status {
            let sends_to_canary = d
                .actions
                .iter()
                .any(|a| matches!(a, Action::SetWeights { weights, .. } if weights.canary > 0));
            if st.run != prev.run {
                // A new run (a new revision, or a retry) starts from stable
                // carrying all traffic, as read now: the previous run's
                // unverified desired weight is not where it starts from.
                if sends_to_canary {
                    prop_assert!(t.healthy > 0, "started with no healthy canary target");
                    let on_stable = |o: &Observed<ForwardWeights>| {
                        o.ok().is_some_and(ForwardWeights::stable_carries_all)
                    };
                    prop_assert!(
                        on_stable(&obs.traffic)
                            && obs.more_targets.iter().all(|m| on_stable(&m.traffic)),
                        "a run wrote weights before stable was seen carrying all traffic"
                    );
                }
            } else if st.canary_weight > prev.canary_weight {
                prop_assert!(t.healthy > 0, "raised with no healthy canary target");
                let holds_prev = |o: &Observed<ForwardWeights>| {
                    o.ok().is_some_and(|fw| {
                        fw.matches(rollout_core::Weights::for_canary(prev.canary_weight))
                    })
                };
                let prev_seen = prev.weight_verified_at.is_some()
                    || (holds_prev(&obs.traffic)
                        && obs.more_targets.iter().all(|m| holds_prev(&m.traffic)));
                prop_assert!(
                    prev_seen,
                    "raised before the previous weight was seen applied"
                );
                if shape.two_targets {
                    prop_assert!(
                        held.iter().all(|h| *h == Some(prev.canary_weight)),
                        "raised {} -> {} before every target was seen holding {} ({:?})",
                        prev.canary_weight,
                        st.canary_weight,
                        prev.canary_weight,
                        held
                    );
                }
                let promoted = prev.step_promoted
                    || d.events.iter().any(|e| e.kind == EventKind::Promoted)
                    || prev.blue_green.is_some_and(|b| b.preview_passed);
                let gated = if shape.blue_green.is_some() {
                    shape.blue_green.is_some_and(|(_, pre, _)| pre)
                } else {
                    shape.analysis && prev.canary_weight > 0
                };
                if gated && !promoted {
                    let passed_before = prev
                        .analysis
                        .templates
                        .get("t")
                        .is_some_and(|a| a.passes > 0);
                    let passed_now = d.events.iter().any(|e| {
                        e.kind == EventKind::AnalysisJudged && e.message.contains(": pass (")
                    });
                    prop_assert!(
                        passed_before || passed_now,
                        "raised {} -> {} without a passing verdict",
                        prev.canary_weight,
                        st.canary_weight
                    );
                }
            }
        }
        for a in &d.actions {
            let Action::SetWeights {
                weights, target, ..
            } = a;
            prop_assert!(*target == 0 || (*target == 1 && shape.two_targets));
            let w = Some(ForwardWeights {
                stable: u32::from(weights.stable),
                canary: u32::from(weights.canary),
                other: 0,
            });
            if *target == 0 {
                last_write = w;
            } else {
                last_write2 = w;
            }
        }
        if status
            .as_ref()
            .is_none_or(|p| p.canary_weight != d.status.canary_weight || p.run != d.status.run)
        {
            // A new desired weight (or run): seen from now on, this
            // tick's reads included (a run starts on weights it just read).
            held = [None, None];
            see(&mut held, &reads, d.status.canary_weight);
        }
        status = Some(d.status);
    }
    Ok(())
}

/// The load balancer after a tick: it applies the last write, lags, or
/// someone else sets it.
fn follow(lb: &mut ForwardWeights, how: Lb, last_write: Option<ForwardWeights>) {
    match how {
        Lb::Follows => {
            if let Some(w) = last_write {
                *lb = w;
            }
        }
        Lb::Lags | Lb::Throttled => {}
        Lb::Tampered(s, c, o) => {
            *lb = ForwardWeights {
                stable: s,
                canary: c,
                other: o,
            }
        }
    }
}

/// Notes each target whose read shows `weight`.
fn see(held: &mut [Option<u8>; 2], reads: &[Observed<ForwardWeights>; 2], weight: u8) {
    let w = rollout_core::Weights::for_canary(weight);
    for (h, o) in held.iter_mut().zip(reads) {
        if o.ok().is_some_and(|fw| fw.matches(w)) {
            *h = Some(weight);
        }
    }
}

/// What reading it gives.
fn read(how: Lb, lb: ForwardWeights) -> Observed<ForwardWeights> {
    match how {
        Lb::Throttled => Observed::Err(ObservationError {
            fatal: false,
            message: "Throttling".into(),
        }),
        _ => Observed::Ok(lb),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_inputs(
        shape in spec_shape(),
        ticks in proptest::collection::vec(tick_input(), 1..80),
    ) {
        run(&shape, &ticks)?;
    }
}

/// A deterministic, long run of the same generator: many more ticks than a
/// proptest case, so late-run states (gradual rollbacks, retries after
/// supersedes) are reached too.
#[test]
fn long_random_runs_keep_the_invariants() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(Default::default()),
    );
    for _ in 0..40 {
        let shape = spec_shape().new_tree(&mut runner).expect("shape").current();
        let ticks = proptest::collection::vec(tick_input(), 400..500)
            .new_tree(&mut runner)
            .expect("ticks")
            .current();
        if let Err(e) = run(&shape, &ticks) {
            panic!("{e}\n{}", yaml(&shape));
        }
    }
}
