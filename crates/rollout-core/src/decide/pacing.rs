//! Stage 7, evidence-driven pauses (`pause: {duration, minimum}`): after
//! its minimum such a pause ends as soon as every check of every template
//! has shown the canary within its tolerance (see
//! `rollout_analysis::within`); it never lasts longer than its duration.

use rollout_spec::{Duration, Pause};

use super::*;

/// What the analysis says about ending an evidence-driven pause now.
pub(super) enum Evidence {
    /// Every check has shown the canary within tolerance: why.
    In(String),
    /// Not yet: what is missing, and the minutes the slowest check would
    /// need at the pace so far (with the canary requests that takes).
    Short {
        missing: String,
        more: Option<(f64, f64)>,
        /// The checks whose intervals at this weight point outside the
        /// tolerance as far as a suspicious interval does (`α^½`).
        against: Option<String>,
        /// Those that also look beyond it: the failure test over those
        /// intervals leans against the canary.
        beyond: Option<String>,
    },
}

impl Reconcile<'_> {
    /// Whether the analysis has shown, at the current weight and since the
    /// step began at `started`, that the canary is within its tolerance.
    pub(super) fn evidence(&self, started: Time) -> Evidence {
        let Some(config) = analysis_config(self.ctx, &self.st) else {
            return Evidence::Short {
                missing: "no analysis runs".into(),
                more: None,
                against: None,
                beyond: None,
            };
        };
        let minutes_per_interval = config.interval_ms as f64 / 60_000.0;
        let (mut shown, mut missing) = (Vec::new(), Vec::new());
        let (mut againsts, mut beyonds) = (Vec::new(), Vec::new());
        let mut more = Some((0.0_f64, 0.0_f64));
        for name in &config.templates {
            let state = self.st.analysis.templates.get(name);
            // An interval at this weight has passed (as the next raise
            // needs), and the last one judged is at this weight.
            let last = state.filter(|s| s.passes > 0).and_then(|s| {
                s.last
                    .as_ref()
                    .filter(|l| l.canary_weight == self.st.canary_weight && l.end > started)
            });
            let Some(last) = last else {
                missing.push(format!(
                    "`{name}`: no interval at this weight has passed yet"
                ));
                more = None;
                continue;
            };
            let within = last.result.within_tolerance();
            let [against, strongly, beyond] = self.against_here(name, state);
            if within.shown && last.result.verdict == Verdict::Pass && against.is_none() {
                shown.push(format!("`{name}`: {}", within.text));
                continue;
            }
            if let Some(against) = against {
                missing.push(format!("`{name}`: {against}"));
                if let Some(strongly) = strongly {
                    againsts.push(format!("`{name}`: {strongly}"));
                }
                if let Some(beyond) = beyond {
                    beyonds.push(format!("`{name}`: {beyond}"));
                }
                more = None;
                continue;
            }
            if last.result.verdict != Verdict::Pass {
                missing.push(format!(
                    "`{name}`: the last interval did not pass ({})",
                    last.result.summary()
                ));
            } else {
                missing.push(format!("`{name}`: {}", within.text));
            }
            let requests = last
                .result
                .metrics
                .iter()
                .find_map(|m| m.canary_requests)
                .unwrap_or(0.0);
            more = more
                .zip(within.intervals_needed)
                .map(|((m, r), n)| (m.max(n * minutes_per_interval), r.max(n * requests)));
        }
        if missing.is_empty() && !shown.is_empty() {
            Evidence::In(shown.join("; "))
        } else {
            Evidence::Short {
                missing: missing.join("; "),
                more,
                against: (!againsts.is_empty()).then(|| againsts.join("; ")),
                beyond: (!beyonds.is_empty()).then(|| beyonds.join("; ")),
            }
        }
    }

    /// The run-wide evidence may have been gathered before the canary
    /// changed (a regression that starts late, or only under more load):
    /// the intervals judged at this weight must point inside the tolerance
    /// too (each check's evidence over them above 1) for a pause to end
    /// early; pointing outside it as far as a suspicious interval does
    /// (evidence at most `α^½`) holds a pause past its duration, and when
    /// the failure test over them also leans against the canary, waits
    /// for a person after the hold. What they point against, what strongly
    /// and what beyond the tolerance, from one judgement of them.
    fn against_here(
        &self,
        name: &str,
        state: Option<&crate::status::TemplateAnalysis>,
    ) -> [Option<String>; 3] {
        let (Some(template), Some(state)) = (self.ctx.templates.get(name), state) else {
            return [None, None, None];
        };
        let history = &state.history;
        let here = (state.intervals_done as usize).min(history.len());
        let outside = rollout_analysis::pointing_outside(
            template,
            state.error_cv(),
            &history[history.len() - here..],
        );
        let text = |keep: fn(&rollout_analysis::PointingOutside) -> bool| {
            let parts: Vec<String> = outside
                .iter()
                .filter(|o| keep(o))
                .map(|o| {
                    let failure = if o.beyond() {
                        format!(", and the failure test's {:.2} leans against the canary", o.against)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} at this weight does not point inside the tolerance (evidence {:.2} over its {here} interval(s){failure})",
                        o.metric, o.evidence
                    )
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        };
        [text(|_| true), text(|o| o.strongly), text(|o| o.beyond())]
    }

    /// A pause of `d` with a `minimum` at step `idx`: `Some(why)` when it
    /// ends now (the caller advances), else the status says where the
    /// evidence stands. At its duration it ends as a fixed pause would,
    /// unless the intervals at this weight point outside the tolerance:
    /// then it holds while the judge gathers evidence, for the templates'
    /// `inconclusiveLimit` more intervals. Then it pauses the run for a
    /// person if they still point outside and the failure test over them
    /// leans against the canary (beyond the tolerance, not only near it);
    /// else it ends as a fixed pause would have.
    pub(super) fn evidence_pause(
        &mut self,
        idx: usize,
        total: usize,
        p: &Pause,
    ) -> Option<Option<String>> {
        let (Some(d), Some(min)) = (p.duration, p.minimum) else {
            return Some(None);
        };
        let started = *self.st.step_started_at.get_or_insert(self.now);
        let until = started.plus_ms(d.as_millis());
        let earliest = started.plus_ms(min.as_millis());
        let desired = self.st.canary_weight;
        let step = idx + 1;
        let head = format!(
            "step {step} of {total}: pausing {d} at canary {desired}% until {until} (may end from {earliest} once the evidence is in)"
        );
        let evidence = self.evidence(started);
        if self.now >= until {
            return self.at_duration(step, total, until, evidence);
        }
        match evidence {
            Evidence::In(why) if self.now >= earliest => {
                let took = Duration::from_millis(self.now.since(started));
                Some(Some(format!(
                    "the pause ended after {took} of {d}: the evidence is in ({why})"
                )))
            }
            Evidence::In(why) => {
                self.st.message = format!("{head}; the evidence is in ({why}), the minimum is not");
                self.requeue_at(earliest);
                None
            }
            Evidence::Short { missing, more, .. } => {
                let left = until.since(self.now) as f64 / 60_000.0;
                let pace = match more {
                    Some((minutes, requests)) if minutes > left => format!(
                        "; at this pace about {minutes:.0} more minute(s) and {requests:.0} canary requests would be needed, beyond the {left:.1} left: the pause runs its full duration"
                    ),
                    Some((minutes, requests)) => format!(
                        "; at this pace about {minutes:.0} more minute(s) ({requests:.0} canary requests)"
                    ),
                    None => String::new(),
                };
                self.st.message = format!("{head}; not yet: {missing}{pace}");
                if self.now < earliest {
                    self.requeue_at(earliest);
                }
                self.requeue_at(until);
                None
            }
        }
    }

    /// An evidence-driven pause at its duration.
    fn at_duration(
        &mut self,
        step: usize,
        total: usize,
        until: Time,
        evidence: Evidence,
    ) -> Option<Option<String>> {
        let Evidence::Short {
            against: Some(against),
            beyond,
            ..
        } = evidence
        else {
            return Some(None);
        };
        let config = analysis_config(self.ctx, &self.st)?;
        let limit = config
            .templates
            .iter()
            .filter_map(|t| self.ctx.templates.get(t))
            .map(|t| t.inconclusive_limit)
            .min()
            .unwrap_or(0);
        let hold_ms = config.interval_ms.saturating_mul(u64::from(limit) + 1);
        if self.now >= until.plus_ms(hold_ms) {
            if let Some(beyond) = beyond {
                let message = format!(
                    "step {step} of {total}: the pause's duration is over, but the intervals at canary {}% still point beyond the tolerance ({beyond}) and the judge has not decided; promote to go on, or abort",
                    self.st.canary_weight
                );
                self.pause(PauseReason::Inconclusive, message, None);
                return None;
            }
            return Some(Some(format!(
                "the pause ended {} after its duration: the intervals at canary {}% pointed outside the tolerance ({against}), but the judge did not find the canary worse in {} more interval(s)",
                Duration::from_millis(self.now.since(until)),
                self.st.canary_weight,
                limit + 1
            )));
        }
        self.st.message = format!(
            "step {step} of {total}: the pause's duration is over, but the intervals at canary {}% point outside the tolerance ({against}): holding while the judge gathers evidence, until {}",
            self.st.canary_weight,
            until.plus_ms(hold_ms)
        );
        self.requeue_at(until.plus_ms(hold_ms));
        None
    }
}
