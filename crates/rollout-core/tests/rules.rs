//! The decision rules, one scenario each, written as tables of ticks: at this
//! time, the load balancer holds these weights, the canary is this healthy,
//! analysis answers this, a person asks this; then the phase, the desired
//! canary weight and the weight write must be these. All go through
//! [`check`].

mod support;

use std::collections::BTreeMap;

use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::{
    decide, plan, Action, Command, CommandKind, Context, EventKind, ForwardWeights, IntervalResult,
    ObservationError, Observations, Observed, Phase, RolloutStatus, TargetHealth, Time,
};
use rollout_spec::{load, AnalysisTemplateSpec, Rollout};

const BASE: &str = r#"
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
  progressDeadline: 10m
  strategy:
    canary:
      steps: STEPS
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
  failureLimit: FAILURES
  inconclusiveLimit: 2
  consecutiveErrorLimit: 1
"#;

fn spec(steps: &str, failures: u32) -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    let text = BASE
        .replace("STEPS", steps)
        .replace("FAILURES", &failures.to_string());
    support::rollout_and_templates("rules.yaml", text.as_str())
}

/// What analysis answers for every interval that is due at a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// Nothing asked or nothing returned.
    Nothing,
    /// Both arms 0.1% errors on 1000 requests.
    Good,
    /// Canary 5% errors.
    Bad,
    /// 10 requests per arm: below minRequests.
    Thin,
    /// The metric source failed.
    Error,
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    /// Seconds since the start.
    at: i64,
    /// Canary percent on the load balancer (stable holds the rest); `None`:
    /// the read failed (throttled).
    lb: Option<u32>,
    /// Other target groups' raw weight.
    other: u32,
    healthy: u32,
    answer: Answer,
    command: Option<CommandKind>,
    revision: Option<&'static str>,
    // expectations
    phase: Phase,
    desired: u8,
    write: Option<u8>,
}

const T: Tick = Tick {
    at: 0,
    lb: Some(0),
    other: 0,
    healthy: 2,
    answer: Answer::Nothing,
    command: None,
    revision: None,
    phase: Phase::Progressing,
    desired: 0,
    write: None,
};

fn arm(requests: f64, errors: f64) -> ArmSample {
    ArmSample {
        requests: Some(requests),
        errors: Some(errors),
        latency: Some(0.05),
        latency_cv: None,
    }
}

/// Ten seconds before a minute boundary: a weight first seen at 10s starts
/// the analysis at once (intervals start on the grid of the 1m interval).
const START: Time = Time::from_millis(1_795_845_590_000);

/// Runs the ticks in order, checking each; returns the final status and every event.
fn check(steps: &str, failures: u32, ticks: &[Tick]) -> (RolloutStatus, Vec<rollout_core::Event>) {
    check_rollout(spec(steps, failures), ticks)
}

/// [`check`] for a rollout already built (to set fields the steps do not).
fn check_rollout(
    (mut rollout, templates): (Rollout, BTreeMap<String, AnalysisTemplateSpec>),
    ticks: &[Tick],
) -> (RolloutStatus, Vec<rollout_core::Event>) {
    let mut status: Option<RolloutStatus> = None;
    let mut events = Vec::new();
    let mut next_id = 1;
    for (i, t) in ticks.iter().enumerate() {
        if let Some(r) = t.revision {
            rollout.spec.revision = r.into();
        }
        let now = START.plus_ms(t.at as u64 * 1000);
        let ctx = Context {
            rollout: &rollout,
            templates: &templates,
        };
        let wanted = plan(ctx, status.as_ref(), now);
        let intervals = wanted
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
                        canary: arm(1000.0, 50.0),
                        custom: Vec::new(),
                        merged: 0,
                    }),
                    Answer::Thin => Ok(IntervalMetrics {
                        stable: arm(10.0, 0.0),
                        canary: arm(10.0, 0.0),
                        custom: Vec::new(),
                        merged: 0,
                    }),
                    _ => Err(ObservationError {
                        fatal: false,
                        message: "ServiceUnavailable".into(),
                    }),
                },
            })
            .collect();
        let obs = Observations {
            traffic: match t.lb {
                Some(c) => Observed::Ok(ForwardWeights {
                    stable: 100 - c,
                    canary: c,
                    other: t.other,
                }),
                None => Observed::Err(ObservationError {
                    fatal: false,
                    message: "Throttling".into(),
                }),
            },
            canary_health: Observed::Ok(TargetHealth {
                healthy: t.healthy,
                total: 2,
            }),
            intervals,
            ..Default::default()
        };
        let commands: Vec<Command> = t
            .command
            .map(|kind| {
                next_id += 1;
                Command {
                    id: next_id,
                    kind,
                    actor: "tester".into(),
                    reason: Some("test".into()),
                    at: now,
                }
            })
            .into_iter()
            .collect();
        let d = decide(ctx, status.as_ref(), &obs, &commands, now);
        // Deciding twice on the same inputs gives the same result.
        assert_eq!(d, decide(ctx, status.as_ref(), &obs, &commands, now));
        let write = d.actions.first().map(|a| match a {
            Action::SetWeights { weights, .. } => weights.canary,
        });
        let got = (d.status.phase, d.status.canary_weight, write);
        assert_eq!(
            got,
            (t.phase, t.desired, t.write),
            "tick {i} at {}s: (phase, desired, write); message: {}",
            t.at,
            d.status.message
        );
        events.extend(d.events);
        status = Some(d.status);
    }
    (status.expect("ticks"), events)
}

const STEPS_5_10_100: &str = "[{setWeight: 5}, {setWeight: 10}, {setWeight: 100}]";

#[test]
fn a_run_starts_only_when_stable_carries_all_traffic() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                lb: Some(20),
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 10,
                lb: Some(0),
                other: 5,
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 20,
                lb: None,
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 30,
                desired: 5,
                write: Some(5),
                ..T
            },
        ],
    );
    assert_eq!(st.current_step_index, 0);
}

#[test]
fn a_pending_run_never_moves_production_traffic() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                lb: Some(100),
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 600,
                lb: Some(100),
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 3600,
                lb: Some(100),
                phase: Phase::Pending,
                ..T
            },
        ],
    );
    assert!(
        st.message.contains("swap stable and canary"),
        "{}",
        st.message
    );
}

