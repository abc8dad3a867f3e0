//! Every call goes to the region its resource's ARN names, against moto
//! (which keeps regions apart, as AWS does): a daemon configured for
//! us-east-1 runs rollouts whose load balancers are in eu-west-1.

mod support;

use std::time::Duration;

use rollout_awskit::alb::{Aws, Publisher};
use rollout_awskit::gateway::Gateway;
use rollout_awskit::moto::Moto;
use support::{get, start_daemon, tail, traffic, until, work_dir, BAD, ERRORS_TEMPLATE, GOOD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_in_another_region_is_run_there() {
    let dir = work_dir("regions");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let eu = Aws::in_region(&gateway.url, "eu-west-1").await;
    let net = eu.network().expect("VPC and subnets in eu-west-1");
    let good = eu.service("eugood", &net, true).await.expect("svc");
    let bad = eu.service("eubad", &net, true).await.expect("svc");
    assert!(good.listener.contains(":eu-west-1:"), "{}", good.listener);
    let steps = "[{setWeight: 10}, {pause: {duration: 3s}}, {setWeight: 50}, {pause: {duration: 3s}}, {setWeight: 100}]";
    let doc = |name: &str, svc: &rollout_awskit::alb::Service| {
        support::rollout_doc(
            name,
            &format!("listenerArn: {}", svc.listener),
            &svc.stable,
            &svc.canary,
            steps,
            "  progressDeadline: 3m\n  analysis: {interval: 2s, templates: [errors]}\n",
        )
    };
    std::fs::write(
        dir.join("specs/eu.yaml"),
        [
            ERRORS_TEMPLATE.to_string(),
            doc("eugood", &good),
            doc("eubad", &bad),
        ]
        .concat(),
    )
    .expect("specs");
    let publisher = Publisher::start(
        eu.clone(),
        vec![traffic(&good, GOOD), traffic(&bad, BAD)],
        17,
    );
    gateway.reset_calls();
    // The daemon's AWS configuration names us-east-1 (support::env_for).
    let d = start_daemon(&dir, &gateway.url);
    let phase = |n: &str| get(&d, &format!("/api/v1/rollouts/{n}")).1["status"]["phase"].clone();
    until(&d, Duration::from_secs(120), "both runs end", || {
        ["eugood", "eubad"].iter().all(|n| {
            ["Succeeded", "RolledBack", "Failed", "Aborted"]
                .contains(&phase(n).as_str().unwrap_or(""))
        })
    })
    .await;
    assert_eq!(phase("eugood"), "Succeeded", "{}", tail(&d.log));
    assert_eq!(phase("eubad"), "RolledBack", "{}", tail(&d.log));
    assert_eq!(
        eu.weights(&good, false).await.expect("weights"),
        (0, 100, 0)
    );
    assert_eq!(eu.weights(&bad, false).await.expect("weights"), (100, 0, 0));
    // No call went to the configured region: every ELBv2 and CloudWatch
    // call was signed for eu-west-1.
    let calls = gateway.calls();
    let wrong: Vec<_> = calls
        .by_region
        .iter()
        .filter(|((region, service, _), _)| {
            region != "eu-west-1" && (service == "elasticloadbalancing" || service == "monitoring")
        })
        .collect();
    assert!(wrong.is_empty(), "calls to another region: {wrong:?}");
    let eu_calls = |op: &str| -> u64 {
        calls
            .by_region
            .iter()
            .filter(|((r, _, o), _)| r == "eu-west-1" && o == op)
            .map(|(_, n)| n)
            .sum()
    };
    assert!(
        eu_calls("GetMetricData") > 0 && eu_calls("ModifyListener") > 0,
        "{calls:?}"
    );
    eprintln!("calls by region: {:?}", calls.by_region);
    drop(d);
    drop(publisher);
    drop(moto);
}

/// A rollout whose load balancer and target groups are in another account
/// runs there through the role the config maps that account to; one in an
/// account the config does not map fails, naming the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_in_another_account_runs_through_its_role() {
    let dir = work_dir("accounts");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 1).await.expect("gateway");
    let role = "arn:aws:iam::210987654321:role/rolloutd";
    let other = Aws::in_account(&gateway.url, "us-east-1", role)
        .await
        .expect("the role in 210987654321");
    let net = other.network().expect("VPC in 210987654321");
    let svc = other.service("elsewhere", &net, true).await.expect("svc");
    assert!(svc.listener.contains(":210987654321:"), "{}", svc.listener);
    let unmapped = Aws::in_account(
        &gateway.url,
        "us-east-1",
        "arn:aws:iam::333333333333:role/rolloutd",
    )
    .await
    .expect("a role in 333333333333");
    let net3 = unmapped.network().expect("VPC in 333333333333");
    let orphan = unmapped.service("orphan", &net3, true).await.expect("svc");
    let steps = "[{setWeight: 10}, {pause: {duration: 3s}}, {setWeight: 100}]";
    let doc = |name: &str, s: &rollout_awskit::alb::Service| {
        support::rollout_doc(
            name,
            &format!("listenerArn: {}", s.listener),
            &s.stable,
            &s.canary,
            steps,
            "  progressDeadline: 3m\n  analysis: {interval: 2s, templates: [errors]}\n",
        )
    };
    std::fs::write(
        dir.join("specs/accounts.yaml"),
        [
            ERRORS_TEMPLATE.to_string(),
            doc("elsewhere", &svc),
            doc("orphan", &orphan),
        ]
        .concat(),
    )
    .expect("specs");
    let config = dir.join("rolloutd.yaml");
    std::fs::write(
        &config,
        format!(
            "accounts:\n  \"210987654321\": {{roleArn: '{role}', externalId: rolloutd-test}}\n"
        ),
    )
    .expect("config");
    let publisher = Publisher::start(other.clone(), vec![traffic(&svc, GOOD)], 19);
    gateway.reset_calls();
    let d = support::start_with(
        &dir,
        &gateway.url,
        &format!("sqlite://{}", dir.join("state.db").display()),
        &[
            "--specs-dir",
            &dir.join("specs").to_string_lossy(),
            "--config",
            &config.to_string_lossy(),
        ],
        "rolloutd.log",
    );
    let phase = |n: &str| get(&d, &format!("/api/v1/rollouts/{n}")).1["status"]["phase"].clone();
    until(&d, Duration::from_secs(120), "both runs end", || {
        ["elsewhere", "orphan"].iter().all(|n| {
            ["Succeeded", "RolledBack", "Failed", "Aborted"]
                .contains(&phase(n).as_str().unwrap_or(""))
        })
    })
    .await;
    assert_eq!(phase("elsewhere"), "Succeeded", "{}", tail(&d.log));
    assert_eq!(
        other.weights(&svc, false).await.expect("weights"),
        (0, 100, 0)
    );
    assert_eq!(phase("orphan"), "Failed");
    let why = get(&d, "/api/v1/rollouts/orphan").1["status"]["message"].clone();
    assert!(
        why.as_str().unwrap_or("").contains(
            "AWS account 333333333333, which this daemon (account 123456789012) has no role for"
        ),
        "{why}"
    );
    assert_eq!(
        unmapped.weights(&orphan, false).await.expect("weights"),
        (1, 0, 0),
        "never touched"
    );
    assert!(
        gateway.calls().count("sts", "AssumeRole") >= 1,
        "{:?}",
        gateway.calls()
    );
    drop(d);
    drop(publisher);
    drop(moto);
}

