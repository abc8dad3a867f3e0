//! The rolloutd daemon as a library: configuration, the reconcile loop, the
//! specs directory and the simulated world. The `rolloutd` binary wires them
//! to the command line; benchmarks drive the same [`daemon::Daemon`].
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod metrics;
pub mod openapi;
pub mod specs;
pub mod tls;
pub mod world;
