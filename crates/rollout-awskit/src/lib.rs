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
//! - [`receiver::Receiver`]: a local HTTP server for rolloutd's outgoing
//!   calls (webhooks, notifications).
//! - [`spawn_rolloutd`]: the benchmarks' way to start the real daemon.

pub mod alb;
pub mod cbor;
pub mod fis;
pub mod gateway;
pub mod moto;
pub mod publisher;
pub mod receiver;

/// Starts `rolloutd serve` (the binary at `rolloutd`) on SQLite in `dir`,
/// applying `dir/specs`, reaching AWS at `endpoint`, logging warnings to
/// `dir/rolloutd.log`; returns the process and its API's base URL.
pub fn spawn_rolloutd(
    rolloutd: &std::path::Path,
    dir: &std::path::Path,
    endpoint: &str,
) -> anyhow::Result<(std::process::Child, String)> {
    use anyhow::Context;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = std::process::Command::new(rolloutd);
    cmd.arg("serve")
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("state.db").display()))
        .arg("--specs-dir")
        .arg(dir.join("specs"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ROLLOUTD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("rolloutd.log"))?);
    for (k, v) in alb::env_for(endpoint) {
        cmd.env(k, v);
    }
    let child = cmd.spawn().context("rolloutd")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}
