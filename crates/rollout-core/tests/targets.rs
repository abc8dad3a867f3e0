//! A rollout over several traffic targets (`spec.additionalTargets`): every
//! target must hold a step before it counts, every target is written, each
//! target and the pooled arms are judged, and a failure anywhere returns
//! every target to stable.

mod support;

use std::collections::BTreeMap;

use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::observe::TargetObservations;
use rollout_core::{
    decide, plan, Action, Context, Decision, ForwardWeights, IntervalResult, Observations,
    Observed, Phase, RolloutStatus, TargetHealth, Time,
};
use rollout_spec::{AnalysisTemplateSpec, Rollout};

const DOC: &str = r#"
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: api}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067"}
  canary: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60"}
  additionalTargets:
    - name: eu
      trafficRouting:
        alb: {listenerArn: "arn:aws:elasticloadbalancing:eu-west-1:210987654321:listener/app/shop/6a7b8c9d0e1f2a3b/4c5d6e7f8a9b0c1d"}
      stable: {targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:210987654321:targetgroup/blue/1a2b3c4d5e6f7a8b"}
      canary: {targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:210987654321:targetgroup/green/2b3c4d5e6f7a8b9c"}
  progressDeadline: 10m
  strategy:
    canary:
      steps: [{setWeight: 10}, {pause: {duration: 5m}}, {setWeight: 100}]
  analysis: {interval: 1m, templates: [t]}
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: t}
spec:
  alb:
    delay: 60s
    errorRate: {maxIncrease: 50%}
    minRequests: 50
  judge: threshold
  alpha: 3%
"#;

fn spec() -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    support::rollout_and_templates("targets.yaml", DOC)
}

fn lb(canary: u32) -> Observed<ForwardWeights> {
    Observed::Ok(ForwardWeights {
        stable: 100 - canary,
        canary,
        other: 0,
    })
}

fn healthy() -> Observed<TargetHealth> {
    Observed::Ok(TargetHealth {
        healthy: 2,
        total: 2,
    })
}

/// Both targets' weights (main, eu), healthy canaries, and `intervals`.
fn seen(main: u32, eu: u32, intervals: Vec<IntervalResult>) -> Observations {
    Observations {
        traffic: lb(main),
        canary_health: healthy(),
        intervals,
        more_targets: vec![TargetObservations {
            traffic: lb(eu),
            canary_health: healthy(),
        }],
        ..Default::default()
    }
}

const START: Time = Time::from_millis(1_795_845_590_000);

fn at(s: i64) -> Time {
    START.plus_ms(u64::try_from(s * 1000).expect("positive"))
}

fn writes(d: &Decision) -> Vec<(u32, u8)> {
    d.actions
        .iter()
        .map(|a| match a {
            Action::SetWeights {
                weights, target, ..
            } => (*target, weights.canary),
        })
        .collect()
}

fn step(status: Option<&RolloutStatus>, obs: &Observations, t: i64) -> (Decision, RolloutStatus) {
    let (rollout, templates) = spec();
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let d = decide(ctx, status, obs, &[], at(t));
    let st = d.status.clone();
    (d, st)
}

/// The run at 10% on both targets, seen applied (the analysis started).
fn at_ten() -> RolloutStatus {
    let (_, st) = step(None, &seen(0, 0, vec![]), 0);
    let (d, st) = step(Some(&st), &seen(0, 0, vec![]), 1);
    assert_eq!(writes(&d), vec![(0, 10), (1, 10)], "{}", st.message);
    let (_, st) = step(Some(&st), &seen(10, 10, vec![]), 2);
    assert!(st.weight_verified_at.is_some(), "{}", st.message);
    st
}

#[test]
fn a_run_starts_only_when_every_target_is_on_stable() {
    let (d, st) = step(None, &seen(0, 20, vec![]), 0);
    assert_eq!(st.phase, Phase::Pending);
    assert!(d.actions.is_empty());
    assert!(
        st.message
            .starts_with("target `eu`: waiting for the stable target group"),
        "{}",
        st.message
    );
    let (_, st) = step(Some(&st), &seen(0, 0, vec![]), 1);
    assert_eq!(st.phase, Phase::Progressing, "{}", st.message);
}

#[test]
fn a_step_counts_only_once_every_target_holds_it() {
    let (_, st) = step(None, &seen(0, 0, vec![]), 0);
    let (d, st) = step(Some(&st), &seen(0, 0, vec![]), 1);
    assert_eq!(writes(&d), vec![(0, 10), (1, 10)]);
    // The main target took the write, eu did not (yet): not verified, and
    // only eu is written again.
    let (d, st) = step(Some(&st), &seen(10, 0, vec![]), 2);
    assert!(st.weight_verified_at.is_none());
    assert!(st.analysis.origin.is_none());
    assert_eq!(writes(&d), vec![(1, 10)]);
    assert_eq!(st.targets.len(), 2);
    assert!(st.targets[0].holds_run_weights && !st.targets[1].holds_run_weights);
    assert_eq!(st.targets[1].name, "eu");
    // eu not read this time: still not verified.
    let mut partly = seen(10, 10, vec![]);
    partly.more_targets[0].traffic = Observed::Missing;
    let (_, st) = step(Some(&st), &partly, 3);
    assert!(st.weight_verified_at.is_none());
    let (d, st) = step(Some(&st), &seen(10, 10, vec![]), 4);
    assert!(st.weight_verified_at.is_some());
    assert!(d.actions.is_empty());
    assert!(st.targets.iter().all(|t| t.holds_run_weights));
}

