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
pub mod fis;
pub mod regional;

pub use alb::AlbRouter;
pub use batch::Coalescing;
pub use cloudwatch::CloudWatchSource;

/// Told of every AWS call: service (`elasticloadbalancing`, `cloudwatch`),
/// operation (`DescribeListeners`) and outcome (see [`CallOutcome`]).
pub type CallObserver = Arc<dyn Fn(&str, &str, CallOutcome) + Send + Sync>;

/// How one AWS call ended (after the SDK's own retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
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

impl CallOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Throttled => "throttled",
            CallOutcome::Transient => "transient",
            CallOutcome::Denied => "denied",
            CallOutcome::NotFound => "not_found",
            CallOutcome::Error => "error",
        }
    }

    /// Whether retrying later can help.
    pub fn is_transient(self) -> bool {
        matches!(self, CallOutcome::Throttled | CallOutcome::Transient)
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
    accounts: regional::Accounts,
    observer: CallObserver,
    budget: Arc<budget::Budget>,
) -> (AlbRouter, CloudWatchSource) {
    (
        AlbRouter::new(
            aws_sdk_elasticloadbalancingv2::Client::new(config),
            accounts.clone(),
            Arc::clone(&observer),
            Arc::clone(&budget),
        )
        .with_fis(aws_sdk_fis::Client::new(config), accounts.clone()),
        CloudWatchSource::new(
            aws_sdk_cloudwatch::Client::new(config),
            accounts,
            observer,
            budget,
        ),
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

/// Sorts an AWS error code and HTTP status into an [`CallOutcome`].
pub fn classify(code: Option<&str>, http_status: Option<u16>) -> CallOutcome {
    match code {
        Some(c) if DENIED.contains(&c) => CallOutcome::Denied,
        Some(c) if NOT_FOUND.contains(&c) => CallOutcome::NotFound,
        Some(c) if THROTTLED.contains(&c) => CallOutcome::Throttled,
        _ => match http_status {
            Some(429) => CallOutcome::Throttled,
            Some(403) => CallOutcome::Denied,
            Some(s) if s >= 500 => CallOutcome::Transient,
            None => CallOutcome::Transient,
            Some(_) => CallOutcome::Error,
        },
    }
}

/// Whether a dispatch failure is the SDK finding no credentials (or no
/// identity) to sign the call with.
fn unsigned<E, R>(err: &SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext(err)
        .to_string()
        .to_lowercase();
    text.contains("credential") || text.contains("identity resolver")
}

/// One call's result, told to the observer (and logged when it failed):
/// the value, or an [`ObservationError`] naming the resource and, when a
/// permission is missing, the IAM action.
pub(crate) fn record<T, E>(
    observer: &CallObserver,
    budget: Option<(&budget::Budget, budget::Class, &str)>,
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
            observer(service, operation, CallOutcome::Success);
            Ok(v)
        }
        Err(e) => {
            let (outcome, err) = sdk_failure(&e, service, operation, resource);
            observer(service, operation, outcome);
            if let (CallOutcome::Throttled, Some((budget, class, scope))) = (outcome, budget) {
                budget.throttled_in(scope, class);
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
) -> (CallOutcome, ObservationError)
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
        // Not a network failure: the call could not be signed (no
        // credentials for it): retrying cannot help. (Only when the SDK
        // says so: other connector errors stay transient.)
        SdkError::DispatchFailure(d) if d.is_other() && unsigned(err) => {
            let region = regional::region_of(resource.split(", ").next().unwrap_or(""));
            let ctx = aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext(err);
            let message = format!(
                "{service}:{operation} on {resource}: no AWS credentials to sign it with in region {region} ({ctx}); give the daemon credentials for that region (or a role for that account in `accounts`)"
            );
            return (
                CallOutcome::Denied,
                ObservationError {
                    fatal: true,
                    message,
                },
            );
        }
        SdkError::DispatchFailure(d) => {
            let region = regional::region_of(resource.split(", ").next().unwrap_or(""));
            (
                None,
                Some(format!("could not reach region {region}: {d:?}")),
                None,
            )
        }
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
        CallOutcome::Denied => format!(
            "{service}:{operation} on {resource} was denied ({what}); the role needs `{service}:{operation}` (see deploy/iam-policy.json)"
        ),
        CallOutcome::NotFound => format!("{service}:{operation}: {resource} does not exist ({what})"),
        CallOutcome::Throttled => format!("{service}:{operation} on {resource} was throttled, retries exhausted ({what})"),
        CallOutcome::Transient => format!("{service}:{operation} on {resource} failed, retries exhausted ({what})"),
        CallOutcome::Error | CallOutcome::Success => format!("{service}:{operation} on {resource} failed ({what})"),
    };
    (
        outcome,
        ObservationError {
            fatal: matches!(outcome, CallOutcome::Denied | CallOutcome::NotFound),
            message,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOWHERE: &str =
        "arn:aws:elasticloadbalancing:eu-west-3:123456789012:listener/app/shop/1/2";

    /// `DescribeListeners` of [`NOWHERE`] sent where nothing listens, with
    /// credentials or without any, as [`record`] reports it.
    async fn describe_nowhere(credentials: bool) -> ObservationError {
        use aws_sdk_elasticloadbalancingv2::config;
        let mut conf = config::Config::builder()
            .behavior_version(config::BehaviorVersion::latest())
            .region(config::Region::new("eu-west-3"))
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(config::retry::RetryConfig::disabled());
        if credentials {
            conf =
                conf.credentials_provider(config::Credentials::new("k", "s", None, None, "test"));
        }
        let client = aws_sdk_elasticloadbalancingv2::Client::from_conf(conf.build());
        let out = client
            .describe_listeners()
            .listener_arns(NOWHERE)
            .send()
            .await;
        let observer: CallObserver = Arc::new(|_, _, _| {});
        record(
            &observer,
            None,
            "elasticloadbalancing",
            "DescribeListeners",
            NOWHERE,
            out,
        )
        .expect_err("nothing answers there")
    }

    /// A region that cannot be reached stays a transient error (a network
    /// blip must not fail a run), and says which region.
    #[tokio::test]
    async fn an_unreachable_region_is_retried_and_named() {
        let e = describe_nowhere(true).await;
        assert!(!e.fatal, "{}", e.message);
        assert!(
            e.message.contains("could not reach region eu-west-3"),
            "{}",
            e.message
        );
    }

    /// A call that cannot be signed (no credentials) is a fatal error
    /// naming the region and the ARN, not a retry forever.
    #[tokio::test]
    async fn no_credentials_is_fatal_and_names_the_region_and_the_arn() {
        let e = describe_nowhere(false).await;
        assert!(e.fatal, "{}", e.message);
        assert!(
            e.message.contains("no AWS credentials")
                && e.message.contains("region eu-west-3")
                && e.message.contains(NOWHERE),
            "{}",
            e.message
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            classify(Some("AccessDenied"), Some(403)),
            CallOutcome::Denied
        );
        assert_eq!(
            classify(Some("ListenerNotFound"), Some(400)),
            CallOutcome::NotFound
        );
        assert_eq!(
            classify(Some("Throttling"), Some(400)),
            CallOutcome::Throttled
        );
        assert_eq!(classify(None, Some(503)), CallOutcome::Transient);
        assert_eq!(classify(None, None), CallOutcome::Transient);
        assert_eq!(
            classify(Some("ValidationError"), Some(400)),
            CallOutcome::Error
        );
        assert_eq!(classify(None, Some(429)), CallOutcome::Throttled);
        assert!(CallOutcome::Throttled.is_transient());
        assert!(!CallOutcome::Denied.is_transient());
    }
}
