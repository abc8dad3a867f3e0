//! The AWS adapters: [`AlbRouter`] shifts traffic on an Application Load
//! Balancer (ELBv2) and [`CloudWatchSource`] reads both arms' metrics from
//! CloudWatch. Both implement the ports of `rollout_core::ports`, the same
//! traits the simulation implements, and both go through the official AWS
//! SDK for Rust with the standard configuration chain only (region,
//! profiles, credentials, `AWS_ENDPOINT_URL`).
//!
//! Every call is counted through a [`CallObserver`] (the daemon turns these
//! into `rolloutd_aws_requests_total{service, operation, outcome}`). The SDK
//! retries throttling, timeouts and 5xx answers with exponential backoff and
//! jitter (its `standard` retry mode); what still fails is handed to the core
//! as a transient [`ObservationError`], and the core holds the run. Access
//! denied and missing resources are fatal and name the ARN and the
//! permission.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::error::SdkError;
use rollout_core::ObservationError;

pub mod alb;
pub mod batch;
pub mod budget;
pub mod cloudwatch;

pub use alb::AlbRouter;
pub use batch::Coalescing;
pub use cloudwatch::CloudWatchSource;

/// Told of every AWS call: service (`elasticloadbalancing`, `cloudwatch`),
/// operation (`DescribeListeners`) and outcome (see [`Outcome`]).
pub type CallObserver = Arc<dyn Fn(&str, &str, Outcome) + Send + Sync>;

/// How one AWS call ended (after the SDK's own retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// AWS throttled it (`Throttling`, `ThrottlingException`, …).
    Throttled,
    /// It timed out, could not be sent, or AWS answered 5xx.
    Transient,
    /// Access denied: a permission is missing.
    Denied,
    /// The resource does not exist.
    NotFound,
    /// Any other error AWS answered (invalid request, …).
    Error,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Throttled => "throttled",
            Outcome::Transient => "transient",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not_found",
            Outcome::Error => "error",
        }
    }

    /// Whether retrying later can help.
    pub fn is_transient(self) -> bool {
        matches!(self, Outcome::Throttled | Outcome::Transient)
    }
}

/// Loads the standard AWS configuration (environment, profiles, instance or
/// task roles, `AWS_ENDPOINT_URL`) with the retry and timeout policy of
/// rolloutd: up to 3 attempts with exponential backoff and jitter, 5 s per
/// attempt, 20 s per operation.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .load()
        .await
}

/// Both adapters on one configuration, paying for their calls from one
/// budget.
pub fn adapters(
    config: &aws_config::SdkConfig,
    observer: CallObserver,
    budget: Arc<budget::Budget>,
) -> (AlbRouter, CloudWatchSource) {
    (
        AlbRouter::new(
            aws_sdk_elasticloadbalancingv2::Client::new(config),
            Arc::clone(&observer),
            Arc::clone(&budget),
        ),
        CloudWatchSource::new(aws_sdk_cloudwatch::Client::new(config), observer, budget),
    )
}

/// Error codes that mean "a permission is missing".
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// Error codes that mean "the resource does not exist".
const NOT_FOUND: &[&str] = &[
    "ListenerNotFound",
    "RuleNotFound",
    "TargetGroupNotFound",
    "LoadBalancerNotFound",
    "ResourceNotFound",
    "ResourceNotFoundException",
];

/// Error codes of throttling.
const THROTTLED: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "SlowDown",
];

/// Sorts an AWS error code and HTTP status into an [`Outcome`].
pub fn classify(code: Option<&str>, http_status: Option<u16>) -> Outcome {
    match code {
        Some(c) if DENIED.contains(&c) => Outcome::Denied,
        Some(c) if NOT_FOUND.contains(&c) => Outcome::NotFound,
        Some(c) if THROTTLED.contains(&c) => Outcome::Throttled,
        _ => match http_status {
            Some(429) => Outcome::Throttled,
            Some(403) => Outcome::Denied,
            Some(s) if s >= 500 => Outcome::Transient,
            None => Outcome::Transient,
            Some(_) => Outcome::Error,
        },
    }
}

/// One call's result, told to the observer (and logged when it failed):
/// the value, or an [`ObservationError`] naming the resource and, when a
/// permission is missing, the IAM action.
pub(crate) fn record<T, E>(
    observer: &CallObserver,
    budget: Option<(&budget::Budget, budget::Class)>,
    service: &str,
    operation: &str,
    resource: &str,
    result: Result<T, SdkError<E, HttpResponse>>,
) -> Result<T, ObservationError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(v) => {
            observer(service, operation, Outcome::Success);
            Ok(v)
        }
        Err(e) => {
            let (outcome, err) = sdk_failure(&e, service, operation, resource);
            observer(service, operation, outcome);
            if let (Outcome::Throttled, Some((budget, class))) = (outcome, budget) {
                budget.throttled(class);
            }
            tracing::warn!(service, operation, resource, error = %err.message, "AWS call failed");
            Err(err)
        }
    }
}

/// An SDK error as an outcome and a message that names what was asked
/// (`resource`) and, when a permission is missing, the IAM action.
fn sdk_failure<E>(
    err: &SdkError<E, HttpResponse>,
    service: &str,
    operation: &str,
    resource: &str,
) -> (Outcome, ObservationError)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message, status) = match err {
        SdkError::ServiceError(s) => (
            s.err().code().map(str::to_string),
            s.err().message().map(str::to_string),
            Some(s.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) => (None, Some("timed out".to_string()), None),
        SdkError::DispatchFailure(d) => (None, Some(format!("could not send: {d:?}")), None),
        SdkError::ResponseError(_) => (None, Some("unreadable response".to_string()), None),
        other => (None, Some(other.to_string()), None),
    };
    let outcome = classify(code.as_deref(), status);
    let what = match (&code, &message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => "unknown error".to_string(),
    };
    let message = match outcome {
        Outcome::Denied => format!(
            "{service}:{operation} on {resource} was denied ({what}); the role needs `{service}:{operation}` (see deploy/iam-policy.json)"
        ),
        Outcome::NotFound => format!("{service}:{operation}: {resource} does not exist ({what})"),
        Outcome::Throttled => format!("{service}:{operation} on {resource} was throttled, retries exhausted ({what})"),
        Outcome::Transient => format!("{service}:{operation} on {resource} failed, retries exhausted ({what})"),
        Outcome::Error | Outcome::Success => format!("{service}:{operation} on {resource} failed ({what})"),
    };
    (
        outcome,
        ObservationError {
            fatal: matches!(outcome, Outcome::Denied | Outcome::NotFound),
            message,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(classify(Some("AccessDenied"), Some(403)), Outcome::Denied);
        assert_eq!(
            classify(Some("ListenerNotFound"), Some(400)),
            Outcome::NotFound
        );
        assert_eq!(classify(Some("Throttling"), Some(400)), Outcome::Throttled);
        assert_eq!(classify(None, Some(503)), Outcome::Transient);
        assert_eq!(classify(None, None), Outcome::Transient);
        assert_eq!(classify(Some("ValidationError"), Some(400)), Outcome::Error);
        assert_eq!(classify(None, Some(429)), Outcome::Throttled);
        assert!(Outcome::Throttled.is_transient());
        assert!(!Outcome::Denied.is_transient());
    }
}
