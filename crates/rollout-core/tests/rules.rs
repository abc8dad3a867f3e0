//! The decision rules, one scenario each, written as tables of ticks: at this
//! time, the load balancer holds these weights, the canary is this healthy,
//! analysis answers this, a person asks this; then the phase, the desired
//! canary weight and the weight write must be these. All go through
//! [`check`].

use std::collections::BTreeMap;

use rollout_analysis::{ArmSample, WindowMetrics};
use rollout_core::{
    decide, plan, Action, Command, CommandKind, Context, EventKind, ForwardWeights,
    ObservationError, Observations, Observed, Phase, RolloutStatus, TargetHealth, Time,
    WindowResult,
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
    let set = load([("rules.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let templates = set
        .templates
        .iter()
        .map(|t| (t.value.metadata.name.to_string(), t.value.spec.clone()))
        .collect();
    (set.rollouts[0].value.clone(), templates)
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
        let windows = wanted
            .windows
            .iter()
            .filter(|_| t.answer != Answer::Nothing)
            .map(|w| WindowResult {
                template: w.template.clone(),
                end: w.end,
                metrics: match t.answer {
                    Answer::Good => Ok(WindowMetrics {
                        stable: arm(1000.0, 1.0),
                        canary: arm(1000.0, 1.0),
                        custom: Vec::new(),
                    }),
                    Answer::Bad => Ok(WindowMetrics {
                        stable: arm(1000.0, 1.0),
                        canary: arm(1000.0, 50.0),
                        custom: Vec::new(),
                    }),
                    Answer::Thin => Ok(WindowMetrics {
                        stable: arm(10.0, 0.0),
                        canary: arm(10.0, 0.0),
                        custom: Vec::new(),
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
            windows,
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
        windows: vec![],
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
        windows: vec![],
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
    assert_eq!(due.windows.len(), 1);
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
        windows: vec![],
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
    assert!(!wanted.windows.is_empty());
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
        windows: Vec::new(),
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
        windows: Vec::new(),
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
    };
    let at = |s: u64| START.plus_ms(s * 1000);
    let urgency = |st: Option<&RolloutStatus>, now: Time, last: Option<i64>| {
        let p = plan_reads(ctx, st, now, reads(last));
        p.traffic.then_some(p.urgency)
    };
    // Never seen: read before a run may start.
    assert_eq!(urgency(None, at(0), None), Some(Urgency::BeforeRaise));
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
