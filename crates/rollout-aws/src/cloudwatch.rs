//! The metric source: `AWS/ApplicationELB` metrics of both target groups,
//! through `GetMetricData`.
//!
//! Every interval due in one tick, across every rollout handed to
//! [`MetricSource::intervals`] at once, becomes a handful of metric queries per
//! arm (`RequestCount` Sum, `HTTPCode_Target_5XX_Count` Sum and, when the
//! template checks latency, `TargetResponseTime` with its statistic plus the
//! Average and p99 that estimate the latency spread), and one per custom
//! metric of the template (its own namespace, statistic, period and
//! dimensions, placeholders filled per arm; only the canary's when it has
//! only an absolute limit). The queries are packed
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
use rollout_analysis::{stats, ArmSample, CustomValue, IntervalMetrics};
use rollout_core::ports::{MetricQuery, MetricSource};
use rollout_core::{AlarmState, ObservationError, Observed};
use rollout_spec::{AnalysisTemplateSpec, CustomMetric, Duration, MetricStatistic};

use crate::CallObserver;

/// The most `GetMetricData` pages read for one batch. A batch's intervals
/// need one page (at most 100,800 datapoints a call); a service that kept
/// answering with a `NextToken` must not hold a reconcile (and the budget)
/// forever.
pub const MAX_PAGES: usize = 20;

/// How old (seconds since the end of its minute) a `HealthyHostCount`
/// datapoint may be to stand for the canary's health before a raise; ALB
/// publishes every minute, so the latest is usually one to two minutes old.
pub const HEALTH_MAX_AGE_S: i64 = 180;

/// The IAM service prefix of CloudWatch.
pub const SERVICE: &str = "cloudwatch";
/// Alarm names one `DescribeAlarms` call may carry.
pub const MAX_ALARMS: usize = 100;
/// Metric queries one `GetMetricData` call may carry.
pub const MAX_QUERIES: usize = 500;
/// Datapoints one `GetMetricData` call may return.
pub const MAX_DATAPOINTS: u64 = 100_800;
/// The namespace of the ALB metrics.
pub const NAMESPACE: &str = "AWS/ApplicationELB";

mod alarms;

/// The CloudWatch metric source.
#[derive(Clone)]
pub struct CloudWatchSource {
    /// A client per region: GetMetricData is regional, and so are alarms.
    client: std::sync::Arc<crate::regional::Regional<Client>>,
    observer: CallObserver,
    budget: std::sync::Arc<crate::budget::Budget>,
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
    /// The template's custom metric of this index.
    Custom(usize),
}

/// One metric query: one field of one arm of one requested interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The index of the interval among those asked for.
    pub window: usize,
    /// The region of the rollout's load balancer (GetMetricData is
    /// regional).
    pub region: String,
    /// Its account (its metrics are read with that account's credentials).
    pub account: String,
    /// The arm.
    pub arm: Arm,
    /// The field.
    pub field: Field,
    /// The namespace.
    pub namespace: String,
    /// The metric name.
    pub metric: String,
    /// The CloudWatch statistic (`Sum`, `Average`, `p99`).
    pub stat: String,
    /// The dimensions, in order.
    pub dimensions: Vec<(String, String)>,
    /// The period in seconds.
    pub period: i64,
    /// First bucket (epoch seconds, a multiple of the period).
    pub start: i64,
    /// End of the last bucket (exclusive).
    pub end: i64,
}

/// One `GetMetricData` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The region it is sent to.
    pub region: String,
    /// The account whose metrics it reads.
    pub account: String,
    /// The period of all its queries, in seconds.
    pub period: i64,
    /// `StartTime` (epoch seconds).
    pub start: i64,
    /// `EndTime` (epoch seconds).
    pub end: i64,
    /// Its queries; query `i` has the ID `q{i}`.
    pub wants: Vec<Want>,
}

