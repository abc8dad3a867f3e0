//! The metric source: `AWS/ApplicationELB` metrics of both target groups,
//! through `GetMetricData`.
//!
//! Every interval due in one tick, across every rollout handed to
//! [`MetricSource::windows`] at once, becomes a handful of metric queries per
//! arm (`RequestCount` Sum, `HTTPCode_Target_5XX_Count` Sum and, when the
//! template checks latency, `TargetResponseTime` with its statistic plus the
//! Average and p99 that estimate the latency spread). The queries are packed
//! into as few calls as the API allows: 500 queries a call, one time range a
//! call, one call per CloudWatch period in use (a period fixes the bucket
//! alignment), and at most 100,800 datapoints a call. `NextToken` is
//! followed. Each call's range spans its queries' intervals; each query keeps
//! only the buckets of its own interval.
//!
//! Intervals are aligned to the period: an interval `[start, end)` reads the
//! buckets from `start` rounded down to the period, for as many whole periods
//! as it lasts (at least one). A bucket with no datapoint is "no data", never
//! zero: an arm with no `RequestCount` datapoint has no request count, and
//! the judge calls the interval inconclusive (a missing 5xx count next to a
//! request count is zero, which is how ALB reports it). When an interval
//! spans several buckets, sums add up exactly, the Average is weighted by
//! each bucket's requests (exact), and a percentile is the request-weighted
//! mean of the buckets' percentiles (an approximation; an interval of one
//! period is exact).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StatusCode,
};
use aws_sdk_cloudwatch::Client;
use rollout_analysis::{stats, ArmSample, WindowMetrics};
use rollout_core::ports::{MetricQuery, MetricSource};
use rollout_core::ObservationError;
use rollout_spec::LatencyStatistic;

use crate::CallObserver;

/// The IAM service prefix of CloudWatch.
pub const SERVICE: &str = "cloudwatch";
/// Metric queries one `GetMetricData` call may carry.
pub const MAX_QUERIES: usize = 500;
/// Datapoints one `GetMetricData` call may return.
pub const MAX_DATAPOINTS: u64 = 100_800;
/// The namespace of the ALB metrics.
pub const NAMESPACE: &str = "AWS/ApplicationELB";

/// The CloudWatch metric source.
#[derive(Clone)]
pub struct CloudWatchSource {
    client: Client,
    observer: CallObserver,
}

/// Which arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arm {
    /// The baseline.
    Stable,
    /// The new revision.
    Canary,
}

/// What a query feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `RequestCount`, Sum.
    Requests,
    /// `HTTPCode_Target_5XX_Count`, Sum.
    Errors,
    /// `TargetResponseTime` with the template's statistic.
    Latency,
    /// `TargetResponseTime` Average (for the latency spread).
    LatencyAverage,
    /// `TargetResponseTime` p99 (for the latency spread).
    LatencyP99,
}

/// One metric query: one field of one arm of one requested interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The index of the interval among those asked for.
    pub window: usize,
    /// The arm.
    pub arm: Arm,
    /// The field.
    pub field: Field,
    /// The metric name.
    pub metric: &'static str,
    /// The CloudWatch statistic (`Sum`, `Average`, `p99`).
    pub stat: String,
    /// The `LoadBalancer` dimension.
    pub load_balancer: String,
    /// The `TargetGroup` dimension.
    pub target_group: String,
    /// First bucket (epoch seconds, a multiple of the period).
    pub start: i64,
    /// End of the last bucket (exclusive).
    pub end: i64,
}

/// One `GetMetricData` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The period of all its queries, in seconds.
    pub period: i64,
    /// `StartTime` (epoch seconds).
    pub start: i64,
    /// `EndTime` (epoch seconds).
    pub end: i64,
    /// Its queries; query `i` has the ID `q{i}`.
    pub wants: Vec<Want>,
}

fn stat_name(s: LatencyStatistic) -> String {
    match s {
        LatencyStatistic::Average => "Average".to_string(),
        LatencyStatistic::Percentile(p) => format!("p{p}"),
    }
}