#[test]
fn weights_advance_only_after_they_are_seen_and_a_pass_at_them() {
    check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            // The load balancer has not caught up: write again, do not advance.
            Tick {
                at: 5,
                lb: Some(0),
                desired: 5,
                write: Some(5),
                ..T
            },
            // Seen at 10s: analysis origin; the next raise waits for a pass.
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 60,
                lb: Some(5),
                desired: 5,
                ..T
            },
            // First interval [10s, 70s) is due at 130s (60s delay).
            Tick {
                at: 129,
                lb: Some(5),
                answer: Answer::Good,
                desired: 5,
                ..T
            },
            Tick {
                at: 130,
                lb: Some(5),
                answer: Answer::Good,
                desired: 10,
                write: Some(10),
                ..T
            },
            Tick {
                at: 140,
                lb: Some(10),
                desired: 10,
                ..T
            },
            // Seen at 140s; intervals lie on the 1m grid, so [130s, 190s)
            // began before the weight was seen: its pass does not count.
            Tick {
                at: 250,
                lb: Some(10),
                answer: Answer::Good,
                desired: 10,
                ..T
            },
            // [190s, 250s) is wholly at 10%: due at 310s.
            Tick {
                at: 310,
                lb: Some(10),
                answer: Answer::Good,
                desired: 100,
                write: Some(100),
                ..T
            },
            Tick {
                at: 320,
                lb: Some(100),
                phase: Phase::Succeeded,
                desired: 100,
                ..T
            },
            // Finished: nothing is written even when someone moves traffic.
            Tick {
                at: 330,
                lb: Some(50),
                phase: Phase::Succeeded,
                desired: 100,
                ..T
            },
        ],
    );
}

#[test]
fn inconclusive_analysis_never_advances_and_then_holds_for_a_person() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 130,
                lb: Some(5),
                answer: Answer::Thin,
                desired: 5,
                ..T
            },
            Tick {
                at: 190,
                lb: Some(5),
                answer: Answer::Thin,
                desired: 5,
                ..T
            },
            // The third inconclusive interval in a row exceeds inconclusiveLimit 2.
            Tick {
                at: 250,
                lb: Some(5),
                answer: Answer::Thin,
                phase: Phase::Paused,
                desired: 5,
                ..T
            },
            Tick {
                at: 900,
                lb: Some(5),
                answer: Answer::Good,
                phase: Phase::Paused,
                desired: 5,
                ..T
            },
            // Promote: goes on without the analysis gate for this step.
            Tick {
                at: 910,
                lb: Some(5),
                command: Some(CommandKind::Promote { full: false }),
                desired: 10,
                write: Some(10),
                ..T
            },
        ],
    );
    assert_eq!(st.current_step_index, 1);
}

#[test]
fn a_failed_interval_returns_all_traffic_at_once() {
    let (st, events) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 130,
                lb: Some(5),
                answer: Answer::Bad,
                phase: Phase::RolledBack,
                desired: 0,
                write: Some(0),
                ..T
            },
            Tick {
                at: 131,
                lb: Some(0),
                phase: Phase::RolledBack,
                ..T
            },
            Tick {
                at: 140,
                lb: Some(30),
                phase: Phase::RolledBack,
                ..T
            },
        ],
    );
    assert!(
        st.message
            .contains("analysis `t` failed 1 interval(s) (failureLimit 0)"),
        "{}",
        st.message
    );
    assert!(
        st.message
            .contains("error rate: canary 5.000% is above stable 0.100% + 50%"),
        "{}",
        st.message
    );
    let last = st.analysis.templates["t"]
        .last
        .as_ref()
        .expect("evidence kept");
    assert_eq!(last.result.metrics[0].canary, Some(0.05));
    assert!(events.iter().any(|e| e.kind == EventKind::RolledBack));
}

#[test]
fn failure_limit_tolerates_that_many_failed_intervals() {
    check(
        STEPS_5_10_100,
        1,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 130,
                lb: Some(5),
                answer: Answer::Bad,
                desired: 5,
                ..T
            },
            Tick {
                at: 190,
                lb: Some(5),
                answer: Answer::Good,
                desired: 10,
                write: Some(10),
                ..T
            },
            Tick {
                at: 200,
                lb: Some(10),
                desired: 10,
                ..T
            },
            Tick {
                at: 320,
                lb: Some(10),
                answer: Answer::Bad,
                phase: Phase::RolledBack,
                desired: 0,
                write: Some(0),
                ..T
            },
        ],
    );
}

#[test]
fn an_unhealthy_canary_blocks_every_raise() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick { healthy: 0, ..T },
            Tick {
                at: 60,
                healthy: 0,
                ..T
            },
            Tick {
                at: 70,
                healthy: 1,
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 80,
                lb: Some(5),
                healthy: 0,
                desired: 5,
                ..T
            },
            Tick {
                at: 250,
                lb: Some(5),
                healthy: 0,
                answer: Answer::Good,
                desired: 5,
                ..T
            },
            Tick {
                at: 260,
                lb: Some(5),
                healthy: 2,
                desired: 10,
                write: Some(10),
                ..T
            },
        ],
    );
    assert_eq!(st.current_step_index, 1);
}

#[test]
fn a_metric_error_retries_the_interval_and_counts_once_the_next_is_due() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            // Retried, not counted: the next interval is not due yet.
            Tick {
                at: 130,
                lb: Some(5),
                answer: Answer::Error,
                desired: 5,
                ..T
            },
            Tick {
                at: 140,
                lb: Some(5),
                answer: Answer::Error,
                desired: 5,
                ..T
            },
            // Two intervals due: the first counts as an error (1 of limit 1).
            Tick {
                at: 190,
                lb: Some(5),
                answer: Answer::Error,
                desired: 5,
                ..T
            },
            // Three due: a second error exceeds consecutiveErrorLimit 1.
            Tick {
                at: 250,
                lb: Some(5),
                answer: Answer::Error,
                phase: Phase::Failed,
                desired: 0,
                write: Some(0),
                ..T
            },
        ],
    );
    assert!(
        st.message.contains("failed 2 intervals in a row"),
        "{}",
        st.message
    );
}

#[test]
fn no_progress_within_the_deadline_fails_the_run() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 599,
                lb: Some(0),
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 600,
                lb: Some(0),
                phase: Phase::Failed,
                desired: 0,
                ..T
            },
        ],
    );
    assert!(
        st.message
            .starts_with("no progress for 10m: step 1 of 3: waiting for the load balancer"),
        "{}",
        st.message
    );
}

#[test]
fn a_timed_pause_is_not_a_lack_of_progress() {
    check(
        "[{setWeight: 5}, {pause: {duration: 1h}}, {setWeight: 100}]",
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 1800,
                lb: Some(5),
                answer: Answer::Good,
                desired: 5,
                ..T
            },
            Tick {
                at: 3609,
                lb: Some(5),
                answer: Answer::Good,
                desired: 5,
                ..T
            },
            Tick {
                at: 3610,
                lb: Some(5),
                answer: Answer::Good,
                desired: 100,
                write: Some(100),
                ..T
            },
        ],
    );
}

#[test]
fn abort_before_the_run_starts_moves_nothing() {
    check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                lb: Some(30),
                phase: Phase::Pending,
                ..T
            },
            Tick {
                at: 10,
                lb: Some(30),
                command: Some(CommandKind::Abort),
                phase: Phase::Aborted,
                ..T
            },
            Tick {
                at: 20,
                lb: Some(30),
                phase: Phase::Aborted,
                ..T
            },
        ],
    );
}

