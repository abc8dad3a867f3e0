//! Coalescing metric reads across rollouts. Each rollout is reconciled by
//! its own task, and each asks for its own intervals; CloudWatch is cheapest
//! (and least throttled) when those asks go out together, 500 metric
//! queries a call. [`Coalescing`] gathers the asks that arrive within a
//! short wait after the first (the daemon hands back its reconcile slot
//! while it waits, so every due rollout can ask), hands them
//! to the inner source in one go, and gives each caller its own results.
//! The core wakes a rollout exactly when its next interval falls due, so
//! rollouts whose intervals fall due together are read together.

use std::sync::Arc;
use std::time::Duration;

use rollout_analysis::WindowMetrics;
use rollout_core::ports::{MetricQuery, MetricSource};
use rollout_core::{ObservationError, WindowRequest};
use rollout_spec::{AnalysisTemplateSpec, RolloutSpec};
use tokio::sync::{mpsc, oneshot};

type Answer = Vec<Result<WindowMetrics, ObservationError>>;

/// Intervals gathered at most before the batch goes out (several thousand
/// metric queries: a handful of `GetMetricData` calls).
pub const MAX_WINDOWS: usize = 2_000;

struct Ask {
    items: Vec<(Arc<RolloutSpec>, Arc<AnalysisTemplateSpec>, WindowRequest)>,
    reply: oneshot::Sender<Answer>,
}

/// A metric source that batches concurrent asks into one.
pub struct Coalescing {
    tx: mpsc::UnboundedSender<Ask>,
}

impl Coalescing {
    /// Wraps `inner`: asks are gathered for `wait` after the first one (at
    /// most a quarter of the shortest interval asked for), or until
    /// [`MAX_WINDOWS`] intervals are waiting.
    pub fn new<M: MetricSource>(inner: M, wait: Duration) -> Coalescing {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
        let inner = Arc::new(inner);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut windows = first.items.len();
                let mut deadline = tokio::time::Instant::now() + patience(&first, wait);
                let mut asks = vec![first];
                while windows < MAX_WINDOWS {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(a) => {
                                windows += a.items.len();
                                deadline = deadline.min(tokio::time::Instant::now() + patience(&a, wait));
                                asks.push(a);
                            }
                            None => break,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    let queries: Vec<MetricQuery<'_>> = asks
                        .iter()
                        .flat_map(|a| {
                            a.items.iter().map(|(spec, template, window)| MetricQuery {
                                spec,
                                template,
                                window,
                            })
                        })
                        .collect();
                    let mut results = inner.windows(&queries).await.into_iter();
                    drop(queries);
                    for a in asks {
                        let mine: Answer = (0..a.items.len())
                            .map(|_| {
                                results.next().unwrap_or_else(|| {
                                    Err(ObservationError {
                                        fatal: false,
                                        message:
                                            "the metric source answered fewer intervals than asked"
                                                .into(),
                                    })
                                })
                            })
                            .collect();
                        let _ = a.reply.send(mine);
                    }
                });
            }
        });
        Coalescing { tx }
    }
}

/// How long an ask may wait for others: `wait`, but at most a quarter of
/// its shortest interval (short intervals are read promptly).
fn patience(ask: &Ask, wait: Duration) -> Duration {
    ask.items
        .iter()
        .map(|(_, _, w)| {
            let ms = u64::try_from(w.end.millis() - w.start.millis()).unwrap_or(0);
            Duration::from_millis(ms / 4)
        })
        .min()
        .unwrap_or(wait)
        .min(wait)
}

impl MetricSource for Coalescing {
    async fn windows(&self, queries: &[MetricQuery<'_>]) -> Answer {
        if queries.is_empty() {
            return Vec::new();
        }
        let items = queries
            .iter()
            .map(|q| {
                (
                    Arc::new(q.spec.clone()),
                    Arc::new(q.template.clone()),
                    q.window.clone(),
                )
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let lost = || {
            queries
                .iter()
                .map(|_| {
                    Err(ObservationError {
                        fatal: false,
                        message: "the metric batcher stopped".into(),
                    })
                })
                .collect()
        };
        if self.tx.send(Ask { items, reply }).is_err() {
            return lost();
        }
        answer.await.unwrap_or_else(|_| lost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls and answers each interval with its index as requests.
    struct Counting(Arc<AtomicUsize>);

    impl MetricSource for Counting {
        async fn windows(&self, queries: &[MetricQuery<'_>]) -> Answer {
            self.0.fetch_add(1, Ordering::SeqCst);
            queries
                .iter()
                .map(|q| {
                    let mut m = WindowMetrics::default();
                    m.canary.requests = Some(q.window.end.millis() as f64);
                    Ok(m)
                })
                .collect()
        }
    }

    fn spec() -> (RolloutSpec, AnalysisTemplateSpec) {
        let text = include_str!("../../rollout-spec/tests/valid-base.yaml");
        let mut set = rollout_spec::SpecSet::default();
        let mut diags = Vec::new();
        rollout_spec::parse_source("valid-base.yaml", text, &mut set, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        (
            set.rollouts[0].value.spec.clone(),
            set.templates[0].value.spec.clone(),
        )
    }

    #[tokio::test]
    async fn concurrent_asks_go_out_together_and_come_back_apart() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::new(Coalescing::new(
            Counting(Arc::clone(&calls)),
            Duration::from_millis(200),
        ));
        let (spec, template) = spec();
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let (c, spec, template) = (Arc::clone(&c), spec.clone(), template.clone());
            tasks.push(tokio::spawn(async move {
                let w = |end: i64| WindowRequest {
                    template: "t".into(),
                    start: rollout_core::Time::from_millis(0),
                    end: rollout_core::Time::from_millis(end),
                    stable_start: rollout_core::Time::from_millis(0),
                    stable_end: rollout_core::Time::from_millis(end),
                };
                let ws = [w(60_000 + i as i64 * 10 + 1), w(60_000 + i as i64 * 10 + 2)];
                let qs: Vec<MetricQuery<'_>> = ws
                    .iter()
                    .map(|window| MetricQuery {
                        spec: &spec,
                        template: &template,
                        window,
                    })
                    .collect();
                let got = c.windows(&qs).await;
                let ends: Vec<f64> = got
                    .iter()
                    .map(|r| r.as_ref().expect("ok").canary.requests.expect("requests"))
                    .collect();
                assert_eq!(
                    ends,
                    vec![
                        (60_000 + i as i64 * 10 + 1) as f64,
                        (60_000 + i as i64 * 10 + 2) as f64
                    ]
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "twenty asks, one call");
    }
}
