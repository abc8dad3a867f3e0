//! Run reports: how a run ended (or where it stands) and what each check
//! measured over it (`rollout_analysis::effect`: both arms' values, the
//! effect with its 95% confidence sequence, a verdict). The current run's
//! report is computed from its status; an ended run's is kept in its
//! `RunRecord`, computed when the run ended.

use std::collections::BTreeMap;

use rollout_analysis::effect::{self, Effect};
use rollout_spec::AnalysisTemplateSpec;
use serde::{Deserialize, Serialize};

use crate::status::{RolloutStatus, RunRecord, TemplateAnalysis};
use crate::time::Time;

/// Each template's checks' effects: template → check → effect.
pub type Checks = BTreeMap<String, BTreeMap<String, Effect>>;

/// One run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The run's number.
    pub run: u32,
    /// Its revision.
    pub revision: String,
    /// Its phase (the current run), or how it ended.
    pub outcome: String,
    /// When it started, if it did.
    pub started_at: Option<Time>,
    /// When it ended, if it did.
    pub ended_at: Option<Time>,
    /// Its last message: how it ended and why.
    pub message: String,
    /// Requests the canary served in the judged intervals.
    pub canary_requests: f64,
    /// What each template's checks measured.
    pub checks: Checks,
    /// The same over the intervals judged while the run's (last) chaos
    /// experiment ran, when it ran one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub under_chaos: Checks,
}

/// The checks' effects over the status's current analysis history.
pub fn checks_of(st: &RolloutStatus, templates: &BTreeMap<String, AnalysisTemplateSpec>) -> Checks {
    checks_over(st, templates, |t| Some(&t.history[..]))
}

/// The checks' effects over the intervals judged while the run's last
/// chaos experiment ran (none when it ran none).
pub fn under_chaos(
    st: &RolloutStatus,
    templates: &BTreeMap<String, AnalysisTemplateSpec>,
) -> Checks {
    checks_over(st, templates, |t| {
        let [from, to] = t.chaos?;
        let (from, to) = (from as usize, (to as usize).min(t.history.len()));
        (from < to).then(|| &t.history[from..to])
    })
}

/// Each template's checks' effects over the intervals `part` picks from
/// its analysis (a template it picks none of is left out).
fn checks_over(
    st: &RolloutStatus,
    templates: &BTreeMap<String, AnalysisTemplateSpec>,
    part: impl Fn(&TemplateAnalysis) -> Option<&[rollout_analysis::IntervalMetrics]>,
) -> Checks {
    st.analysis
        .templates
        .iter()
        .filter_map(|(name, t)| {
            let spec = templates.get(name)?;
            let report = effect::report_learnt(spec, t.error_cv(), part(t)?);
            Some((name.clone(), report))
        })
        .collect()
}

/// What the current run measured, in one sentence: each check's effect
/// with its interval and verdict (`latency: -12.1% [-15.0%, -9.3%]:
/// improved; …`), prefixed by its template when there are several.
pub fn summary(st: &RolloutStatus, templates: &BTreeMap<String, AnalysisTemplateSpec>) -> String {
    let checks = checks_of(st, templates);
    let several = checks.len() > 1;
    let parts: Vec<String> = checks
        .iter()
        .flat_map(|(template, checks)| {
            checks.iter().map(move |(check, e)| {
                let name = if several {
                    format!("{template}/{check}")
                } else {
                    check.clone()
                };
                let mut line = e.describe();
                // The arms' values are in the report; the sentence keeps
                // the effect and the verdict.
                if let Some(cut) = line.find("; stable ") {
                    line.truncate(cut);
                }
                format!("{name} {line}")
            })
        })
        .collect();
    if parts.is_empty() {
        "nothing was measured".into()
    } else {
        format!("measured: {}", parts.join("; "))
    }
}

/// Canary requests over the current analysis history (the first
/// template's, as every template judges the same traffic).
pub fn canary_requests(st: &RolloutStatus) -> f64 {
    st.analysis.templates.values().next().map_or(0.0, |t| {
        t.history.iter().filter_map(|w| w.canary.requests).sum()
    })
}

/// The current run's report, live.
pub fn current(
    st: &RolloutStatus,
    templates: &BTreeMap<String, AnalysisTemplateSpec>,
) -> RunReport {
    RunReport {
        run: st.run,
        revision: st.revision.clone(),
        outcome: st.phase.as_str().to_string(),
        started_at: st.started_at,
        ended_at: st.ended_at,
        message: st.message.clone(),
        canary_requests: canary_requests(st),
        checks: checks_of(st, templates),
        under_chaos: under_chaos(st, templates),
    }
}

/// An ended run's report, from its record.
pub fn of_record(r: &RunRecord) -> RunReport {
    RunReport {
        run: r.run,
        revision: r.revision.clone(),
        outcome: r.outcome.clone(),
        started_at: r.started_at,
        ended_at: Some(r.ended_at),
        message: r.message.clone(),
        canary_requests: r.canary_requests,
        checks: r.checks.clone(),
        under_chaos: r.under_chaos.clone(),
    }
}

/// Every run's report, newest first: the current run, then the ended runs
/// of `kept` (the store's history, newest first) and of the status (which
/// keeps the last few; a run in both is listed once).
pub fn all(
    st: &RolloutStatus,
    kept: &[RunRecord],
    templates: &BTreeMap<String, AnalysisTemplateSpec>,
) -> Vec<RunReport> {
    let mut ended: BTreeMap<u32, &RunRecord> = kept.iter().map(|r| (r.run, r)).collect();
    for r in &st.history {
        ended.entry(r.run).or_insert(r);
    }
    std::iter::once(current(st, templates))
        .chain(ended.values().rev().map(|r| of_record(r)))
        .collect()
}
