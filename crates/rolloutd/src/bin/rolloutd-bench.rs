//! `rolloutd-bench`: one daemon, many rollouts, PostgreSQL, and an in-memory
//! load balancer and metric source (no AWS), measured.
//!
//! Usage: `cargo run --release -p rolloutd --bin rolloutd-bench -- [--rollouts N] [--seconds S] [--concurrency N]`
//! (needs PostgreSQL as `scripts/test` provides, and `pgbench`).
//!
//! Phase A: every rollout waits in a one-hour pause with no analysis, so
//! every reconcile after the first is a no-op; it measures reconcile time and
//! the writes a no-op reconcile makes. Phase B: the same rollouts with an
//! analysis every minute (a changed spec, the same run), so statuses are
//! written as intervals are judged. Throughout: the longest gap between two
//! reconciles of a rollout, and the process's peak resident memory. Last,
//! pgbench measures the server's single-row update rate, for scale.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout_core::sync::lock;
use rollout_sim::memory::MemoryWorld;
use rollout_store::Store;
use rolloutd::config::Config;
use rolloutd::daemon::now;

#[derive(Default)]
struct Record {
    durations_us: Vec<u64>,
    /// The durations of the reconciles that wrote a status.
    wrote_us: Vec<u64>,
    /// By ten-second slice of the wall-clock minute: (reconciles, that
    /// wrote, over 5 ms).
    by_slice: [(u64, u64, u64); 6],
    wrote: u64,
    noop: u64,
    last: HashMap<String, Instant>,
    max_gap: Duration,
}

const TEMPLATE: &str = "apiVersion: rolloutd.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: golden}\nspec:\n  alb: {period: 60s, delay: 60s, errorRate: {maxIncrease: 50%}, latency: {maxIncrease: 10%}}\n";

/// Applies the template and `n` rollouts, 500 documents at a time (as a
/// directory of files would be; one stream of 10,000 documents is more than
/// the parser accepts from one source).
async fn apply(store: &Store, n: usize, analysis: bool) -> anyhow::Result<()> {
    let set = rollout_spec::load([("template.yaml", TEMPLATE)], &[])
        .map_err(|d| anyhow::anyhow!("{:?}", d.first()))?;
    store.apply(&set, "bench", now(), false).await?;
    let known = vec!["golden".to_string()];
    for start in (0..n).step_by(500) {
        let docs = specs(start..(start + 500).min(n), analysis);
        let set = rollout_spec::load([("bench.yaml", docs.as_str())], &known)
            .map_err(|d| anyhow::anyhow!("{:?}", d.first()))?;
        store.apply(&set, "bench", now(), false).await?;
    }
    Ok(())
}

