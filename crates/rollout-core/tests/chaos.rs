//! Chaos steps through the real core, against a small model of AWS Fault
//! Injection Service (start is idempotent by client token, experiments run
//! for a while and complete, a stop goes through `stopping`), a load
//! balancer that applies what is written, and a metric source whose canary
//! is good or bad. Each scenario checks that an experiment of the run is
//! never left running and never started twice.

mod support;

use std::collections::BTreeMap;

use rollout_analysis::{ArmSample, IntervalMetrics};
use rollout_core::{
    decide, plan, Action, Command, CommandKind, Context, EventKind, ExperimentCall,
    ExperimentState, ForwardWeights, IntervalResult, ObservationError, Observations, Observed,
    Phase, RolloutStatus, TargetHealth, Time,
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
  strategy:
    canary:
      steps: [{setWeight: 10}, {chaos: {experimentTemplateId: EXTabc123, duration: 10m ONFAILURE}}, {setWeight: 100}]
  analysis: {interval: 1m, templates: [t]}
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: t}
spec:
  alb:
    delay: 10s
    errorRate: {maxIncrease: 50%}
    latency: {statistic: Average, maxIncrease: 20%}
    minRequests: 50
  judge: threshold
  failureLimit: 0
"#;

fn spec(on_failure: &str) -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    let text = BASE.replace("ONFAILURE", on_failure);
    support::rollout_and_templates("chaos.yaml", text.as_str())
}

/// One experiment in the FIS model.
#[derive(Debug, Clone)]
struct Experiment {
    id: String,
    token: String,
    template: String,
    started: Time,
    status: String,
}

/// The FIS model: experiments run `runs_ms` and complete, unless stopped
/// (one read in `stopping`, then `stopped`) or failed by their own stop
/// conditions (`fail_at`).
#[derive(Debug, Default)]
struct Fis {
    experiments: Vec<Experiment>,
    runs_ms: u64,
    fail_at: Option<Time>,
    /// The next start reaches FIS but its answer is lost.
    lose_next_start_answer: bool,
}

impl Fis {
    fn advance(&mut self, now: Time) {
        for e in &mut self.experiments {
            match e.status.as_str() {
                "running" if self.fail_at.is_some_and(|t| now >= t) => e.status = "failed".into(),
                "running" if now >= e.started.plus_ms(self.runs_ms) => {
                    e.status = "completed".into()
                }
                "stopping" => e.status = "stopped".into(),
                _ => {}
            }
        }
    }

    fn state(e: &Experiment) -> ExperimentState {
        ExperimentState {
            id: e.id.clone(),
            status: e.status.clone(),
            reason: format!("Experiment {}", e.status),
        }
    }

    fn call(&mut self, call: &ExperimentCall, now: Time) -> Observed<Option<ExperimentState>> {
        match call {
            ExperimentCall::Start {
                template_id,
                client_token,
            } => {
                let i = match self
                    .experiments
                    .iter()
                    .position(|e| e.token == *client_token)
                {
                    Some(i) => i,
                    None => {
                        self.experiments.push(Experiment {
                            id: format!("EXP{}", self.experiments.len() + 1),
                            token: client_token.clone(),
                            template: template_id.clone(),
                            started: now,
                            status: "running".into(),
                        });
                        self.experiments.len() - 1
                    }
                };
                if std::mem::take(&mut self.lose_next_start_answer) {
                    return Observed::Err(ObservationError {
                        fatal: false,
                        message: "timed out".into(),
                    });
                }
                Observed::Ok(Some(Self::state(&self.experiments[i])))
            }
            ExperimentCall::Get { id } => Observed::Ok(
                self.experiments
                    .iter()
                    .find(|e| e.id == *id)
                    .map(Self::state),
            ),
            ExperimentCall::Stop { id } => {
                let Some(e) = self.experiments.iter_mut().find(|e| e.id == *id) else {
                    return Observed::Ok(None);
                };
                if e.status == "running" {
                    e.status = "stopping".into();
                }
                Observed::Ok(Some(Self::state(e)))
            }
            ExperimentCall::FindAndStop {
                template_id,
                client_token,
            } => {
                let Some(e) = self
                    .experiments
                    .iter_mut()
                    .find(|e| e.token == *client_token && e.template == *template_id)
                else {
                    return Observed::Ok(None);
                };
                if e.status == "running" {
                    e.status = "stopping".into();
                }
                Observed::Ok(Some(Self::state(e)))
            }
        }
    }

    fn running(&self) -> usize {
        self.experiments
            .iter()
            .filter(|e| matches!(e.status.as_str(), "running" | "stopping"))
            .count()
    }
}

