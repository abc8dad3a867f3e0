//! Whole runs through the simulation: the real decision core against an
//! in-memory load balancer and CloudWatch, with a fake clock. Each story runs
//! hours of simulated time in milliseconds.

use rollout_core::{CommandKind, EventKind, Phase};
use rollout_sim::{ArmBehaviour, Harness};
use rollout_spec::{load, SpecSet};

/// The seed's strategy, judged by the default (sequential) judge.
const CANARY: &str = r#"
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: checkout-api}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067"}
  canary: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-green/0f2a6b1c9d8e7f60"}
  strategy:
    canary:
      steps:
        - setWeight: 5
        - pause: {duration: 5m}
        - setWeight: 10
        - pause: {duration: 5m}
        - setWeight: 25
        - pause: {duration: 5m}
        - setWeight: 50
        - pause: {duration: 5m}
        - setWeight: 100
  analysis:
    interval: 1m
    templates: [golden]
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: golden}
spec:
  alb:
    period: 60s
    delay: 60s
    errorRate: {maxIncrease: 100%}
    latency: {statistic: Average, maxIncrease: 20%}
    minRequests: 50
  failureLimit: 0
"#;

fn spec(text: &str) -> SpecSet {
    load([("story.yaml", text)], &[]).unwrap_or_else(|d| panic!("{d:?}"))
}

fn harness(text: &str, seed: u64) -> Harness {
    Harness::new(&spec(text), seed, 1000.0)
}

const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;

fn finished(h: &Harness) -> bool {
    h.phase().is_some_and(Phase::is_terminal)
}

/// The canary shares the load balancer held, without repeats.
fn distinct_shares(h: &Harness) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for (_, s) in &h.seen {
        let s = s.round() as u32;
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

fn never_decreases(h: &Harness) -> bool {
    h.seen.windows(2).all(|w| w[1].1 >= w[0].1)
}

#[test]
fn healthy_canary_reaches_100_percent() {
    let mut h = harness(CANARY, 1);
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(distinct_shares(&h), vec![5, 10, 25, 50, 100]);
    assert!(never_decreases(&h));
    // Each weight was written once and seen applied.
    let weights: Vec<u8> = h.lb.writes.iter().map(|(_, w)| w.canary).collect();
    assert_eq!(weights, vec![5, 10, 25, 50, 100]);
    let verified = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::WeightVerified)
        .count();
    assert_eq!(verified, 5);
    // Four 5-minute pauses, plus the time to judge the first interval at 5%.
    let took = st
        .ended_at
        .expect("ended")
        .since(st.started_at.expect("started"));
    assert!(
        (20 * MINUTE..=30 * MINUTE).contains(&took),
        "took {took} ms"
    );
}

#[test]
fn every_increase_follows_a_pass_at_the_previous_weight() {
    let mut h = harness(CANARY, 2);
    assert!(h.run_until(2 * HOUR, finished));
    let mut last_pass_weight: Option<u8> = None;
    for e in &h.events {
        match e.kind {
            EventKind::AnalysisJudged if e.message.contains(": pass (") => {
                last_pass_weight = Some(e.weight_after)
            }
            EventKind::WeightSet if e.weight_after > e.weight_before && e.weight_before > 0 => {
                assert_eq!(
                    last_pass_weight,
                    Some(e.weight_before),
                    "raised {} -> {} without a pass at {}",
                    e.weight_before,
                    e.weight_after,
                    e.weight_before
                );
            }
            _ => {}
        }
    }
}

#[test]
fn a_canary_with_ten_times_the_errors_is_rolled_back() {
    let mut h = harness(CANARY, 3);
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.02,
        latency: 0.050,
    };
    assert!(h.run_until(HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack);
    assert!(st.message.contains("error rate"), "{}", st.message);
    assert_eq!(st.canary_weight, 0);
    assert_eq!(h.lb.canary_percent(), 0.0, "all traffic back on stable");
    // Canary traffic began at the first write. At 50 canary requests a
    // second, three one-minute intervals of overdispersed error counts are
    // enough evidence (docs/BENCHMARKS.md: 5xx ×10, median 3 minutes), plus
    // the template's 60 s CloudWatch delay and a reconcile's granularity.
    let first = h.lb.writes.first().expect("a write").0;
    let back = h.lb.writes.last().expect("rollback write").0;
    assert!(
        back.since(first) <= 4 * MINUTE + 20_000,
        "took {} ms",
        back.since(first)
    );
    assert_eq!(distinct_shares(&h), vec![5, 0]);
}