fn specs(range: std::ops::Range<usize>, analysis: bool) -> String {
    let mut out = String::new();
    for i in range {
        out.push_str(&format!(
            "---\napiVersion: rolloutd.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: svc-{i}}}\nspec:\n  revision: \"r1\"\n  trafficRouting:\n    alb:\n      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/{i:016x}\n  stable: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue-{i}/73e2d6bc24d8a067\"}}\n  canary: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green-{i}/0f2a6b1c9d8e7f60\"}}\n  progressDeadline: 2h\n  strategy:\n    canary:\n      steps: [{{setWeight: 5}}, {{pause: {{duration: 1h}}}}, {{setWeight: 100}}]\n{}",
            if analysis { "  analysis: {interval: 1m, templates: [golden]}\n" } else { "" }
        ));
    }
    out
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

struct PhaseResult {
    reconciles: u64,
    per_second: f64,
    p50: f64,
    p99: f64,
    max_ms: f64,
    wrote: u64,
    noop: u64,
    state_writes: u64,
    lease_writes: u64,
    max_gap: Duration,
    /// p50 and p99 of the reconciles that wrote a status.
    wrote_p50: f64,
    wrote_p99: f64,
    /// Reconciles over 5 ms: (that wrote, no-op).
    over_5ms: (usize, usize),
    by_slice: [(u64, u64, u64); 6],
}

async fn phase(record: &Arc<Mutex<Record>>, store: &Store, seconds: u64) -> PhaseResult {
    {
        let mut r = lock(record);
        let kept = std::mem::take(&mut r.last);
        *r = Record {
            last: kept,
            ..Record::default()
        };
    }
    let (_, w0, l0) = store.statements();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (_, w1, l1) = store.statements();
    let r = std::mem::take(&mut *lock(record));
    let mut d = r.durations_us.clone();
    d.sort_unstable();
    let mut w = r.wrote_us.clone();
    w.sort_unstable();
    let slow_total = d.iter().filter(|us| **us > 5_000).count();
    let slow_wrote = w.iter().filter(|us| **us > 5_000).count();
    PhaseResult {
        reconciles: d.len() as u64,
        per_second: d.len() as f64 / elapsed,
        p50: percentile(&d, 0.5),
        p99: percentile(&d, 0.99),
        max_ms: d.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        wrote: r.wrote,
        noop: r.noop,
        state_writes: w1 - w0,
        lease_writes: l1 - l0,
        max_gap: r.max_gap,
        wrote_p50: percentile(&w, 0.5),
        wrote_p99: percentile(&w, 0.99),
        over_5ms: (slow_wrote, slow_total - slow_wrote),
        by_slice: r.by_slice,
    }
}

fn pgbench(admin: &str, seconds: u64) -> anyhow::Result<f64> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("pgbench not found under /usr/lib/postgresql"))?;
    let script = std::env::temp_dir().join("rolloutd-bench-update.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 100000 * :scale)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    )?;
    let init = std::process::Command::new(&bin)
        .args(["-i", "-q", "-s", "10", admin])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = std::process::Command::new(&bin)
        .args(["-n", "-c", "8", "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(admin)
        .output()?;
    let out = String::from_utf8_lossy(&run.stdout);
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {out}"))
}

/// `--rollouts N --seconds S --concurrency N`.
fn bench_args() -> anyhow::Result<(usize, u64, usize)> {
    let mut rollouts = 10_000usize;
    let mut seconds = 60u64;
    let mut concurrency = rolloutd::config::DEFAULT_CONCURRENCY;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rollouts" => {
                rollouts = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--rollouts N"))?
            }
            "--concurrency" => {
                concurrency = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|c| *c > 0)
                    .ok_or_else(|| anyhow::anyhow!("--concurrency N (at least 1)"))?
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seconds S"))?
            }
            other => anyhow::bail!(
                "unknown argument {other}; usage: rolloutd-bench [--rollouts N] [--seconds S] [--concurrency N]"
            ),
        }
    }
    Ok((rollouts, seconds, concurrency))
}

/// An observer that records every reconcile's time, whether it wrote, and
/// the gap since the rollout's previous reconcile.
fn recording(record: Arc<Mutex<Record>>) -> rolloutd::daemon::Observer {
    Box::new(move |name: &str, took: Duration, wrote: bool| {
        let mut r = lock(&record);
        r.durations_us.push(took.as_micros() as u64);
        let slice = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() % 60 / 10) as usize);
        let b = &mut r.by_slice[slice.min(5)];
        b.0 += 1;
        b.1 += u64::from(wrote);
        b.2 += u64::from(took > Duration::from_millis(5));
        if wrote {
            r.wrote_us.push(took.as_micros() as u64);
            r.wrote += 1;
        } else {
            r.noop += 1;
        }
        let t = Instant::now();
        if let Some(prev) = r.last.insert(name.to_string(), t) {
            let gap = t - prev;
            if gap > r.max_gap {
                r.max_gap = gap;
            }
        }
    })
}

/// Waits until every run started (each rollout's first reconcile writes);
/// returns how long that took.
async fn wait_for_starts(store: &Store, rollouts: usize) -> anyhow::Result<Duration> {
    let warm = Instant::now();
    loop {
        let started = store
            .rollouts()
            .await?
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.canary_weight == 5))
            .count();
        if started == rollouts {
            break;
        }
        anyhow::ensure!(
            warm.elapsed() < Duration::from_secs(300),
            "only {started} of {rollouts} runs started"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(warm.elapsed())
}

