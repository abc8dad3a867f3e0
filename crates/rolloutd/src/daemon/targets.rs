//! The reads of a rollout that moves several traffic targets in lockstep:
//! every target's weights and canary health, and the metric queries of its
//! judged units (see `rollout_core::decide::expand`): a unit of one target
//! reads that target's arms; a pooled unit reads every target's arms and
//! adds them up.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use rollout_analysis::IntervalMetrics;
use rollout_core::decide::split_unit;
use rollout_core::ports::MetricQuery;
use rollout_core::{IntervalRequest, IntervalResult, ObservationError};
use rollout_spec::{AnalysisTemplateSpec, RolloutSpec};

/// Runs the futures together; their outputs in order.
pub(super) async fn all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The metric queries of the due intervals, and for each interval the
/// range of queries whose results make its metrics (one query, or one per
/// target for a pooled unit).
pub(super) struct Queries<'a> {
    pub queries: Vec<MetricQuery<'a>>,
    windows: Vec<(&'a IntervalRequest, &'a AnalysisTemplateSpec, Range<usize>)>,
}

/// Plans the queries: `targets` holds each target as a spec of its own
/// (the spec itself, when it moves one).
pub(super) fn queries<'a>(
    spec: &'a RolloutSpec,
    targets: &'a [RolloutSpec],
    windows: &'a [IntervalRequest],
    templates: &'a BTreeMap<String, AnalysisTemplateSpec>,
) -> Queries<'a> {
    let mut out = Queries {
        queries: Vec::new(),
        windows: Vec::new(),
    };
    for w in windows {
        let (name, target) = split_unit(&w.template);
        let Some(template) = templates.get(name) else {
            continue;
        };
        let specs: Vec<&RolloutSpec> = match (targets.len() <= 1, target) {
            (true, _) => vec![spec],
            (false, None) => targets.iter().collect(),
            (false, Some(t)) => match spec.target_index(t).and_then(|i| targets.get(i)) {
                Some(s) => vec![s],
                None => continue,
            },
        };
        let from = out.queries.len();
        out.queries
            .extend(specs.into_iter().map(|spec| MetricQuery {
                spec,
                template,
                window: w,
            }));
        out.windows.push((w, template, from..out.queries.len()));
    }
    out
}

impl Queries<'_> {
    /// The interval results from the queries' results (in order).
    pub(super) fn results(
        &self,
        mut results: Vec<Result<IntervalMetrics, ObservationError>>,
    ) -> Vec<IntervalResult> {
        // Pad a short answer with errors rather than index past it.
        results.resize_with(self.queries.len(), || {
            Err(ObservationError {
                fatal: false,
                message: "the metric source gave no answer for this interval".into(),
            })
        });
        self.windows
            .iter()
            .map(|(w, template, range)| IntervalResult {
                template: w.template.clone(),
                end: w.end,
                metrics: pool(template, results[range.clone()].to_vec()),
            })
            .collect()
    }
}

/// Several targets' metrics over the same interval as one: requests and
/// errors add up, latency is their request-weighted mean (for a percentile
/// statistic an approximation; each target's own unit judges its exact
/// percentile), custom metrics combine by their statistic.
pub(super) fn pool(
    template: &AnalysisTemplateSpec,
    results: Vec<Result<IntervalMetrics, ObservationError>>,
) -> Result<IntervalMetrics, ObservationError> {
    let mut pooled: Option<IntervalMetrics> = None;
    let mut error: Option<ObservationError> = None;
    for r in results {
        match r {
            Ok(m) => {
                pooled = Some(match pooled {
                    None => m,
                    Some(p) => rollout_analysis::compact::merge(template, p, m),
                })
            }
            // A fatal error wins over a transient one.
            Err(e) if error.as_ref().is_none_or(|old| e.fatal && !old.fatal) => error = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    let mut pooled = pooled.ok_or_else(|| ObservationError {
        fatal: false,
        message: "no target's metrics were read".into(),
    })?;
    // The same interval, not a longer one.
    pooled.merged = 0;
    Ok(pooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_analysis::ArmSample;

    fn arm(requests: f64, errors: f64, latency: f64) -> ArmSample {
        ArmSample {
            requests: Some(requests),
            errors: Some(errors),
            latency: Some(latency),
            latency_cv: None,
        }
    }

    fn template() -> AnalysisTemplateSpec {
        let doc = "apiVersion: rolloutd.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  alb: {errorRate: {maxIncrease: 50%}, latency: {statistic: Average, maxIncrease: 10%}}\n";
        let mut set = rollout_spec::SpecSet::default();
        let mut diags = Vec::new();
        rollout_spec::parse_source("t.yaml", doc, &mut set, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        set.templates[0].value.spec.clone()
    }

    #[test]
    fn pooled_arms_add_up_over_the_same_interval() {
        let a = IntervalMetrics {
            stable: arm(900.0, 9.0, 0.1),
            canary: arm(100.0, 1.0, 0.1),
            ..Default::default()
        };
        let b = IntervalMetrics {
            stable: arm(300.0, 3.0, 0.2),
            canary: arm(100.0, 30.0, 0.3),
            ..Default::default()
        };
        let p = pool(&template(), vec![Ok(a), Ok(b)]).expect("pooled");
        assert_eq!(p.stable.requests, Some(1_200.0));
        assert_eq!(p.canary.errors, Some(31.0));
        assert_eq!(p.merged, 0);
        let lat = p.canary.latency.expect("latency");
        assert!((lat - 0.2).abs() < 1e-9, "{lat}");
    }

    #[test]
    fn a_fatal_error_of_any_target_is_the_pooled_answer() {
        let transient = ObservationError {
            fatal: false,
            message: "slow".into(),
        };
        let fatal = ObservationError {
            fatal: true,
            message: "denied".into(),
        };
        let got = pool(
            &template(),
            vec![
                Ok(IntervalMetrics::default()),
                Err(transient),
                Err(fatal.clone()),
            ],
        );
        assert_eq!(got, Err(fatal));
    }
}