#[test]
fn commands_that_do_not_apply_are_recorded_and_ignored() {
    let (st, events) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                command: Some(CommandKind::Retry),
                desired: 5,
                ..T
            },
            Tick {
                at: 20,
                lb: Some(5),
                command: Some(CommandKind::Resume),
                desired: 5,
                ..T
            },
            Tick {
                at: 30,
                lb: Some(5),
                command: Some(CommandKind::Abort),
                phase: Phase::Aborted,
                desired: 0,
                write: Some(0),
                ..T
            },
            Tick {
                at: 40,
                lb: Some(0),
                command: Some(CommandKind::Promote { full: true }),
                phase: Phase::Aborted,
                ..T
            },
        ],
    );
    let ignored: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::CommandIgnored)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(ignored.len(), 3, "{ignored:?}");
    assert!(ignored[0].starts_with("retry by tester ignored"));
    assert!(ignored[2].contains("has ended (Aborted)"));
    assert_eq!(st.last_command_id, 5);
}

#[test]
fn a_new_revision_first_returns_traffic_then_starts_over() {
    let (st, events) = check(
        STEPS_5_10_100,
        0,
        &[
            Tick {
                desired: 5,
                write: Some(5),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(5),
                desired: 5,
                ..T
            },
            Tick {
                at: 20,
                lb: Some(5),
                revision: Some("r2"),
                phase: Phase::Pending,
                desired: 0,
                write: Some(0),
                ..T
            },
            Tick {
                at: 30,
                lb: Some(0),
                desired: 5,
                write: Some(5),
                ..T
            },
        ],
    );
    assert_eq!((st.run, st.revision.as_str()), (2, "r2"));
    assert_eq!(st.history[0].outcome, "Superseded");
    assert!(events.iter().any(|e| e.kind == EventKind::Superseded));
}

#[test]
fn a_new_revision_after_a_finished_run_waits_for_roles_to_be_swapped() {
    let (st, _) = check(
        "[{setWeight: 100}]",
        0,
        &[
            Tick {
                desired: 100,
                write: Some(100),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(100),
                phase: Phase::Succeeded,
                desired: 100,
                ..T
            },
            Tick {
                at: 20,
                lb: Some(100),
                revision: Some("r2"),
                phase: Phase::Pending,
                desired: 100,
                ..T
            },
        ],
    );
    assert_eq!(st.history[0].outcome, "Succeeded");
}

#[test]
fn a_no_op_reconcile_changes_nothing() {
    let (rollout, templates) = spec(STEPS_5_10_100, 0);
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let obs = |c| Observations {
        traffic: Observed::Ok(ForwardWeights {
            stable: 100 - c,
            canary: c,
            other: 0,
        }),
        canary_health: Observed::Ok(TargetHealth {
            healthy: 1,
            total: 1,
        }),
        intervals: vec![],
        ..Default::default()
    };
    let first = decide(ctx, None, &obs(0), &[], START);
    let second = decide(ctx, Some(&first.status), &obs(5), &[], START.plus_ms(1000));
    let steady = decide(ctx, Some(&second.status), &obs(5), &[], START.plus_ms(2000));
    assert!(!steady.changed, "nothing to write");
    assert!(steady.actions.is_empty() && steady.events.is_empty());
    assert_eq!(steady.status, second.status);
}

#[test]
fn analysis_added_to_a_running_rollout_starts_judging() {
    let (mut rollout, templates) = spec(
        "[{setWeight: 5}, {pause: {duration: 1h}}, {setWeight: 100}]",
        0,
    );
    let analysis = rollout.spec.analysis.take();
    let obs = |c| Observations {
        traffic: Observed::Ok(ForwardWeights {
            stable: 100 - c,
            canary: c,
            other: 0,
        }),
        canary_health: Observed::Ok(TargetHealth {
            healthy: 1,
            total: 1,
        }),
        intervals: vec![],
        ..Default::default()
    };
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let first = decide(ctx, None, &obs(0), &[], START);
    let verified = decide(ctx, Some(&first.status), &obs(5), &[], START.plus_ms(1_000));
    assert_eq!(
        verified.status.analysis.origin, None,
        "no analysis configured"
    );
    rollout.spec.analysis = analysis;
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let at = START.plus_ms(60_000);
    let d = decide(ctx, Some(&verified.status), &obs(5), &[], at);
    // Intervals lie on the 1m grid: the boundary at or before `at`.
    let boundary = START.plus_ms(10_000);
    assert_eq!(d.status.analysis.origin, Some(boundary));
    let due = plan(ctx, Some(&d.status), boundary.plus_ms(120_000));
    let (before, run): (Vec<_>, Vec<_>) = due.intervals.iter().partition(|w| w.end <= boundary);
    assert_eq!(run.len(), 1);
    // And, once, stable's hour before the run, to learn its noise.
    assert_eq!(before.len(), 60);
    assert_eq!(before[0].start.millis(), boundary.millis() - 3_600_000);
}

#[test]
fn a_run_paused_before_it_starts_moves_no_traffic() {
    let (st, _) = check(
        "[{setWeight: 100}]",
        0,
        &[
            Tick {
                desired: 100,
                write: Some(100),
                ..T
            },
            Tick {
                at: 10,
                lb: Some(100),
                phase: Phase::Succeeded,
                desired: 100,
                ..T
            },
            // A new revision, paused by hand at once, while someone has moved
            // the traffic: the new run has not started, so it writes nothing.
            Tick {
                at: 20,
                lb: Some(50),
                revision: Some("r2"),
                command: Some(CommandKind::Pause),
                phase: Phase::Paused,
                desired: 100,
                ..T
            },
            Tick {
                at: 30,
                lb: Some(50),
                phase: Phase::Paused,
                desired: 100,
                ..T
            },
        ],
    );
    assert!(st.started_at.is_none(), "the new run has not started");
}