#[test]
fn a_regression_that_starts_mid_run_is_caught_at_its_weight() {
    let mut h = harness(CANARY, 4);
    h.metrics.canary_change = Some((
        h.now.plus_ms(13 * MINUTE),
        ArmBehaviour {
            error_rate: 0.002,
            latency: 0.120,
        },
    ));
    assert!(h.run_until(HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack);
    assert!(st.message.contains("latency"), "{}", st.message);
    assert_eq!(h.lb.canary_percent(), 0.0);
    let shares = distinct_shares(&h);
    assert!(!shares.contains(&100), "{shares:?}");
}

#[test]
fn abort_returns_all_traffic_at_once_and_keeps_the_reason() {
    let mut h = harness(CANARY, 5);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 10.0));
    h.command(CommandKind::Abort, "alice", Some("pager went off"));
    h.step();
    assert_eq!(h.lb.canary_percent(), 0.0, "one reconcile later");
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Aborted);
    assert_eq!(st.message, "aborted by alice: pager went off");
    let abort = h
        .events
        .iter()
        .find(|e| e.kind == EventKind::Aborted)
        .expect("event");
    assert_eq!(abort.actor.as_deref(), Some("alice"));
    // Nothing moves afterwards.
    let writes = h.lb.writes.len();
    h.run_until(HOUR, |_| false);
    assert_eq!(h.lb.writes.len(), writes);
    // Retry starts again from step 0 and can succeed.
    h.command(CommandKind::Retry, "alice", Some("fixed"));
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!((st.phase, st.run), (Phase::Succeeded, 2));
    assert_eq!(st.history[0].outcome, "Aborted");
}

#[test]
fn a_new_revision_supersedes_the_run_and_starts_from_zero() {
    let mut h = harness(CANARY, 6);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 25.0));
    h.rollout.spec.revision = "r2".into();
    h.step();
    assert_eq!(h.lb.canary_percent(), 0.0, "traffic back to stable first");
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(
        (st.phase, st.revision.as_str(), st.run),
        (Phase::Succeeded, "r2", 2)
    );
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].outcome, "Superseded");
    assert_eq!(st.history[0].revision, "r1");
    assert!(h.events.iter().any(|e| e.kind == EventKind::Superseded));
    assert_eq!(distinct_shares(&h), vec![5, 10, 25, 0, 5, 10, 25, 50, 100]);
}

/// The daemon dies between recording its intent and acting, at every
/// reconcile of a healthy run in turn: every run still succeeds, and the
/// canary weight on the load balancer never goes down.
#[test]
fn crash_between_intent_and_action_at_every_tick_resumes() {
    let mut clean = harness(CANARY, 7);
    assert!(clean.run_until(2 * HOUR, finished));
    for crash_at in 1..=clean.ticks {
        let mut h = harness(CANARY, 7);
        let mut n = 0u64;
        while !finished(&h) && n < 5_000 {
            n += 1;
            let requeue = h.tick_with(n == crash_at);
            let wait = requeue.unwrap_or(10_000).clamp(1_000, 10_000);
            let to = h.now.plus_ms(wait);
            h.advance_to(to);
        }
        let st = h.status().expect("status");
        assert_eq!(
            st.phase,
            Phase::Succeeded,
            "crash at tick {crash_at}: {}",
            st.message
        );
        assert!(never_decreases(&h), "crash at tick {crash_at}");
        let shares: Vec<u32> = distinct_shares(&h)
            .into_iter()
            .skip_while(|&s| s == 0)
            .collect();
        assert_eq!(shares, vec![5, 10, 25, 50, 100], "crash at tick {crash_at}");
    }
}

/// A process that dies before it can even record its decision loses only
/// that decision: the next one makes it again.
#[test]
fn losing_whole_decisions_changes_nothing() {
    let mut h = harness(CANARY, 8);
    let mut n = 0u64;
    while !finished(&h) && n < 5_000 {
        n += 1;
        let saved = h.stored.clone();
        let writes = h.lb.writes.len();
        h.tick_with(n % 3 == 0);
        if n % 3 == 0 {
            h.stored = saved; // the status write never happened either
            assert_eq!(h.lb.writes.len(), writes);
        }
        let to = h.now.plus_ms(10_000);
        h.advance_to(to);
    }
    assert_eq!(h.phase(), Some(Phase::Succeeded));
    assert!(never_decreases(&h));
}

