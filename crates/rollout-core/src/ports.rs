//! The seams between the daemon and the world: the load balancer and the
//! metric source. Only signatures live here (no I/O): `rollout-aws`
//! implements them with the AWS SDK, the simulation with tables or memory,
//! and the daemon drives whichever it is given through the same path.

use std::future::Future;
use std::sync::Arc;

use rollout_analysis::IntervalMetrics;
use rollout_spec::{AnalysisTemplateSpec, RolloutSpec};

use crate::observe::{
    AlarmState, ExperimentCall, ExperimentState, ForwardWeights, IntervalRequest, ObservationError,
    Observed, TargetHealth, Urgency,
};
use crate::status::Weights;

/// The load balancer: reads and writes the weights of a rollout's forward
/// action, and reads the canary target group's health.
pub trait TrafficRouter: Send + Sync + 'static {
    /// The forward action's weights for the rollout's two target groups. A
    /// router with an API budget serves reads by `urgency`, and may answer
    /// [`Observed::Missing`] to an [`Urgency::Optional`] one.
    fn forward_weights(
        &self,
        spec: &RolloutSpec,
        urgency: Urgency,
    ) -> impl Future<Output = Observed<ForwardWeights>> + Send;

    /// Sets the weights (stable and canary; everything else in the action
    /// as it was), only if the load balancer still holds `seen` (what the
    /// decision was taken on): otherwise someone else wrote in between, and
    /// nothing is written (a transient error; the next reconcile sees what
    /// they wrote). A forward action in which target groups the rollout
    /// does not name carry traffic is never written (a fatal error naming
    /// them). A router with an API budget serves the write and its
    /// read-back by `urgency` (the decision's, [`crate::write_urgency`]).
    fn set_weights(
        &self,
        spec: &RolloutSpec,
        weights: Weights,
        seen: ForwardWeights,
        urgency: Urgency,
    ) -> impl Future<Output = Result<(), ObservationError>> + Send;

    /// The canary target group's health (read before a raise).
    fn canary_health(
        &self,
        spec: &RolloutSpec,
    ) -> impl Future<Output = Observed<TargetHealth>> + Send;
}

/// Fault injection for chaos steps (AWS Fault Injection Service): the
/// load balancer's side of AWS reaches it, in the same region and account.
pub trait FaultInjector: Send + Sync + 'static {
    /// Makes `call` for the rollout whose load balancer is `place` (an ARN:
    /// its region and account), answering what FIS then reports of the
    /// experiment (`Ok(None)`: a `FindAndStop` found none). A world
    /// without fault injection answers a fatal error.
    fn experiment(
        &self,
        place: &str,
        call: &ExperimentCall,
    ) -> impl Future<Output = Observed<Option<ExperimentState>>> + Send {
        let _ = (place, call);
        async {
            Observed::Err(ObservationError {
                fatal: true,
                message: "this world has no AWS Fault Injection Service: chaos steps cannot run"
                    .into(),
            })
        }
    }
}

/// A shared fault injector is a fault injector.
impl<T: FaultInjector> FaultInjector for Arc<T> {
    fn experiment(
        &self,
        place: &str,
        call: &ExperimentCall,
    ) -> impl Future<Output = Observed<Option<ExperimentState>>> + Send {
        (**self).experiment(place, call)
    }
}

/// One analysis interval to fetch.
#[derive(Debug, Clone, Copy)]
pub struct MetricQuery<'a> {
    /// The rollout's spec (its target groups and load balancer).
    pub spec: &'a RolloutSpec,
    /// The template (period, statistic).
    pub template: &'a AnalysisTemplateSpec,
    /// The interval.
    pub window: &'a IntervalRequest,
}

/// The metric source: both arms' metrics over analysis intervals.
pub trait MetricSource: Send + Sync + 'static {
    /// One result per query, in order. A source may batch the queries.
    fn intervals(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> impl Future<Output = Vec<Result<IntervalMetrics, ObservationError>>> + Send;

    /// The named CloudWatch alarms that exist in the account and region of
    /// `place` (an ARN of the rollout's: its listener), with their states
    /// (a name that does not exist is left out). A source may batch the
    /// names of many rollouts into one call.
    fn alarms(
        &self,
        place: &str,
        names: &[String],
    ) -> impl Future<Output = Observed<Vec<AlarmState>>> + Send;
}

/// A shared router is a router (one world can serve as both ports).
impl<T: TrafficRouter> TrafficRouter for Arc<T> {
    fn forward_weights(
        &self,
        spec: &RolloutSpec,
        urgency: Urgency,
    ) -> impl Future<Output = Observed<ForwardWeights>> + Send {
        (**self).forward_weights(spec, urgency)
    }

    fn set_weights(
        &self,
        spec: &RolloutSpec,
        weights: Weights,
        seen: ForwardWeights,
        urgency: Urgency,
    ) -> impl Future<Output = Result<(), ObservationError>> + Send {
        (**self).set_weights(spec, weights, seen, urgency)
    }

    fn canary_health(
        &self,
        spec: &RolloutSpec,
    ) -> impl Future<Output = Observed<TargetHealth>> + Send {
        (**self).canary_health(spec)
    }
}

/// A shared metric source is a metric source.
impl<T: MetricSource> MetricSource for Arc<T> {
    fn intervals(
        &self,
        queries: &[MetricQuery<'_>],
    ) -> impl Future<Output = Vec<Result<IntervalMetrics, ObservationError>>> + Send {
        (**self).intervals(queries)
    }

    fn alarms(
        &self,
        place: &str,
        names: &[String],
    ) -> impl Future<Output = Observed<Vec<AlarmState>>> + Send {
        (**self).alarms(place, names)
    }
}
