//! The reads of a rollout that moves several traffic targets in lockstep:
//! the metric queries of its judged units, each for the targets the core
//! says it reads (`rollout_core::decide::unit_reads`), their results pooled
//! as the core pools them; and `all`, which runs a rollout's per-target
//! reads and writes together.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use rollout_analysis::IntervalMetrics;
use rollout_core::decide::{pool, unit_reads};
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

/// Plans the queries: `targets` holds each target of `spec` as a spec of
/// its own (`spec` itself, when it moves one).
pub(super) fn queries<'a>(
    spec: &RolloutSpec,
    targets: &'a [RolloutSpec],
    windows: &'a [IntervalRequest],
    templates: &'a BTreeMap<String, AnalysisTemplateSpec>,
) -> Queries<'a> {
    let mut out = Queries {
        queries: Vec::new(),
        windows: Vec::new(),
    };
    for w in windows {
        let Some((name, reads)) = unit_reads(spec, &w.template) else {
            continue;
        };
        let Some(template) = templates.get(name) else {
            continue;
        };
        let from = out.queries.len();
        out.queries.extend(
            reads
                .iter()
                .filter_map(|&i| targets.get(i))
                .map(|spec| MetricQuery {
                    spec,
                    template,
                    window: w,
                }),
        );
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