#[test]
fn a_canary_without_healthy_targets_gets_no_traffic() {
    let text = CANARY.replace("  analysis:\n", "  progressDeadline: 10m\n  analysis:\n");
    let mut h = harness(&text, 9);
    h.lb.canary_health.healthy = 0;
    assert!(h.run_until(HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Failed);
    assert!(
        st.message
            .contains("waiting for healthy targets in the canary target group (0 of 3 healthy)"),
        "{}",
        st.message
    );
    assert!(h.lb.writes.is_empty(), "no weight was ever written");
}

#[test]
fn a_run_waits_until_stable_carries_all_traffic() {
    let mut h = harness(CANARY, 10);
    h.lb.weights.stable = 80;
    h.lb.weights.canary = 20;
    h.run_until(10 * MINUTE, |_| false);
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Pending);
    assert!(
        st.message.contains("now stable 80%, canary 20%"),
        "{}",
        st.message
    );
    assert!(
        h.lb.writes.is_empty(),
        "a pending run never moves production traffic"
    );
    h.lb.weights.stable = 100;
    h.lb.weights.canary = 0;
    assert!(h.run_until(2 * HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
}

#[test]
fn transient_load_balancer_errors_hold_the_run() {
    let mut h = harness(CANARY, 11);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 10.0));
    h.lb.fail_reads = 6;
    h.lb.fail_writes = 2;
    let before = h.lb.canary_percent();
    for _ in 0..6 {
        h.step();
        assert_eq!(
            h.lb.canary_percent(),
            before,
            "nothing moves on an unknown state"
        );
    }
    assert!(h.run_until(2 * HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
}

#[test]
fn a_deleted_listener_fails_the_run_with_its_message() {
    let mut h = harness(CANARY, 12);
    h.lb.fatal =
        Some("ListenerNotFound: listener arn:aws:…/f2f7dc8efc522ab2 does not exist".into());
    h.step();
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Failed);
    assert!(st.message.contains("ListenerNotFound"), "{}", st.message);
}

#[test]
fn a_metric_source_that_keeps_failing_holds_then_fails_to_stable() {
    let mut h = harness(CANARY, 13);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 5.0));
    h.metrics.failing = Some("ServiceUnavailable".into());
    let at = h.lb.canary_percent();
    assert!(h.run_until(HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Failed);
    assert!(
        st.message.contains("failed 5 intervals in a row"),
        "{}",
        st.message
    );
    assert_eq!(h.lb.canary_percent(), 0.0);
    assert!(distinct_shares(&h).iter().all(|s| f64::from(*s) <= at));
}

const PROMOTE_GATE: &str = r#"
        - setWeight: 50
        - pause: {}
        - setWeight: 100
"#;

#[test]
fn an_indefinite_pause_waits_for_promote() {
    let text = CANARY.replace(
        "        - setWeight: 50\n        - pause: {duration: 5m}\n        - setWeight: 100\n",
        PROMOTE_GATE.trim_start_matches('\n'),
    );
    let mut h = harness(&text, 14);
    assert!(h.run_until(HOUR, |h| h.phase() == Some(Phase::Paused)));
    h.run_until(HOUR, |_| false);
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Paused, "still waiting after an hour");
    assert_eq!(h.lb.canary_percent(), 50.0);
    assert!(st.message.contains("waiting for promote"));
    h.command(CommandKind::Promote { full: false }, "bob", None);
    assert!(h.run_until(HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
}

#[test]
fn promote_full_jumps_to_100_and_is_still_verified() {
    let mut h = harness(CANARY, 15);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 5.0));
    h.command(CommandKind::Promote { full: true }, "carol", Some("hotfix"));
    h.step();
    h.step();
    assert_eq!(h.lb.canary_percent(), 100.0);
    assert!(h.run_until(HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
    assert_eq!(distinct_shares(&h), vec![5, 100]);
}

#[test]
fn manual_pause_holds_and_analysis_still_guards() {
    let mut h = harness(CANARY, 16);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 10.0));
    h.command(CommandKind::Pause, "dave", Some("watching a dashboard"));
    h.run_until(30 * MINUTE, |_| false);
    assert_eq!(h.phase(), Some(Phase::Paused));
    assert_eq!(h.lb.canary_percent(), 10.0);
    // While paused the canary turns bad: analysis still rolls it back.
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.05,
        latency: 0.05,
    };
    h.metrics.canary_change = None;
    assert!(h.run_until(HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::RolledBack));
    assert_eq!(h.lb.canary_percent(), 0.0);
}