#[test]
fn target_health_is_read_only_when_a_raise_may_follow() {
    let (rollout, templates) = spec(
        "[{setWeight: 5}, {pause: {duration: 1m}}, {setWeight: 100}]",
        0,
    );
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let obs = |c, health: bool| Observations {
        traffic: Observed::Ok(ForwardWeights {
            stable: 100 - c,
            canary: c,
            other: 0,
        }),
        canary_health: if health {
            Observed::Ok(TargetHealth {
                healthy: 1,
                total: 1,
            })
        } else {
            Observed::Missing
        },
        intervals: vec![],
        ..Default::default()
    };
    // Before the run: its first step raises.
    assert!(plan(ctx, None, START).canary_health);
    let first = decide(ctx, None, &obs(0, true), &[], START);
    assert_eq!(first.status.canary_weight, 5);
    // Seen at 5%: the run moves on to the pause; holding there needs no health.
    let at = START.plus_ms(2_000);
    let held = decide(ctx, Some(&first.status), &obs(5, false), &[], at);
    assert_eq!(held.status.current_step_index, 1, "{}", held.status.message);
    assert!(!plan(ctx, Some(&held.status), at.plus_ms(30_000)).canary_health);
    // The pause is over, but no interval at 5% has passed yet: the raise
    // cannot happen before one does, so neither health nor the weights are
    // read for it (each is an AWS call) until an interval falls due.
    let after = at.plus_ms(61_000);
    let wanted = plan(ctx, Some(&held.status), after);
    assert!(!wanted.canary_health);
    let waiting = decide(ctx, Some(&held.status), &obs(5, false), &[], after);
    assert_eq!(waiting.status.canary_weight, 5);
    assert!(waiting.actions.is_empty());
    assert!(
        waiting
            .status
            .message
            .contains("waiting for a passing analysis"),
        "{}",
        waiting.status.message
    );
    // When an interval falls due (it may pass), health is read with it.
    let due = at.plus_ms(70_000);
    let wanted = plan(ctx, Some(&waiting.status), due);
    assert!(!wanted.intervals.is_empty());
    assert!(wanted.canary_health);
    // A step without analysis raises as soon as its pause ends: health then.
    let (plain, none) = spec(
        "[{setWeight: 5}, {pause: {duration: 1m}}, {setWeight: 100}]",
        0,
    );
    let mut plain = plain;
    plain.spec.analysis = None;
    let ctx = Context {
        rollout: &plain,
        templates: &none,
    };
    assert!(plan(ctx, Some(&held.status), after).canary_health);
    let waiting = decide(ctx, Some(&held.status), &obs(5, false), &[], after);
    assert!(waiting.actions.is_empty());
    assert!(waiting.requeue_after_ms.is_some_and(|ms| ms <= 2_000));
    assert!(
        waiting
            .status
            .message
            .contains("waiting to read the canary's target health"),
        "{}",
        waiting.status.message
    );
}

const HOLD_AT_5: &str = "[{setWeight: 5}, {pause: {}}, {setWeight: 100}]";

/// Start, raise to 5%, see it, and wait at the pause step.
const AT_5: [Tick; 2] = [
    Tick {
        desired: 5,
        write: Some(5),
        ..T
    },
    Tick {
        at: 10,
        lb: Some(5),
        desired: 5,
        phase: Phase::Paused,
        ..T
    },
];

