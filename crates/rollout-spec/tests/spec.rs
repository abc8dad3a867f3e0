//! Data-driven tests of the spec crate.
//!
//! - `tests/invalid/*.yaml`: each file is a document set with mistakes; its
//!   trailing `# expect: LINE:COLUMN: message` lines are exactly the
//!   diagnostics it must produce, in order. `BLESS=1 cargo test -p
//!   rollout-spec` rewrites them (then read the diff).
//! - the examples under `docs/examples/` (copies of the contract's) validate.
//! - every decoded document serialises with serde and decodes back to the same
//!   value, so the schema (from serde names) and the decoder agree.
//! - the committed JSON Schemas under `docs/schema/` are current.

use std::fs;
use std::path::{Path, PathBuf};

use rollout_spec::{load, schema, SpecSet};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_dir() -> PathBuf {
    crate_dir().join("../..")
}

fn blessing() -> bool {
    std::env::var_os("BLESS").is_some()
}

const EXPECT: &str = "# expect: ";

/// Runs one case: returns the document text (without expectations), the
/// expected lines, and the actual lines.
fn check_case(path: &Path) -> (String, Vec<String>, Vec<String>) {
    let text = fs::read_to_string(path).expect("read case");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with(EXPECT))
        .map(|l| format!("{l}\n"))
        .collect();
    let expected: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(EXPECT))
        .map(str::to_string)
        .collect();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("case");
    let actual: Vec<String> = match load([(name, body.as_str())], &[]) {
        Ok(_) => Vec::new(),
        Err(diags) => diags
            .iter()
            .map(|d| {
                assert_eq!(d.file, name);
                format!("{}:{}: {}", d.line, d.column, d.text())
            })
            .collect(),
    };
    (body, expected, actual)
}

#[test]
fn invalid_corpus() {
    let dir = crate_dir().join("tests/invalid");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/invalid")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 40, "the corpus has {} cases", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let (body, expected, actual) = check_case(path);
        if actual.is_empty() {
            failures.push(format!("{}: no diagnostics at all", path.display()));
            continue;
        }
        if blessing() {
            let mut out = body.clone();
            for line in &actual {
                out.push_str(EXPECT);
                out.push_str(line);
                out.push('\n');
            }
            fs::write(path, out).expect("bless");
        } else if expected != actual {
            failures.push(format!(
                "{}:\n  expected:\n    {}\n  actual:\n    {}",
                path.display(),
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn load_dir(dir: &Path) -> SpecSet {
    let mut files: Vec<(String, String)> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                fs::read_to_string(&p).expect("read"),
            )
        })
        .collect();
    files.sort();
    let set = load(files.iter().map(|(n, t)| (n.as_str(), t.as_str())), &[]);
    match set {
        Ok(set) => set,
        Err(diags) => panic!(
            "{}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn examples_validate() {
    let set = load_dir(&repo_dir().join("docs/examples"));
    // The contract's two examples, the demo's two rollouts and template,
    // an experiment with its template, and a rollout over two regions
    // with its template.
    assert_eq!(set.rollouts.len(), 6);
    assert_eq!(set.templates.len(), 5);
    let checkout = set
        .rollouts
        .iter()
        .find(|r| r.value.metadata.name.as_str() == "checkout-api")
        .expect("checkout-api");
    let steps = &checkout
        .value
        .spec
        .strategy
        .canary
        .as_ref()
        .expect("canary")
        .steps;
    assert_eq!(steps.len(), 9);
}

/// The contract's examples are copied into the repository so a clone is
/// self-contained; when the contract folder sits beside the clone (as in CI),
/// the copies must still be the same.
#[test]
fn examples_match_the_contract() {
    let shared = repo_dir().join("../shared/examples");
    let Ok(entries) = fs::read_dir(&shared) else {
        eprintln!(
            "note: {} not present; copies not compared",
            shared.display()
        );
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        let ours = repo_dir().join("docs/examples").join(name);
        assert_eq!(
            fs::read_to_string(&path).expect("shared"),
            fs::read_to_string(&ours).unwrap_or_default(),
            "docs/examples/{} differs from the contract's copy",
            name.to_string_lossy()
        );
    }
}

#[test]
fn serde_and_decoder_agree() {
    let mut set = load_dir(&repo_dir().join("docs/examples"));
    let base = fs::read_to_string(crate_dir().join("tests/valid-base.yaml")).expect("base");
    let extra = load([("base", base.as_str())], &[]).expect("valid base");
    set.rollouts.extend(extra.rollouts);
    set.templates.extend(extra.templates);
    for r in &set.rollouts {
        let json = serde_json::to_string(&r.value).expect("serialise");
        let back = load([("json", json.as_str())], &[]).map_err(|d| format!("{d:?}"));
        let back = match back {
            Ok(b) => b,
            // A lone rollout names templates that are not in its own set.
            Err(e) if e.contains("is not defined") => {
                let mut all = vec![("json".to_string(), json.clone())];
                for t in &set.templates {
                    all.push((
                        "t".into(),
                        serde_json::to_string(&t.value).expect("serialise"),
                    ));
                }
                load(all.iter().map(|(a, b)| (a.as_str(), b.as_str())), &[]).expect("round trip")
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back.rollouts[0].value, r.value);
        let via_serde: rollout_spec::Rollout = serde_json::from_str(&json).expect("serde");
        assert_eq!(via_serde, r.value);
    }
    for t in &set.templates {
        let json = serde_json::to_string(&t.value).expect("serialise");
        let back = load([("json", json.as_str())], &[]).expect("round trip");
        assert_eq!(back.templates[0].value, t.value);
        let via_serde: rollout_spec::AnalysisTemplate = serde_json::from_str(&json).expect("serde");
        assert_eq!(via_serde, t.value);
    }
}

#[test]
fn json_schemas_are_current() {
    let dir = repo_dir().join("docs/schema");
    for (name, content) in schema::files() {
        let path = dir.join(name);
        if blessing() {
            fs::create_dir_all(&dir).expect("mkdir");
            fs::write(&path, &content).expect("write schema");
        }
        let committed = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == content,
            "docs/schema/{name} is stale: run `BLESS=1 cargo test -p rollout-spec --test spec json_schemas_are_current`"
        );
    }
}

#[test]
fn json_documents_have_positions_too() {
    let json = r#"{"apiVersion": "rolloutd.dev/v1alpha1", "kind": "Rollout",
 "metadata": {"name": "x"}, "spec": {"revision": "1", "trafficRouting": {}}}"#;
    let diags = load([("<request>", json)], &[]).expect_err("invalid");
    let first = &diags[0];
    assert_eq!((first.line, first.path.as_str()), (2, "spec"));
    assert!(diags
        .iter()
        .any(|d| d.path == "spec.trafficRouting" && d.message == "missing field `alb`"));
}