#[test]
fn resume_continues_after_a_manual_pause() {
    let mut h = harness(CANARY, 17);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 10.0));
    h.command(CommandKind::Pause, "dave", None);
    h.run_until(20 * MINUTE, |_| false);
    assert_eq!(h.lb.canary_percent(), 10.0);
    h.command(CommandKind::Resume, "dave", None);
    assert!(h.run_until(2 * HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
}

#[test]
fn gradual_rollback_steps_down() {
    let text = CANARY.replace(
        "  analysis:\n",
        "  rollback:\n    steps:\n      - setWeight: 10\n      - pause: {duration: 2m}\n  analysis:\n",
    );
    let mut h = harness(&text, 18);
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() >= 25.0));
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.05,
        latency: 0.05,
    };
    assert!(h.run_until(HOUR, |h| h.lb.canary_percent() == 0.0));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack);
    let tail: Vec<u32> = distinct_shares(&h).into_iter().rev().take(3).collect();
    assert_eq!(tail, vec![0, 10, 25]);
    let at_ten =
        h.lb.writes
            .iter()
            .find(|(_, w)| w.canary == 10)
            .map(|(t, _)| *t);
    let at_zero = h.lb.writes.last().map(|(t, _)| *t);
    let (Some(a), Some(b)) = (at_ten, at_zero) else {
        panic!("writes {:?}", h.lb.writes)
    };
    assert!(b.since(a) >= 2 * MINUTE);
}

const BLUE_GREEN: &str = r#"
apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: checkout-api}
spec:
  revision: "r1"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  stable: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067"}
  canary: {targetGroupArn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-green/0f2a6b1c9d8e7f60"}
  strategy:
    blueGreen:
      previewListenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/aaaaaaaaaaaaaaaa
      autoPromotion: AUTO
      prePromotionAnalysis: {templates: [golden], duration: 3m}
      postPromotionAnalysis: {templates: [golden], duration: 3m}
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: golden}
spec:
  alb:
    errorRate: {maxIncrease: 100%, maxRate: 1%}
    latency: {maxIncrease: 20%}
  failureLimit: 0
"#;

/// Preview traffic: the test listener sends the new target group a share of
/// its own, independent of the production weights.
fn preview_traffic(h: &mut Harness, until_ms: u64, mut done: impl FnMut(&Harness) -> bool) -> bool {
    let end = h.now.plus_ms(until_ms);
    while h.now < end {
        let requeue = h.tick_with(false);
        let to = h
            .now
            .plus_ms(requeue.unwrap_or(10_000).clamp(1_000, 10_000));
        let prod = h.lb.canary_percent();
        // During the preview the green group gets 10% worth of test traffic.
        let share = if prod == 0.0 { 10.0 } else { prod };
        let mut t = h.now.millis() / 1000;
        while t < to.millis() / 1000 {
            h.metrics.record_second(t, share);
            t += 1;
        }
        h.now = to;
        if done(h) {
            return true;
        }
    }
    false
}

