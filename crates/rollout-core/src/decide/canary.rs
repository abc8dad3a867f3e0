//! Stage 7 for the canary strategy: steps, pauses and the weight raise.

use super::*;

impl Reconcile<'_> {
    pub(super) fn advance(&mut self, to: usize) {
        self.advance_because(to, None);
    }

    /// [`Self::advance`], saying why the step ended (when not the usual).
    pub(super) fn advance_because(&mut self, to: usize, why: Option<String>) {
        let from = self.st.current_step_index;
        self.st.current_step_index = u32::try_from(to).unwrap_or(u32::MAX);
        self.st.step_started_at = Some(self.now);
        self.st.step_promoted = false;
        self.st.last_progress_at = Some(self.now);
        let total = self.steps().len();
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        self.event(
            EventKind::StepAdvanced,
            format!("step {} of {total} done{why}", from + 1),
            None,
        );
    }

    pub(super) fn progress(&mut self) {
        if self.st.phase == Phase::Pending {
            // A run that starts now takes its first step in the same reconcile.
            self.pending();
        }
        match self.st.phase {
            Phase::Progressing | Phase::Paused => {
                if self.ctx.rollout.spec.strategy.blue_green.is_some() {
                    self.blue_green();
                } else {
                    self.canary();
                }
            }
            Phase::RolledBack if self.st.rollback_step.is_some() => self.run_rollback_steps(),
            _ => {}
        }
    }

    pub(super) fn pending(&mut self) {
        if let Some(old) = self.st.returning_from.clone() {
            self.set_desired(0);
            if self.settled() {
                self.st.returning_from = None;
            } else {
                self.st.message = format!(
                    "returning traffic to stable from the superseded run of revision {old}"
                );
                self.requeue = Some(VERIFY_REQUEUE_MS);
                return;
            }
        }
        let target = match &self.ctx.rollout.spec.traffic_routing.alb.rule_arn {
            Some(_) => "the listener rule",
            None => "the listener's default action",
        };
        let ping_pong = self.ctx.rollout.spec.target_groups.is_some();
        if self.target_count() > 1 {
            self.start_on_every_target(target);
            return;
        }
        match &self.obs.traffic {
            Observed::Ok(fw) if fw.stable_carries_all() => self.start_run(),
            Observed::Ok(fw) if ping_pong && fw.canary > 0 && fw.stable == 0 && fw.other == 0 => {
                self.adopt_roles()
            }
            Observed::Ok(fw) => {
                let p = fw.percentages();
                let hint = if ping_pong {
                    "; with targetGroups, one of the two must carry all of it for a run to start"
                } else if p.canary == 100 {
                    "; after a successful run, swap stable and canary in the spec (or name both in spec.targetGroups, and rolloutd swaps them itself)"
                } else {
                    ""
                };
                self.st.message = format!(
                    "waiting for the stable target group to carry all traffic of {target} (now stable {}%, canary {}%, other target groups {}%){hint}",
                    p.stable, p.canary, p.other
                );
            }
            Observed::Err(e) => {
                self.st.message = format!("cannot read the load balancer (retrying): {}", e.message)
            }
            Observed::Missing => self.st.message = "waiting to read the load balancer".into(),
        }
    }

    /// Several targets: a run starts when every target's stable target
    /// group carries all of its traffic.
    fn start_on_every_target(&mut self, what: &str) {
        for i in 0..self.target_count() {
            let message = match self.obs.traffic_of(i) {
                Observed::Ok(fw) if fw.stable_carries_all() => continue,
                Observed::Ok(fw) => {
                    let p = fw.percentages();
                    format!(
                        "waiting for the stable target group to carry all traffic of {what} (now stable {}%, canary {}%, other target groups {}%)",
                        p.stable, p.canary, p.other
                    )
                }
                Observed::Err(e) => {
                    format!("cannot read the load balancer (retrying): {}", e.message)
                }
                Observed::Missing => "waiting to read the load balancer".into(),
            };
            self.st.message = self.on_target(i, &message);
            return;
        }
        self.start_run();
    }

    /// Ping-pong: the target group the load balancer shows carrying all
    /// traffic becomes stable, the other the canary (the first run of a
    /// rollout, or roles recorded before a person moved the traffic). The
    /// next reconcile observes with the new roles and starts the run.
    fn adopt_roles(&mut self) {
        self.swap_roles();
        let message = format!(
            "{} carries all traffic: it is stable, and revision {} goes into {}",
            self.st.stable_target_group_arn, self.st.revision, self.st.canary_target_group_arn
        );
        self.st.message = message.clone();
        self.event(EventKind::RolesSwapped, message, None);
        self.requeue = Some(1);
    }

    /// Exchanges the recorded roles of a ping-pong pair. The weights as
    /// recorded follow the roles (the canary's desired weight becomes 0:
    /// the group now called stable carries what the canary carried).
    pub(super) fn swap_roles(&mut self) {
        let st = &mut self.st;
        std::mem::swap(
            &mut st.stable_target_group_arn,
            &mut st.canary_target_group_arn,
        );
        st.canary_weight = 0;
        if let Some(w) = st.observed_weights.as_mut() {
            std::mem::swap(&mut w.stable, &mut w.canary);
        }
    }

    pub(super) fn start_run(&mut self) {
        let st = &mut self.st;
        st.phase = Phase::Progressing;
        st.started_at = Some(self.now);
        st.last_progress_at = Some(self.now);
        st.step_started_at = Some(self.now);
        st.current_step_index = 0;
        st.canary_weight = 0;
        st.weight_verified_at = Some(self.now);
        if self.ctx.rollout.spec.strategy.blue_green.is_some() {
            st.blue_green = Some(BlueGreenStatus {
                stage: BlueGreenStage::Preview,
                stage_started_at: self.now,
                preview_passed: false,
                chaos_passed: false,
            });
        }
        let revision = st.revision.clone();
        self.event(
            EventKind::RunStarted,
            format!("run of revision {revision} started: stable carries all traffic"),
            None,
        );
    }

    pub(super) fn canary(&mut self) {
        let steps = self.steps().to_vec();
        let total = steps.len();
        if self.st.current_step_index as usize > total {
            self.st.current_step_index = u32::try_from(total).unwrap_or(u32::MAX);
        }
        for _ in 0..=total + 1 {
            if self.st.phase == Phase::Paused {
                if let Some(PauseReason::Step) = self.st.pause {
                    self.st.message = format!(
                        "paused at step {} of {total}: waiting for promote",
                        self.st.current_step_index + 1
                    );
                }
                return;
            }
            let idx = self.st.current_step_index as usize;
            let desired = self.st.canary_weight;
            let Some(step) = steps.get(idx) else {
                self.after_the_steps(desired);
                return;
            };
            match step {
                CanaryStep::SetWeight(w) => {
                    let w = w.get();
                    if desired == w {
                        if self.settled() {
                            self.advance(idx + 1);
                            continue;
                        }
                        self.st.message = format!(
                            "step {} of {total}: waiting for the load balancer to show stable {} / canary {w}",
                            idx + 1,
                            100 - w
                        );
                        self.requeue = Some(VERIFY_REQUEUE_MS);
                        return;
                    }
                    if w == 100 && desired < 100 && self.improvement_refused(idx, total) {
                        return;
                    }
                    if w > desired {
                        if let Err(why) = self.may_raise() {
                            self.st.message = format!("step {} of {total}: {why}", idx + 1);
                            if self.some_health_missing() {
                                // Not read this time (the plan did not
                                // expect a raise): look again shortly.
                                self.requeue = Some(VERIFY_REQUEUE_MS);
                            }
                            return;
                        }
                    }
                    self.set_desired(w);
                    self.st.message = format!(
                        "step {} of {total}: setting stable {} / canary {w}",
                        idx + 1,
                        100 - w
                    );
                    self.requeue = Some(VERIFY_REQUEUE_MS);
                    return;
                }
                CanaryStep::Webhook(hook) => {
                    self.webhook_step(idx, total, hook);
                    return;
                }
                CanaryStep::Chaos(c) => {
                    let label = format!("step {} of {total}", idx + 1);
                    if self.chaos_step(idx as u32, &label, c) {
                        self.advance(idx + 1);
                        continue;
                    }
                    return;
                }
                CanaryStep::Pause(p) => match self.pause_step(idx, total, p, desired) {
                    Some(why) => {
                        self.advance_because(idx + 1, why);
                        continue;
                    }
                    None => return,
                },
            }
        }
    }

    /// A pause step: `Some(why)` when it is over (why it ended early, if it
    /// did), `None` while it holds.
    fn pause_step(
        &mut self,
        idx: usize,
        total: usize,
        p: &rollout_spec::Pause,
        desired: u8,
    ) -> Option<Option<String>> {
        let Some(d) = p.duration else {
            let message = format!("paused at step {} of {total}: waiting for promote", idx + 1);
            self.pause(PauseReason::Step, message, None);
            return None;
        };
        if p.minimum.is_some() {
            return self.evidence_pause(idx, total, p);
        }
        let started = *self.st.step_started_at.get_or_insert(self.now);
        let until = started.plus_ms(d.as_millis());
        if self.now >= until {
            return Some(None);
        }
        self.st.message = format!(
            "step {} of {total}: pausing {d} at canary {desired}% until {until}",
            idx + 1
        );
        self.requeue_at(until);
        None
    }

    /// Before the last raise: a run whose required improvements were not
    /// shown is rolled back (true when it was).
    fn improvement_refused(&mut self, idx: usize, total: usize) -> bool {
        if self.may_raise().is_err() {
            return false;
        }
        let Some(why) = self.improvement_missing() else {
            return false;
        };
        self.roll_back(format!(
            "step {} of {total}: the steps ended without the improvement required: {why}",
            idx + 1
        ));
        true
    }

    /// Every step is done: once 100% is seen, the bake after promotion (if
    /// any), then success.
    fn after_the_steps(&mut self, desired: u8) {
        if let Some(e) = self.ctx.rollout.spec.strategy.experiment.clone() {
            self.experiment_done(&e, desired);
            return;
        }
        if desired != 100 || !self.settled() {
            self.st.message = format!("waiting for the load balancer to show canary {desired}%");
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return;
        }
        let bake = self
            .ctx
            .rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.post_promotion.clone());
        if let Some(pp) = &bake {
            if self.baking(pp) {
                return;
            }
        }
        let revision = self.st.revision.clone();
        let baked = bake
            .map(|pp| format!("; it baked {} at 100% without a failure", pp.duration))
            .unwrap_or_default();
        self.succeed(format!("revision {revision} serves all traffic{baked}"));
    }

    /// An experiment's steps are done: once stable is seen carrying all
    /// traffic again, the run succeeds with what was measured (the roles
    /// stay: stable served the release throughout).
    fn experiment_done(&mut self, e: &rollout_spec::Experiment, desired: u8) {
        if desired != 0 || !self.settled() {
            self.st.message =
                "experiment over: waiting for the load balancer to show stable 100%".into();
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return;
        }
        let learnt = crate::report::summary(&self.st, self.ctx.templates);
        let message = format!(
            "experiment done: revision {} served {}% for {}; all traffic is back on stable; {learnt}",
            self.st.revision,
            e.weight.get(),
            e.duration
        );
        self.st.phase = Phase::Succeeded;
        self.st.ended_at = Some(self.now);
        self.st.analysis.origin = None;
        self.st.message = message.clone();
        self.event(EventKind::Succeeded, message, None);
    }

    /// The gates before the canary weight goes up.
    pub(super) fn may_raise(&self) -> Result<(), String> {
        if !self.settled() {
            return Err(format!(
                "waiting for the load balancer to show canary {}%",
                self.st.canary_weight
            ));
        }
        // The analysis first: while it has not passed, health does not
        // matter yet (and is not read).
        if self.st.canary_weight > 0 {
            self.analysis_passed()?;
        }
        self.healthy_canary()?;
        Ok(())
    }

    /// Ends the run with the canary serving all traffic. With ping-pong
    /// target groups the roles swap here: the group that now serves is
    /// stable, the other is where the next revision goes.
    pub(super) fn succeed(&mut self, message: String) {
        self.st.phase = Phase::Succeeded;
        self.st.ended_at = Some(self.now);
        self.st.analysis.origin = None;
        let message = if self.ctx.rollout.spec.target_groups.is_some() {
            self.swap_roles();
            format!(
                "{message}; {} is stable now, and the next revision goes into {}",
                self.st.stable_target_group_arn, self.st.canary_target_group_arn
            )
        } else {
            message
        };
        self.st.message = message.clone();
        self.event(EventKind::Succeeded, message, None);
    }

    pub(super) fn set_desired(&mut self, w: u8) {
        let before = self.st.canary_weight;
        if before == w {
            return;
        }
        self.st.canary_weight = w;
        self.st.weight_verified_at = None;
        self.st.analysis.origin = None;
        for t in self.st.analysis.templates.values_mut() {
            t.intervals_done = 0;
            t.passes = 0;
        }
        let message = format!("weights set to stable {} / canary {w}", 100 - w);
        self.event_weights(EventKind::WeightSet, message, None, before, w);
    }
}
