//! Manual overrides. A person (or a pipeline) asks; the API checks with
//! [`check`] whether the request applies now (409 when it does not) and
//! queues it; the next decision applies it and records who asked and why.

use serde::{Deserialize, Serialize};

use crate::status::{PauseReason, Phase, RolloutStatus};
use crate::time::Time;

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CommandKind {
    /// All traffic to stable at once; the run ends `Aborted`.
    Abort,
    /// Skip the current pause (or analysis gate); `full` jumps to 100%.
    Promote {
        /// Straight to 100%, still verified on the load balancer.
        full: bool,
    },
    /// Hold where it is.
    Pause,
    /// Go on after a manual (or inconclusive) pause.
    Resume,
    /// Start an aborted, rolled-back or failed run again from step 0.
    Retry,
    /// Return all traffic to stable, then stop managing the rollout.
    Delete,
}

impl CommandKind {
    /// The verb, as in the API path.
    pub fn verb(self) -> &'static str {
        match self {
            CommandKind::Abort => "abort",
            CommandKind::Promote { .. } => "promote",
            CommandKind::Pause => "pause",
            CommandKind::Resume => "resume",
            CommandKind::Retry => "retry",
            CommandKind::Delete => "delete",
        }
    }
}

/// A request with its provenance. Commands are applied in `id` order, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Increasing per rollout.
    pub id: u64,
    /// What is asked.
    pub kind: CommandKind,
    /// Who asked (a token's name, a user).
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When it was asked.
    pub at: Time,
}

/// Whether `kind` applies to a run in `status` now; the reason when it does not.
pub fn check(status: &RolloutStatus, kind: CommandKind) -> Result<(), String> {
    let phase = status.phase;
    let ended = || {
        format!(
            "the run of revision {} has ended ({})",
            status.revision,
            phase.as_str()
        )
    };
    if status.deleting.is_some() && kind != CommandKind::Delete {
        return Err("the rollout is being deleted: its traffic returns to stable".into());
    }
    let drifted = matches!(status.pause, Some(PauseReason::Drift { .. }));
    match kind {
        CommandKind::Delete => Ok(()),
        CommandKind::Abort if phase.is_terminal() => Err(ended()),
        CommandKind::Abort => Ok(()),
        CommandKind::Promote { .. } if phase.is_terminal() => Err(ended()),
        CommandKind::Promote { .. } if phase == Phase::Pending => {
            Err(format!("the run has not started: {}", status.message))
        }
        CommandKind::Promote { .. } => match &status.pause {
            Some(PauseReason::Manual { .. }) => {
                Err("the run is paused by hand; resume it first".into())
            }
            Some(PauseReason::Drift { .. }) => Err(
                "the run is paused because its weights were changed outside rolloutd; resume it first"
                    .into(),
            ),
            _ => Ok(()),
        },
        CommandKind::Pause if phase.is_terminal() => Err(ended()),
        CommandKind::Pause if drifted => Err(
            "the run is already paused (its weights were changed outside rolloutd)".into(),
        ),
        CommandKind::Pause => match &status.pause {
            Some(PauseReason::Manual { .. }) => Err("the run is already paused".into()),
            _ => Ok(()),
        },
        CommandKind::Resume => match &status.pause {
            Some(
                PauseReason::Manual { .. } | PauseReason::Inconclusive | PauseReason::Drift { .. },
            ) => Ok(()),
            Some(PauseReason::Step | PauseReason::AwaitingPromotion) => {
                Err("the run waits at a pause step; use promote to go on".into())
            }
            None => Err(format!("the run is not paused ({})", phase.as_str())),
        },
        CommandKind::Retry => match phase {
            Phase::Aborted | Phase::RolledBack | Phase::Failed => Ok(()),
            _ => Err(format!(
                "retry starts an aborted, rolled-back or failed run again; this run is {}",
                phase.as_str()
            )),
        },
    }
}