fn kinds(events: &[rollout_core::Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

#[test]
fn weights_someone_else_wrote_pause_the_run_with_its_hands_off() {
    let mut ticks = AT_5.to_vec();
    ticks.extend([
        // A person sets 100/0: drift; the run pauses and writes nothing.
        Tick {
            at: 20,
            lb: Some(0),
            desired: 5,
            phase: Phase::Paused,
            ..T
        },
        Tick {
            at: 30,
            lb: Some(0),
            desired: 5,
            phase: Phase::Paused,
            ..T
        },
        // Resumed: its weights go back, and it waits at its pause again.
        Tick {
            at: 40,
            lb: Some(0),
            command: Some(CommandKind::Resume),
            desired: 5,
            write: Some(5),
            phase: Phase::Paused,
            ..T
        },
        Tick {
            at: 50,
            lb: Some(5),
            desired: 5,
            phase: Phase::Paused,
            ..T
        },
    ]);
    let (st, events) = check(HOLD_AT_5, 0, &ticks);
    assert_eq!(kinds(&events, EventKind::WeightDrift), 1);
    let drift = events
        .iter()
        .find(|e| e.kind == EventKind::WeightDrift)
        .expect("drift");
    assert!(
        drift.message.contains("stable 100 / canary 0")
            && drift.message.contains("stable 95 / canary 5"),
        "{}",
        drift.message
    );
    assert!(st.weight_verified_at.is_some());
}

#[test]
fn on_drift_revert_writes_the_weights_back() {
    let (mut rollout, templates) = spec(HOLD_AT_5, 0);
    rollout.spec.on_drift = rollout_spec::OnDrift::Revert;
    let mut ticks = AT_5.to_vec();
    ticks.extend([
        Tick {
            at: 20,
            lb: Some(0),
            desired: 5,
            write: Some(5),
            phase: Phase::Paused,
            ..T
        },
        Tick {
            at: 30,
            lb: Some(5),
            desired: 5,
            phase: Phase::Paused,
            ..T
        },
    ]);
    let (_, events) = check_rollout((rollout, templates), &ticks);
    assert_eq!(kinds(&events, EventKind::WeightDrift), 1);
}

#[test]
fn target_groups_the_rollout_does_not_name_are_never_written_over() {
    for policy in [rollout_spec::OnDrift::Pause, rollout_spec::OnDrift::Revert] {
        let (mut rollout, templates) = spec(HOLD_AT_5, 0);
        rollout.spec.on_drift = policy;
        let mut ticks = AT_5.to_vec();
        ticks.extend([
            Tick {
                at: 20,
                lb: Some(5),
                other: 10,
                desired: 5,
                phase: Phase::Paused,
                ..T
            },
            Tick {
                at: 30,
                lb: Some(5),
                other: 10,
                desired: 5,
                phase: Phase::Paused,
                ..T
            },
            // Even an abort does not write over them: it says why.
            Tick {
                at: 40,
                lb: Some(5),
                other: 10,
                command: Some(CommandKind::Abort),
                phase: Phase::Aborted,
                ..T
            },
        ]);
        let (st, events) = check_rollout((rollout, templates), &ticks);
        assert_eq!(kinds(&events, EventKind::WeightDrift), 1, "{policy:?}");
        assert!(st.message.contains("does not name"), "{}", st.message);
        // Its notification says what the run became.
        let drift = events
            .iter()
            .find(|e| e.kind == EventKind::WeightDrift)
            .expect("a drift event");
        assert_eq!(drift.phase_after(), "Paused", "{}", drift.message);
    }
}

#[test]
fn delete_returns_traffic_to_stable_then_forgets_the_rollout() {
    let (rollout, templates) = spec(HOLD_AT_5, 0);
    let mut ticks = AT_5.to_vec();
    ticks.push(Tick {
        at: 20,
        lb: Some(5),
        command: Some(CommandKind::Delete),
        phase: Phase::Aborted,
        desired: 0,
        write: Some(0),
        ..T
    });
    let (st, events) = check_rollout((rollout.clone(), templates.clone()), &ticks);
    assert_eq!(kinds(&events, EventKind::Deleting), 1);
    assert!(st.deleting.is_some());
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let obs = |canary: u32| Observations {
        traffic: Observed::Ok(ForwardWeights {
            stable: 100 - canary,
            canary,
            other: 0,
        }),
        canary_health: Observed::Missing,
        intervals: Vec::new(),
        ..Default::default()
    };
    let now = START.plus_ms(30_000);
    // Still 5% on the canary: not yet.
    let d = decide(ctx, Some(&st), &obs(5), &[], now);
    assert!(!d.forget);
    assert_eq!(d.actions.len(), 1);
    // Stable carries all: forget it.
    let d = decide(ctx, Some(&st), &obs(0), &[], now);
    assert!(d.forget);
    assert!(d.actions.is_empty());
    // A new revision applied meanwhile does not start a run.
    let mut newer = rollout.clone();
    newer.spec.revision = "r2".into();
    let ctx = Context {
        rollout: &newer,
        templates: &templates,
    };
    let d = decide(ctx, Some(&st), &obs(5), &[], now);
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(d.status.canary_weight, 0);
}

#[test]
fn thousands_of_queued_commands_are_applied_in_bounded_batches() {
    let (rollout, templates) = spec(HOLD_AT_5, 0);
    let (st, _) = check_rollout((rollout.clone(), templates.clone()), &AT_5);
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let now = START.plus_ms(20_000);
    let commands: Vec<Command> = (1..=5_000)
        .map(|id| Command {
            id,
            kind: CommandKind::Abort,
            actor: "load".into(),
            reason: None,
            at: now,
        })
        .collect();
    let obs = Observations {
        traffic: Observed::Ok(ForwardWeights {
            stable: 95,
            canary: 5,
            other: 0,
        }),
        canary_health: Observed::Missing,
        intervals: Vec::new(),
        ..Default::default()
    };
    let d = decide(ctx, Some(&st), &obs, &commands, now);
    assert_eq!(d.status.phase, Phase::Aborted);
    assert_eq!(
        d.status.last_command_id,
        rollout_core::decide::MAX_COMMANDS_PER_DECISION as u64
    );
    assert!(d.events.len() <= 4, "{:?}", d.events);
    assert!(d
        .events
        .iter()
        .any(|e| e.kind == EventKind::CommandIgnored && e.message.contains("(99 times)")));
    assert!(
        d.requeue_after_ms.is_some_and(|ms| ms <= 1_000),
        "the rest soon"
    );
    // The next decision takes the next batch, and so on to the end.
    let mut st = d.status;
    let mut decisions = 1;
    while st.last_command_id < 5_000 {
        let d = decide(ctx, Some(&st), &obs, &commands, now);
        assert!(d.events.len() <= 2);
        st = d.status;
        decisions += 1;
    }
    assert_eq!(decisions, 50);
}

#[test]
fn the_load_balancer_is_read_as_urgently_as_the_decision_needs() {
    use rollout_core::{plan_reads, Reads, Urgency};
    let (rollout, templates) = spec(HOLD_AT_5, 0);
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let reads = |last: Option<i64>| Reads {
        last_traffic: last.map(|s| START.plus_ms(s as u64 * 1000)),
        drift_check_ms: 60_000,
        commands_queued: false,
        ..Reads::default()
    };
    let at = |s: u64| START.plus_ms(s * 1000);
    let urgency = |st: Option<&RolloutStatus>, now: Time, last: Option<i64>| {
        let p = plan_reads(ctx, st, now, reads(last));
        p.traffic.then_some(p.urgency)
    };
    // Never seen: read before its first run may start, behind the steps of
    // runs under way.
    assert_eq!(urgency(None, at(0), None), Some(Urgency::Routine));
    // A raise written, not yet seen: its read-back.
    let mut ticks = AT_5.to_vec();
    ticks.truncate(1);
    let (raising, _) = check(HOLD_AT_5, 0, &ticks);
    assert_eq!(
        urgency(Some(&raising), at(1), Some(0)),
        Some(Urgency::ReadBack)
    );
    // Holding at a pause: a drift check at its cadence, optional before.
    let (holding, _) = check(HOLD_AT_5, 0, &AT_5);
    assert_eq!(
        urgency(Some(&holding), at(30), Some(10)),
        Some(Urgency::Optional)
    );
    assert_eq!(
        urgency(Some(&holding), at(71), Some(10)),
        Some(Urgency::Routine)
    );
    // Aborted: returning traffic goes first.
    let mut ticks = AT_5.to_vec();
    ticks.push(Tick {
        at: 20,
        lb: Some(5),
        command: Some(CommandKind::Abort),
        phase: Phase::Aborted,
        write: Some(0),
        ..T
    });
    let (aborted, _) = check(HOLD_AT_5, 0, &ticks);
    assert_eq!(
        urgency(Some(&aborted), at(21), Some(20)),
        Some(Urgency::Rollback)
    );
    // Once its weights were seen, an ended run reads nothing.
    ticks.push(Tick {
        at: 30,
        lb: Some(0),
        phase: Phase::Aborted,
        ..T
    });
    let (ended, _) = check(HOLD_AT_5, 0, &ticks);
    assert_eq!(urgency(Some(&ended), at(100), Some(30)), None);
}

#[test]
fn a_weight_write_takes_its_place_in_the_api_budget_from_the_decision() {
    use rollout_core::{write_urgency, ForwardWeights, Urgency, Weights};
    let fw = |stable, canary| ForwardWeights {
        stable,
        canary,
        other: 0,
    };
    // A run's first raise waits behind the steps of runs under way.
    assert_eq!(
        write_urgency(fw(100, 0), Weights::for_canary(5)),
        Urgency::Routine
    );
    // A raise of a run under way, and its read-back.
    assert_eq!(
        write_urgency(fw(95, 5), Weights::for_canary(10)),
        Urgency::ReadBack
    );
    // Raw weights on another scale (1 and 3 is 75%): still a raise.
    assert_eq!(
        write_urgency(fw(1, 3), Weights::for_canary(80)),
        Urgency::ReadBack
    );
    // Less canary traffic, or none: returning traffic goes first.
    assert_eq!(
        write_urgency(fw(50, 50), Weights::for_canary(25)),
        Urgency::Rollback
    );
    assert_eq!(
        write_urgency(fw(0, 100), Weights::for_canary(0)),
        Urgency::Rollback
    );
    // The decision carries it: a run's first step.
    let (rollout, templates) = spec(HOLD_AT_5, 0);
    let ctx = Context {
        rollout: &rollout,
        templates: &templates,
    };
    let obs = Observations {
        traffic: Observed::Ok(fw(100, 0)),
        canary_health: Observed::Ok(rollout_core::TargetHealth {
            healthy: 3,
            total: 3,
        }),
        intervals: Vec::new(),
        ..Default::default()
    };
    let d = decide(ctx, None, &obs, &[], START);
    assert!(
        matches!(
            d.actions.first(),
            Some(Action::SetWeights {
                urgency: Urgency::Routine,
                ..
            })
        ),
        "{:?}",
        d.actions
    );
}

/// Every status names the two target groups' roles: where the run's
/// revision is deployed (canary) and where traffic returns (stable).
#[test]
fn every_status_names_the_stable_and_canary_target_groups() {
    let (st, _) = check(
        STEPS_5_10_100,
        0,
        &[Tick {
            desired: 5,
            write: Some(5),
            ..T
        }],
    );
    assert_eq!(
        st.stable_target_group_arn,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067"
    );
    assert_eq!(
        st.canary_target_group_arn,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60"
    );
    let json = serde_json::to_value(&st).expect("json");
    assert!(json["stableTargetGroupArn"]
        .as_str()
        .is_some_and(|a| a.ends_with("blue/73e2d6bc24d8a067")));
    assert!(json["canaryTargetGroupArn"]
        .as_str()
        .is_some_and(|a| a.ends_with("green/0f2a6b1c9d8e7f60")));
}

const BLUE: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067";
const GREEN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60";

/// A load balancer that knows target groups by ARN (the rule table's knows
/// only "stable" and "canary", which is what ping-pong changes).
struct PairLb {
    weights: BTreeMap<&'static str, u32>,
}

impl PairLb {
    fn read(&self, rollout: &Rollout) -> ForwardWeights {
        let w = |arn: &str| self.weights.get(arn).copied().unwrap_or(0);
        ForwardWeights {
            stable: w(rollout.spec.stable.target_group_arn.as_str()),
            canary: w(rollout.spec.canary.target_group_arn.as_str()),
            other: 0,
        }
    }

    fn carries_all(&self) -> &'static str {
        self.weights
            .iter()
            .find(|(_, w)| **w == 100)
            .map_or("neither", |(arn, _)| arn)
    }
}

/// Reconciles every 10 s, as the daemon does (roles resolved from the
/// status first), until the run of the spec's revision ends or `limit`
/// reconciles passed; `bad` makes the canary fail its intervals.
fn drive(
    world: &(Rollout, BTreeMap<String, AnalysisTemplateSpec>),
    status: &mut Option<RolloutStatus>,
    lb: &mut PairLb,
    now: &mut Time,
    bad: bool,
    limit: usize,
) -> Vec<rollout_core::Event> {
    let mut knobs = Knobs {
        bad: Box::new(move |_| bad),
        ..Knobs::default()
    };
    drive_with(world, status, lb, now, &mut knobs, limit)
}

/// What the world answers besides the weights: whether the canary is bad
/// (by reconcile), the alarms that exist, and a webhook's answer (by
/// attempt); the webhook calls made are recorded.
struct Knobs {
    bad: Box<dyn FnMut(usize) -> bool>,
    alarms: Vec<rollout_core::AlarmState>,
    hook: Box<dyn FnMut(&rollout_core::WebhookCall) -> rollout_core::WebhookOutcome>,
    calls: Vec<rollout_core::WebhookCall>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            bad: Box::new(|_| false),
            alarms: Vec::new(),
            hook: Box::new(|_| rollout_core::WebhookOutcome::Passed {
                status: 200,
                reason: String::new(),
            }),
            calls: Vec::new(),
        }
    }
}