/// One series to read for each arm of an interval.
struct Series<'a> {
    field: Field,
    namespace: &'a str,
    metric: &'a str,
    stat: String,
    period: Duration,
    /// The custom metric, whose dimensions replace the ALB ones.
    custom: Option<&'a CustomMetric>,
    /// Whether stable's value is needed too.
    both_arms: bool,
}

/// The series an interval of this template needs: the ALB metrics when the
/// template checks them (or a custom metric divides by requests), then each
/// custom metric (only the canary's when its limit is absolute).
fn series(t: &AnalysisTemplateSpec) -> Vec<Series<'_>> {
    let alb = &t.alb;
    let elb = |field, metric, stat: &str| Series {
        field,
        namespace: NAMESPACE,
        metric,
        stat: stat.to_string(),
        period: alb.period,
        custom: None,
        both_arms: true,
    };
    let mut out = Vec::new();
    let checks_alb = alb.error_rate.is_some() || alb.latency.is_some();
    if checks_alb || t.metrics.iter().any(|m| m.per_request) {
        out.push(elb(Field::Requests, "RequestCount", "Sum"));
    }
    if checks_alb {
        out.push(elb(Field::Errors, "HTTPCode_Target_5XX_Count", "Sum"));
    }
    if let Some(l) = &alb.latency {
        let stat = l.statistic.to_string();
        if stat != "Average" {
            out.push(elb(Field::LatencyAverage, "TargetResponseTime", "Average"));
        }
        if stat != "p99" {
            out.push(elb(Field::LatencyP99, "TargetResponseTime", "p99"));
        }
        out.push(elb(Field::Latency, "TargetResponseTime", &stat));
    }
    for (k, m) in t.metrics.iter().enumerate() {
        out.push(Series {
            field: Field::Custom(k),
            namespace: &m.namespace,
            metric: &m.metric_name,
            stat: m.statistic.to_string(),
            period: m.period_or(alb),
            custom: Some(m),
            both_arms: m.max_increase.is_some(),
        });
    }
    out
}

