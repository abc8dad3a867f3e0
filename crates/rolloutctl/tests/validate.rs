//! Runs the `rolloutctl` binary on files, as a user or a CI job would.

use std::path::PathBuf;
use std::process::Command;

fn rolloutctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rolloutctl-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn valid_examples_exit_zero() {
    let out = rolloutctl()
        .args(["validate", "-f"])
        .arg(repo().join("docs/examples"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("11 documents valid in 5 files: 6 Rollouts, 5 AnalysisTemplates"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_file_prints_file_line_column_and_exits_one() {
    let dir = scratch("invalid");
    let file = dir.join("bad.yaml");
    let base = std::fs::read_to_string(repo().join("crates/rollout-spec/tests/valid-base.yaml"))
        .expect("base");
    let bad = base
        .replace("- setWeight: 5", "- setWeight: 120")
        .replace("  revision:", "  revison:");
    std::fs::write(&file, bad).expect("write");
    let out = rolloutctl()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let f = file.display();
    assert_eq!(
        stdout,
        format!(
            "{f}:7:3: spec: unknown field `revison`, did you mean `revision`?\n\
             {f}:18:22: spec.strategy.canary.steps[0].setWeight: weight 120 is outside 0–100\n"
        )
    );
}

#[test]
fn templates_may_live_in_another_file() {
    let dir = scratch("split");
    let base = std::fs::read_to_string(repo().join("crates/rollout-spec/tests/valid-base.yaml"))
        .expect("base");
    let (rollout, template) = base.split_once("---\n").expect("two documents");
    std::fs::write(dir.join("rollout.yml"), rollout).expect("write");
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(dir.join("templates/golden.yaml"), template).expect("write");
    std::fs::write(dir.join("README.md"), "not yaml").expect("write");
    let out = rolloutctl()
        .args(["validate", "-f"])
        .arg(&dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let alone = rolloutctl()
        .args(["validate", "-f"])
        .arg(dir.join("rollout.yml"))
        .output()
        .expect("run");
    assert_eq!(alone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&alone.stdout).contains("AnalysisTemplate `golden` is not defined")
    );
}

#[test]
fn a_missing_file_is_an_error_line() {
    let out = rolloutctl()
        .args(["validate", "-f", "/nonexistent/rollout.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("/nonexistent/rollout.yaml:1:1: cannot read:"),
        "{stdout}"
    );
}

#[test]
fn usage_errors_exit_two() {
    let out = rolloutctl().args(["validate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = rolloutctl().args(["frobnicate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_spec_with_thousands_of_steps_is_refused_where_the_steps_are() {
    let dir = scratch("steps");
    let file = dir.join("many.yaml");
    let base = std::fs::read_to_string(repo().join("crates/rollout-spec/tests/valid-base.yaml"))
        .expect("base");
    let steps: String = (0..4_000)
        .map(|i| format!("        - setWeight: {}\n", 1 + i % 99))
        .collect::<String>()
        + "        - setWeight: 100\n";
    let text = base.replace(
        "        - setWeight: 5\n        - pause: {duration: 5m}\n        - setWeight: 100\n",
        &steps,
    );
    assert!(text.len() > base.len(), "the steps were replaced");
    std::fs::write(&file, text).expect("write");
    let out = rolloutctl()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:18:9: spec.strategy.canary.steps: 4001 steps: at most 100 are allowed",
            file.display()
        )),
        "{stdout}"
    );
}

/// `validate DIR` finds the files the daemon's specs directory would, and
/// refuses a directory the daemon would refuse (a symlink loop, here)
/// instead of walking it until paths grow too long.
#[cfg(unix)]
#[test]
fn a_directory_is_read_as_the_daemon_reads_it() {
    let dir = scratch("symlink-loop");
    std::fs::copy(
        repo().join("docs/examples/checkout-canary.yaml"),
        dir.join("basic.yaml"),
    )
    .expect("copy");
    std::fs::create_dir_all(dir.join("sub")).expect("sub");
    std::os::unix::fs::symlink("..", dir.join("sub/up")).expect("symlink");
    let out = rolloutctl()
        .args(["validate", "-f"])
        .arg(&dir)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("symlink loop"), "{stdout}");
}