/// The metric queries of the intervals, in order of interval.
pub fn wants(queries: &[MetricQuery<'_>]) -> Vec<Want> {
    let mut out = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let period_ms =
            i64::try_from(q.template.alb.period.as_secs().max(1) * 1000).unwrap_or(60_000);
        let load_balancer = q
            .spec
            .traffic_routing
            .alb
            .listener_arn
            .load_balancer
            .clone();
        let mut fields = vec![(Field::Requests, "RequestCount", "Sum".to_string())];
        fields.push((
            Field::Errors,
            "HTTPCode_Target_5XX_Count",
            "Sum".to_string(),
        ));
        if let Some(l) = &q.template.alb.latency {
            let stat = stat_name(l.statistic);
            if stat != "Average" {
                fields.push((
                    Field::LatencyAverage,
                    "TargetResponseTime",
                    "Average".to_string(),
                ));
            }
            if stat != "p99" {
                fields.push((Field::LatencyP99, "TargetResponseTime", "p99".to_string()));
            }
            fields.push((Field::Latency, "TargetResponseTime", stat));
        }
        let arms = [
            (
                Arm::Stable,
                &q.spec.stable.target_group_arn.dimension,
                q.window.stable_start.millis(),
                q.window.stable_end.millis(),
            ),
            (
                Arm::Canary,
                &q.spec.canary.target_group_arn.dimension,
                q.window.start.millis(),
                q.window.end.millis(),
            ),
        ];
        for (arm, tg, start, end) in arms {
            let (start, end) = aligned(start, end, period_ms);
            for (field, metric, stat) in &fields {
                out.push(Want {
                    window: i,
                    arm,
                    field: *field,
                    metric,
                    stat: stat.clone(),
                    load_balancer: load_balancer.clone(),
                    target_group: tg.clone(),
                    start,
                    end,
                });
            }
        }
    }
    out
}

/// `[start, end)` in milliseconds as whole buckets of `period_ms`, in
/// seconds: from `start` rounded down, as many periods as fit (at least one).
pub fn aligned(start: i64, end: i64, period_ms: i64) -> (i64, i64) {
    let p = period_ms.max(1000);
    let first = start.div_euclid(p) * p;
    let periods = ((end - start) / p).max(1);
    (first / 1000, (first + periods * p) / 1000)
}

/// Packs the queries into calls: one period per call, at most
/// [`MAX_QUERIES`] queries and [`MAX_DATAPOINTS`] datapoints each.
pub fn batches(mut wants: Vec<Want>, period_of: impl Fn(&Want) -> i64) -> Vec<Batch> {
    let mut by_period: BTreeMap<i64, Vec<Want>> = BTreeMap::new();
    for w in wants.drain(..) {
        by_period.entry(period_of(&w).max(1)).or_default().push(w);
    }
    let mut out = Vec::new();
    for (period, mut ws) in by_period {
        ws.sort_by_key(|w| (w.start, w.window));
        let mut cur: Option<Batch> = None;
        for w in ws {
            if let Some(b) = &mut cur {
                let start = b.start.min(w.start);
                let end = b.end.max(w.end);
                let points = u64::try_from((end - start) / period)
                    .unwrap_or(u64::MAX)
                    .max(1)
                    * (b.wants.len() as u64 + 1);
                if b.wants.len() < MAX_QUERIES && points <= MAX_DATAPOINTS {
                    b.start = start;
                    b.end = end;
                    b.wants.push(w);
                    continue;
                }
                out.extend(cur.take());
            }
            cur = Some(Batch {
                period,
                start: w.start,
                end: w.end,
                wants: vec![w],
            });
        }
        out.extend(cur);
    }
    out
}

/// The datapoints of one query: (bucket start, value).
pub type Points = Vec<(i64, f64)>;

/// Both arms' metrics of one interval from its queries' datapoints.
pub fn assemble(parts: &[(&Want, &Points)]) -> WindowMetrics {
    let mut m = WindowMetrics::default();
    for arm in [Arm::Stable, Arm::Canary] {
        let get = |f: Field| -> Option<BTreeMap<i64, f64>> {
            let (w, pts) = parts.iter().find(|(w, _)| w.arm == arm && w.field == f)?;
            let inside: BTreeMap<i64, f64> = pts
                .iter()
                .filter(|(t, v)| *t >= w.start && *t < w.end && v.is_finite())
                .copied()
                .collect();
            (!inside.is_empty()).then_some(inside)
        };
        let requests = get(Field::Requests);
        let sum = |b: &BTreeMap<i64, f64>| b.values().sum::<f64>();
        // Weighted by each bucket's requests (1 where the count is missing).
        let weighted = |b: &BTreeMap<i64, f64>| {
            let (mut num, mut den) = (0.0, 0.0);
            for (t, v) in b {
                let w = requests
                    .as_ref()
                    .and_then(|r| r.get(t).copied())
                    .unwrap_or(1.0)
                    .max(0.0);
                num += v * w;
                den += w;
            }
            (den > 0.0).then(|| num / den)
        };
        let latency = get(Field::Latency).and_then(|b| weighted(&b));
        let (avg, p99) = {
            let lat_stat = parts
                .iter()
                .find(|(w, _)| w.arm == arm && w.field == Field::Latency)
                .map(|(w, _)| w.stat.as_str());
            let avg = if lat_stat == Some("Average") {
                latency
            } else {
                get(Field::LatencyAverage).and_then(|b| weighted(&b))
            };
            let p99 = if lat_stat == Some("p99") {
                latency
            } else {
                get(Field::LatencyP99).and_then(|b| weighted(&b))
            };
            (avg, p99)
        };
        let sample = ArmSample {
            requests: requests.as_ref().map(sum),
            errors: get(Field::Errors).as_ref().map(sum),
            latency,
            latency_cv: avg.zip(p99).and_then(|(a, p)| stats::lognormal_cv(a, p)),
        };
        match arm {
            Arm::Stable => m.stable = sample,
            Arm::Canary => m.canary = sample,
        }
    }
    m
}