/// The intervals due at `t` (their units' names and windows).
fn due(st: &RolloutStatus, t: i64) -> Vec<rollout_core::IntervalRequest> {
    let (rollout, templates) = spec();
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    plan(ctx, Some(st), at(t)).intervals
}

#[test]
fn each_target_and_the_pooled_arms_are_judged() {
    let st = at_ten();
    let due = due(&st, 200);
    let mut units: Vec<&str> = due.iter().map(|w| w.template.as_str()).collect();
    units.sort_unstable();
    units.dedup();
    assert_eq!(units, ["t", "t@eu", "t@main"]);
    // Each unit's alpha is the template's divided among the three.
    let (rollout, templates) = spec();
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let expanded = rollout_core::decide::expand(ctx).expect("several targets");
    let a = expanded.ctx().templates["t@eu"].alpha.value();
    assert!((a - 1.0).abs() < 1e-12, "{a}");
}

fn metrics(bad: bool) -> IntervalMetrics {
    let arm = |errors: f64| ArmSample {
        requests: Some(1_000.0),
        errors: Some(errors),
        latency: Some(0.05),
        latency_cv: None,
    };
    IntervalMetrics {
        stable: arm(1.0),
        canary: arm(if bad { 50.0 } else { 1.0 }),
        ..Default::default()
    }
}

#[test]
fn a_canary_bad_on_one_target_rolls_every_target_back() {
    let st = at_ten();
    let due = due(&st, 200);
    assert!(!due.is_empty());
    // Good on main and pooled, bad on eu alone.
    let results = due
        .iter()
        .map(|w| IntervalResult {
            template: w.template.clone(),
            end: w.end,
            metrics: Ok(metrics(w.template == "t@eu")),
        })
        .collect();
    let (d, st) = step(Some(&st), &seen(10, 10, results), 200);
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert!(st.message.contains("`t@eu`"), "{}", st.message);
    assert_eq!(writes(&d), vec![(0, 0), (1, 0)]);
    // Until both are seen on stable, each one still holding canary traffic
    // is written again.
    let (d, _) = step(Some(&st), &seen(0, 10, vec![]), 201);
    assert_eq!(writes(&d), vec![(1, 0)]);
}

#[test]
fn drift_on_one_target_pauses_the_run_naming_it() {
    let st = at_ten();
    let (d, st) = step(Some(&st), &seen(10, 30, vec![]), 5);
    assert_eq!(st.phase, Phase::Paused, "{}", st.message);
    assert!(
        st.message
            .starts_with("the load balancer of target `eu` holds stable 70 / canary 30"),
        "{}",
        st.message
    );
    assert!(d.actions.is_empty(), "hands off while paused for drift");
}

#[test]
fn a_fatal_read_of_one_target_fails_the_run_naming_it() {
    let st = at_ten();
    let mut obs = seen(10, 10, vec![]);
    obs.more_targets[0].traffic = Observed::Err(rollout_core::ObservationError {
        fatal: true,
        message: "listener not found".into(),
    });
    let (_, st) = step(Some(&st), &obs, 5);
    assert_eq!(st.phase, Phase::Failed);
    assert!(
        st.message.contains("target `eu`: listener not found"),
        "{}",
        st.message
    );
}

fn counted(requests: f64, errors: f64, latency: f64) -> ArmSample {
    ArmSample {
        requests: Some(requests),
        errors: Some(errors),
        latency: Some(latency),
        latency_cv: None,
    }
}

#[test]
fn pooled_arms_add_up_over_the_same_interval() {
    let (_, templates) = spec();
    let a = IntervalMetrics {
        stable: counted(900.0, 9.0, 0.1),
        canary: counted(100.0, 1.0, 0.1),
        ..Default::default()
    };
    let b = IntervalMetrics {
        stable: counted(300.0, 3.0, 0.2),
        canary: counted(100.0, 30.0, 0.3),
        ..Default::default()
    };
    let p = rollout_core::decide::pool(&templates["t"], vec![Ok(a), Ok(b)]).expect("pooled");
    assert_eq!(p.stable.requests, Some(1_200.0));
    assert_eq!(p.canary.errors, Some(31.0));
    assert_eq!(p.merged, 0);
    let lat = p.canary.latency.expect("latency");
    assert!((lat - 0.2).abs() < 1e-9, "{lat}");
}

#[test]
fn a_fatal_error_of_any_target_is_the_pooled_answer() {
    let (_, templates) = spec();
    let transient = rollout_core::ObservationError {
        fatal: false,
        message: "slow".into(),
    };
    let fatal = rollout_core::ObservationError {
        fatal: true,
        message: "denied".into(),
    };
    let got = rollout_core::decide::pool(
        &templates["t"],
        vec![
            Ok(IntervalMetrics::default()),
            Err(transient),
            Err(fatal.clone()),
        ],
    );
    assert_eq!(got, Err(fatal));
}

#[test]
fn a_unit_reads_its_target_or_every_target() {
    let (rollout, _) = spec();
    let s = &rollout.spec;
    assert_eq!(
        rollout_core::decide::unit_reads(s, "t"),
        Some(("t", vec![0, 1]))
    );
    assert_eq!(
        rollout_core::decide::unit_reads(s, "t@eu"),
        Some(("t", vec![1]))
    );
    assert_eq!(
        rollout_core::decide::unit_reads(s, "t@main"),
        Some(("t", vec![0]))
    );
    assert_eq!(rollout_core::decide::unit_reads(s, "t@mars"), None);
}
