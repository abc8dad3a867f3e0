//! `deploy/iam-policy.json` grants exactly the AWS actions the adapters call:
//! every SDK operation called in `src/` (found in the source, so a new call
//! cannot be forgotten) must be allowed, and nothing else may be.

use std::collections::BTreeSet;
use std::path::Path;

/// `client.some_operation(` in the source, as `Service:SomeOperation`.
fn called(service: &str, source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find(".client") {
        rest = &rest[at + ".client".len()..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix('.') else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !after[name.len()..].starts_with("()") {
            continue;
        }
        let pascal: String = name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        out.insert(format!("{service}:{pascal}"));
    }
    out
}

fn policy_actions() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/iam-policy.json");
    let text = std::fs::read_to_string(&path).expect("deploy/iam-policy.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the policy is JSON");
    assert_eq!(doc["Version"], "2012-10-17");
    let mut out = BTreeSet::new();
    for st in doc["Statement"].as_array().expect("statements") {
        assert_eq!(st["Effect"], "Allow");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(all) => {
                out.extend(all.iter().map(|a| a.as_str().expect("action").to_string()))
            }
            other => panic!("Action {other}"),
        }
    }
    assert!(
        out.iter().all(|a| !a.contains('*')),
        "least privilege: no wildcard actions"
    );
    out
}

#[test]
fn the_policy_allows_exactly_what_the_code_calls() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |f: &str| std::fs::read_to_string(src.join(f)).expect("source");
    let mut code = called(rollout_aws::alb::SERVICE, &read("alb.rs"));
    code.extend(called(
        rollout_aws::cloudwatch::SERVICE,
        &read("cloudwatch.rs"),
    ));
    assert!(
        code.contains("elasticloadbalancing:ModifyListener")
            && code.contains("cloudwatch:GetMetricData"),
        "the scan finds the calls: {code:?}"
    );
    let policy = policy_actions();
    let missing: Vec<_> = code.difference(&policy).collect();
    assert!(
        missing.is_empty(),
        "the code calls actions the policy lacks: {missing:?}"
    );
    let extra: Vec<_> = policy.difference(&code).collect();
    assert!(
        extra.is_empty(),
        "the policy allows actions the code never calls: {extra:?}"
    );
}

#[test]
fn the_scan_sees_calls_across_lines() {
    let src = "let out = self\n    .client\n    .describe_target_health()\n    .send();\nself.client.modify_rule().rule_arn(x);\nlet client = 1;";
    let found = called("elasticloadbalancing", src);
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![
            "elasticloadbalancing:DescribeTargetHealth".to_string(),
            "elasticloadbalancing:ModifyRule".to_string()
        ]
    );
}