#[test]
fn blue_green_switches_all_at_once_after_the_preview_passes() {
    let mut h = harness(&BLUE_GREEN.replace("AUTO", "true"), 19);
    assert!(preview_traffic(&mut h, HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(distinct_shares(&h), vec![0, 100]);
    let judged_before_switch = h
        .events
        .iter()
        .take_while(|e| e.kind != EventKind::WeightSet)
        .filter(|e| e.kind == EventKind::AnalysisJudged)
        .count();
    assert!(judged_before_switch >= 3, "{judged_before_switch}");
}

#[test]
fn blue_green_without_auto_promotion_waits_for_a_person() {
    let mut h = harness(&BLUE_GREEN.replace("AUTO", "false"), 20);
    assert!(preview_traffic(&mut h, HOUR, |h| h.phase() == Some(Phase::Paused)));
    preview_traffic(&mut h, 30 * MINUTE, |_| false);
    assert_eq!(
        h.lb.canary_percent(),
        0.0,
        "no production traffic before promote"
    );
    h.command(CommandKind::Promote { full: false }, "erin", None);
    assert!(preview_traffic(&mut h, HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::Succeeded));
}

#[test]
fn blue_green_switches_back_when_post_promotion_fails() {
    let mut h = harness(&BLUE_GREEN.replace("AUTO", "true"), 21);
    assert!(preview_traffic(&mut h, HOUR, |h| h.lb.canary_percent() == 100.0));
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.03,
        latency: 0.05,
    };
    assert!(preview_traffic(&mut h, HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(h.lb.canary_percent(), 0.0);
    assert_eq!(distinct_shares(&h), vec![0, 100, 0]);
}

#[test]
fn blue_green_never_switches_a_failing_preview() {
    let mut h = harness(&BLUE_GREEN.replace("AUTO", "true"), 22);
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.03,
        latency: 0.05,
    };
    assert!(preview_traffic(&mut h, HOUR, finished));
    assert_eq!(h.phase(), Some(Phase::RolledBack));
    assert!(h.lb.writes.is_empty(), "production traffic never moved");
}

/// The seed's strategy with evidence-driven pauses: each may end after a
/// minute once the evidence is in.
fn paced() -> String {
    CANARY.replace(
        "- pause: {duration: 5m}",
        "- pause: {duration: 5m, minimum: 1m}",
    )
}

/// [`paced`] with a 5xx ceiling instead of a relative 5xx tolerance: at
/// 0.2% errors no minute shows a canary's 5xx rate within 2× of stable's
/// (a handful of errors each), while 1% is far above it.
fn paced_ceiling() -> String {
    paced().replace("errorRate: {maxIncrease: 100%}", "errorRate: {maxRate: 1%}")
}

fn took(h: &Harness) -> u64 {
    let st = h.status().expect("status");
    st.ended_at
        .expect("ended")
        .since(st.started_at.expect("started"))
}

#[test]
fn evidence_ends_a_good_canarys_pauses_early() {
    let fixed_text = paced_ceiling().replace(", minimum: 1m", "");
    let mut fixed = harness(&fixed_text, 11);
    assert!(fixed.run_until(2 * HOUR, finished));
    let mut h = harness(&paced_ceiling(), 11);
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(distinct_shares(&h), vec![5, 10, 25, 50, 100]);
    let early: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::StepAdvanced && e.message.contains("the evidence is in"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(early.len(), 4, "{early:#?}");
    // Each says which evidence ended it.
    assert!(
        early[0].contains("errorRate within tolerance (evidence")
            && early[0].contains("latency within tolerance (evidence"),
        "{}",
        early[0]
    );
    // 661 s against 1,205 s when measured: each step ends two minutes
    // after its weight is seen (one interval, then CloudWatch's delay).
    println!("fixed {} ms, paced {} ms", took(&fixed), took(&h));
    assert!(
        took(&h) * 10 <= took(&fixed) * 6,
        "{} vs {}",
        took(&h),
        took(&fixed)
    );
}

#[test]
fn evidence_pauses_never_end_before_their_minimum_nor_after_their_duration() {
    let text = CANARY.replace(
        "- pause: {duration: 5m}",
        "- pause: {duration: 5m, minimum: 3m}",
    );
    let mut h = harness(&text, 12);
    assert!(h.run_until(2 * HOUR, finished));
    // The weights' times: each raise at least 3 minutes after the last.
    let times: Vec<u64> = h.lb.writes.iter().map(|(t, _)| t.millis() as u64).collect();
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= 3 * MINUTE, "{times:?}");
    }
    // With a relative 5xx tolerance, 0.2% errors and each arm's rate
    // wandering by 50% a minute (learnt from stable's hour before the
    // run), no evidence can show the canary good in 5 minutes: every pause
    // runs its full duration, and the status says how much more data it
    // would take. (In a calm world the judge learns its floor, 30%, and
    // shows a canary within 2× of stable in about 15 minutes.)
    let mut thin = harness(&paced(), 13);
    thin.metrics.error_cv = 0.5;
    let mut messages = Vec::new();
    assert!(thin.run_until(2 * HOUR, |h| {
        messages.extend(h.status().map(|s| s.message));
        finished(h)
    }));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("errorRate not yet shown")
                && m.contains("more minute(s) and")
                && m.contains("canary requests would be needed")),
        "{messages:#?}"
    );
    assert!(took(&thin) >= 20 * MINUTE, "{}", took(&thin));
    let st = thin.status().expect("status");
    assert!(
        !thin
            .events
            .iter()
            .any(|e| e.message.contains("the evidence is in")),
        "{}",
        st.message
    );
}

#[test]
fn evidence_pacing_still_rolls_back_a_bad_canary() {
    let mut h = harness(&paced(), 14);
    h.metrics.canary = ArmBehaviour {
        error_rate: 0.05,
        ..ArmBehaviour::HEALTHY
    };
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert!(
        distinct_shares(&h).iter().all(|s| *s <= 5),
        "{:?}",
        distinct_shares(&h)
    );
}

