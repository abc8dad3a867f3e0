//! AWS Fault Injection Service for chaos steps: start an experiment (with
//! the client token the core derived, which FIS makes idempotent, and the
//! same token as a tag so it can be found again), read it, stop it, and
//! find it by its token when its id was never recorded. Calls go to the
//! region and account of the rollout's load balancer, through the API
//! budget (class `fis`).

use aws_sdk_fis::types::Experiment;
use aws_sdk_fis::Client;
use rollout_core::ports::FaultInjector;
use rollout_core::{ExperimentCall, ExperimentState, Observed, Urgency};

use crate::alb::AlbRouter;
use crate::budget::Class;

/// The service name in metrics and messages.
pub const SERVICE: &str = "fis";

/// The tag that carries an experiment's client token.
pub const TOKEN_TAG: &str = "rolloutd.dev/client-token";

/// An experiment's id and FIS state as the core reads them (from an
/// experiment or a list's summary of one).
fn state_of(
    id: Option<&str>,
    state: Option<&aws_sdk_fis::types::ExperimentState>,
) -> Option<ExperimentState> {
    let state = state?;
    Some(ExperimentState {
        id: id?.to_string(),
        status: state.status()?.as_str().to_string(),
        reason: state.reason().unwrap_or_default().to_string(),
    })
}

fn experiment_state(e: &Experiment) -> Option<ExperimentState> {
    state_of(e.id(), e.state())
}

impl FaultInjector for AlbRouter {
    async fn experiment(
        &self,
        place: &str,
        call: &ExperimentCall,
    ) -> Observed<Option<ExperimentState>> {
        let Some(fis) = &self.fis else {
            return Observed::Err(rollout_core::ObservationError {
                fatal: true,
                message: "this daemon has no Fault Injection Service client".into(),
            });
        };
        let client = match fis.for_arn(place) {
            Ok(c) => c,
            Err(e) => return Observed::Err(e),
        };
        let scope = crate::budget::scope_of(place);
        let _ = self
            .budget
            .acquire_in(&scope, Class::Fis, call.urgency())
            .await;
        let result = match call {
            ExperimentCall::Start {
                template_id,
                client_token,
            } => {
                let out = client
                    .start_experiment()
                    .experiment_template_id(template_id)
                    .client_token(client_token)
                    .tags(TOKEN_TAG, client_token)
                    .send()
                    .await;
                self.record_fis("StartExperiment", template_id, out)
                    .map(|o| o.experiment().and_then(experiment_state))
            }
            ExperimentCall::Get { id } => {
                let out = client.get_experiment().id(id).send().await;
                self.record_fis("GetExperiment", id, out)
                    .map(|o| o.experiment().and_then(experiment_state))
            }
            ExperimentCall::Stop { id } => self.stop(&client, &scope, id).await,
            ExperimentCall::FindAndStop {
                template_id,
                client_token,
            } => match self.find(&client, &scope, template_id, client_token).await {
                Ok(Some(found)) if found.ended() => Ok(Some(found)),
                Ok(Some(found)) => self.stop(&client, &scope, &found.id).await,
                other => other,
            },
        };
        match result {
            Ok(v) => Observed::Ok(v),
            Err(e) => Observed::Err(e),
        }
    }
}

impl AlbRouter {
    fn record_fis<T, E>(
        &self,
        operation: &str,
        resource: &str,
        result: Result<T, aws_sdk_fis::error::SdkError<E, aws_sdk_fis::config::http::HttpResponse>>,
    ) -> Result<T, rollout_core::ObservationError>
    where
        E: aws_sdk_fis::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        crate::record(&self.observer, None, SERVICE, operation, resource, result)
    }

    async fn stop(
        &self,
        client: &Client,
        scope: &str,
        id: &str,
    ) -> Result<Option<ExperimentState>, rollout_core::ObservationError> {
        let out = client.stop_experiment().id(id).send().await;
        self.record_fis("StopExperiment", id, out)?;
        // Verified: FIS's own word on where it is now.
        let _ = self
            .budget
            .acquire_in(scope, Class::Fis, Urgency::Rollback)
            .await;
        let out = client.get_experiment().id(id).send().await;
        self.record_fis("GetExperiment", id, out)
            .map(|o| o.experiment().and_then(experiment_state))
    }

    /// The experiment of `template_id` tagged with `client_token`, if any.
    async fn find(
        &self,
        client: &Client,
        scope: &str,
        template_id: &str,
        client_token: &str,
    ) -> Result<Option<ExperimentState>, rollout_core::ObservationError> {
        let mut next: Option<String> = None;
        // A bounded number of pages: a template's experiments, newest
        // included, fit in a few.
        for _ in 0..20 {
            let out = client
                .list_experiments()
                .experiment_template_id(template_id)
                .set_next_token(next.clone())
                .send()
                .await;
            let out = self.record_fis("ListExperiments", template_id, out)?;
            let found = out.experiments().iter().find(|e| {
                e.tags()
                    .and_then(|t| t.get(TOKEN_TAG))
                    .is_some_and(|t| t == client_token)
            });
            if let Some(e) = found {
                return Ok(state_of(e.id(), e.state()));
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(None),
            }
            let _ = self
                .budget
                .acquire_in(scope, Class::Fis, Urgency::Rollback)
                .await;
        }
        Ok(None)
    }
}
