//! `deploy/iam-policy.json` grants exactly the AWS actions the adapters call:
//! every SDK operation called in `src/` (found in the source, so a new call
//! cannot be forgotten) must be allowed, and nothing else may be.

use std::collections::BTreeSet;
use std::path::Path;

/// `client.some_operation(` in the source, as `Service:SomeOperation`:
/// a client (`self.client`, or a local `client`) possibly narrowed to a
/// region and account first (`.for_arn(…)?`, `.at(…)?`).
fn called(service: &str, source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("client") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "client".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let mut after = rest.trim_start();
        for narrow in [".for_arn(", ".at("] {
            if let Some(args) = after.strip_prefix(narrow) {
                let mut depth = 1;
                let end = args.char_indices().find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                });
                if let Some(end) = end {
                    after = args[end + 1..].trim_start();
                    after = after.strip_prefix('?').unwrap_or(after).trim_start();
                }
                break;
            }
        }
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
    actions_of("iam-policy.json")
}

/// The actions a policy under deploy/ allows.
fn actions_of(file: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
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
    for f in ["cloudwatch.rs", "cloudwatch/alarms.rs"] {
        code.extend(called(rollout_aws::cloudwatch::SERVICE, &read(f)));
    }
    let fis = read("fis.rs");
    code.extend(called(rollout_aws::fis::SERVICE, &fis));
    // Starting an experiment with tags needs the right to tag it.
    if fis.contains(".tags(") {
        code.insert("fis:TagResource".to_string());
    }
    assert!(
        code.contains("elasticloadbalancing:ModifyListener")
            && code.contains("cloudwatch:GetMetricData"),
        "the scan finds the calls: {code:?}"
    );
    // Roles in other accounts are assumed through the SDK's provider.
    if read("regional.rs").contains("AssumeRoleProvider") {
        code.insert("sts:AssumeRole".to_string());
    }
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

/// The role rolloutd assumes in another account allows what it does there:
/// everything the daemon's own policy allows but assuming further roles.
#[test]
fn the_target_account_role_allows_the_same_calls() {
    let mut own = policy_actions();
    own.remove("sts:AssumeRole");
    assert_eq!(actions_of("iam-target-account-policy.json"), own);
    let trust = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/iam-target-account-trust.json"),
    )
    .expect("trust policy");
    let trust: serde_json::Value = serde_json::from_str(&trust).expect("JSON");
    assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    assert!(trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"].is_string());
}