const START: Time = Time::from_millis(1_795_845_590_000);

/// A rollout driven reconcile by reconcile.
struct Run {
    rollout: Rollout,
    templates: BTreeMap<String, AnalysisTemplateSpec>,
    status: Option<RolloutStatus>,
    now: Time,
    lb: u32,
    bad: bool,
    /// The canary answers twice as slowly.
    slow: bool,
    fis: Fis,
    events: Vec<rollout_core::Event>,
    commands: Vec<Command>,
    forgotten: bool,
}

impl Run {
    fn new(on_failure: &str) -> Run {
        Run::of(spec(on_failure))
    }

    /// A blue-green rollout whose preview runs the experiment during its
    /// pre-promotion analysis.
    fn blue_green() -> Run {
        let text = BASE
            .replace(
                "    canary:\n      steps: [{setWeight: 10}, {chaos: {experimentTemplateId: EXTabc123, duration: 10m ONFAILURE}}, {setWeight: 100}]\n",
                "    blueGreen:\n      prePromotionAnalysis: {templates: [t], duration: 8m, interval: 1m}\n      prePromotionChaos: {experimentTemplateId: EXTabc123, duration: 10m}\n",
            )
            .replace("  analysis: {interval: 1m, templates: [t]}\n", "");
        let set = load([("bg.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"));
        assert!(set.rollouts[0].value.spec.strategy.blue_green.is_some());
        let (_, templates) = spec("");
        Run::of((set.rollouts[0].value.clone(), templates))
    }

    fn of((rollout, templates): (Rollout, BTreeMap<String, AnalysisTemplateSpec>)) -> Run {
        Run {
            rollout,
            templates,
            status: None,
            now: START,
            lb: 0,
            bad: false,
            slow: false,
            fis: Fis {
                runs_ms: 5 * 60_000,
                ..Fis::default()
            },
            events: Vec::new(),
            commands: Vec::new(),
            forgotten: false,
        }
    }

    fn command(&mut self, kind: CommandKind) {
        self.commands.push(Command {
            id: self.commands.len() as u64 + 100,
            kind,
            actor: "tester".into(),
            reason: Some("test".into()),
            at: self.now,
        });
    }

    fn arm(errors: f64, latency: f64) -> ArmSample {
        ArmSample {
            requests: Some(1000.0),
            errors: Some(errors),
            latency: Some(latency),
            latency_cv: None,
        }
    }

    /// One reconcile; with `crash`, the decision is lost (not stored, not
    /// acted on), as when the process dies after observing.
    fn tick(&mut self, crash: bool) {
        self.fis.advance(self.now);
        let ctx = Context {
            rollout: &self.rollout,
            templates: &self.templates,
        };
        let wanted = plan(ctx, self.status.as_ref(), self.now);
        let intervals = wanted
            .intervals
            .iter()
            .map(|w| IntervalResult {
                template: w.template.clone(),
                end: w.end,
                metrics: Ok(IntervalMetrics {
                    stable: Self::arm(1.0, 0.05),
                    canary: Self::arm(
                        if self.bad { 80.0 } else { 1.0 },
                        if self.slow { 0.10 } else { 0.05 },
                    ),
                    custom: Vec::new(),
                    merged: 0,
                }),
            })
            .collect();
        let experiment = wanted
            .experiment
            .as_ref()
            .map(|c| (c.clone(), self.fis.call(c, self.now)));
        let obs = Observations {
            traffic: Observed::Ok(ForwardWeights {
                stable: 100 - self.lb,
                canary: self.lb,
                other: 0,
            }),
            canary_health: Observed::Ok(TargetHealth {
                healthy: 2,
                total: 2,
            }),
            intervals,
            experiment,
            ..Default::default()
        };
        let d = decide(ctx, self.status.as_ref(), &obs, &self.commands, self.now);
        let step = d.requeue_after_ms.unwrap_or(10_000).clamp(1_000, 10_000);
        self.now = self.now.plus_ms(step);
        if crash {
            return;
        }
        for a in &d.actions {
            match a {
                Action::SetWeights { weights, .. } => self.lb = u32::from(weights.canary),
            }
        }
        let applied = d.status.last_command_id;
        self.commands.retain(|c| c.id > applied);
        self.events.extend(d.events);
        self.forgotten = d.forget;
        self.status = Some(d.status);
    }

    fn run_until(&mut self, limit_s: u64, what: impl Fn(&Run) -> bool) {
        let until = self.now.plus_ms(limit_s * 1000);
        while !what(self) {
            assert!(
                self.now < until,
                "not within {limit_s}s: {:#?}",
                self.status
            );
            self.tick(false);
        }
    }

    fn st(&self) -> &RolloutStatus {
        self.status.as_ref().expect("a status")
    }

    fn chaos_events(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Chaos)
            .map(|e| e.message.clone())
            .collect()
    }
}

