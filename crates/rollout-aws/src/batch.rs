//! Coalescing metric reads across rollouts. Each rollout is reconciled by
//! its own task, and each asks for its own intervals; CloudWatch is cheapest
//! (and least throttled) when those asks go out together, 500 metric
//! queries a call. [`Coalescing`] gathers the asks that arrive within a
//! short wait after the first (the daemon hands back its reconcile slot
//! while it waits, so every due rollout can ask), hands them
//! to the inner source in one go, and gives each caller its own results.
//! The core wakes a rollout exactly when its next interval falls due, so
//! rollouts whose intervals fall due together are read together.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rollout_analysis::IntervalMetrics;
use rollout_core::ports::{MetricQuery, MetricSource};
use rollout_core::{AlarmState, IntervalRequest, ObservationError, Observed};
use rollout_spec::{AnalysisTemplateSpec, RolloutSpec};
use tokio::sync::{mpsc, oneshot};

type Answer = Vec<Result<IntervalMetrics, ObservationError>>;

/// Intervals gathered at most before the batch goes out (several thousand
/// metric queries: a handful of `GetMetricData` calls).
pub const MAX_WINDOWS: usize = 2_000;

struct Ask {
    items: Vec<(Arc<RolloutSpec>, Arc<AnalysisTemplateSpec>, IntervalRequest)>,
    reply: oneshot::Sender<Answer>,
}

/// One rollout's alarm read: `place` is an ARN of the rollout's (its
/// account and region are where the alarms are).
struct AlarmAsk {
    place: String,
    names: Vec<String>,
    reply: oneshot::Sender<Observed<Vec<AlarmState>>>,
}

/// A metric source that batches concurrent asks into one.
pub struct Coalescing {
    tx: mpsc::UnboundedSender<Ask>,
    alarm_tx: mpsc::UnboundedSender<AlarmAsk>,
}

/// Gathers the alarm reads that arrive within `wait` of the first, and
/// reads each account's and region's names once (the inner source packs
/// 100 a call).
fn gather_alarms<M: MetricSource>(
    inner: Arc<M>,
    wait: Duration,
) -> mpsc::UnboundedSender<AlarmAsk> {
    let (tx, mut rx) = mpsc::unbounded_channel::<AlarmAsk>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let deadline = tokio::time::Instant::now() + wait;
            let mut asks = vec![first];
            loop {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(a) => asks.push(a),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let inner = Arc::clone(&inner);
            tokio::spawn(async move {
                let key = crate::budget::scope_of;
                let mut by_place: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
                for a in &asks {
                    by_place
                        .entry(key(&a.place))
                        .or_insert_with(|| (a.place.clone(), BTreeSet::new()))
                        .1
                        .extend(a.names.iter().cloned());
                }
                let mut read = BTreeMap::new();
                for (k, (place, names)) in by_place {
                    let names: Vec<String> = names.into_iter().collect();
                    let answer = inner.alarms(&place, &names).await;
                    read.insert(k, answer);
                }
                for a in asks {
                    let mine = match read.get(&key(&a.place)) {
                        Some(Observed::Ok(all)) => Observed::Ok(
                            all.iter()
                                .filter(|s| a.names.contains(&s.name))
                                .cloned()
                                .collect(),
                        ),
                        Some(other) => other.clone(),
                        None => Observed::Missing,
                    };
                    let _ = a.reply.send(mine);
                }
            });
        }
    });
    tx
}

impl Coalescing {
    /// Wraps `inner`: asks are gathered for `wait` after the first one (at
    /// most a quarter of the shortest interval asked for), or until
    /// [`MAX_WINDOWS`] intervals are waiting.
    pub fn new<M: MetricSource>(inner: M, wait: Duration) -> Coalescing {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
        let inner = Arc::new(inner);
        let alarm_tx = gather_alarms(Arc::clone(&inner), wait.min(Duration::from_millis(200)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut intervals = first.items.len();
                let mut deadline = tokio::time::Instant::now() + patience(&first, wait);
                let mut asks = vec![first];
                while intervals < MAX_WINDOWS {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(a) => {
                                intervals += a.items.len();
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
                    let mut results = inner.intervals(&queries).await.into_iter();
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
        Coalescing { tx, alarm_tx }
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
    async fn intervals(&self, queries: &[MetricQuery<'_>]) -> Answer {
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

    async fn alarms(&self, place: &str, names: &[String]) -> Observed<Vec<AlarmState>> {
        if names.is_empty() {
            return Observed::Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let lost = || {
            Observed::Err(ObservationError {
                fatal: false,
                message: "the alarm batcher stopped".into(),
            })
        };
        let ask = AlarmAsk {
            place: place.to_string(),
            names: names.to_vec(),
            reply,
        };
        if self.alarm_tx.send(ask).is_err() {
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
        async fn intervals(&self, queries: &[MetricQuery<'_>]) -> Answer {
            self.0.fetch_add(1, Ordering::SeqCst);
            queries
                .iter()
                .map(|q| {
                    let mut m = IntervalMetrics::default();
                    m.canary.requests = Some(q.window.end.millis() as f64);
                    Ok(m)
                })
                .collect()
        }

        /// Every name exists, in state `OK`, its reason the region.
        async fn alarms(&self, place: &str, names: &[String]) -> Observed<Vec<AlarmState>> {
            let region = crate::regional::region_of(place);
            self.0.fetch_add(1, Ordering::SeqCst);
            Observed::Ok(
                names
                    .iter()
                    .map(|n| AlarmState {
                        name: n.clone(),
                        state: "OK".into(),
                        reason: region.into(),
                    })
                    .collect(),
            )
        }
    }

    #[tokio::test]
    async fn concurrent_alarm_reads_go_out_as_one_call_per_region() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::new(Coalescing::new(
            Counting(Arc::clone(&calls)),
            Duration::from_millis(50),
        ));
        let ask = |region: &'static str, names: &'static [&'static str]| {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                let place = format!(
                    "arn:aws:elasticloadbalancing:{region}:123456789012:listener/app/shop/1/2"
                );
                c.alarms(&place, &names).await
            })
        };
        let a = ask("us-east-1", &["api-5xx", "db-cpu"]);
        let b = ask("us-east-1", &["db-cpu", "queue-depth"]);
        let e = ask("eu-west-1", &["api-5xx"]);
        let got = |o: Observed<Vec<AlarmState>>| -> Vec<(String, String)> {
            o.ok()
                .map(|v| {
                    v.iter()
                        .map(|a| (a.name.clone(), a.reason.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let a = got(a.await.expect("a"));
        let b = got(b.await.expect("b"));
        let e = got(e.await.expect("e"));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one read per region");
        assert_eq!(
            a,
            [
                ("api-5xx".to_string(), "us-east-1".to_string()),
                ("db-cpu".into(), "us-east-1".into())
            ]
        );
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|(n, _)| n == "db-cpu" || n == "queue-depth"));
        assert_eq!(e, [("api-5xx".to_string(), "eu-west-1".to_string())]);
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
                let w = |end: i64| IntervalRequest {
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
                let got = c.intervals(&qs).await;
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