fn drive_with(
    (rollout, templates): &(Rollout, BTreeMap<String, AnalysisTemplateSpec>),
    status: &mut Option<RolloutStatus>,
    lb: &mut PairLb,
    now: &mut Time,
    knobs: &mut Knobs,
    limit: usize,
) -> Vec<rollout_core::Event> {
    let mut events = Vec::new();
    for tick in 0..limit {
        let bad = (knobs.bad)(tick);
        *now = now.plus_ms(10_000);
        let resolved = rollout_core::with_roles(rollout, status.as_ref());
        let ctx = Context {
            rollout: &resolved,
            templates,
        };
        let wanted = plan(ctx, status.as_ref(), *now);
        let intervals = wanted
            .intervals
            .iter()
            .map(|w| IntervalResult {
                template: w.template.clone(),
                end: w.end,
                metrics: Ok(IntervalMetrics {
                    stable: arm(1000.0, 1.0),
                    canary: arm(1000.0, if bad { 50.0 } else { 1.0 }),
                    custom: Vec::new(),
                    merged: 0,
                }),
            })
            .collect();
        let obs = Observations {
            traffic: Observed::Ok(lb.read(&resolved)),
            canary_health: Observed::Ok(TargetHealth {
                healthy: 2,
                total: 2,
            }),
            intervals,
            alarms: if wanted.alarms.is_empty() {
                Observed::Missing
            } else {
                Observed::Ok(knobs.alarms.clone())
            },
            webhook: wanted.webhook.clone().map(|call| {
                knobs.calls.push(call.clone());
                (call.step, call.attempt, (knobs.hook)(&call))
            }),
            experiment: None,
            more_targets: Vec::new(),
        };
        let d = decide(ctx, status.as_ref(), &obs, &[], *now);
        for a in &d.actions {
            let Action::SetWeights { weights, .. } = a;
            let stable = resolved.spec.stable.target_group_arn.as_str();
            let canary = resolved.spec.canary.target_group_arn.as_str();
            for (arn, w) in [(stable, weights.stable), (canary, weights.canary)] {
                let key = if arn == BLUE { BLUE } else { GREEN };
                lb.weights.insert(key, u32::from(w));
            }
        }
        events.extend(d.events);
        let ended = d.status.revision == rollout.spec.revision && d.status.phase.is_terminal();
        *status = Some(d.status);
        if ended
            && lb
                .read(&rollout_core::with_roles(rollout, status.as_ref()))
                .stable
                == 100
        {
            break;
        }
    }
    events
}

