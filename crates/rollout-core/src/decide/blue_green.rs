//! Stage 7 for the blue-green strategy: preview, pre-promotion analysis,
//! switch, post-promotion analysis.

use rollout_spec::{BlueGreenStrategy, PhaseAnalysis};

use super::*;

impl Reconcile<'_> {
    pub(super) fn blue_green(&mut self) {
        let Some(spec) = self.ctx.rollout.spec.strategy.blue_green.clone() else {
            return;
        };
        let bg = *self.st.blue_green.get_or_insert(BlueGreenStatus {
            stage: BlueGreenStage::Preview,
            stage_started_at: self.now,
            preview_passed: false,
            chaos_passed: false,
        });
        if matches!(
            self.st.pause,
            Some(
                PauseReason::Manual { .. }
                    | PauseReason::Inconclusive
                    | PauseReason::Frozen
                    | PauseReason::Drift { .. }
            )
        ) {
            return;
        }
        match bg.stage {
            BlueGreenStage::Preview => self.bg_preview(&spec, bg),
            BlueGreenStage::Switching => self.bg_switching(&spec, bg),
            BlueGreenStage::PostPromotion => self.bg_post_promotion(&spec),
        }
    }

    /// The new target group serves no production traffic yet: its health,
    /// the pre-promotion analysis, then the switch (at once, or when a
    /// person promotes).
    fn bg_preview(&mut self, spec: &BlueGreenStrategy, bg: BlueGreenStatus) {
        self.st.current_step_index = 0;
        if let Err(why) = self.healthy_canary() {
            self.st.message = format!("preview: {why}");
            return;
        }
        let mut passed = bg.preview_passed;
        if !passed && !bg.chaos_passed {
            if let Some(chaos) = &spec.pre_promotion_chaos {
                if self.chaos_step(0, "preview", chaos) {
                    if let Some(b) = &mut self.st.blue_green {
                        b.chaos_passed = true;
                    }
                } else {
                    // Judged while it runs; the analysis goes on below.
                    if self.st.phase != Phase::Progressing {
                        return;
                    }
                }
            }
        }
        // A person's promote skips the check (the experiment is stopped).
        let chaos_done = spec.pre_promotion_chaos.is_none()
            || self
                .st
                .blue_green
                .is_some_and(|b| b.chaos_passed || b.preview_passed);
        if !passed {
            passed = match &spec.pre_promotion_analysis {
                None => true,
                Some(pre) => {
                    if self.st.analysis.origin.is_none() {
                        self.st.analysis.origin = Some(self.now);
                    }
                    let done = self.phase_passed(pre);
                    if !done {
                        self.st.message = format!(
                            "preview: pre-promotion analysis running for {} (no production traffic on the new target group)",
                            pre.duration
                        );
                    }
                    done
                }
            };
        }
        if !passed {
            return;
        }
        if !chaos_done {
            // The analysis passed; the experiment still runs (its state is
            // in the message chaos_step wrote).
            return;
        }
        if let Some(b) = &mut self.st.blue_green {
            b.preview_passed = true;
        }
        if !self.gate_passed(0, spec.pre_promotion_webhook.as_ref(), "preview") {
            return;
        }
        if spec.auto_promotion || self.st.step_promoted {
            self.start_switch();
        } else if self.st.pause != Some(PauseReason::AwaitingPromotion) {
            self.pause(
                PauseReason::AwaitingPromotion,
                "preview passed: waiting for promote to switch all traffic".into(),
                None,
            );
        }
    }

    /// All traffic is being moved: once seen, success or the
    /// post-promotion analysis against stable's last interval.
    fn bg_switching(&mut self, spec: &BlueGreenStrategy, bg: BlueGreenStatus) {
        self.st.current_step_index = 1;
        if !self.settled() {
            self.st.message = "switching: waiting for the load balancer to show canary 100%".into();
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return;
        }
        match &spec.post_promotion_analysis {
            None if spec.post_promotion_webhook.is_none() => {
                self.succeed(format!("revision {} serves all traffic", self.st.revision))
            }
            None => {
                self.st.blue_green = Some(BlueGreenStatus {
                    stage: BlueGreenStage::PostPromotion,
                    stage_started_at: self.now,
                    preview_passed: true,
                    chaos_passed: true,
                });
                self.st.step_promoted = false;
                self.st.message = "switched: waiting for the post-promotion webhook".into();
                self.advance_bg(2);
                // The gate's first call goes out on the next reconcile.
                self.requeue = Some(1);
            }
            Some(post) => {
                let switch_at = bg.stage_started_at;
                let interval = post.interval.as_millis();
                self.st.blue_green = Some(BlueGreenStatus {
                    stage: BlueGreenStage::PostPromotion,
                    stage_started_at: self.now,
                    preview_passed: true,
                    chaos_passed: true,
                });
                self.st.analysis.templates.clear();
                self.st.analysis.origin = Some(self.now);
                self.st.analysis.baseline = Some((
                    Time::from_millis(switch_at.millis().saturating_sub(interval as i64)),
                    switch_at,
                ));
                self.st.step_promoted = false;
                self.st.message = format!(
                    "switched: post-promotion analysis for {} against stable's last interval before the switch",
                    post.duration
                );
                self.advance_bg(2);
            }
        }
    }

    /// After the switch: success once every template passed its intervals.
    fn bg_post_promotion(&mut self, spec: &BlueGreenStrategy) {
        self.st.current_step_index = 2;
        if !self.gate_passed(2, spec.post_promotion_webhook.as_ref(), "switched") {
            return;
        }
        let Some(post) = &spec.post_promotion_analysis else {
            self.succeed(format!("revision {} serves all traffic", self.st.revision));
            return;
        };
        let done = self.st.step_promoted || self.phase_passed(post);
        if done {
            self.succeed(format!(
                "revision {} serves all traffic; post-promotion analysis passed",
                self.st.revision
            ));
        }
    }

    /// Whether every template of a blue-green phase judged the phase's
    /// intervals and passed at least one.
    fn phase_passed(&self, phase: &PhaseAnalysis) -> bool {
        let count = phase_intervals(phase);
        phase.templates.iter().all(|t| {
            self.st
                .analysis
                .templates
                .get(t)
                .is_some_and(|s| u64::from(s.intervals_done) >= count && s.passes > 0)
        })
    }

    pub(super) fn advance_bg(&mut self, index: u32) {
        self.st.current_step_index = index;
        self.st.last_progress_at = Some(self.now);
        self.event(EventKind::StepAdvanced, self.st.message.clone(), None);
    }

    pub(super) fn start_switch(&mut self) {
        if let Err(why) = self.healthy_canary() {
            self.st.message = format!("switch: {why}");
            return;
        }
        if !self.settled() {
            // After drift, the preview's weights are written back first.
            self.st.message = format!(
                "switch: waiting for the load balancer to show canary {}%",
                self.st.canary_weight
            );
            self.requeue = Some(VERIFY_REQUEUE_MS);
            return;
        }
        self.st.phase = Phase::Progressing;
        self.st.pause = None;
        self.st.blue_green = Some(BlueGreenStatus {
            stage: BlueGreenStage::Switching,
            stage_started_at: self.now,
            preview_passed: true,
            chaos_passed: true,
        });
        self.st.analysis.origin = None;
        self.set_desired(100);
        self.st.message = "switching all traffic to the new target group".into();
        self.advance_bg(1);
        self.requeue = Some(VERIFY_REQUEUE_MS);
    }
}

/// How many analysis intervals a blue-green phase lasts (at least one).
pub(super) fn phase_intervals(phase: &PhaseAnalysis) -> u64 {
    (phase.duration.as_millis() / phase.interval.as_millis().max(1)).max(1)
}