/// Evidence gathered before a canary went bad does not carry it past a
/// pause: a canary whose errors double its ceiling from minute 8 (too
/// little, that late in the run, for the failure test to decide within a
/// step) is held at its weight past the pause's duration, and never
/// reaches 100%.
#[test]
fn a_canary_that_turns_bad_is_held_past_an_evidence_pause() {
    let text = paced_ceiling().replace("maxIncrease: 20%", "maxIncrease: 10%");
    let mut h = Harness::new(&spec(&text), 5, 1000.0);
    h.metrics.error_cv = 0.5;
    h.metrics.latency_noise = 0.03;
    h.metrics.canary_change = Some((
        rollout_sim::EPOCH.plus_ms(8 * MINUTE),
        ArmBehaviour {
            error_rate: 0.02,
            latency: 0.05,
        },
    ));
    let mut messages = Vec::new();
    h.run_until(HOUR, |h| {
        messages.extend(h.status().map(|s| s.message));
        finished(h)
    });
    assert!(
        messages
            .iter()
            .any(|m| m.contains("the pause's duration is over, but the intervals at canary")),
        "{messages:#?}"
    );
    assert!(
        distinct_shares(&h).iter().all(|s| *s < 100),
        "{:?}",
        distinct_shares(&h)
    );
    let st = h.status().expect("status");
    assert!(
        matches!(st.phase, Phase::RolledBack | Phase::Paused),
        "{:?}: {}",
        st.phase,
        st.message
    );
}

/// An improvement gate (`minImprovement`): a canary 15% faster reaches
/// 100%; one as fast as stable is rolled back, saying by how much it was
/// (not) faster.
#[test]
fn an_improvement_gate_promotes_only_a_faster_canary() {
    let text = CANARY.replace(
        "latency: {statistic: Average, maxIncrease: 20%}",
        "latency: {statistic: Average, maxIncrease: 20%, minImprovement: 5%}",
    );
    let mut faster = harness(&text, 21);
    faster.metrics.canary = ArmBehaviour {
        latency: ArmBehaviour::HEALTHY.latency * 0.85,
        ..ArmBehaviour::HEALTHY
    };
    assert!(faster.run_until(2 * HOUR, finished));
    let st = faster.status().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);

    let mut same = harness(&text, 22);
    assert!(same.run_until(2 * HOUR, finished));
    let st = same.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert!(
        st.message
            .contains("latency Average not improved by 5%: effect"),
        "{}",
        st.message
    );
    assert!(distinct_shares(&same).iter().all(|s| *s < 100));
}

/// The seed's canary test as `strategy.experiment`: 5% for 30 minutes,
/// then all traffic back on stable; the run succeeds saying what it
/// measured (a 15% faster canary: latency improved), and the roles stay.
/// A bad canary is still pulled at once, before the duration.
#[test]
fn an_experiment_measures_then_always_returns_the_traffic() {
    let text = CANARY.replace(
        "    canary:
      steps:
        - setWeight: 5
        - pause: {duration: 5m}
        - setWeight: 10
        - pause: {duration: 5m}
        - setWeight: 25
        - pause: {duration: 5m}
        - setWeight: 50
        - pause: {duration: 5m}
        - setWeight: 100",
        "    experiment: {weight: 5, duration: 30m}",
    );
    assert!(text.contains("experiment"));
    let mut h = harness(&text, 31);
    h.metrics.canary = ArmBehaviour {
        latency: ArmBehaviour::HEALTHY.latency * 0.85,
        ..ArmBehaviour::HEALTHY
    };
    assert!(h.run_until(2 * HOUR, finished));
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(st.strategy, "experiment");
    assert_eq!(distinct_shares(&h), vec![5, 0]);
    assert_eq!(h.lb.canary_percent(), 0.0, "all traffic back on stable");
    let writes: Vec<(i64, u8)> =
        h.lb.writes
            .iter()
            .map(|(t, w)| (t.millis(), w.canary))
            .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    let at_weight = writes[1].0 - writes[0].0;
    assert!(
        (30 * MINUTE as i64..=32 * MINUTE as i64).contains(&at_weight),
        "5% for {at_weight} ms"
    );
    assert!(
        st.message.starts_with(
            "experiment done: revision r1 served 5% for 30m; all traffic is back on stable; measured: "
        ),
        "{}",
        st.message
    );
    assert!(st.message.contains("; latency -"), "{}", st.message);
    assert!(st.message.contains(": improved"), "{}", st.message);
    assert_eq!(
        st.stable_target_group_arn,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/73e2d6bc24d8a067"
    );

    let mut bad = harness(&text, 32);
    bad.metrics.canary = ArmBehaviour {
        error_rate: 0.02,
        latency: 0.050,
    };
    assert!(bad.run_until(2 * HOUR, finished));
    let st = bad.status().expect("status");
    assert_eq!(st.phase, Phase::RolledBack, "{}", st.message);
    assert_eq!(bad.lb.canary_percent(), 0.0);
    let first = bad.lb.writes.first().expect("a write").0;
    let back = bad.lb.writes.last().expect("rollback").0;
    assert!(
        back.since(first) <= 5 * MINUTE,
        "pulled after {} ms",
        back.since(first)
    );
}