fn at_chaos_running(r: &Run) -> bool {
    r.status
        .as_ref()
        .and_then(|s| s.chaos.as_ref())
        .is_some_and(|c| c.state.as_deref() == Some("running"))
}

/// A canary that holds up: the experiment starts once, runs, completes,
/// and the run goes on to 100%.
#[test]
fn a_canary_that_holds_up_passes_the_step() {
    let mut r = Run::new("");
    r.run_until(600, at_chaos_running);
    assert_eq!(r.lb, 10);
    r.run_until(1200, |r| r.st().phase == Phase::Succeeded);
    assert_eq!(r.fis.experiments.len(), 1, "started once");
    assert_eq!(r.fis.experiments[0].status, "completed");
    assert_eq!(r.lb, 100);
    let log = r.chaos_events().join("\n");
    assert!(
        log.contains("starting the FIS experiment of template EXTabc123 at canary 10%"),
        "{log}"
    );
    assert!(
        log.contains("experiment EXP1 of template EXTabc123: running"),
        "{log}"
    );
    assert!(
        log.contains("completed and the canary held against stable under the fault"),
        "{log}"
    );
}

/// A canary that fails during the experiment is rolled back, and the
/// experiment is asked to stop in the very next reconcile.
#[test]
fn a_failing_canary_rolls_back_and_stops_the_experiment() {
    let mut r = Run::new("");
    r.run_until(600, at_chaos_running);
    r.bad = true;
    r.run_until(300, |r| r.st().phase == Phase::RolledBack);
    assert_eq!(r.st().canary_weight, 0);
    let c = r
        .st()
        .chaos
        .clone()
        .expect("the experiment is being stopped");
    assert!(c.stop);
    let ctx = Context {
        rollout: &r.rollout,
        templates: &r.templates,
    };
    assert_eq!(
        plan(ctx, r.status.as_ref(), r.now).experiment,
        Some(ExperimentCall::Stop { id: "EXP1".into() })
    );
    r.tick(false);
    assert_eq!(r.fis.experiments[0].status, "stopping");
    r.run_until(60, |r| r.st().chaos.is_none());
    assert_eq!(r.fis.experiments[0].status, "stopped");
    assert_eq!(r.fis.running(), 0);
    assert_eq!(r.lb, 0);
}

/// A canary whose latency doubles only under the fault is rolled back
/// during the step, and the experiment stopped.
#[test]
fn a_canary_twice_as_slow_under_the_fault_is_rolled_back() {
    let mut r = Run::new("");
    r.run_until(600, at_chaos_running);
    r.slow = true;
    r.run_until(300, |r| r.st().phase == Phase::RolledBack);
    assert!(r.st().message.contains("latency"), "{}", r.st().message);
    assert_eq!(r.lb, 0);
    r.tick(false);
    assert_eq!(r.fis.experiments[0].status, "stopping");
    r.run_until(60, |r| r.st().chaos.is_none());
    assert_eq!(r.fis.running(), 0);
}

/// Abort, pause by a person, a new revision and a deletion each stop the
/// experiment; a deleted rollout is forgotten only once it has stopped.
#[test]
fn every_way_of_leaving_the_step_stops_the_experiment() {
    for how in ["abort", "pause", "revision", "delete"] {
        let mut r = Run::new("");
        r.run_until(600, at_chaos_running);
        match how {
            "abort" => r.command(CommandKind::Abort),
            "pause" => r.command(CommandKind::Pause),
            "revision" => r.rollout.spec.revision = "r2".into(),
            _ => r.command(CommandKind::Delete),
        }
        r.tick(false);
        if how == "delete" {
            assert!(!r.forgotten, "{how}: not forgotten while it runs");
        }
        r.run_until(60, |r| r.fis.experiments[0].status == "stopped");
        if how != "revision" {
            r.run_until(60, |r| r.st().chaos.is_none());
            assert_eq!(r.fis.experiments.len(), 1, "{how}");
        }
        let log = r.chaos_events().join("\n");
        assert!(log.contains("stopping experiment EXP1: "), "{how}: {log}");
        if how == "delete" {
            r.run_until(60, |r| r.forgotten);
        }
    }
}

