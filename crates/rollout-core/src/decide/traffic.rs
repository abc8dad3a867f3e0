//! Stages 1, 5 and 9: the weights the load balancer holds, drift, the
//! desired weight seen applied, and the weight writes to ask for.

use super::*;

/// The API budget's urgency of writing `desired` over `seen` (see
/// [`Action::SetWeights`]).
pub fn write_urgency(seen: crate::observe::ForwardWeights, desired: Weights) -> Urgency {
    let lowering = desired.canary == 0
        || u64::from(desired.canary) * u64::from(seen.stable.max(1))
            < u64::from(seen.canary) * u64::from(desired.stable.max(1));
    if lowering {
        Urgency::Rollback
    } else if seen.canary == 0 {
        Urgency::Routine
    } else {
        Urgency::ReadBack
    }
}

impl Reconcile<'_> {
    pub(super) fn observe_traffic(&mut self) {
        if let Observed::Ok(fw) = &self.obs.traffic {
            self.st.observed_weights = Some(fw.percentages());
        }
    }

    /// Weights this run did not write: the load balancer no longer holds
    /// the weights that were seen applied, or target groups the rollout
    /// does not name carry traffic. Recorded as `WeightDrift`; then the
    /// run pauses with its hands off (`onDrift: pause`) or writes its own
    /// weights back (`revert`, only when that changes nothing it does not
    /// own). While a weight of its own is still being written, a mismatch
    /// is that write in flight, not drift.
    pub(super) fn check_drift(&mut self) {
        let started = matches!(self.st.phase, Phase::Progressing | Phase::Paused)
            && self.st.started_at.is_some();
        if !started
            || self.st.deleting.is_some()
            || matches!(self.st.pause, Some(PauseReason::Drift { .. }))
        {
            return;
        }
        let expected = Weights::for_canary(self.st.canary_weight);
        // The first target (of several: any) that drifted.
        let Some((target, fw)) = (0..self.target_count()).find_map(|i| {
            let fw = self.obs.traffic_of(i).ok()?;
            let drifted = (self.settled() && !fw.matches(expected)) || fw.other > 0;
            drifted.then_some((i, *fw))
        }) else {
            return;
        };
        let seen = fw.percentages();
        let revert = self.ctx.rollout.spec.on_drift == rollout_spec::OnDrift::Revert;
        let lb = if self.target_count() > 1 {
            format!(
                "the load balancer of target `{}`",
                self.ctx.rollout.spec.target_name(target)
            )
        } else {
            "the load balancer".to_string()
        };
        let what = format!(
            "{lb} holds stable {} / canary {}{} but this run set stable {} / canary {}",
            seen.stable,
            seen.canary,
            if seen.other > 0 {
                format!(" / target groups it does not name {}", seen.other)
            } else {
                String::new()
            },
            expected.stable,
            expected.canary
        );
        // The intervals since the weights changed were not at the run's
        // split: judging starts again once its weights are seen again.
        self.st.weight_verified_at = None;
        self.st.analysis.origin = None;
        for t in self.st.analysis.templates.values_mut() {
            t.intervals_done = 0;
            t.passes = 0;
        }
        if revert && fw.other == 0 {
            self.st.message = format!(
                "{what}; onDrift is revert: writing stable {} / canary {} back",
                expected.stable, expected.canary
            );
            let m = self.st.message.clone();
            self.event(EventKind::WeightDrift, m, None);
            return;
        }
        let why = if fw.other > 0 {
            format!("; {DRIFT_PAUSES}: rolloutd never changes target groups a rollout does not name; remove them from the forward action, then resume or abort")
        } else {
            format!("; {DRIFT_PAUSES} and leaves the weights as they are: resume to write its weights back, or abort")
        };
        self.st.phase = Phase::Paused;
        self.st.pause = Some(PauseReason::Drift {
            seen,
            expected,
            since: self.now,
        });
        self.st.message = format!("{what}{why}");
        let m = self.st.message.clone();
        self.event(EventKind::WeightDrift, m, None);
    }

    /// A run that owns the traffic but cannot write it because target
    /// groups it does not name carry some says so (and writes nothing).
    pub(super) fn explain_foreign_traffic(&mut self) {
        if !self.st.owns_traffic() || matches!(self.st.pause, Some(PauseReason::Drift { .. })) {
            return;
        }
        let foreign = (0..self.target_count()).find_map(|i| {
            let fw = self.obs.traffic_of(i).ok()?;
            (fw.other > 0).then_some((i, fw.percentages()))
        });
        if let Some((i, p)) = foreign {
            let message = format!(
                "target groups this rollout does not name carry {}% of the forward action; rolloutd never changes them, so it cannot set stable {} / canary {}: remove them from the forward action",
                p.other,
                100 - self.st.canary_weight,
                self.st.canary_weight
            );
            self.st.message = self.on_target(i, &message);
        }
    }

    pub(super) fn settled(&self) -> bool {
        self.st.weight_verified_at.is_some()
    }

    pub(super) fn verify_weight(&mut self) {
        if self.st.weight_verified_at.is_some() || !self.owns_traffic() {
            self.ensure_analysis_origin();
            return;
        }
        // Every target must hold the weights before the step counts.
        let Some(all) = self.all_weights() else {
            return;
        };
        let w = self.st.canary_weight;
        if !all.iter().all(|fw| fw.matches(Weights::for_canary(w))) {
            return;
        }
        self.st.weight_verified_at = Some(self.now);
        self.st.last_progress_at = Some(self.now);
        self.event(
            EventKind::WeightVerified,
            format!("the load balancer holds stable {} / canary {w}", 100 - w),
            None,
        );
        self.ensure_analysis_origin();
    }

    pub(super) fn owns_traffic(&self) -> bool {
        self.st.owns_traffic()
    }

    pub(super) fn traffic_actions(&self) -> Vec<Action> {
        if !self.owns_traffic() || matches!(self.st.pause, Some(PauseReason::Drift { .. })) {
            return Vec::new();
        }
        let desired = Weights::for_canary(self.st.canary_weight);
        // Each target that does not hold the desired split is written.
        // Never a write that would change target groups the rollout does
        // not name (it could not reach the desired split anyway).
        (0..self.target_count())
            .filter_map(|i| {
                let fw = self.obs.traffic_of(i).ok()?;
                (fw.other == 0 && !fw.matches(desired)).then(|| Action::SetWeights {
                    weights: desired,
                    seen: *fw,
                    target: u32::try_from(i).unwrap_or(u32::MAX),
                    urgency: write_urgency(*fw, desired),
                })
            })
            .collect()
    }
}
