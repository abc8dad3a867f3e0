//! Fault Injection Service in moto, for the chaos tests: an experiment
//! template to start, and experiments that advance by time as real ones
//! do (moto's state manager), and reading what rolloutd started.

use anyhow::Context as _;
use aws_sdk_fis::types::{
    CreateExperimentTemplateActionInput, CreateExperimentTemplateStopConditionInput,
};

use crate::alb::Aws;

impl Aws {
    /// An experiment template that waits (an `aws:fis:wait` action: the
    /// fault itself is the test's to simulate); its id.
    pub async fn experiment_template(&self, name: &str) -> anyhow::Result<String> {
        let out = self
            .fis
            .create_experiment_template()
            .client_token(format!("template-{name}"))
            .description(format!("rolloutd test {name}"))
            .role_arn("arn:aws:iam::123456789012:role/fis-experiments")
            .stop_conditions(
                CreateExperimentTemplateStopConditionInput::builder()
                    .source("none")
                    .build()
                    .context("stop condition")?,
            )
            .actions(
                "wait",
                CreateExperimentTemplateActionInput::builder()
                    .action_id("aws:fis:wait")
                    .parameters("duration", "PT10M")
                    .build()
                    .context("action")?,
            )
            .send()
            .await
            .context("CreateExperimentTemplate")?;
        out.experiment_template()
            .and_then(|t| t.id())
            .map(str::to_string)
            .context("no template id")
    }

    /// Experiments spend `seconds` in each state (pending, initiating,
    /// running, stopping) before the next, instead of moving on at every
    /// read.
    pub fn fis_states_last(&self, seconds: u32) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "model_name": "fis::experiment",
            "transition": {"progression": "time", "seconds": seconds},
        });
        ureq::post(&format!(
            "{}/moto-api/state-manager/set-transition",
            self.endpoint()
        ))
        .send_json(&body)
        .context("set-transition")?;
        Ok(())
    }

    /// Every experiment of `template`: (id, status), as FIS lists them.
    pub async fn experiments(&self, template: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .fis
            .list_experiments()
            .experiment_template_id(template)
            .send()
            .await
            .context("ListExperiments")?;
        Ok(out
            .experiments()
            .iter()
            .map(|e| {
                (
                    e.id().unwrap_or_default().to_string(),
                    e.state()
                        .and_then(|s| s.status())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }
}