/// The canary weight of a forward action, in percent.
fn canary_percent((stable, canary, other): (u32, u32, u32)) -> u32 {
    (canary * 100)
        .checked_div(stable + canary + other)
        .unwrap_or(0)
}

/// One Rollout over two listeners in two regions (`additionalTargets`):
/// both move step by step together and the run succeeds; its twin, bad in
/// only one region, is rolled back in both; a third rollout naming a
/// listener the first owns is refused, naming the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rollout_over_two_regions_moves_them_together() {
    let dir = work_dir("lockstep");
    let moto = Moto::start(&dir.join("moto.log")).expect("moto's server");
    let gateway = Gateway::start(&moto.url, 3).await.expect("gateway");
    let us = Aws::in_region(&gateway.url, "us-east-1").await;
    let eu = Aws::in_region(&gateway.url, "eu-west-1").await;
    let us_net = us.network().expect("VPC and subnets in us-east-1");
    let eu_net = eu.network().expect("VPC and subnets in eu-west-1");
    let twin_us = us.service("twinus", &us_net, true).await.expect("svc");
    let twin_eu = eu.service("twineu", &eu_net, true).await.expect("svc");
    let split_us = us.service("splitus", &us_net, true).await.expect("svc");
    let split_eu = eu.service("spliteu", &eu_net, true).await.expect("svc");
    let steps = "[{setWeight: 10}, {pause: {duration: 4s}}, {setWeight: 50}, {pause: {duration: 4s}}, {setWeight: 100}]";
    let doc =
        |name: &str, main: &rollout_awskit::alb::Service, other: &rollout_awskit::alb::Service| {
            support::rollout_doc(
                name,
                &format!("listenerArn: {}", main.listener),
                &main.stable,
                &main.canary,
                steps,
                &format!(
                    "  additionalTargets:
  - name: eu
    trafficRouting: {{alb: {{listenerArn: {}}}}}
    stable: {{targetGroupArn: {}}}
    canary: {{targetGroupArn: {}}}
  progressDeadline: 3m
  analysis: {{interval: 2s, templates: [errors]}}
",
                    other.listener, other.stable, other.canary
                ),
            )
        };
    std::fs::write(
        dir.join("specs/lockstep.yaml"),
        [
            ERRORS_TEMPLATE.to_string(),
            doc("twin", &twin_us, &twin_eu),
            doc("split", &split_us, &split_eu),
        ]
        .concat(),
    )
    .expect("specs");
    let us_traffic = Publisher::start(
        us.clone(),
        vec![traffic(&twin_us, GOOD), traffic(&split_us, GOOD)],
        23,
    );
    let eu_traffic = Publisher::start(
        eu.clone(),
        vec![traffic(&twin_eu, GOOD), traffic(&split_eu, BAD)],
        29,
    );
    // The two load balancers of `twin`, read every 100 ms while it runs.
    let sampler = tokio::spawn({
        let (us, eu) = (us.clone(), eu.clone());
        let (a, b) = (twin_us.clone(), twin_eu.clone());
        async move {
            let started = std::time::Instant::now();
            let mut seen: Vec<(u128, u32, u32)> = Vec::new();
            while started.elapsed() < Duration::from_secs(150) {
                if let (Ok(x), Ok(y)) = (us.weights(&a, false).await, eu.weights(&b, false).await) {
                    let (x, y) = (canary_percent(x), canary_percent(y));
                    seen.push((started.elapsed().as_millis(), x, y));
                    if x == 100 && y == 100 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    });
    gateway.reset_calls();
    let d = start_daemon(&dir, &gateway.url);
    let status = |n: &str| get(&d, &format!("/api/v1/rollouts/{n}")).1["status"].clone();
    until(&d, Duration::from_secs(150), "both runs end", || {
        ["twin", "split"].iter().all(|n| {
            ["Succeeded", "RolledBack", "Failed", "Aborted"]
                .contains(&status(n)["phase"].as_str().unwrap_or(""))
        })
    })
    .await;
    let twin = status("twin");
    let split = status("split");
    assert_eq!(twin["phase"], "Succeeded", "{twin}\n{}", tail(&d.log));
    assert_eq!(split["phase"], "RolledBack", "{split}\n{}", tail(&d.log));

    // Both of twin's load balancers went 0 → 10 → 50 → 100, never more
    // than one step apart, and each raise came only once both held the
    // step before.
    let seen = sampler.await.expect("sampler");
    let order = [0u32, 10, 50, 100];
    let step = |w: u32| order.iter().position(|&o| o == w);
    let mut path_us: Vec<u32> = Vec::new();
    let mut path_eu: Vec<u32> = Vec::new();
    for &(_, x, y) in &seen {
        let (i, j) = (step(x), step(y));
        assert!(
            i.is_some() && j.is_some(),
            "a weight off the steps: {seen:?}"
        );
        assert!(
            i.unwrap_or(0).abs_diff(j.unwrap_or(0)) <= 1,
            "the two regions more than a step apart: {seen:?}"
        );
        if path_us.last() != Some(&x) {
            path_us.push(x);
        }
        if path_eu.last() != Some(&y) {
            path_eu.push(y);
        }
    }
    assert_eq!(path_us, order, "{seen:?}");
    assert_eq!(path_eu, order, "{seen:?}");
    let reached = |col: usize, w: u32| {
        seen.iter()
            .find(|s| if col == 0 { s.1 == w } else { s.2 == w })
            .map(|s| s.0)
    };
    for w in [10, 50, 100] {
        let (a, b) = (reached(0, w), reached(1, w));
        eprintln!(
            "canary {w}%: us-east-1 at {a:?} ms, eu-west-1 at {b:?} ms (sampled every 100 ms)"
        );
    }
    let targets = twin["targets"].as_array().cloned().unwrap_or_default();
    assert_eq!(targets.len(), 2, "{twin}");
    assert_eq!(targets[0]["name"], "main");
    assert_eq!(targets[1]["name"], "eu");
    assert_eq!(targets[1]["place"], twin_eu.listener.as_str());
    assert_eq!(targets[1]["observedWeights"]["canary"], 100, "{twin}");

    // The canary bad in eu-west-1 alone rolled back both regions.
    assert_eq!(
        us.weights(&split_us, false).await.expect("weights"),
        (100, 0, 0)
    );
    assert_eq!(
        eu.weights(&split_eu, false).await.expect("weights"),
        (100, 0, 0)
    );
    let reason = split["message"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("`errors"), "{split}");
    eprintln!("split rolled back: {reason}");
    let judged: Vec<&String> = split["analysis"]["templates"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert!(
        judged.iter().any(|k| *k == "errors@eu") && judged.iter().any(|k| *k == "errors@main"),
        "each target judged on its own: {judged:?}"
    );

    // The dashboard shows each target (real headless Chromium).
    let mut b = support::browser::Browser::launch(&dir);
    let page = b.open(&format!("{}/#/rollouts/twin", d.base));
    let shown = b.wait_for(
        &page,
        "(() => { const t = document.querySelector('#target-eu'); return t && t.textContent.includes('stable 0 / canary 100') && document.querySelector('#target-main') ? t.textContent : false; })()",
        Duration::from_secs(30),
        "the rollout page lists both targets with their weights",
    );
    eprintln!("dashboard: {shown}");
    let shot = dir.join("dashboard-targets.png");
    b.screenshot(&page, &shot);
    eprintln!("screenshot: {}", shot.display());
    // And at a phone's width.
    b.viewport(&page, 390, 844, true);
    let phone = dir.join("dashboard-targets-phone.png");
    b.screenshot(&page, &phone);
    eprintln!("screenshot: {}", phone.display());
    drop(b);

    // A listener one rollout moves cannot be another's.
    let (code, body) = support::post(
        &d,
        "/api/v1/apply",
        &support::rollout_doc(
            "intruder",
            &format!("listenerArn: {}", twin_eu.listener),
            &twin_eu.stable,
            &twin_eu.canary,
            steps,
            "",
        ),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("twin"), "{body}");

    let calls = gateway.calls();
    eprintln!("calls by region: {:?}", calls.by_region);
    drop(d);
    drop(us_traffic);
    drop(eu_traffic);
    drop(moto);
}
