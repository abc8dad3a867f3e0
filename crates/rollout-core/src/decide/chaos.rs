//! Chaos steps (`- chaos: {experimentTemplateId, duration}`): an AWS Fault
//! Injection Service experiment runs at the step's weight while both arms
//! are judged as at any other step.
//!
//! The intent comes first: entering the step writes `status.chaos` with
//! the client token (derived from the rollout, its run, the step and the
//! moment it was asked for) before anything is started; the next
//! reconcile's plan asks the daemon to start it with that token, which
//! FIS makes idempotent, so a crash or a second replica never starts it
//! twice, and a new owner adopts what the status records. Whenever the run
//! leaves the step other than by its success (a failed verdict, an abort,
//! a rollback, a person's pause, a deletion, a new revision), the status
//! marks the experiment to stop, and every reconcile asks FIS to stop it
//! until FIS shows it ended; a rollout being deleted is forgotten only then.

use super::*;
use crate::observe::{ExperimentCall, ExperimentState};
use crate::status::ChaosStatus;
use rollout_spec::{Chaos, OnExperimentFailure};

/// How often a running experiment's state is read.
const POLL_MS: u64 = 5_000;

/// The client token of a chaos step's experiment: the rollout's name, its
/// run, the step and when the step asked for it, hashed (FIS takes at most
/// 64 characters). The same intent always gives the same token.
pub fn client_token(name: &str, run: u32, step: u32, requested_at: Time) -> String {
    let raw = format!("{name}/{run}/{step}/{}", requested_at.millis());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let short: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    format!("rolloutd-{short}-{h:016x}")
}

/// The call the next observation makes for the status's experiment.
pub(super) fn call(st: &RolloutStatus) -> Option<ExperimentCall> {
    let c = st.chaos.as_ref()?;
    let ended = c
        .state
        .as_deref()
        .is_some_and(crate::observe::experiment_ended);
    match (&c.experiment_id, c.stop) {
        (_, _) if ended => None,
        (Some(id), true) => Some(ExperimentCall::Stop { id: id.clone() }),
        (None, true) => Some(ExperimentCall::FindAndStop {
            template_id: c.template_id.clone(),
            client_token: c.client_token.clone(),
        }),
        (None, false) => Some(ExperimentCall::Start {
            template_id: c.template_id.clone(),
            client_token: c.client_token.clone(),
        }),
        (Some(id), false) => Some(ExperimentCall::Get { id: id.clone() }),
    }
}