#[test]
fn ping_pong_target_groups_take_turns_and_a_rollback_keeps_the_roles() {
    let (mut rollout, templates) = spec(STEPS_5_10_100, 0);
    let text = BASE
        .replace(
            &format!("  stable: {{targetGroupArn: \"{BLUE}\"}}\n  canary: {{targetGroupArn: \"{GREEN}\"}}\n"),
            &format!("  targetGroups: [\"{BLUE}\", \"{GREEN}\"]\n"),
        )
        .replace("STEPS", STEPS_5_10_100)
        .replace("FAILURES", "0");
    let set = load([("pp.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    rollout.spec = set.rollouts[0].value.spec.clone();
    assert!(rollout.spec.target_groups.is_some());
    let mut world = (rollout, templates);
    // First adoption: green carries all traffic, so green is stable and
    // revision r1 goes into blue, although blue is listed first.
    let mut lb = PairLb {
        weights: BTreeMap::from([(BLUE, 0), (GREEN, 100)]),
    };
    let mut status = None;
    let mut now = START;
    let events = drive(&world, &mut status, &mut lb, &mut now, false, 100);
    let st = status.clone().expect("status");
    assert_eq!(kinds(&events, EventKind::RolesSwapped), 1, "{events:#?}");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(lb.carries_all(), BLUE, "r1 ends on blue");
    assert_eq!(st.stable_target_group_arn, BLUE);
    assert_eq!(
        st.canary_target_group_arn, GREEN,
        "the next revision goes into green"
    );
    assert_eq!(st.canary_weight, 0);
    // r2, r3: the roles swap after each success, with no change to the spec
    // but the revision.
    for (revision, ends_on) in [("r2", GREEN), ("r3", BLUE)] {
        world.0.spec.revision = revision.into();
        drive(&world, &mut status, &mut lb, &mut now, false, 100);
        let st = status.clone().expect("status");
        assert_eq!(
            (st.revision.as_str(), st.phase),
            (revision, Phase::Succeeded),
            "{}",
            st.message
        );
        assert_eq!(
            lb.carries_all(),
            ends_on,
            "{revision} ends on its canary group"
        );
        assert_eq!(st.stable_target_group_arn, ends_on);
        assert_ne!(st.canary_target_group_arn, ends_on);
    }
    // r4 is rolled back: blue keeps all traffic and the roles stay, so r5
    // goes into green again.
    world.0.spec.revision = "r4".into();
    drive(&world, &mut status, &mut lb, &mut now, true, 100);
    let st = status.clone().expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(lb.carries_all(), BLUE);
    assert_eq!(
        (
            st.stable_target_group_arn.as_str(),
            st.canary_target_group_arn.as_str()
        ),
        (BLUE, GREEN)
    );
    world.0.spec.revision = "r5".into();
    drive(&world, &mut status, &mut lb, &mut now, false, 100);
    assert_eq!(lb.carries_all(), GREEN, "r5 ends on green");
}

#[test]
fn ping_pong_refuses_to_start_when_neither_group_carries_all_traffic() {
    let text = BASE
        .replace(
            &format!("  stable: {{targetGroupArn: \"{BLUE}\"}}\n  canary: {{targetGroupArn: \"{GREEN}\"}}\n"),
            &format!("  targetGroups: [\"{BLUE}\", \"{GREEN}\"]\n"),
        )
        .replace("STEPS", STEPS_5_10_100)
        .replace("FAILURES", "0");
    let set = load([("pp.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let (_, templates) = spec(STEPS_5_10_100, 0);
    let world = (set.rollouts[0].value.clone(), templates);
    let mut lb = PairLb {
        weights: BTreeMap::from([(BLUE, 60), (GREEN, 40)]),
    };
    let (mut status, mut now) = (None, START);
    drive(&world, &mut status, &mut lb, &mut now, false, 20);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Pending);
    assert!(
        st.message.contains("one of the two must carry all of it"),
        "{}",
        st.message
    );
    assert_eq!(lb.weights[BLUE], 60, "nothing written");
}

/// The rule table's rollout with `steps`, `analysis` (a flow mapping) and
/// `extra` lines under `spec`.
fn gated(
    steps: &str,
    analysis: &str,
    extra: &str,
) -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    let text = BASE
        .replace(
            "  analysis: {interval: 1m, templates: [t]}\n",
            &format!("  analysis: {analysis}\n{extra}"),
        )
        .replace("STEPS", steps)
        .replace("FAILURES", "0");
    let set = load([("gated.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let (_, templates) = spec(steps, 0);
    (set.rollouts[0].value.clone(), templates)
}

fn fixed_lb() -> PairLb {
    PairLb {
        weights: BTreeMap::from([(BLUE, 100), (GREEN, 0)]),
    }
}

fn alarm(state: &str) -> rollout_core::AlarmState {
    rollout_core::AlarmState {
        name: "api-5xx".into(),
        state: state.into(),
        reason: "Threshold Crossed: 1 datapoint [7.0] was greater than the threshold (5.0)".into(),
    }
}

const HOLD_10M: &str = "[{setWeight: 10}, {pause: {duration: 10m}}, {setWeight: 100}]";

#[test]
fn an_alarm_in_alarm_rolls_the_run_back_and_names_it() {
    let world = gated(
        HOLD_10M,
        "{interval: 1m, templates: [t], alarms: [api-5xx]}",
        "",
    );
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs {
        alarms: vec![alarm("OK")],
        ..Knobs::default()
    };
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 6);
    let st = status.clone().expect("status");
    assert_eq!(
        (st.phase, st.canary_weight),
        (Phase::Progressing, 10),
        "{}",
        st.message
    );
    knobs.alarms = vec![alarm("ALARM")];
    // The next reconcile reads it (every reconcile of a run under way,
    // here every 10 s) and the one after sees the weights back.
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 2);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack);
    assert!(
        st.message
            .contains("alarm `api-5xx` is in ALARM: Threshold Crossed"),
        "{}",
        st.message
    );
    assert_eq!(lb.carries_all(), BLUE);
}

#[test]
fn an_alarm_that_does_not_exist_fails_the_run() {
    let world = gated(HOLD_10M, "{alarms: [api-5xx]}", "");
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs::default();
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 6);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Failed, "{}", st.message);
    assert!(
        st.message.contains("`api-5xx` does not exist"),
        "{}",
        st.message
    );
    assert_eq!(lb.carries_all(), BLUE);
}

const WEBHOOK_STEPS: &str = "[{setWeight: 10}, {webhook: {name: smoke, url: 'https://ci.example.com/smoke', retries: 2}}, {setWeight: 100}]";

#[test]
fn a_webhook_step_passes_on_2xx_and_its_body_says_where_the_run_is() {
    let world = gated(WEBHOOK_STEPS, "{interval: 1m, templates: [t]}", "");
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs::default();
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(knobs.calls.len(), 1, "called once");
    let body: serde_json::Value = serde_json::from_str(&knobs.calls[0].body).expect("json");
    assert_eq!(body["rollout"], "api");
    assert_eq!(body["revision"], "r1");
    assert_eq!(body["step"], 2);
    assert_eq!(body["webhook"], "smoke");
    assert_eq!(body["weights"]["canary"], 10);
}

#[test]
fn a_webhook_refusal_rolls_the_run_back_at_once() {
    let world = gated(WEBHOOK_STEPS, "{interval: 1m, templates: [t]}", "");
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs {
        hook: Box::new(|_| rollout_core::WebhookOutcome::Refused {
            status: 500,
            reason: "smoke test: /checkout answered 502".into(),
        }),
        ..Knobs::default()
    };
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(knobs.calls.len(), 1, "a refusal is not retried");
    assert!(
        st.message
            .contains("webhook `smoke` refused with HTTP 500: smoke test: /checkout answered 502"),
        "{}",
        st.message
    );
    assert_eq!(lb.carries_all(), BLUE);
}

#[test]
fn a_webhook_without_an_answer_is_retried_then_fails() {
    let world = gated(WEBHOOK_STEPS, "{interval: 1m, templates: [t]}", "");
    // No answer twice, then 200: within the two retries.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs {
        hook: Box::new(|call| {
            if call.attempt < 3 {
                rollout_core::WebhookOutcome::NoAnswer {
                    message: "connection refused".into(),
                }
            } else {
                rollout_core::WebhookOutcome::Passed {
                    status: 204,
                    reason: String::new(),
                }
            }
        }),
        ..Knobs::default()
    };
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 40);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(
        knobs.calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Never an answer: three attempts, then the run rolls back.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = Knobs {
        hook: Box::new(|_| rollout_core::WebhookOutcome::NoAnswer {
            message: "timed out after 10s".into(),
        }),
        ..Knobs::default()
    };
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 40);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(knobs.calls.len(), 3);
    assert!(
        st.message
            .contains("did not answer in 3 attempts: timed out"),
        "{}",
        st.message
    );
}

