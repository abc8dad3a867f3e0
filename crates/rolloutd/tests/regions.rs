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
