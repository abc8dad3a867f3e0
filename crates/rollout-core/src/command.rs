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

/// Why an override does not apply to the run as it stands (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The rollout is being deleted.
    BeingDeleted,
    /// The run has ended.
    Ended {
        /// Its revision.
        revision: String,
        /// How it ended.
        phase: Phase,
    },
    /// `promote` before the run started.
    NotStarted {
        /// Why it has not (the status message).
        why: String,
    },
    /// `promote` while paused by hand.
    PausedByHand,
    /// `promote` while paused for drift.
    PausedForDrift,
    /// `pause` while paused for drift.
    AlreadyPausedForDrift,
    /// `pause` while paused by hand.
    AlreadyPaused,
    /// `resume` at a pause step.
    AtPauseStep,
    /// `resume` of a run that is not paused.
    NotPaused {
        /// The run's phase.
        phase: Phase,
    },
    /// `retry` of a run that did not abort, roll back or fail.
    NotRetryable {
        /// The run's phase.
        phase: Phase,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BeingDeleted => {
                f.write_str("the rollout is being deleted: its traffic returns to stable")
            }
            Refusal::Ended { revision, phase } => write!(
                f,
                "the run of revision {revision} has ended ({})",
                phase.as_str()
            ),
            Refusal::NotStarted { why } => write!(f, "the run has not started: {why}"),
            Refusal::PausedByHand => f.write_str("the run is paused by hand; resume it first"),
            Refusal::PausedForDrift => f.write_str(
                "the run is paused because its weights were changed outside rolloutd; resume it first",
            ),
            Refusal::AlreadyPausedForDrift => f.write_str(
                "the run is already paused (its weights were changed outside rolloutd)",
            ),
            Refusal::AlreadyPaused => f.write_str("the run is already paused"),
            Refusal::AtPauseStep => {
                f.write_str("the run waits at a pause step; use promote to go on")
            }
            Refusal::NotPaused { phase } => {
                write!(f, "the run is not paused ({})", phase.as_str())
            }
            Refusal::NotRetryable { phase } => write!(
                f,
                "retry starts an aborted, rolled-back or failed run again; this run is {}",
                phase.as_str()
            ),
        }
    }
}

/// Whether `kind` applies to a run in `status` now; the reason when it does not.
pub fn check(status: &RolloutStatus, kind: CommandKind) -> Result<(), Refusal> {
    let phase = status.phase;
    let ended = || Refusal::Ended {
        revision: status.revision.clone(),
        phase,
    };
    if status.deleting.is_some() && kind != CommandKind::Delete {
        return Err(Refusal::BeingDeleted);
    }
    let drifted = matches!(status.pause, Some(PauseReason::Drift { .. }));
    match kind {
        CommandKind::Delete => Ok(()),
        CommandKind::Abort if phase.is_terminal() => Err(ended()),
        CommandKind::Abort => Ok(()),
        CommandKind::Promote { .. } if phase.is_terminal() => Err(ended()),
        CommandKind::Promote { .. } if phase == Phase::Pending => Err(Refusal::NotStarted {
            why: status.message.clone(),
        }),
        CommandKind::Promote { .. } => match &status.pause {
            Some(PauseReason::Manual { .. }) => Err(Refusal::PausedByHand),
            Some(PauseReason::Drift { .. }) => Err(Refusal::PausedForDrift),
            _ => Ok(()),
        },
        CommandKind::Pause if phase.is_terminal() => Err(ended()),
        CommandKind::Pause if drifted => Err(Refusal::AlreadyPausedForDrift),
        CommandKind::Pause => match &status.pause {
            Some(PauseReason::Manual { .. }) => Err(Refusal::AlreadyPaused),
            _ => Ok(()),
        },
        CommandKind::Resume => match &status.pause {
            Some(
                PauseReason::Manual { .. }
                | PauseReason::Inconclusive
                | PauseReason::Frozen
                | PauseReason::Drift { .. },
            ) => Ok(()),
            Some(PauseReason::Step | PauseReason::AwaitingPromotion) => Err(Refusal::AtPauseStep),
            None => Err(Refusal::NotPaused { phase }),
        },
        CommandKind::Retry => match phase {
            Phase::Aborted | Phase::RolledBack | Phase::Failed => Ok(()),
            _ => Err(Refusal::NotRetryable { phase }),
        },
    }
}
