//! Test support for the AWS adapters, used by the end-to-end tests and the
//! AWS call benchmark; never part of the daemon.
//!
//! - [`moto::Moto`]: moto's server (an independent implementation of the
//!   ELBv2 and CloudWatch APIs) in a venv it makes on first use.
//! - [`gateway::Gateway`]: sits between an SDK client and moto; translates
//!   CloudWatch's Smithy RPC v2 CBOR to the JSON protocol moto serves
//!   ([`cbor`]), counts calls, and injects throttling and failures.
//! - [`alb`]: load balancers made through the ELBv2 API, and a publisher that
//!   plays the ALB's CloudWatch side every second.

pub mod alb;
pub mod cbor;
pub mod gateway;
pub mod moto;