/// A run that bakes for 24 hours at 5% with one-minute intervals (four
/// times what a template's history holds whole): its stored status stays under
/// a fixed bound (at most `HISTORY_INTERVALS` entries, the oldest merged in
/// pairs) and stops growing, every interval is still counted, and it reads
/// back (an e-value that overflowed used to be written as `null`, and the
/// status could not be read again).
#[test]
fn a_long_run_keeps_a_bounded_status_that_reads_back() {
    let text = CANARY.replace(
        "- pause: {duration: 5m}\n        - setWeight: 10",
        "- pause: {duration: 48h}\n        - setWeight: 10",
    );
    assert!(text.contains("48h"));
    let mut h = harness(&text, 41);
    let mut sizes = Vec::new();
    for hours in [1, 6, 12, 24] {
        let at = rollout_sim::EPOCH.plus_ms(hours * HOUR);
        h.run_until(48 * HOUR, |h| h.now >= at);
        let stored = h.stored.clone().expect("a status");
        if let Err(e) = serde_json::from_str::<rollout_core::RolloutStatus>(&stored) {
            panic!("the status does not read back after {hours} h: {e}");
        }
        sizes.push((hours, stored.len()));
    }
    eprintln!("status bytes after hours: {sizes:?}");
    let st = h.status().expect("status");
    assert_eq!(st.phase, Phase::Progressing, "{}", st.message);
    let t = &st.analysis.templates["golden"];
    assert_eq!(t.history.len(), rollout_core::status::HISTORY_INTERVALS);
    let counted: u32 = t.history.iter().map(|m| m.merged + 1).sum();
    assert_eq!(counted, t.intervals_done, "every interval counted");
    assert!(t.intervals_done > 1_400, "{}", t.intervals_done);
    // The dashboard's marks: the newest intervals, one per whole entry at
    // the end of the history, the last one the last judged.
    assert_eq!(t.marks.len(), rollout_core::status::MARKS_KEPT);
    let whole = t.history.iter().rev().take_while(|m| m.merged == 0).count();
    assert!(whole >= t.marks.len(), "{whole} whole entries");
    let last = t.last.as_ref().expect("a judged interval");
    let mark = t.marks.last().expect("a mark");
    assert_eq!((mark.end, mark.weight), (last.end, last.canary_weight));
    assert_eq!(mark.checks.len(), last.result.metrics.len());
    assert!(t.marks.windows(2).all(|w| w[0].end < w[1].end));
    // The bound docs/BENCHMARKS.md states for a two-check template.
    for (_, bytes) in &sizes {
        assert!(*bytes <= 80_000, "{sizes:?}");
    }
    let (at_12, at_24) = (sizes[2].1, sizes[3].1);
    assert!(at_24 < at_12 + 2_000, "no longer growing: {sizes:?}");
}

/// Issue 19: in a world whose 5xx rates wander four times as much as the
/// judge used to assume (each arm's rate, minute by minute, by a CV of 2),
/// good canaries were rolled back (a 5xx-rate "regression" that is only
/// noise). The judge now learns the wander from stable's hour before the
/// run, says so in an event, and lets them through.
#[test]
fn a_noisy_world_does_not_roll_back_good_canaries() {
    for seed in 1..=8 {
        let mut h = harness(CANARY, seed);
        h.metrics.error_cv = 2.0;
        assert!(h.run_until(HOUR, finished));
        let st = h.status().expect("status");
        assert_eq!(st.phase, Phase::Succeeded, "seed {seed}: {}", st.message);
        let learnt = h
            .events
            .iter()
            .find(|e| e.message.contains("before the run"))
            .expect("the noise learnt, in an event");
        assert!(
            learnt.message.contains("stable's 5xx rate wandered by"),
            "{}",
            learnt.message
        );
    }
}

