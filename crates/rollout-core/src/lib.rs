//! The pure decision core of rolloutd.
//!
//! [`decide`] takes a rollout's spec (with its analysis templates), its
//! stored status, fresh observations of the load balancer and CloudWatch,
//! the manual commands not yet applied, and the current time, and returns the
//! new status, the actions to take (weight writes), the events to record and
//! when to look again. [`plan`] says what to observe first.
//!
//! Architecture Invariant: nothing in this crate does I/O, reads a clock or
//! draws a random number. Every rule is a function of its inputs, so every
//! rule is unit-tested and property-tested, and the daemon, the simulation
//! and the tests run the same decisions.
#![forbid(unsafe_code)]

pub mod command;
pub mod decide;
pub mod observe;
pub mod ports;
pub mod report;
pub mod status;
pub mod sync;
pub mod time;

pub use command::{check as check_command, Command, CommandKind, Refusal};
pub use decide::{
    decide, plan, plan_reads, with_roles, write_urgency, Action, Context, Decision, Event,
    EventKind, Reads,
};
pub use observe::{
    AlarmState, ExperimentCall, ExperimentState, ForwardWeights, IntervalRequest, IntervalResult,
    ObservationError, ObservationPlan, Observations, Observed, TargetHealth, Urgency, WebhookCall,
    WebhookOutcome,
};
pub use status::{Phase, RolloutStatus, Weights};
pub use time::Time;
