//! Stage 6: the analysis intervals that are due are judged; a failed
//! verdict rolls back.

use super::*;

impl Reconcile<'_> {
    /// A canary run whose current weight is seen applied is judged from then
    /// on; this also starts the analysis when it is added to a running
    /// rollout's spec (or comes back after a spec change) at a weight that
    /// was already verified.
    pub(super) fn ensure_analysis_origin(&mut self) {
        let canary_analysis = self.ctx.rollout.spec.strategy.blue_green.is_none()
            && self.ctx.rollout.spec.analysis.is_some();
        let w = self.st.canary_weight;
        if canary_analysis
            && self.st.analysis.origin.is_none()
            && self.settled()
            && matches!(self.st.phase, Phase::Progressing | Phase::Paused)
            && w > 0
            && w < 100
        {
            // Intervals lie on the wall-clock grid of the analysis interval,
            // from the boundary at or before now: every rollout with the same
            // interval has its intervals fall due at the same instants, so
            // their metrics are read together (one GetMetricData call carries
            // 500 queries), and an interval covers whole CloudWatch periods
            // when the period divides it. The first interval may begin before
            // the weight was seen: it counts against the canary, but only an
            // interval wholly at the current weight counts as a pass.
            let interval = self
                .ctx
                .rollout
                .spec
                .analysis
                .as_ref()
                .map_or(1, |a| a.interval.as_millis().max(1));
            self.st.analysis.origin = Some(grid_floor(self.now, interval));
        }
    }

    pub(super) fn analyze(&mut self) {
        let Some(AnalysisConfig {
            templates: names,
            count,
            ..
        }) = analysis_config(self.ctx, &self.st)
        else {
            return;
        };
        let due = due_intervals(self.ctx, &self.st, self.now);
        for name in names {
            let Some(template) = self.ctx.templates.get(&name) else {
                self.fail(format!("AnalysisTemplate `{name}` does not exist"));
                return;
            };
            self.learn_noise(&name, &due);
            if !self.judge_due(&name, template, &due) || !self.apply_limits(&name, template, count)
            {
                return;
            }
        }
        self.wake_for_next_interval();
    }

    /// Stable's intervals before the run (asked for once at its start):
    /// how much its 5xx rate wanders, which the judge then assumes for both
    /// arms. Learnt once every one was read, or with those that were when
    /// the run's first interval is due.
    fn learn_noise(&mut self, name: &str, due: &[IntervalRequest]) {
        let analysis = &self.st.analysis;
        let known = analysis.templates.get(name);
        if analysis.origin.is_none() || known.is_some_and(|a| a.noise.is_some()) {
            return;
        }
        let mine = due.iter().filter(|w| w.template == name);
        let (before, run): (Vec<_>, Vec<_>) = mine.partition(|w| analysis.before_run(w.end));
        let answers: Vec<&IntervalResult> = self
            .obs
            .intervals
            .iter()
            .filter(|r| r.template == name && analysis.before_run(r.end))
            .collect();
        let all_read = !before.is_empty()
            && answers.len() >= before.len()
            && answers.iter().all(|r| r.metrics.is_ok());
        if !all_read && run.is_empty() {
            return;
        }
        let stable = answers
            .iter()
            .filter_map(|r| r.metrics.as_ref().ok())
            .map(|m| &m.stable);
        let (error_cv, intervals) = rollout_analysis::noise::stable_error_cv(stable);
        let message = format!(
            "{name}: {}",
            rollout_analysis::noise::describe(error_cv, intervals)
        );
        let intervals = u32::try_from(intervals).unwrap_or(u32::MAX);
        let entry = self
            .st
            .analysis
            .templates
            .entry(name.to_string())
            .or_default();
        entry.noise = Some(LearntNoise {
            error_cv,
            intervals,
        });
        self.event(EventKind::AnalysisJudged, message, None);
    }

    /// Judges the template's due intervals whose metrics were read, in
    /// order (an interval that could not be read is retried until the next
    /// one is due too). False when the run ended (metrics that can never
    /// be read).
    fn judge_due(
        &mut self,
        name: &str,
        template: &AnalysisTemplateSpec,
        due: &[IntervalRequest],
    ) -> bool {
        let name = name.to_string();
        let mine: Vec<&IntervalRequest> = due
            .iter()
            .filter(|w| w.template == name && !self.st.analysis.before_run(w.end))
            .collect();
        for (i, window) in mine.iter().enumerate() {
            let result = self
                .obs
                .intervals
                .iter()
                .find(|r| r.template == name && r.end == window.end);
            let weight = self.st.canary_weight;
            // The load balancer was seen at this weight by the interval's
            // start, or within its first twentieth (the read-back after a
            // write lags the change itself by a reconcile's few seconds).
            let slack = window.end.since(window.start) / 20;
            let wholly_at_weight = self
                .st
                .weight_verified_at
                .is_none_or(|seen| window.start.plus_ms(slack) >= seen);
            let under_chaos = self.st.chaos.as_ref().is_some_and(|c| !c.stop);
            let entry = self.st.analysis.templates.entry(name.clone()).or_default();
            match result.map(|r| &r.metrics) {
                None => break,
                Some(Ok(metrics)) => {
                    let before = entry.history.len();
                    rollout_analysis::compact::push(
                        template,
                        &mut entry.history,
                        metrics.clone(),
                        HISTORY_INTERVALS,
                    );
                    note_chaos_window(entry, before, under_chaos);
                    let error_cv = entry.error_cv();
                    let verdict =
                        rollout_analysis::judge_learnt(template, error_cv, &entry.history);
                    entry.intervals_done += 1;
                    entry.errors_in_a_row = 0;
                    match verdict.verdict {
                        Verdict::Pass => {
                            if wholly_at_weight {
                                entry.passes += 1;
                            }
                            entry.inconclusive_in_a_row = 0;
                        }
                        Verdict::Fail => {
                            entry.failed += 1;
                            entry.inconclusive_in_a_row = 0;
                        }
                        Verdict::Inconclusive => entry.inconclusive_in_a_row += 1,
                    }
                    let message = format!(
                        "{name} at canary {weight}%: {} ({})",
                        verdict.verdict.as_str(),
                        verdict.summary()
                    );
                    entry
                        .marks
                        .push(IntervalMark::of(window.end, weight, &verdict));
                    if entry.marks.len() > MARKS_KEPT {
                        entry.marks.remove(0);
                    }
                    entry.last = Some(JudgedInterval {
                        end: window.end,
                        canary_weight: weight,
                        result: verdict,
                    });
                    self.event(EventKind::AnalysisJudged, message, None);
                }
                Some(Err(e)) if e.fatal => {
                    let message =
                        format!("analysis `{name}` cannot read its metrics: {}", e.message);
                    self.fail(message);
                    return false;
                }
                Some(Err(e)) => {
                    // Retry the same interval until the next one is due too.
                    if i + 1 >= mine.len() {
                        break;
                    }
                    entry.intervals_done += 1;
                    entry.errors_in_a_row += 1;
                    let message = format!(
                        "{name}: the interval ending {} could not be read: {}",
                        window.end, e.message
                    );
                    self.event(EventKind::AnalysisError, message, None);
                }
            }
        }
        true
    }

    /// The template's limits: too many failed intervals roll back, too
    /// many read errors in a row fail the run, too many inconclusive ones
    /// (or none passing in a bounded phase) pause it. False when the run
    /// ended.
    fn apply_limits(
        &mut self,
        name: &str,
        template: &AnalysisTemplateSpec,
        count: Option<u32>,
    ) -> bool {
        let state = self
            .st
            .analysis
            .templates
            .get(name)
            .cloned()
            .unwrap_or_default();
        let spec = &template;
        if state.failed > spec.failure_limit {
            let evidence = state
                .last
                .as_ref()
                .map(|l| l.result.summary())
                .unwrap_or_default();
            let message = format!(
                "analysis `{name}` failed {} interval(s) (failureLimit {}): {evidence}",
                state.failed, spec.failure_limit
            );
            self.roll_back(message);
            return self.st.phase == Phase::Paused;
        }
        if state.errors_in_a_row > spec.consecutive_error_limit {
            self.fail(format!(
                "analysis `{name}`: the metric source failed {} intervals in a row (consecutiveErrorLimit {})",
                state.errors_in_a_row, spec.consecutive_error_limit
            ));
            return false;
        }
        let exhausted = count.is_some_and(|c| state.intervals_done >= c && state.passes == 0);
        if (state.inconclusive_in_a_row > spec.inconclusive_limit || exhausted)
            && self.st.pause.is_none()
            && self.st.phase == Phase::Progressing
        {
            let message = format!(
                "analysis `{name}` was inconclusive {} interval(s) in a row ({}); promote to go on without it, or abort",
                state.inconclusive_in_a_row,
                state.last.as_ref().map(|l| l.result.summary()).unwrap_or_default()
            );
            self.pause(PauseReason::Inconclusive, message, None);
        }
        true
    }

    /// Asks to be woken when each template's next interval falls due.
    fn wake_for_next_interval(&mut self) {
        if let (
            Some(origin),
            Some(AnalysisConfig {
                interval_ms: interval,
                templates: names,
                ..
            }),
        ) = (self.st.analysis.origin, analysis_config(self.ctx, &self.st))
        {
            for name in names {
                let delay = self
                    .ctx
                    .templates
                    .get(&name)
                    .map_or(0, |t| t.alb.delay.as_millis());
                let done = self
                    .st
                    .analysis
                    .templates
                    .get(&name)
                    .map_or(0, |t| t.intervals_done);
                let next = origin
                    .plus_ms(interval.saturating_mul(u64::from(done) + 1))
                    .plus_ms(delay);
                self.requeue_at(next);
            }
        }
    }

    pub(super) fn analysis_passed(&self) -> Result<(), String> {
        if self.st.step_promoted {
            return Ok(());
        }
        let Some(analysis) = &self.ctx.rollout.spec.analysis else {
            return Ok(());
        };
        for name in &analysis.templates {
            let state = self.st.analysis.templates.get(name);
            if state.is_none_or(|s| s.passes == 0) {
                let last = state
                    .and_then(|s| s.last.as_ref())
                    .map(|l| {
                        format!(
                            "; last interval {}: {}",
                            l.result.verdict.as_str(),
                            l.result.summary()
                        )
                    })
                    .unwrap_or_default();
                return Err(format!(
                    "waiting for a passing analysis `{name}` at canary {}%{last}",
                    self.st.canary_weight
                ));
            }
        }
        Ok(())
    }
}

/// Keeps `t.chaos` (the entries judged while an experiment ran) in step
/// with an interval just added to a history that held `before` entries:
/// entries merged at the old end move it down by one; one judged under
/// the experiment extends it.
fn note_chaos_window(t: &mut crate::status::TemplateAnalysis, before: usize, under_chaos: bool) {
    let len = u32::try_from(t.history.len()).unwrap_or(u32::MAX);
    let merged = t.history.len() <= before;
    if let Some([from, to]) = &mut t.chaos {
        if merged {
            *from = from.saturating_sub(1);
            *to = to.saturating_sub(1);
        }
    }
    if under_chaos {
        let from = t.chaos.map_or(len - 1, |[from, _]| from);
        t.chaos = Some([from, len]);
    }
}
