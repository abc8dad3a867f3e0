//! The rolloutd daemon as a library: configuration, the reconcile loop, the
//! specs directory, the HTTP API. [`serve::serve`] is the one entry: the
//! `rolloutd` binary (serve and demo), the benchmarks and the in-process
//! tests all run the daemon through it.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod redact;
pub mod serve;
pub mod specs;
pub mod tls;
#[cfg(feature = "simulated-world")]
pub mod world;

pub use serve::{serve, Setup};
