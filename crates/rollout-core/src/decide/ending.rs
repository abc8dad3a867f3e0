//! How a run ends: success, failure, fatal observations, rollback steps
//! and the progress deadline (stages 4, 7 and 8).

use super::*;

impl Reconcile<'_> {
    /// Ends the run in a terminal phase other than success: traffic back to
    /// stable (at once, or by the rollback steps after a failed analysis).
    pub(super) fn finish(
        &mut self,
        phase: Phase,
        kind: EventKind,
        message: String,
        actor: Option<&str>,
    ) {
        self.st.phase = phase;
        self.st.ended_at = Some(self.now);
        self.st.pause = None;
        self.st.message = message.clone();
        self.st.analysis.origin = None;
        let gradual = phase == Phase::RolledBack
            && self.st.started_at.is_some()
            && self
                .ctx
                .rollout
                .spec
                .rollback
                .as_ref()
                .is_some_and(|r| !r.steps.is_empty());
        self.event(kind, message, actor);
        if gradual {
            self.st.rollback_step = Some(0);
            self.st.step_started_at = Some(self.now);
            self.run_rollback_steps();
        } else {
            self.st.rollback_step = None;
            self.set_desired(0);
        }
    }

    /// A check failed (an analysis, an alarm, a webhook): all traffic back
    /// to stable, or, with `spec.rollback.onFailure: freeze`, the weights
    /// held and the run paused for a person (a change that cannot be
    /// undone, such as a schema migration, is not reverted by traffic).
    pub(super) fn roll_back(&mut self, message: String) {
        let freeze = self
            .ctx
            .rollout
            .spec
            .rollback
            .as_ref()
            .is_some_and(|r| r.on_failure == rollout_spec::OnFailure::Freeze);
        if !freeze {
            self.finish(Phase::RolledBack, EventKind::RolledBack, message, None);
            return;
        }
        if self.st.pause == Some(PauseReason::Frozen) {
            return;
        }
        // Counted again from zero once a person resumes.
        for t in self.st.analysis.templates.values_mut() {
            t.failed = 0;
        }
        let w = self.st.canary_weight;
        self.pause(
            PauseReason::Frozen,
            format!(
                "{message}; onFailure is freeze: the weights stay at stable {} / canary {w}; resume to go on, or abort to return all traffic to stable",
                100 - w
            ),
            None,
        );
    }

    pub(super) fn fail(&mut self, message: String) {
        if !self.st.phase.is_terminal() {
            self.finish(Phase::Failed, EventKind::Failed, message, None);
        }
    }

    pub(super) fn check_fatal(&mut self) {
        for err in [self.fatal_target_error(), self.obs.alarms.err().cloned()]
            .into_iter()
            .flatten()
        {
            if err.fatal {
                let message = format!("cannot proceed: {}", err.message);
                self.fail(message);
                return;
            }
        }
    }

    pub(super) fn run_rollback_steps(&mut self) {
        let steps: Vec<CanaryStep> = self
            .ctx
            .rollout
            .spec
            .rollback
            .as_ref()
            .map(|r| r.steps.clone())
            .unwrap_or_default();
        let Some(mut i) = self.st.rollback_step.map(|i| i as usize) else {
            return;
        };
        for _ in 0..=steps.len() {
            let Some(step) = steps.get(i) else {
                self.set_desired(0);
                self.st.rollback_step = None;
                return;
            };
            match step {
                CanaryStep::SetWeight(w) => {
                    let target = w.get().min(self.st.canary_weight);
                    if self.st.canary_weight != target {
                        self.set_desired(target);
                        self.st.step_started_at = Some(self.now);
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        break;
                    }
                    if !self.settled() {
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        break;
                    }
                    i += 1;
                    self.st.step_started_at = Some(self.now);
                }
                // Refused by validation; skipped if one is ever stored.
                CanaryStep::Webhook(_) | CanaryStep::Chaos(_) => i += 1,
                CanaryStep::Pause(p) => {
                    let d = p.duration.map_or(0, |d| d.as_millis());
                    let until = self.st.step_started_at.unwrap_or(self.now).plus_ms(d);
                    if self.now < until {
                        self.requeue_at(until);
                        break;
                    }
                    i += 1;
                    self.st.step_started_at = Some(self.now);
                }
            }
        }
        self.st.rollback_step = Some(u32::try_from(i).unwrap_or(u32::MAX));
    }

    pub(super) fn check_deadline(&mut self) {
        if self.st.phase != Phase::Progressing {
            return;
        }
        let in_timed_pause = matches!(
            self.steps().get(self.st.current_step_index as usize),
            Some(CanaryStep::Pause(p)) if p.duration.is_some()
        ) || matches!(
            self.steps().get(self.st.current_step_index as usize),
            Some(CanaryStep::Chaos(_))
        );
        if in_timed_pause {
            return;
        }
        let Some(last) = self.st.last_progress_at else {
            return;
        };
        let deadline = self.ctx.rollout.spec.progress_deadline.as_millis();
        let at = last.plus_ms(deadline);
        if self.now >= at {
            let message = format!(
                "no progress for {}: {}",
                self.ctx.rollout.spec.progress_deadline, self.st.message
            );
            self.fail(message);
        } else {
            self.requeue_at(at);
        }
    }
}