fn sdk_query(id: usize, w: &Want, period: i64) -> MetricDataQuery {
    let dims = [
        ("LoadBalancer", &w.load_balancer),
        ("TargetGroup", &w.target_group),
    ]
    .into_iter()
    .map(|(n, v)| Dimension::builder().name(n).value(v.as_str()).build())
    .collect::<Vec<_>>();
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(w.metric)
        .set_dimensions(Some(dims))
        .build();
    let stat = MetricStat::builder()
        .metric(metric)
        .period(i32::try_from(period).unwrap_or(60))
        .stat(w.stat.as_str())
        .build();
    MetricDataQuery::builder()
        .id(format!("q{id}"))
        .metric_stat(stat)
        .return_data(true)
        .build()
}

impl CloudWatchSource {
    /// A source on this client; every call is reported to `observer`.
    pub fn new(client: Client, observer: CallObserver) -> CloudWatchSource {
        CloudWatchSource { client, observer }
    }

    /// One batch, every page: the datapoints of each query.
    async fn fetch(&self, batch: &Batch) -> Result<Vec<Points>, ObservationError> {
        let queries = batch
            .wants
            .iter()
            .enumerate()
            .map(|(i, w)| sdk_query(i, w, batch.period))
            .collect::<Vec<_>>();
        let ids: HashMap<String, usize> = (0..batch.wants.len())
            .map(|i| (format!("q{i}"), i))
            .collect();
        let mut points: Vec<Points> = vec![Vec::new(); batch.wants.len()];
        let mut token: Option<String> = None;
        let resource = format!("{NAMESPACE} metrics of {} target groups", batch.wants.len());
        loop {
            let out = self
                .client
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(DateTime::from_secs(batch.start))
                .end_time(DateTime::from_secs(batch.end))
                .scan_by(ScanBy::TimestampAscending)
                .set_next_token(token.take())
                .send()
                .await;
            let out = crate::record(&self.observer, SERVICE, "GetMetricData", &resource, out)?;
            for r in out.metric_data_results() {
                let Some(&i) = r.id().and_then(|id| ids.get(id)) else {
                    continue;
                };
                if matches!(
                    r.status_code(),
                    Some(StatusCode::InternalError) | Some(StatusCode::Forbidden)
                ) {
                    return Err(ObservationError {
                        fatal: r.status_code() == Some(&StatusCode::Forbidden),
                        message: format!(
                            "{SERVICE}:GetMetricData answered {:?} for {} {} of {}",
                            r.status_code(),
                            batch.wants[i].metric,
                            batch.wants[i].stat,
                            batch.wants[i].target_group
                        ),
                    });
                }
                points[i].extend(
                    r.timestamps()
                        .iter()
                        .map(DateTime::secs)
                        .zip(r.values().iter().copied()),
                );
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(points)
    }
}

impl MetricSource for CloudWatchSource {
    async fn windows(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> Vec<Result<WindowMetrics, ObservationError>> {
        let periods: Vec<i64> = queries
            .iter()
            .map(|q| i64::try_from(q.template.alb.period.as_secs().max(1)).unwrap_or(60))
            .collect();
        let batches = batches(wants(queries), |w| periods[w.window]);
        let mut parts: Vec<Vec<(Want, Points)>> = vec![Vec::new(); queries.len()];
        let mut failed: Vec<Option<ObservationError>> = vec![None; queries.len()];
        for batch in &batches {
            match self.fetch(batch).await {
                Ok(points) => {
                    for (w, p) in batch.wants.iter().zip(points) {
                        parts[w.window].push((w.clone(), p));
                    }
                }
                Err(e) => {
                    for w in &batch.wants {
                        failed[w.window] = Some(e.clone());
                    }
                }
            }
        }
        parts
            .into_iter()
            .zip(failed)
            .map(|(p, f)| match f {
                Some(e) => Err(e),
                None => Ok(assemble(
                    &p.iter().map(|(w, pts)| (w, pts)).collect::<Vec<_>>(),
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_align_to_the_period() {
        // 12:00:07.5 to 12:01:07.5 with a 60 s period reads the 12:00 bucket.
        assert_eq!(aligned(43_207_500, 43_267_500, 60_000), (43_200, 43_260));
        // Two periods long.
        assert_eq!(aligned(43_200_000, 43_320_000, 60_000), (43_200, 43_320));
        // Shorter than a period: still one bucket.
        assert_eq!(aligned(10_500, 11_000, 1_000), (10, 11));
    }

    fn want(window: usize, start: i64, end: i64) -> Want {
        Want {
            window,
            arm: Arm::Canary,
            field: Field::Requests,
            metric: "RequestCount",
            stat: "Sum".into(),
            load_balancer: "app/shop/1".into(),
            target_group: "targetgroup/green/2".into(),
            start,
            end,
        }
    }

    #[test]
    fn batches_are_as_few_as_the_api_allows() {
        for n in [1usize, 499, 500, 501, 8_000] {
            let ws: Vec<Want> = (0..n)
                .map(|i| want(i, 600 + (i as i64 % 7) * 60, 660 + (i as i64 % 7) * 60))
                .collect();
            let b = batches(ws, |_| 60);
            assert_eq!(b.len(), n.div_ceil(MAX_QUERIES), "{n} queries");
            assert!(b.iter().all(|b| b.wants.len() <= MAX_QUERIES));
            assert_eq!(b.iter().map(|b| b.wants.len()).sum::<usize>(), n);
            for b in &b {
                assert!(b.wants.iter().all(|w| w.start >= b.start && w.end <= b.end));
            }
        }
        // Two periods never share a call (the buckets would not align).
        let b = batches(vec![want(0, 600, 660), want(1, 600, 601)], |w| {
            if w.window == 0 {
                60
            } else {
                1
            }
        });
        assert_eq!(b.len(), 2);
        // A range too long for the datapoint limit splits.
        let ws: Vec<Want> = (0..500).map(|i| want(i, 0, 1_000)).collect();
        let b = batches(ws, |_| 1);
        assert!(b.len() > 1);
        assert!(b
            .iter()
            .all(|b| ((b.end - b.start) as u64) * b.wants.len() as u64 <= MAX_DATAPOINTS));
    }

    fn part(arm: Arm, field: Field, stat: &str, start: i64, end: i64) -> Want {
        Want {
            arm,
            field,
            stat: stat.into(),
            ..want(0, start, end)
        }
    }

    #[test]
    fn assembling_sums_weights_and_keeps_missing_as_missing() {
        let req = part(Arm::Canary, Field::Requests, "Sum", 60, 180);
        let err = part(Arm::Canary, Field::Errors, "Sum", 60, 180);
        let lat = part(Arm::Canary, Field::Latency, "Average", 60, 180);
        let p99 = part(Arm::Canary, Field::LatencyP99, "p99", 60, 180);
        let s_req = part(Arm::Stable, Field::Requests, "Sum", 60, 180);
        // Buckets outside [60, 180) are ignored.
        let req_pts: Points = vec![(0, 1_000.0), (60, 100.0), (120, 300.0), (180, 7.0)];
        let err_pts: Points = vec![(120, 3.0)];
        let lat_pts: Points = vec![(60, 0.2), (120, 0.1)];
        let p99_pts: Points = vec![(60, 0.5), (120, 0.5)];
        let none: Points = vec![];
        let m = assemble(&[
            (&req, &req_pts),
            (&err, &err_pts),
            (&lat, &lat_pts),
            (&p99, &p99_pts),
            (&s_req, &none),
        ]);
        assert_eq!(m.canary.requests, Some(400.0));
        assert_eq!(m.canary.errors, Some(3.0));
        let avg = m.canary.latency.expect("latency");
        assert!(
            (avg - (0.2 * 100.0 + 0.1 * 300.0) / 400.0).abs() < 1e-12,
            "{avg}"
        );
        assert!(m.canary.latency_cv.is_some());
        assert_eq!(m.stable.requests, None, "no datapoint is no data, not zero");
        assert_eq!(m.stable.errors, None);
        assert_eq!(m.stable.latency, None);
    }
}