/// The metric queries of the intervals, in order of interval.
pub fn wants(queries: &[MetricQuery<'_>]) -> Vec<Want> {
    let mut out = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let load_balancer = &q.spec.traffic_routing.alb.listener_arn.load_balancer;
        let region = &q.spec.traffic_routing.alb.listener_arn.parts.region;
        let account = &q.spec.traffic_routing.alb.listener_arn.parts.account;
        let series = series(q.template);
        let arms = [
            (
                Arm::Stable,
                &q.spec.stable.target_group_arn,
                q.window.stable_start.millis(),
                q.window.stable_end.millis(),
            ),
            (
                Arm::Canary,
                &q.spec.canary.target_group_arn,
                q.window.start.millis(),
                q.window.end.millis(),
            ),
        ];
        for (arm, tg, start, end) in arms {
            for s in &series {
                if arm == Arm::Stable && !s.both_arms {
                    continue;
                }
                let period = i64::try_from(s.period.as_secs().max(1)).unwrap_or(60);
                let (start, end) = aligned(start, end, period * 1000);
                let dimensions = match s.custom {
                    None => vec![
                        ("LoadBalancer".to_string(), load_balancer.clone()),
                        ("TargetGroup".to_string(), tg.dimension.clone()),
                    ],
                    Some(m) => m.dimensions_for(arm.as_str(), tg, load_balancer),
                };
                out.push(Want {
                    window: i,
                    region: region.clone(),
                    account: account.clone(),
                    arm,
                    field: s.field,
                    namespace: s.namespace.to_string(),
                    metric: s.metric.to_string(),
                    stat: s.stat.clone(),
                    dimensions,
                    period,
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

/// Packs the queries into calls: one region and one period per call, at
/// most [`MAX_QUERIES`] queries and [`MAX_DATAPOINTS`] datapoints each (so
/// ⌈queries / 500⌉ calls per region and period).
pub fn batches(mut wants: Vec<Want>) -> Vec<Batch> {
    let mut by_period: BTreeMap<(String, String, i64), Vec<Want>> = BTreeMap::new();
    for w in wants.drain(..) {
        by_period
            .entry((w.account.clone(), w.region.clone(), w.period.max(1)))
            .or_default()
            .push(w);
    }
    let mut out = Vec::new();
    for ((account, region, period), mut ws) in by_period {
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
                region: region.clone(),
                account: account.clone(),
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

/// The datapoints of one arm's query for `field` that fall inside its
/// interval, by bucket; `None` when there are none.
fn inside(parts: &[(&Want, &Points)], arm: Arm, field: Field) -> Option<BTreeMap<i64, f64>> {
    let (w, pts) = parts
        .iter()
        .find(|(w, _)| w.arm == arm && w.field == field)?;
    let inside: BTreeMap<i64, f64> = pts
        .iter()
        .filter(|(t, v)| *t >= w.start && *t < w.end && v.is_finite())
        .copied()
        .collect();
    (!inside.is_empty()).then_some(inside)
}

/// A custom metric's statistic over an interval of several buckets: sums
/// and counts add up, minimum and maximum are the extremes (all exact); an
/// average or a percentile is the mean of the buckets' values (exact for an
/// interval of one period).
fn combine_buckets(stat: MetricStatistic, buckets: &BTreeMap<i64, f64>) -> f64 {
    let values = buckets.values().copied();
    match stat {
        MetricStatistic::Sum | MetricStatistic::SampleCount => values.sum(),
        MetricStatistic::Minimum => values.fold(f64::INFINITY, f64::min),
        MetricStatistic::Maximum => values.fold(f64::NEG_INFINITY, f64::max),
        MetricStatistic::Average | MetricStatistic::Percentile(_) => {
            values.sum::<f64>() / buckets.len() as f64
        }
    }
}

/// Both arms' metrics of one interval from its queries' datapoints; `custom`
/// are the template's custom metrics (queried as [`Field::Custom`]).
pub fn assemble(parts: &[(&Want, &Points)], custom: &[CustomMetric]) -> IntervalMetrics {
    let mut m = IntervalMetrics {
        custom: custom
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let value = |arm| {
                    inside(parts, arm, Field::Custom(k)).map(|b| combine_buckets(c.statistic, &b))
                };
                CustomValue {
                    name: c.name.to_string(),
                    stable: value(Arm::Stable),
                    canary: value(Arm::Canary),
                }
            })
            .collect(),
        ..IntervalMetrics::default()
    };
    for arm in [Arm::Stable, Arm::Canary] {
        let get = |f: Field| inside(parts, arm, f);
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
    let dims = w
        .dimensions
        .iter()
        .map(|(n, v)| Dimension::builder().name(n).value(v).build())
        .collect::<Vec<_>>();
    let metric = Metric::builder()
        .namespace(&w.namespace)
        .metric_name(&w.metric)
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

/// `Name=value, …` for messages.
fn dimension_text(dims: &[(String, String)]) -> String {
    dims.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Arm {
    /// `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Canary => "canary",
        }
    }
}

impl CloudWatchSource {
    /// A source on this client; every call is reported to `observer`.
    pub fn new(
        client: Client,
        accounts: crate::regional::Accounts,
        observer: CallObserver,
        budget: std::sync::Arc<crate::budget::Budget>,
    ) -> CloudWatchSource {
        CloudWatchSource {
            client: crate::regional::cloudwatch(client, accounts),
            observer,
            budget,
        }
    }

    /// The canary target group's health as CloudWatch last saw it: the
    /// Minimum of `HealthyHostCount` and the Maximum of
    /// `UnHealthyHostCount` in the latest minute with a datapoint, when that
    /// minute ended at most [`HEALTH_MAX_AGE_S`] before `now_s` (epoch
    /// seconds). `None`: no datapoint that recent (the caller falls back to
    /// `DescribeTargetHealth`), or the call failed.
    pub async fn canary_health(
        &self,
        spec: &rollout_spec::RolloutSpec,
        now_s: i64,
    ) -> Option<rollout_core::TargetHealth> {
        let dims = vec![
            (
                "LoadBalancer".to_string(),
                spec.traffic_routing.alb.listener_arn.load_balancer.clone(),
            ),
            (
                "TargetGroup".to_string(),
                spec.canary.target_group_arn.dimension.clone(),
            ),
        ];
        let end = now_s - now_s.rem_euclid(60) + 60;
        let start = end - HEALTH_MAX_AGE_S - 60;
        let region = spec.canary.target_group_arn.parts.region.clone();
        let account = spec.canary.target_group_arn.parts.account.clone();
        let want = |metric: &str, stat: &str| Want {
            window: 0,
            region: region.clone(),
            account: account.clone(),
            arm: Arm::Canary,
            field: Field::Requests,
            namespace: NAMESPACE.into(),
            metric: metric.into(),
            stat: stat.into(),
            dimensions: dims.clone(),
            period: 60,
            start,
            end,
        };
        let batch = Batch {
            region: region.clone(),
            account: account.clone(),
            period: 60,
            start,
            end,
            wants: vec![
                want("HealthyHostCount", "Minimum"),
                want("UnHealthyHostCount", "Maximum"),
            ],
        };
        let points = self.fetch(&batch).await.ok()?;
        let (at, healthy) = points.first()?.iter().copied().max_by_key(|(t, _)| *t)?;
        if now_s - (at + 60) > HEALTH_MAX_AGE_S {
            return None;
        }
        let unhealthy = points
            .get(1)
            .and_then(|p| p.iter().find(|(t, _)| *t == at).map(|(_, v)| *v))
            .unwrap_or(0.0);
        let count = |v: f64| v.max(0.0).round().min(f64::from(u32::MAX)) as u32;
        Some(rollout_core::TargetHealth {
            healthy: count(healthy),
            total: count(healthy) + count(unhealthy),
        })
    }

    /// One batch, every page (at most [`MAX_PAGES`]): the datapoints of
    /// each query.
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
        let resource = format!("{} CloudWatch metric series", batch.wants.len());
        let scope = format!("{}/{}", batch.account, batch.region);
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ObservationError {
                    fatal: false,
                    message: format!(
                        "{SERVICE}:GetMetricData kept answering with a NextToken after {MAX_PAGES} pages for {resource}; these intervals are not judged this time"
                    ),
                });
            }
            self.budget
                .acquire_in(
                    &scope,
                    crate::budget::Class::CloudWatch,
                    rollout_core::Urgency::Routine,
                )
                .await;
            let out = self
                .client
                .at(&batch.account, &batch.region, &resource)?
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(DateTime::from_secs(batch.start))
                .end_time(DateTime::from_secs(batch.end))
                .scan_by(ScanBy::TimestampAscending)
                .set_next_token(token.take())
                .send()
                .await;
            let out = crate::record(
                &self.observer,
                Some((&self.budget, crate::budget::Class::CloudWatch, &scope)),
                SERVICE,
                "GetMetricData",
                &resource,
                out,
            )?;
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
                            "{SERVICE}:GetMetricData answered {:?} for {}/{} {} of {}",
                            r.status_code(),
                            batch.wants[i].namespace,
                            batch.wants[i].metric,
                            batch.wants[i].stat,
                            dimension_text(&batch.wants[i].dimensions)
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
    async fn intervals(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> Vec<Result<IntervalMetrics, ObservationError>> {
        let batches = batches(wants(queries));
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
            .zip(queries)
            .map(|((p, f), q)| match f {
                Some(e) => Err(e),
                None => Ok(assemble(
                    &p.iter().map(|(w, pts)| (w, pts)).collect::<Vec<_>>(),
                    &q.template.metrics,
                )),
            })
            .collect()
    }

    async fn alarms(&self, place: &str, names: &[String]) -> Observed<Vec<AlarmState>> {
        self.describe_alarms(place, names).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_core::{IntervalRequest, Time};

    #[test]
    fn each_region_gets_its_own_calls() {
        // 700 queries in us-east-1 and 300 in eu-west-1, one period: two
        // calls there, one here (GetMetricData is regional).
        let mut ws: Vec<Want> = (0..700).map(|i| want(i, 0, 60)).collect();
        ws.extend((700..1000).map(|i| Want {
            region: "eu-west-1".into(),
            ..want(i, 0, 60)
        }));
        let b = batches(ws);
        let per = |r: &str| b.iter().filter(|b| b.region == r).count();
        assert_eq!((per("us-east-1"), per("eu-west-1"), b.len()), (2, 1, 3));
        assert!(b
            .iter()
            .all(|b| b.wants.iter().all(|w| w.region == b.region)));
    }

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
            region: "us-east-1".into(),
            account: "123456789012".into(),
            arm: Arm::Canary,
            field: Field::Requests,
            namespace: NAMESPACE.into(),
            metric: "RequestCount".into(),
            stat: "Sum".into(),
            dimensions: vec![
                ("LoadBalancer".into(), "app/shop/1".into()),
                ("TargetGroup".into(), "targetgroup/green/2".into()),
            ],
            period: 60,
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
            let b = batches(ws);
            assert_eq!(b.len(), n.div_ceil(MAX_QUERIES), "{n} queries");
            assert!(b.iter().all(|b| b.wants.len() <= MAX_QUERIES));
            assert_eq!(b.iter().map(|b| b.wants.len()).sum::<usize>(), n);
            for b in &b {
                assert!(b.wants.iter().all(|w| w.start >= b.start && w.end <= b.end));
            }
        }
        // Two periods never share a call (the buckets would not align).
        let b = batches(vec![
            want(0, 600, 660),
            Want {
                period: 1,
                ..want(1, 600, 601)
            },
        ]);
        assert_eq!(b.len(), 2);
        // A range too long for the datapoint limit splits.
        let ws: Vec<Want> = (0..500)
            .map(|i| Want {
                period: 1,
                ..want(i, 0, 1_000)
            })
            .collect();
        let b = batches(ws);
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

    const SPECS: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {name: pay}
spec:
  revision: r1
  trafficRouting:
    alb: {listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2}
  stable: {targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pay-blue/73e2d6bc24d8a067}
  canary: {targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pay-green/0f2a6b1c9d8e7f60}
  strategy: {canary: {steps: [{setWeight: 100}]}}
  analysis: {interval: 5m, templates: [custom]}
---
apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: custom}
spec:
  alb: {period: 60s}
  metrics:
    - name: declines
      namespace: Shop/Payments
      metricName: Declines
      statistic: Sum
      perRequest: true
      dimensions: {Service: payments, Version: '${targetGroupName}-${arm}'}
      maxIncrease: 50%
    - name: queue-age
      namespace: Shop/Queues
      metricName: OldestMessageAge
      statistic: Maximum
      period: 5m
      dimensions: {Queue: 'orders@${loadBalancer}'}
      max: 30
";

    #[test]
    fn custom_metrics_are_queried_per_arm_with_their_dimensions() {
        let set = rollout_spec::load([("s.yaml", SPECS)], &[]).expect("valid");
        let (spec, template) = (&set.rollouts[0].value.spec, &set.templates[0].value.spec);
        let window = IntervalRequest {
            template: "custom".into(),
            start: Time::from_millis(600_000),
            end: Time::from_millis(900_000),
            stable_start: Time::from_millis(600_000),
            stable_end: Time::from_millis(900_000),
        };
        let ws = wants(&[MetricQuery {
            spec,
            template,
            window: &window,
        }]);
        type Row<'a> = (Arm, Field, &'a str, &'a str, i64, Vec<(String, String)>);
        let got: Vec<Row<'_>> = ws
            .iter()
            .map(|w| {
                (
                    w.arm,
                    w.field,
                    w.metric.as_str(),
                    w.stat.as_str(),
                    w.period,
                    w.dimensions.clone(),
                )
            })
            .collect();
        let dims = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let elb = |tg: &str| {
            dims(&[
                ("LoadBalancer", "app/shop/50dc6c495c0c9188"),
                ("TargetGroup", tg),
            ])
        };
        let blue = "targetgroup/pay-blue/73e2d6bc24d8a067";
        let green = "targetgroup/pay-green/0f2a6b1c9d8e7f60";
        assert_eq!(
            got,
            vec![
                // No ALB check: requests only, because `declines` divides by them.
                (
                    Arm::Stable,
                    Field::Requests,
                    "RequestCount",
                    "Sum",
                    60,
                    elb(blue)
                ),
                (
                    Arm::Stable,
                    Field::Custom(0),
                    "Declines",
                    "Sum",
                    60,
                    dims(&[("Service", "payments"), ("Version", "pay-blue-stable")])
                ),
                // `queue-age` has only a ceiling: the canary's series alone.
                (
                    Arm::Canary,
                    Field::Requests,
                    "RequestCount",
                    "Sum",
                    60,
                    elb(green)
                ),
                (
                    Arm::Canary,
                    Field::Custom(0),
                    "Declines",
                    "Sum",
                    60,
                    dims(&[("Service", "payments"), ("Version", "pay-green-canary")])
                ),
                (
                    Arm::Canary,
                    Field::Custom(1),
                    "OldestMessageAge",
                    "Maximum",
                    300,
                    dims(&[("Queue", "orders@app/shop/50dc6c495c0c9188")])
                ),
            ]
        );
        assert_eq!(ws[1].namespace, "Shop/Payments");
        // Each period is its own call.
        assert_eq!(batches(ws).len(), 2);
    }

    #[test]
    fn custom_statistics_combine_over_buckets() {
        let at = |field, stat: &str| Want {
            field,
            stat: stat.into(),
            ..want(0, 60, 240)
        };
        let metric = |name: &str, statistic| CustomMetric {
            name: name.parse().expect("name"),
            namespace: "N".into(),
            metric_name: "M".into(),
            dimensions: Default::default(),
            statistic,
            period: None,
            per_request: false,
            missing_as_zero: false,
            max_increase: None,
            max: Some(1.0),
            min_improvement: None,
        };
        let custom = [
            metric("sum", MetricStatistic::Sum),
            metric("max", MetricStatistic::Maximum),
            metric("min", MetricStatistic::Minimum),
            metric("avg", MetricStatistic::Average),
            metric("absent", MetricStatistic::Sum),
        ];
        let pts: Points = vec![(0, 100.0), (60, 2.0), (120, 6.0), (180, 4.0), (240, 100.0)];
        let none: Points = vec![];
        let wants: Vec<Want> = (0..5).map(|k| at(Field::Custom(k), "x")).collect();
        let mut parts: Vec<(&Want, &Points)> = wants[..4].iter().map(|w| (w, &pts)).collect();
        parts.push((&wants[4], &none));
        let m = assemble(&parts, &custom);
        let canary: Vec<(&str, Option<f64>)> = m
            .custom
            .iter()
            .map(|c| (c.name.as_str(), c.canary))
            .collect();
        assert_eq!(
            canary,
            [
                ("sum", Some(12.0)),
                ("max", Some(6.0)),
                ("min", Some(2.0)),
                ("avg", Some(4.0)),
                ("absent", None)
            ]
        );
        assert!(
            m.custom.iter().all(|c| c.stable.is_none()),
            "only the canary was read"
        );
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
        let m = assemble(
            &[
                (&req, &req_pts),
                (&err, &err_pts),
                (&lat, &lat_pts),
                (&p99, &p99_pts),
                (&s_req, &none),
            ],
            &[],
        );
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
