//! Never fight over or orphan production traffic (issue 13), shown with the
//! real `rolloutd` binary against moto's ELBv2: weights changed by someone
//! else (drift) pause the run or are reverted, a target group the rollout
//! does not name is never written over, one listener has one owner, DELETE
//! returns traffic to stable before the rollout goes, and a blip of the
//! specs directory changes nothing.

mod support;

use std::time::{Duration, Instant};

use rollout_awskit::alb::{Aws, Service};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use serde_json::Value;
use support::{delete, get, metrics_text, phase, post, start_daemon, tail, until, work_dir};

/// A rollout that raises the canary to 5% and holds there until promoted
/// (no analysis: the tests are about who writes the load balancer).
fn holding(name: &str, svc: &Service, on_drift: Option<&str>) -> String {
    let drift = on_drift
        .map(|p| format!("  onDrift: {p}\n"))
        .unwrap_or_default();
    support::rollout_doc(
        name,
        &format!("listenerArn: {}", svc.listener),
        &svc.stable,
        &svc.canary,
        support::HOLD_AT_5,
        &drift,
    )
}

fn writes(gateway: &Gateway) -> u64 {
    let calls = gateway.calls();
    calls.count("elasticloadbalancing", "ModifyListener")
        + calls.count("elasticloadbalancing", "ModifyRule")
}

async fn weights(aws: &Aws, svc: &Service) -> (u32, u32, u32) {
    aws.weights(svc, false).await.expect("weights")
}