/// The phases' table, the apply's time, and each phase's written
/// reconciles by second of the minute.
fn print_phases(
    rollouts: usize,
    a: &PhaseResult,
    b0: &PhaseResult,
    b: &PhaseResult,
    applied_in: Duration,
) {
    println!("| phase | reconciles | per second | p50 ms | p99 ms | max ms | wrote a status | no-op | state write statements | lease write statements | longest gap between reconciles of a rollout |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, p) in [
        ("A: pauses, no analysis", a),
        (
            "B0: the first 15 s after the analysis was added to every rollout",
            b0,
        ),
        ("B: analysis every minute (the next 150 s)", b),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {:.1} s |",
            p.reconciles,
            p.per_second,
            p.p50,
            p.p99,
            p.max_ms,
            p.wrote,
            p.noop,
            p.state_writes,
            p.lease_writes,
            p.max_gap.as_secs_f64()
        );
    }
    println!(
        "\nadding the analysis to all {rollouts} rollouts (apply, 500 documents a transaction) took {:.1} s before B0",
        applied_in.as_secs_f64()
    );
    for (name, p) in [("A", a), ("B0", b0), ("B", b)] {
        println!(
            "\nphase {name}: reconciles that wrote a status: p50 {:.2} ms, p99 {:.2} ms; over 5 ms: {} that wrote, {} no-op",
            p.wrote_p50, p.wrote_p99, p.over_5ms.0, p.over_5ms.1
        );
        let slices: Vec<String> = p
            .by_slice
            .iter()
            .enumerate()
            .map(|(i, (n, w, slow))| {
                format!(
                    ":{:02}-:{:02} {n} reconciles, {w} wrote, {slow} over 5 ms",
                    i * 10,
                    i * 10 + 9
                )
            })
            .collect();
        println!("  by second of the minute: {}", slices.join("; "));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rollouts, seconds, concurrency) = bench_args()?;
    let url = rollout_store::testing::fresh_postgres_database("rolloutd_bench").await;
    let store = Store::connect_with(&url, 16).await?;
    store.migrate().await?;
    apply(&store, rollouts, false).await?;
    let world = Arc::new(MemoryWorld::new(1000.0, now));
    let record = Arc::new(Mutex::new(Record::default()));
    let observer = recording(Arc::clone(&record));
    let config = Config {
        reconcile_interval: rollout_spec::Duration::from_secs(10),
        lease_ttl: rollout_spec::Duration::from_secs(15),
        replica: "bench".into(),
        concurrency,
        ..Config::for_test(&url)
    };
    let setup = rolloutd::Setup {
        observer: Some(observer),
        ..rolloutd::Setup::on_store(config, store.clone())
    };
    let listener = rolloutd::http::bind("127.0.0.1:0").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(rolloutd::serve(
        listener,
        setup,
        Arc::clone(&world),
        world,
        async {
            let _ = stop_rx.await;
        },
    ));
    let warm_up = wait_for_starts(&store, rollouts).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let a = phase(&record, &store, seconds).await;
    // Phase B: add the analysis (the same run continues, now judged every minute).
    // The apply itself (10,000 changed documents) and the first reconcile of
    // each changed rollout are a transient, measured on their own.
    let applying = Instant::now();
    apply(&store, rollouts, true).await?;
    let applied_in = applying.elapsed();
    let b0 = phase(&record, &store, 15).await;
    let b = phase(&record, &store, seconds.max(150)).await;
    let rss = peak_rss_mb();
    let _ = stop_tx.send(());
    running.await??;
    let tps = pgbench(&rollout_store::testing::admin_url(), 20).unwrap_or(f64::NAN);

    println!("rolloutd-bench --rollouts {rollouts} --seconds {seconds}: one daemon, PostgreSQL, in-memory load balancer and metrics, reconcile interval 10s, concurrency {concurrency}\n");
    println!(
        "all {rollouts} runs started in {:.1} s\n",
        warm_up.as_secs_f64()
    );
    print_phases(rollouts, &a, &b0, &b, applied_in);
    let writes_per_noop = if a.noop > 0 {
        a.state_writes as f64 / a.noop as f64
    } else {
        f64::NAN
    };
    println!("\nstate write statements per no-op reconcile (phase A, where every reconcile was a no-op: {}): {writes_per_noop}", a.wrote == 0);
    let status_writes_per_s = b.wrote as f64 / seconds.max(150) as f64;
    println!("peak resident memory: {rss:.1} MB");
    println!("PostgreSQL single-row UPDATE rate (pgbench, 8 clients, 20 s): {tps:.0} per second");
    println!(
        "rollout status writes in phase B: {status_writes_per_s:.1} per second = {:.2}% of that rate",
        100.0 * status_writes_per_s / tps
    );
    Ok(())
}