/// A crash after the start reached FIS but before the id was recorded:
/// the next reconcile starts with the same token and adopts the same
/// experiment (no second one).
#[test]
fn a_crash_after_the_start_adopts_the_same_experiment() {
    let mut r = Run::new("");
    r.run_until(600, |r| {
        r.status.as_ref().is_some_and(|s| s.chaos.is_some())
    });
    r.tick(true);
    assert_eq!(r.fis.experiments.len(), 1, "the lost reconcile started it");
    r.run_until(60, at_chaos_running);
    assert_eq!(r.fis.experiments.len(), 1, "adopted, not started again");
    r.command(CommandKind::Abort);
    r.run_until(60, |r| r.fis.running() == 0 && r.st().chaos.is_none());
    assert_eq!(r.st().phase, Phase::Aborted);
}

/// The start's answer was lost and the run is aborted before the id is
/// known: the experiment is found by its token and stopped.
#[test]
fn an_experiment_whose_id_was_never_recorded_is_found_and_stopped() {
    let mut r = Run::new("");
    r.run_until(600, |r| {
        r.status.as_ref().is_some_and(|s| s.chaos.is_some())
    });
    r.fis.lose_next_start_answer = true;
    r.command(CommandKind::Abort);
    r.tick(false);
    assert_eq!(r.st().phase, Phase::Aborted);
    assert_eq!(r.fis.experiments.len(), 1);
    assert!(r
        .st()
        .chaos
        .as_ref()
        .is_some_and(|c| c.stop && c.experiment_id.is_none()));
    r.run_until(60, |r| r.st().chaos.is_none());
    assert_eq!(r.fis.experiments[0].status, "stopped");
}

/// An experiment that fails by its own stop conditions fails the step, or
/// with `onExperimentFailure: continue` is recorded and the run goes on.
#[test]
fn a_failed_experiment_fails_the_step_unless_told_to_continue() {
    let mut r = Run::new("");
    r.run_until(600, at_chaos_running);
    r.fis.fail_at = Some(r.now.plus_ms(60_000));
    r.run_until(300, |r| r.st().phase != Phase::Progressing);
    assert_eq!(r.st().phase, Phase::RolledBack);
    assert!(
        r.st().message.contains("experiment EXP1 ended failed"),
        "{}",
        r.st().message
    );
    assert_eq!(r.lb, 0);

    let mut r = Run::new(", onExperimentFailure: continue");
    r.run_until(600, at_chaos_running);
    r.fis.fail_at = Some(r.now.plus_ms(60_000));
    r.run_until(1200, |r| r.st().phase == Phase::Succeeded);
    let log = r.chaos_events().join("\n");
    assert!(
        log.contains("ended failed: Experiment failed; onExperimentFailure: continue"),
        "{log}"
    );
}

/// An experiment still running at the end of the step's duration is
/// stopped, and the step fails.
#[test]
fn an_experiment_past_its_duration_is_stopped_and_fails_the_step() {
    let mut r = Run::new("");
    r.fis.runs_ms = 60 * 60_000;
    r.run_until(600, at_chaos_running);
    r.run_until(900, |r| r.st().phase == Phase::RolledBack);
    assert!(
        r.st().message.contains("did not complete within 10m"),
        "{}",
        r.st().message
    );
    r.run_until(60, |r| r.st().chaos.is_none());
    assert_eq!(r.fis.running(), 0);
}

/// Blue-green: the preview runs the experiment during its pre-promotion
/// analysis; the switch waits for both. A preview that fails under the
/// fault is rolled back with the experiment stopped; a person's promote
/// skips the check and stops the experiment.
#[test]
fn a_blue_green_preview_runs_the_check_before_the_switch() {
    let mut r = Run::blue_green();
    r.run_until(600, at_chaos_running);
    assert_eq!(r.lb, 0, "no production traffic in the preview");
    r.run_until(1200, |r| r.st().phase == Phase::Succeeded);
    assert_eq!(r.fis.experiments.len(), 1);
    assert_eq!(r.fis.experiments[0].status, "completed");
    assert_eq!(r.lb, 100);
    let log = r.chaos_events().join("\n");
    assert!(
        log.contains("preview: experiment EXP1 completed and the canary held"),
        "{log}"
    );

    let mut r = Run::blue_green();
    r.run_until(600, at_chaos_running);
    r.bad = true;
    r.run_until(300, |r| r.st().phase == Phase::RolledBack);
    r.run_until(60, |r| r.st().chaos.is_none());
    assert_eq!(r.fis.experiments[0].status, "stopped");
    assert_eq!(r.lb, 0);

    let mut r = Run::blue_green();
    r.run_until(600, at_chaos_running);
    r.command(CommandKind::Promote { full: false });
    r.run_until(300, |r| {
        r.st().phase == Phase::Succeeded && r.st().chaos.is_none()
    });
    assert_eq!(r.fis.experiments[0].status, "stopped");
    assert_eq!(r.lb, 100);
}