#[test]
fn a_canary_that_turns_bad_during_the_bake_returns_all_traffic() {
    let mut world = gated(STEPS_5_10_100, "{interval: 1m, templates: [t]}", "");
    if let Some(c) = world.0.spec.strategy.canary.as_mut() {
        c.post_promotion = Some(rollout_spec::PostPromotion {
            duration: "10m".parse().expect("duration"),
        });
    }
    // A good bake: at 100% for 10 minutes, then success.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut baking_since = None;
    for _ in 0..200 {
        drive(&world, &mut status, &mut lb, &mut now, false, 1);
        let st = status.as_ref().expect("status");
        if st.bake_started_at.is_some() && baking_since.is_none() {
            baking_since = Some(now);
            assert_eq!(lb.carries_all(), GREEN, "baking at 100%");
            let base = st.analysis.baseline.expect("stable's baseline interval");
            assert!(
                base.1 <= st.weight_verified_at.expect("verified"),
                "{base:?}"
            );
        }
        if st.phase.is_terminal() {
            break;
        }
    }
    let st = status.clone().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    let since = baking_since.expect("a bake");
    assert!(
        st.ended_at.expect("ended").since(since) >= 590_000,
        "baked 10m"
    );
    assert!(st.message.contains("baked 10m"), "{}", st.message);

    // A bad one: the canary fails an interval during the bake.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    for _ in 0..200 {
        let baking = status
            .as_ref()
            .is_some_and(|s: &RolloutStatus| s.bake_started_at.is_some());
        drive(&world, &mut status, &mut lb, &mut now, baking, 1);
        if status
            .as_ref()
            .is_some_and(|s| s.phase.is_terminal() && lb.carries_all() == BLUE)
        {
            break;
        }
    }
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(
        lb.carries_all(),
        BLUE,
        "all traffic back on the previous group"
    );
}

#[test]
fn on_failure_freeze_holds_the_weights_and_waits_for_a_person() {
    let world = gated(
        HOLD_10M,
        "{interval: 1m, templates: [t]}",
        "  rollback: {onFailure: freeze}\n",
    );
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let events = drive(&world, &mut status, &mut lb, &mut now, true, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Paused, "{}", st.message);
    assert_eq!(st.pause, Some(rollout_core::status::PauseReason::Frozen));
    assert_eq!(lb.weights[GREEN], 10, "the weights stay");
    assert!(st.message.contains("onFailure is freeze"), "{}", st.message);
    assert_eq!(kinds(&events, EventKind::RolledBack), 0);
    assert_eq!(
        kinds(&events, EventKind::Paused),
        1,
        "paused once, not every interval"
    );
}

/// A blue-green rollout with webhook gates before and after the switch.
fn blue_green_gated() -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    let text = BASE
        .replace(
            "    canary:\n      steps: STEPS\n",
            "    blueGreen:\n      prePromotionWebhook: {name: preview-smoke, url: 'https://ci.example.com/pre'}\n      postPromotionWebhook: {name: live-smoke, url: 'https://ci.example.com/post', retries: 0}\n",
        )
        .replace("  analysis: {interval: 1m, templates: [t]}\n", "")
        .replace("FAILURES", "0");
    let set = load([("bg.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let (_, templates) = spec(STEPS_5_10_100, 0);
    (set.rollouts[0].value.clone(), templates)
}

fn answers(pre: u16, post: u16) -> Knobs {
    Knobs {
        hook: Box::new(move |call| {
            let status = if call.hook.url.ends_with("/pre") {
                pre
            } else {
                post
            };
            if status < 300 {
                rollout_core::WebhookOutcome::Passed {
                    status,
                    reason: String::new(),
                }
            } else {
                rollout_core::WebhookOutcome::Refused {
                    status,
                    reason: "smoke test failed".into(),
                }
            }
        }),
        ..Knobs::default()
    }
}

#[test]
fn blue_green_webhook_gates_hold_the_switch_and_the_success() {
    let world = blue_green_gated();
    // Both answer 200: preview gate, switch, post gate, success.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = answers(200, 200);
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(lb.carries_all(), GREEN);
    let urls: Vec<&str> = knobs.calls.iter().map(|c| c.hook.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://ci.example.com/pre", "https://ci.example.com/post"]
    );

    // The preview's smoke test refuses: no production traffic ever moved.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = answers(500, 200);
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert!(
        st.message
            .contains("webhook `preview-smoke` refused with HTTP 500"),
        "{}",
        st.message
    );
    assert_eq!(lb.weights[GREEN], 0, "the switch never happened");

    // The live smoke test refuses after the switch: all traffic back.
    let (mut status, mut lb, mut now) = (None, fixed_lb(), START);
    let mut knobs = answers(200, 503);
    drive_with(&world, &mut status, &mut lb, &mut now, &mut knobs, 30);
    let st = status.expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert!(
        st.message
            .contains("webhook `live-smoke` refused with HTTP 503"),
        "{}",
        st.message
    );
    assert_eq!(lb.carries_all(), BLUE);
}

/// The run report (API, `rolloutctl report`, the effect gauges) reads each
/// arm's 5xx wander as the judge does: learnt from stable's intervals
/// before the run. It had assumed 50% whatever was learnt (in a service
/// wandering by 200% a minute its intervals then held no change in 89–91%
/// of runs, `judge-bench coverage --error-cv 2`).
#[test]
fn the_run_report_reads_the_wander_the_run_learnt() {
    use rollout_core::status::{LearntNoise, TemplateAnalysis};
    let (_, templates) = spec("[{setWeight: 5}, {pause: {}}, {setWeight: 100}]", 0);
    // Identical arms whose minutes scatter as a noisy service's do.
    let wander: [f64; 8] = [0.05, 2.9, 0.3, 0.1, 1.6, 0.2, 0.8, 0.05];
    let history: Vec<IntervalMetrics> = (0..24)
        .map(|i| IntervalMetrics {
            stable: arm(10_000.0, (20.0 * wander[i % 8]).round()),
            canary: arm(10_000.0, (20.0 * wander[(i + 3) % 8]).round()),
            custom: Vec::new(),
            merged: 0,
        })
        .collect();
    let mut st = RolloutStatus::new("r1", "canary", START);
    st.analysis.templates.insert(
        "t".into(),
        TemplateAnalysis {
            history: history.clone(),
            noise: Some(LearntNoise {
                error_cv: Some(2.0),
                intervals: 60,
            }),
            ..TemplateAnalysis::default()
        },
    );
    let reported = &rollout_core::report::checks_of(&st, &templates)["t"]["errorRate"];
    let learnt = rollout_analysis::effect::report_learnt(&templates["t"], Some(2.0), &history);
    assert_eq!(reported, &learnt["errorRate"]);
    // What assuming 50% gives differs (here it is wider still: the
    // minutes scatter far beyond 50%, and the excess widens it to the
    // search's limit).
    let assumed = rollout_analysis::effect::report(&templates["t"], &history);
    assert_ne!(reported, &assumed["errorRate"]);
}