/// A world half as noisy (CV 1) still rolls back a canary with twenty
/// times the errors (ten times the template's tolerance) in most runs: how
/// many depends on how long the data has (`docs/BENCHMARKS.md` measures
/// it by noise level; at CV 2 a minute even this is mostly hidden in 20
/// minutes of noise). And a calm world learns that it is calm.
#[test]
fn a_noisy_world_still_rolls_back_a_bad_canary() {
    let mut rolled_back = 0;
    for seed in 1..=8 {
        let mut h = harness(CANARY, seed);
        h.metrics.error_cv = 1.0;
        h.metrics.canary = ArmBehaviour {
            error_rate: 0.04,
            latency: 0.050,
        };
        assert!(h.run_until(HOUR, finished));
        let st = h.status().expect("status");
        eprintln!("seed {seed}: {:?}: {}", st.phase, st.message);
        rolled_back += usize::from(st.phase == Phase::RolledBack);
    }
    assert!(rolled_back >= 6, "{rolled_back} of 8 rolled back");
    let mut calm = harness(CANARY, 1);
    calm.run_until(5 * MINUTE, |_| false);
    let st = calm.status().expect("status");
    let noise = st.analysis.templates["golden"].noise.expect("learnt");
    assert_eq!(noise.error_cv, Some(rollout_analysis::noise::FLOOR));
    assert_eq!(noise.intervals, 60);
}

/// In a world whose 5xx rates wander by 200% a minute, a good canary
/// (5xx 1.3× stable's, under a 1% ceiling; latency 5% slower, within 20%)
/// is not held past its evidence-paced pauses. The test of whether the
/// intervals at a weight point outside the tolerance took the wander to be
/// 50% whatever the run had learnt, and held 2 of these 20 runs past a
/// pause's duration (each then finished); it now takes the learnt wander,
/// as the judge does.
#[test]
fn a_noisy_worlds_good_canary_is_not_held_past_its_pauses() {
    let mut held = Vec::new();
    for seed in 1..=20 {
        let mut h = Harness::new(&spec(&paced_ceiling()), seed, 100.0);
        h.metrics.error_cv = 2.0;
        h.metrics.latency_noise = 0.03;
        h.metrics.canary = ArmBehaviour {
            error_rate: ArmBehaviour::HEALTHY.error_rate * 1.3,
            latency: ArmBehaviour::HEALTHY.latency * 1.05,
        };
        let mut message = None;
        h.run_until(2 * HOUR, |h| {
            if let Some(st) = h.status() {
                if st
                    .message
                    .contains("the pause's duration is over, but the intervals")
                {
                    message.get_or_insert(st.message);
                }
            }
            finished(h)
        });
        let st = h.status().expect("status");
        assert_eq!(st.phase, Phase::Succeeded, "seed {seed}: {}", st.message);
        held.extend(message.map(|m| format!("seed {seed}: {m}")));
    }
    assert!(held.is_empty(), "{held:#?}");
}

/// Good canaries near their tolerance (5xx 1.3× stable's, latency 5%
/// slower against +10%) in `judge-bench pacing`'s world: each arm's 5xx
/// rate wanders by 50% a minute and its latency by 3%; the benchmark's
/// seeds, templates and traffic. Where the intervals at a weight pointed
/// outside the tolerance, the pause held past its duration and then
/// waited for a person, though the failure test over those intervals did
/// not lean against the canary: 3 of these 120 runs never finished, where
/// fixed pauses finish them all. Now a held pause waits for a person only
/// when that test does; every run succeeds.
#[test]
fn a_good_canary_near_its_tolerance_is_not_left_waiting_for_a_person() {
    let latency = |t: String| t.replace("maxIncrease: 20%", "maxIncrease: 10%");
    let relative = latency(paced().replace("maxIncrease: 100%", "maxIncrease: 50%"));
    let ceiling = latency(paced_ceiling());
    let mut waiting = Vec::new();
    for (name, text, per_minute) in [
        ("relative", &relative, 1000),
        ("ceiling", &ceiling, 1000),
        ("ceiling", &ceiling, 3000),
    ] {
        let set = spec(text);
        for i in 0..40 {
            let seed = 1_000_003 + i * 7919 + per_minute;
            let mut h = Harness::new(&set, seed, per_minute as f64 / 60.0 / 0.05);
            h.metrics.error_cv = 0.5;
            h.metrics.latency_noise = 0.03;
            h.metrics.canary = ArmBehaviour {
                error_rate: ArmBehaviour::HEALTHY.error_rate * 1.3,
                latency: ArmBehaviour::HEALTHY.latency * 1.05,
            };
            h.run_until(40 * MINUTE, finished);
            let st = h.status().expect("status");
            if st.phase != Phase::Succeeded {
                waiting.push(format!(
                    "{name} {per_minute}/min seed {seed}: {:?}: {}",
                    st.phase, st.message
                ));
            }
        }
    }
    assert!(waiting.is_empty(), "{waiting:#?}");
}