fn events(d: &support::Daemon, name: &str) -> Vec<Value> {
    get(d, &format!("/api/v1/rollouts/{name}/events")).1["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_event(d: &support::Daemon, name: &str, kind: &str) -> bool {
    events(d, name).iter().any(|e| e["kind"] == kind)
}

/// Waits until the load balancer holds stable 95 / canary 5 for `svc` and
/// the run waits at its pause step.
async fn at_five(d: &support::Daemon, aws: &Aws, svc: &Service, name: &str) {
    let t = Instant::now();
    loop {
        if weights(aws, svc).await == (95, 5, 0) && phase(d, name) == "Paused" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{name} did not reach 5%: {}\n{}",
            get(d, &format!("/api/v1/rollouts/{name}")).1["status"],
            tail(&d.log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stays true for `secs` seconds (sampled every 250 ms).
async fn holds_for(secs: u64, mut what: impl AsyncFnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if !what().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_an_event_and_foreign_target_groups_are_never_written() {
    let dir = work_dir("drift");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    // The daemon's calls through one gateway (counted), the test's own
    // (a person's changes, reads) through another.
    let gateway = Gateway::start(&moto.url, 21).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 31).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let paused = aws.service("paused", &net, true).await.expect("svc");
    let reverted = aws.service("reverted", &net, true).await.expect("svc");
    let foreign = aws.service("foreign", &net, true).await.expect("svc");
    let foreign_rev = aws.service("foreignrev", &net, true).await.expect("svc");
    let mirror = aws
        .extra_target_group("mirror", &net)
        .await
        .expect("a target group no rollout names");
    let specs = [
        holding("paused", &paused, None),
        holding("reverted", &reverted, Some("revert")),
        holding("foreign", &foreign, None),
        holding("foreignrev", &foreign_rev, Some("revert")),
    ]
    .concat();
    std::fs::write(dir.join("specs/rollouts.yaml"), specs).expect("specs");
    let d = start_daemon(&dir, &gateway.url);
    for (name, svc) in [
        ("paused", &paused),
        ("reverted", &reverted),
        ("foreign", &foreign),
        ("foreignrev", &foreign_rev),
    ] {
        at_five(&d, &aws, svc, name).await;
    }

    // A person sets 100/0 by hand: with the default policy the run records
    // WeightDrift within a reconcile interval, pauses, and leaves the
    // weights exactly as the person set them.
    let before = writes(&gateway);
    aws.set_forward(&paused, &[(&paused.stable, 100), (&paused.canary, 0)])
        .await
        .expect("manual change");
    let t = Instant::now();
    until(
        &d,
        Duration::from_secs(10),
        "WeightDrift on `paused`",
        || has_event(&d, "paused", "WeightDrift"),
    )
    .await;
    let noticed = t.elapsed();
    let (_, r) = get(&d, "/api/v1/rollouts/paused");
    assert_eq!(r["status"]["phase"], "Paused");
    assert_eq!(r["status"]["pause"]["kind"], "drift", "{}", r["status"]);
    let message = r["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("stable 100 / canary 0") && message.contains("stable 95 / canary 5"),
        "the status says what was seen and what was expected: {message}"
    );
    assert!(
        holds_for(5, async || weights(&aws, &paused).await == (100, 0, 0)).await,
        "the person's weights were reverted"
    );
    assert_eq!(writes(&gateway), before, "nothing was written");
    println!("drift noticed {noticed:?} after the manual change");

    // With onDrift: revert the weights go back, and the event is there.
    let before = writes(&gateway);
    aws.set_forward(&reverted, &[(&reverted.stable, 100), (&reverted.canary, 0)])
        .await
        .expect("manual change");
    until(&d, Duration::from_secs(10), "`reverted` reverted", || {
        block_on(weights(&aws, &reverted)) == (95, 5, 0)
    })
    .await;
    assert!(has_event(&d, "reverted", "WeightDrift"));
    assert_eq!(writes(&gateway) - before, 1, "one write reverts it");

    // A target group the rollout does not name gets weight 10: whatever the
    // policy, no write is attempted (it could not reach the rollout's split
    // without changing that target group); the run pauses and says why.
    for (name, svc) in [("foreign", &foreign), ("foreignrev", &foreign_rev)] {
        let before = writes(&gateway);
        aws.set_forward(svc, &[(&svc.stable, 95), (&svc.canary, 5), (&mirror, 10)])
            .await
            .expect("manual change");
        until(&d, Duration::from_secs(10), "WeightDrift", || {
            has_event(&d, name, "WeightDrift")
        })
        .await;
        assert!(
            holds_for(5, async || weights(&aws, svc).await == (95, 5, 10)).await,
            "{name}: the foreign target group was changed"
        );
        assert_eq!(writes(&gateway), before, "{name}: no write attempted");
        let (_, r) = get(&d, &format!("/api/v1/rollouts/{name}"));
        assert_eq!(r["status"]["phase"], "Paused");
        let message = r["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("does not name") && message.contains("never changes"),
            "{name}: {message}"
        );
    }
    let metrics = metrics_text(&d);
    assert!(
        metrics.contains("rolloutd_weight_drift_total{rollout=\"paused\"} 1"),
        "{metrics}"
    );
    // Resuming the paused run writes its weights back.
    let (code, _) = post(&d, "/api/v1/rollouts/paused/resume", "");
    assert_eq!(code, 202);
    until(&d, Duration::from_secs(10), "`paused` resumed", || {
        block_on(weights(&aws, &paused)) == (95, 5, 0)
    })
    .await;
    drop(d);
    drop(moto);
}

/// Runs a future to completion from a synchronous closure (the polls above
/// are closures).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_per_listener_and_delete_returns_traffic_first() {
    let dir = work_dir("owner");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    // The daemon's calls through one gateway (counted), the test's own
    // (a person's changes, reads) through another.
    let gateway = Gateway::start(&moto.url, 22).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 32).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let shop = aws.service("shop", &net, true).await.expect("svc");
    let d = start_daemon(&dir, &gateway.url);

    let (code, body) = post(&d, "/api/v1/apply", &holding("first", &shop, None));
    assert_eq!(code, 200, "{body}");
    // Another rollout on the same listener, applied separately: 409 naming
    // the owner, nothing applied.
    let (code, body) = post(&d, "/api/v1/apply", &holding("second", &shop, None));
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("`first`"),
        "{body}"
    );
    assert_eq!(body["details"][0]["owner"], "first");
    assert_eq!(get(&d, "/api/v1/rollouts/second").0, 404);
    // The same through the specs directory: refused, reported, not applied.
    std::fs::write(dir.join("specs/third.yaml"), holding("third", &shop, None)).expect("file");
    until(
        &d,
        Duration::from_secs(15),
        "the specs directory reports the owner",
        || {
            get(&d, "/api/v1/sources").1["items"]
                .to_string()
                .contains("owned by Rollout `first`")
        },
    )
    .await;
    assert_eq!(get(&d, "/api/v1/rollouts/third").0, 404);
    std::fs::remove_file(dir.join("specs/third.yaml")).expect("rm");

    at_five(&d, &aws, &shop, "first").await;
    // DELETE mid-run: stable carries all traffic before the rollout is gone.
    let (code, body) = delete(&d, "/api/v1/rollouts/first");
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["pending"], true);
    let t = Instant::now();
    loop {
        let (code, _) = get(&d, "/api/v1/rollouts/first");
        let w = weights(&aws, &shop).await;
        if code == 404 {
            assert_eq!(w, (100, 0, 0), "gone before stable carried all traffic");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "not deleted: {}",
            tail(&d.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-applied, the name is a new rollout: run 1, its own events, and it
    // starts (stable carries all traffic).
    let (code, body) = post(&d, "/api/v1/apply", &holding("first", &shop, None));
    assert_eq!(code, 200, "{body}");
    at_five(&d, &aws, &shop, "first").await;
    let (_, r) = get(&d, "/api/v1/rollouts/first");
    assert_eq!(r["status"]["run"], 1);
    let evs = events(&d, "first");
    assert_eq!(
        evs.first().map(|e| e["kind"].clone()),
        Some("RunStarted".into())
    );
    assert!(
        !evs.iter().any(|e| e["kind"] == "Deleting"),
        "the old rollout's events do not show: {evs:?}"
    );
    // Now the second rollout can be applied only after the first is gone;
    // ?orphan=true deletes at once and leaves the weights.
    let (code, body) = delete(&d, "/api/v1/rollouts/first?orphan=true");
    assert_eq!(code, 200, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .contains("left exactly as they are"));
    assert_eq!(
        weights(&aws, &shop).await,
        (95, 5, 0),
        "orphan leaves the weights"
    );
    let (code, body) = post(&d, "/api/v1/apply", &holding("second", &shop, None));
    assert_eq!(code, 200, "{body}");
    drop(d);
    drop(moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_of_the_specs_directory_changes_nothing() {
    let dir = work_dir("blip");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    // The daemon's calls through one gateway (counted), the test's own
    // (a person's changes, reads) through another.
    let gateway = Gateway::start(&moto.url, 23).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 33).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let shop = aws.service("shop", &net, true).await.expect("svc");
    let file = dir.join("specs/shop.yaml");
    let text = holding("shop", &shop, None);
    std::fs::write(&file, &text).expect("specs");
    let d = start_daemon(&dir, &gateway.url);
    at_five(&d, &aws, &shop, "shop").await;
    let same = async |d: &support::Daemon| {
        let (code, r) = get(d, "/api/v1/rollouts/shop");
        code == 200
            && r["status"]["run"] == 1
            && r["status"]["phase"] == "Paused"
            && weights(&aws, &shop).await == (95, 5, 0)
    };

    // The whole directory moved away for 3 s (a git-sync swap, a network
    // file system's hiccup).
    let away = dir.join("specs.away");
    std::fs::rename(dir.join("specs"), &away).expect("move away");
    let mut saw_failed_scan = false;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert!(same(&d).await, "changed while the directory was away");
        saw_failed_scan |= get(&d, "/api/v1/sources").1["scan"]["complete"] == false;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::rename(&away, dir.join("specs")).expect("move back");
    assert!(saw_failed_scan, "the failed scan was reported");
    assert!(metrics_text(&d).contains("rolloutd_specs_scan_failures_total "));
    assert!(
        holds_for(4, async || same(&d).await).await,
        "changed after the directory came back"
    );

    // The file truncated for 2 s (rewritten in place).
    std::fs::write(&file, "").expect("truncate");
    assert!(
        holds_for(2, async || same(&d).await).await,
        "changed while the file was empty"
    );
    std::fs::write(&file, &text).expect("restore");
    assert!(
        holds_for(4, async || same(&d).await).await,
        "changed after the file came back"
    );
    let (_, r) = get(&d, "/api/v1/rollouts/shop");
    assert_eq!(r["status"]["run"], 1, "still the same run");

    // Two symlinks to `.`: reported as a loop; the daemon stays responsive.
    std::os::unix::fs::symlink(".", dir.join("specs/loop")).expect("symlink");
    std::os::unix::fs::symlink(".", dir.join("specs/loop2")).expect("symlink");
    until(&d, Duration::from_secs(15), "the loop is reported", || {
        get(&d, "/api/v1/sources").1["scan"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("symlink loop")
    })
    .await;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(get(&d, "/healthz").0, 200);
        assert_eq!(get(&d, "/api/v1/sources").0, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "slow: {:?}",
            t.elapsed()
        );
        assert!(same(&d).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(dir.join("specs/loop")).expect("rm");
    std::fs::remove_file(dir.join("specs/loop2")).expect("rm");

    // A real removal: the rollout leaves after the grace (3 complete scans
    // and 60 s by default), its traffic returned to stable first.
    std::fs::remove_file(&file).expect("rm");
    assert!(
        holds_for(5, async || same(&d).await).await,
        "removed before the grace passed"
    );
    let pending = get(&d, "/api/v1/sources").1["scan"]["pendingRemoval"].clone();
    assert_eq!(pending, serde_json::json!(["shop"]));

    // 5,000 aborts queued at once (more than one SQLite statement can bind
    // as events): applied in bounded batches, never wedged.
    let url = format!("sqlite://{}", dir.join("state.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("state.db");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO commands (rollout, kind, actor, reason, at)
         SELECT 'shop', '{\"kind\":\"abort\"}', 'load', NULL, 0 FROM n",
    )
    .execute(&pool)
    .await
    .expect("queue 5,000 aborts");
    until(&d, Duration::from_secs(60), "every abort applied", || {
        phase(&d, "shop") == "Aborted"
            && block_on(
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM commands").fetch_one(&pool),
            )
            .unwrap_or(-1)
                == 0
    })
    .await;
    until(
        &d,
        Duration::from_secs(10),
        "traffic back on stable",
        || block_on(weights(&aws, &shop)) == (100, 0, 0),
    )
    .await;
    let evs = events(&d, "shop");
    let ignored: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "CommandIgnored")
        .collect();
    assert!(
        ignored.len() <= 60,
        "ignored aborts are summed up, not one event each: {}",
        ignored.len()
    );
    assert!(
        !tail(&d.log).contains("too many SQL variables"),
        "{}",
        tail(&d.log)
    );
    drop(d);
    drop(moto);
}

/// This process's lease holder name, from its log.
fn holder_of(d: &support::Daemon) -> String {
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    log.lines()
        .find(|l| l.contains("lease holder name of this process"))
        .and_then(|l| l.split("holder=").nth(1))
        .map(|h| h.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn leases_held(d: &support::Daemon) -> i64 {
    metrics_text(d)
        .lines()
        .find_map(|l| l.strip_prefix("rolloutd_leases_held "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn signal(d: &support::Daemon, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &d.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_name_two_processes_and_a_stopped_replica() {
    let dir = work_dir("fence");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    // The daemon's calls through one gateway (counted), the test's own
    // (a person's changes, reads) through another.
    let gateway = Gateway::start(&moto.url, 24).await.expect("gateway");
    let clean = Gateway::start(&moto.url, 34).await.expect("gateway");
    let aws = Aws::new(&clean.url).await;
    let net = aws.network().expect("VPC and subnets");
    let mut services = Vec::new();
    let mut specs = String::new();
    for i in 0..4 {
        let svc = aws
            .service(&format!("s{i}"), &net, true)
            .await
            .expect("svc");
        specs.push_str(&holding(&format!("r{i}"), &svc, None));
        services.push(svc);
    }
    std::fs::write(dir.join("specs/all.yaml"), specs).expect("specs");
    let db = rollout_store::testing::fresh_postgres_database("rolloutd_fence").await;
    let specs_dir = dir.join("specs").display().to_string();
    // Two processes started with the same --replica name, sharing one
    // PostgreSQL, with a 3 s lease.
    let args = [
        "--specs-dir",
        specs_dir.as_str(),
        "--replica",
        "same",
        "--lease-ttl",
        "3s",
    ];
    let a = support::start_with(&dir, &gateway.url, &db, &args, "a.log");
    let b = support::start_with(&dir, &gateway.url, &db, &args, "b.log");
    for (i, svc) in services.iter().enumerate() {
        at_five(&a, &aws, svc, &format!("r{i}")).await;
    }
    let (ha, hb) = (holder_of(&a), holder_of(&b));
    assert!(
        ha.starts_with("same~") && hb.starts_with("same~") && ha != hb,
        "{ha} {hb}"
    );
    // Each lease is held by exactly one of them.
    until(&a, Duration::from_secs(10), "every lease held once", || {
        leases_held(&a) + leases_held(&b) == 4
    })
    .await;
    assert_eq!(writes(&gateway), 4, "one raise per rollout, by one process");

    // Two rollouts naming one listener, applied at the same moment through
    // the two replicas: exactly one owns it, the other gets 409.
    let contested = aws.service("contested", &net, true).await.expect("svc");
    let (one, two) = (
        holding("left", &contested, None),
        holding("right", &contested, None),
    );
    let (ba, bb) = (a.base.clone(), b.base.clone());
    let left = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(format!("{ba}/api/v1/apply"))
            .send(one)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    let right = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(format!("{bb}/api/v1/apply"))
            .send(two)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    let mut codes = [left.join().expect("left"), right.join().expect("right")];
    codes.sort_unstable();
    assert_eq!(codes, [200, 409], "exactly one owner across replicas");
    let winner = if get(&a, "/api/v1/rollouts/left").0 == 200 {
        "left"
    } else {
        "right"
    };
    at_five(&a, &aws, &contested, winner).await;

    // Stop the replica holding r0 past its lease; the other takes over and
    // moves r0 on; the stopped one, continued, writes nothing.
    let owner = |d: &support::Daemon| {
        std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("took the lease")
                    && (l.contains("rollout=\"r0\"") || l.contains("rollout=r0 "))
            })
            .count()
    };
    let (stopped, other) = if owner(&a) > 0 { (&a, &b) } else { (&b, &a) };
    let before = writes(&gateway);
    signal(stopped, "-STOP");
    until(
        other,
        Duration::from_secs(15),
        "the other replica takes r0",
        || owner(other) > 0,
    )
    .await;
    let (code, body) = post(other, "/api/v1/rollouts/r0/promote", "");
    assert_eq!(code, 202, "{body}");
    until(other, Duration::from_secs(15), "r0 at 100%", || {
        block_on(weights(&aws, &services[0])) == (0, 100, 0)
    })
    .await;
    let resumed_at = std::fs::read_to_string(&stopped.log)
        .unwrap_or_default()
        .len();
    signal(stopped, "-CONT");
    assert!(
        holds_for(6, async || weights(&aws, &services[0]).await == (0, 100, 0)).await,
        "the continued replica wrote over its successor"
    );
    assert_eq!(writes(&gateway) - before, 1, "only the successor wrote");
    let after = std::fs::read_to_string(&stopped.log).unwrap_or_default();
    assert!(
        !after[resumed_at..].contains("weights written"),
        "the continued replica wrote: {}",
        &after[resumed_at..]
    );
    drop(a);
    drop(b);
    drop(moto);
}