impl Reconcile<'_> {
    /// What FIS said of the call the plan asked for (stage 5).
    pub(super) fn experiment_observed(&mut self) {
        let Some((call, seen)) = self.obs.experiment.clone() else {
            return;
        };
        let Some(mut c) = self.st.chaos.clone() else {
            return;
        };
        let ours = match &call {
            ExperimentCall::Start { client_token, .. }
            | ExperimentCall::FindAndStop { client_token, .. } => *client_token == c.client_token,
            ExperimentCall::Get { id } | ExperimentCall::Stop { id } => {
                c.experiment_id.as_deref() == Some(id)
            }
        };
        if !ours {
            return;
        }
        match seen {
            Observed::Ok(Some(x)) => self.experiment_seen(&mut c, &x),
            Observed::Ok(None) if c.stop => {
                self.event(
                    EventKind::Chaos,
                    format!(
                        "no experiment of template {} carries token {}: it was never started, so there is nothing to stop",
                        c.template_id, c.client_token
                    ),
                    None,
                );
                self.st.chaos = None;
            }
            Observed::Ok(None) | Observed::Missing => {}
            Observed::Err(e) if e.fatal && !c.stop && c.experiment_id.is_none() => {
                // The template is missing or not ours to start: the step
                // cannot run.
                self.st.chaos = None;
                self.roll_back(format!(
                    "the chaos step's experiment could not be started from template {}: {}",
                    c.template_id, e.message
                ));
            }
            Observed::Err(e) => {
                self.st.message = format!(
                    "cannot reach AWS Fault Injection Service (retrying): {}",
                    e.message
                );
                self.requeue = Some(self.requeue.map_or(POLL_MS, |q| q.min(POLL_MS)));
            }
        }
    }

    fn experiment_seen(&mut self, c: &mut ChaosStatus, x: &ExperimentState) {
        let changed = c.state.as_deref() != Some(x.status.as_str())
            || c.experiment_id.as_deref() != Some(x.id.as_str());
        c.experiment_id = Some(x.id.clone());
        c.state = Some(x.status.clone());
        c.reason = Some(x.reason.clone());
        if changed {
            let why = if x.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", x.reason)
            };
            self.event(
                EventKind::Chaos,
                format!(
                    "experiment {} of template {}: {}{why}",
                    x.id, c.template_id, x.status
                ),
                None,
            );
        }
        if c.stop && x.ended() {
            self.event(
                EventKind::Chaos,
                format!(
                    "experiment {} is over ({}): nothing of this run's runs any more",
                    x.id, x.status
                ),
                None,
            );
            self.st.chaos = None;
            return;
        }
        self.st.chaos = Some(c.clone());
    }

    /// Whether the status's experiment must stop: the run is no longer at
    /// its step (any way but success), or the rollout is being deleted
    /// (stage 8). Marks it, so every reconcile asks FIS to stop it.
    pub(super) fn chaos_left(&mut self) {
        let Some(c) = self.st.chaos.clone() else {
            return;
        };
        if c.stop {
            self.requeue = Some(self.requeue.map_or(POLL_MS, |q| q.min(POLL_MS)));
            return;
        }
        let at_step = self.st.phase == Phase::Progressing
            && self.st.deleting.is_none()
            && self.current_chaos().is_some_and(|(step, s)| {
                step == c.step && s.experiment_template_id == c.template_id
            });
        if at_step {
            return;
        }
        let why = if self.st.deleting.is_some() {
            "the rollout is being deleted"
        } else {
            match self.st.phase {
                Phase::Paused => "the run is paused",
                Phase::RolledBack => "the run rolled back",
                Phase::Aborted => "the run was aborted",
                Phase::Failed => "the run failed",
                Phase::Pending => "a new run began",
                Phase::Succeeded | Phase::Progressing => "the run left the chaos step",
            }
        };
        let what = c
            .experiment_id
            .clone()
            .unwrap_or_else(|| format!("of template {}", c.template_id));
        self.event(
            EventKind::Chaos,
            format!("stopping experiment {what}: {why}"),
            None,
        );
        self.st.chaos = Some(ChaosStatus { stop: true, ..c });
        self.requeue = Some(1);
    }

    /// The chaos check the run is at, with its step: a canary's chaos
    /// step, or a blue-green preview's check (step 0) until it passed.
    fn current_chaos(&self) -> Option<(u32, Chaos)> {
        if let Some(bg) = &self.ctx.rollout.spec.strategy.blue_green {
            let at_preview = self.st.blue_green.is_some_and(|b| {
                b.stage == BlueGreenStage::Preview && !b.chaos_passed && !b.preview_passed
            });
            return bg
                .pre_promotion_chaos
                .clone()
                .filter(|_| at_preview)
                .map(|c| (0, c));
        }
        let i = self.st.current_step_index;
        match self.steps().get(i as usize) {
            Some(CanaryStep::Chaos(c)) => Some((i, c.clone())),
            _ => None,
        }
    }

    /// A chaos check (stage 7) at `step`, `label` naming it in messages
    /// ("step 3 of 5", "preview"): true when it is done and the run moves
    /// on.
    pub(super) fn chaos_step(&mut self, step: u32, label: &str, chaos: &Chaos) -> bool {
        let Some(c) = self.st.chaos.clone() else {
            let name = self.ctx.rollout.metadata.name.as_str();
            let client_token = client_token(name, self.st.run, step, self.now);
            self.event(
                EventKind::Chaos,
                format!(
                    "{label}: starting the FIS experiment of template {} at canary {}% (client token {client_token})",
                    chaos.experiment_template_id, self.st.canary_weight
                ),
                None,
            );
            // The report keeps the last experiment's intervals apart.
            for t in self.st.analysis.templates.values_mut() {
                t.chaos = None;
            }
            self.st.chaos = Some(ChaosStatus {
                step,
                template_id: chaos.experiment_template_id.clone(),
                client_token,
                requested_at: self.now,
                experiment_id: None,
                state: None,
                reason: None,
                stop: false,
            });
            self.st.message = format!(
                "{label}: starting the experiment of template {}",
                chaos.experiment_template_id
            );
            self.requeue = Some(1);
            return false;
        };
        if c.step != step || c.stop {
            self.st.message = format!(
                "{label}: waiting for the previous experiment ({}) to stop before starting another",
                c.experiment_id.as_deref().unwrap_or(&c.template_id)
            );
            self.requeue = Some(POLL_MS);
            return false;
        }
        let id = c
            .experiment_id
            .clone()
            .unwrap_or_else(|| "(starting)".into());
        match c.state.as_deref() {
            Some("completed") => self.chaos_completed(label, &c, &id),
            Some(s @ ("failed" | "stopped" | "cancelled")) => {
                let reason = c.reason.clone().unwrap_or_default();
                let what = format!("experiment {id} ended {s}: {reason}");
                self.st.chaos = None;
                self.experiment_failed(label, chaos, what)
            }
            state => {
                let until = c.requested_at.plus_ms(chaos.duration.as_millis());
                if self.now >= until {
                    self.st.chaos = Some(ChaosStatus { stop: true, ..c });
                    let what =
                        format!("experiment {id} did not complete within {}", chaos.duration);
                    return self.experiment_failed(label, chaos, what);
                }
                self.st.message = format!(
                    "{label}: experiment {id} {} at canary {}%, judged against stable, for at most {} (until {until})",
                    state.unwrap_or("starting"),
                    self.st.canary_weight,
                    chaos.duration
                );
                self.requeue_at(until);
                self.requeue = Some(self.requeue.map_or(POLL_MS, |q| q.min(POLL_MS)));
                false
            }
        }
    }

    /// The experiment completed: the step passes once an interval judged
    /// during it has passed (a failing one has rolled the run back).
    fn chaos_completed(&mut self, label: &str, c: &ChaosStatus, id: &str) -> bool {
        let judged = !self.st.analysis.templates.is_empty()
            && self.st.analysis.templates.values().all(|t| {
                t.last.as_ref().is_some_and(|l| {
                    l.end > c.requested_at && l.result.verdict == rollout_analysis::Verdict::Pass
                })
            });
        if !judged {
            self.st.message = format!(
                "{label}: experiment {id} completed; waiting for a passing interval judged during it"
            );
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return false;
        }
        self.event(
            EventKind::Chaos,
            format!(
                "{label}: experiment {id} completed and the canary held against stable under the fault"
            ),
            None,
        );
        self.st.chaos = None;
        true
    }

    /// The experiment failed, was stopped by its own stop conditions or ran
    /// past the duration: the step fails, or with `onExperimentFailure:
    /// continue` it is recorded and the run goes on.
    fn experiment_failed(&mut self, label: &str, chaos: &Chaos, what: String) -> bool {
        match chaos.on_experiment_failure {
            OnExperimentFailure::Fail => {
                self.roll_back(format!("{label}: {what}"));
                false
            }
            OnExperimentFailure::Continue => {
                self.event(
                    EventKind::Chaos,
                    format!("{label}: {what}; onExperimentFailure: continue"),
                    None,
                );
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_short_and_distinct() {
        let t = Time::from_millis(1_795_845_600_000);
        let a = client_token("checkout-api", 3, 2, t);
        assert_eq!(a, client_token("checkout-api", 3, 2, t));
        assert!(
            a.len() <= 64 && a.starts_with("rolloutd-checkout-api-"),
            "{a}"
        );
        assert_ne!(a, client_token("checkout-api", 4, 2, t));
        assert_ne!(a, client_token("checkout-api", 3, 2, t.plus_ms(1)));
        let long = client_token(&"x".repeat(253), 1, 0, t);
        assert!(long.len() <= 64, "{long}");
    }
}
