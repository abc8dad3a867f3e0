//! `rolloutctl replay` on recorded observations, as the contract's §5 shows.

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rolloutctl-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

const TEMPLATE: &str = "apiVersion: rolloutd.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: golden}
spec:
  alb:
    errorRate: {maxIncrease: 50%}
    latency: {statistic: Average, maxIncrease: 10%}
    minRequests: 50
  failureLimit: 0
";

/// Rows for `minutes` intervals; the canary's error rate is `factor` times stable's.
fn csv(minutes: i64, canary_requests: u32, factor: f64) -> String {
    let mut out = String::from("t,arm,requests,errors,latency_avg,latency_p99\n");
    for m in 1..=minutes {
        let t = m * 60;
        out.push_str(&format!("{t},stable,18000,18,0.051,0.412\n"));
        let errors = (f64::from(canary_requests) * 0.001 * factor).round();
        out.push_str(&format!(
            "{t},canary,{canary_requests},{errors},0.050,0.405\n"
        ));
    }
    out
}

fn replay(name: &str, observations: &str) -> (i32, Vec<serde_json::Value>) {
    replay_with(name, TEMPLATE, observations)
}

fn replay_with(name: &str, template: &str, observations: &str) -> (i32, Vec<serde_json::Value>) {
    let (code, _, text) = replay_paced(name, template, observations, &["-o", "json"]);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    (code, lines)
}

#[test]
fn a_healthy_canary_is_promoted() {
    let (code, lines) = replay("good", &csv(10, 2000, 1.0));
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[0]["t"], 60);
    assert_eq!(lines[0]["verdict"], "pass");
    assert_eq!(lines[0]["metrics"][0]["metric"], "errorRate");
    assert_eq!(lines[10]["decision"], "promote");
    assert_eq!(lines[10]["t"], 600);
    // The report: latency 2% faster, within ±10% (unchanged); ten minutes
    // of a 0.1% error rate cannot bound the 5xx effect within ±50%.
    let report = &lines[10]["report"];
    assert_eq!(report["latency"]["verdict"], "unchanged", "{report}");
    let effect = report["latency"]["effect"].as_f64().expect("effect");
    assert!((effect - (0.050 / 0.051 - 1.0)).abs() < 1e-9, "{report}");
    assert!(report["latency"]["low"].as_f64().expect("low") < effect);
    assert!(report["latency"]["high"].as_f64().expect("high") > effect);
    assert_eq!(report["errorRate"]["verdict"], "unknown", "{report}");
    assert!(
        report["errorRate"]["intervalsNeeded"].as_f64().is_some(),
        "{report}"
    );
    for field in ["stable", "canary", "effect", "low", "high", "verdict"] {
        assert!(
            report["errorRate"].get(field).is_some(),
            "{field}: {report}"
        );
    }
}

#[test]
fn ten_times_the_errors_is_rolled_back_at_the_third_interval() {
    let (code, lines) = replay("bad", &csv(10, 2000, 10.0));
    assert_eq!(code, 0);
    // One interval alone never rolls back. A replay has no stable history
    // before the run to learn the noise from, so each arm's 5xx rate is
    // taken to wander by 50% a minute; under that (exact) model two such
    // minutes are not yet enough, the third confirms it.
    assert_eq!(lines[0]["verdict"], "inconclusive");
    assert_eq!(lines[1]["verdict"], "inconclusive");
    assert_eq!(lines[2]["verdict"], "fail");
    let last = lines.last().expect("decision");
    assert_eq!(last["decision"], "rollback");
    assert_eq!(last["t"], 180);
    let error_rate = &last["report"]["errorRate"];
    assert_eq!(error_rate["verdict"], "regressed", "{error_rate}");
    let effect = error_rate["effect"].as_f64().expect("effect");
    assert!((effect - 9.0).abs() < 1e-9, "{error_rate}");
    assert_eq!(lines.len(), 4, "the replay stops at the decision");
}

#[test]
fn too_little_traffic_is_inconclusive() {
    let (code, lines) = replay("thin", &csv(5, 20, 1.0));
    assert_eq!(code, 0);
    assert!(lines[..5].iter().all(|l| l["verdict"] == "inconclusive"));
    assert_eq!(lines[5]["decision"], "inconclusive");
    assert_eq!(lines[5]["t"], 300);
}

#[test]
fn a_missing_canary_row_is_no_data() {
    let mut text = csv(3, 2000, 1.0);
    text = text.replace("180,canary,2000,2,0.050,0.405\n", "");
    let (_, lines) = replay("missing", &text);
    assert_eq!(lines[2]["verdict"], "inconclusive");
    assert_eq!(lines[3]["decision"], "inconclusive");
}

#[test]
fn a_bad_row_is_reported_with_its_place() {
    let out = run_replay(
        "badrow",
        TEMPLATE,
        "t,arm,requests,errors,latency_avg,latency_p99\n60,stable,1e3,x,0.05,0.4\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.ends_with("obs.csv:2:15: errors `x` is not a non-negative number\n"),
        "{err}"
    );
}

/// A custom metric's column after the six: declined payments per request,
/// judged with the 5xx rate.
#[test]
fn a_custom_metric_column_is_judged() {
    let template = format!(
        "{TEMPLATE}  metrics:
    - name: declines
      namespace: Shop/Payments
      metricName: Declines
      statistic: Sum
      perRequest: true
      dimensions:
        TargetGroup: ${{targetGroup}}
      maxIncrease: 50%
"
    );
    let with_declines = |canary_share: f64| {
        let mut out = String::new();
        for (i, line) in csv(10, 2000, 1.0).lines().enumerate() {
            let extra = match i {
                0 => "declines".to_string(),
                _ if line.contains(",stable,") => "360".to_string(),
                _ => format!("{}", (2000.0 * canary_share).round()),
            };
            out.push_str(&format!("{line},{extra}\n"));
        }
        out
    };
    // Stable declines 2% of its requests; so does a good canary.
    let (code, lines) = replay_with("custom-good", &template, &with_declines(0.02));
    assert_eq!(code, 0);
    assert_eq!(lines.last().expect("decision")["decision"], "promote");
    // A canary declining 10% is rolled back, and the verdict names the metric.
    let (code, lines) = replay_with("custom-bad", &template, &with_declines(0.10));
    assert_eq!(code, 0);
    let last = lines.last().expect("decision");
    assert_eq!(last["decision"], "rollback", "{lines:?}");
    let failed = &lines[lines.len() - 2];
    let declines = failed["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["metric"] == "declines"))
        .expect("a declines verdict");
    assert_eq!(declines["verdict"], "fail", "{declines}");
    assert_eq!(declines["canary"], 0.1);
}

/// `--pause` and `--minimum`: the daemon's evidence-driven pauses over the
/// recording, one after another; each line says when a pause would end.
fn replay_paced(
    name: &str,
    template: &str,
    observations: &str,
    extra: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    let out = run_replay(name, template, observations, extra);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code().unwrap_or(-1), lines, text)
}

/// `rolloutctl replay -f t.yaml --observations obs.csv EXTRA…`, the two
/// files written to a scratch directory `name`.
fn run_replay(
    name: &str,
    template: &str,
    observations: &str,
    extra: &[&str],
) -> std::process::Output {
    let dir = scratch(name);
    std::fs::write(dir.join("t.yaml"), template).expect("write");
    std::fs::write(dir.join("obs.csv"), observations).expect("write");
    Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["replay", "-f"])
        .arg(dir.join("t.yaml"))
        .arg("--observations")
        .arg(dir.join("obs.csv"))
        .args(extra)
        .output()
        .expect("run")
}

#[test]
fn replay_says_when_each_pause_would_have_ended() {
    // A 1% ceiling the canary's 0.1% is far below, and equal latency.
    let template = TEMPLATE.replace("errorRate: {maxIncrease: 50%}", "errorRate: {maxRate: 1%}");
    let obs = csv(20, 2000, 1.0);
    let (code, lines, _) = replay_paced(
        "paced",
        &template,
        &obs,
        &["-o", "json", "--pause", "5m", "--minimum", "1m"],
    );
    assert_eq!(code, 0);
    let ends: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("stepEnded")).collect();
    assert!(ends.len() >= 4, "{lines:#?}");
    assert_eq!(ends[0]["by"], "evidence", "{:#?}", ends[0]);
    assert!(
        ends[0]["after"].as_i64().expect("after") < 300,
        "{:#?}",
        ends[0]
    );
    assert!(
        ends[0]["why"]
            .as_str()
            .expect("why")
            .contains("latency within tolerance"),
        "{:#?}",
        ends[0]
    );
    // The final line keeps the contract's shape.
    let last = lines.last().expect("decision");
    assert_eq!(last["decision"], "promote");
    // Fixed pauses end by their duration, every five minutes.
    let (_, fixed, _) = replay_paced("fixed", &template, &obs, &["-o", "json", "--pause", "5m"]);
    let fixed_ends: Vec<i64> = fixed
        .iter()
        .filter_map(|l| l.get("stepEnded"))
        .map(|e| e["after"].as_i64().expect("after"))
        .collect();
    assert_eq!(fixed_ends, vec![300, 300, 300, 300], "{fixed:#?}");
    // The table says it in words; a minimum beyond the pause is refused.
    let (_, _, table) = replay_paced(
        "table",
        &template,
        &obs,
        &["--pause", "5m", "--minimum", "1m"],
    );
    assert!(table.contains("pause 1 would end after"), "{table}");
    let (code, _, _) = replay_paced(
        "bad-flags",
        &template,
        &obs,
        &["--pause", "1m", "--minimum", "5m"],
    );
    assert_eq!(code, 2);
}

/// A service whose 5xx rate wanders by about 200% a minute, recorded with
/// stable's hour before the run (rows at `t ≤ 0`) and 30 minutes of a
/// canary identical to stable (both arms' rates drawn from the same
/// Gamma each minute). Replay learns the wander from that hour, as the
/// daemon does, and keeps the canary; before, it judged those rows as
/// intervals of the run and assumed a wander of 50%, and rolled this
/// canary back at t=180 (as it still does when the hour is left out).
#[test]
fn replay_learns_the_wander_from_stables_hour_before_the_run() {
    let recording = include_str!("fixtures/noisy-identical.csv");
    let (code, lines) = replay("noisy", recording);
    assert_eq!(code, 0);
    let last = lines.last().expect("decision");
    assert_eq!(last["decision"], "promote", "{last:#}");
    assert_eq!(last["t"], 1800);
    let cv = last["noise"]["errorCv"].as_f64().expect("learnt");
    assert!((1.5..=2.5).contains(&cv), "{cv}");
    assert_eq!(last["noise"]["intervals"], 60);
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["t"].as_i64().is_some_and(|t| t > 0)),
        "only the run's intervals are judged"
    );
    assert_eq!(lines.len(), 31);
    // Without the hour the judge assumes 50%, and this recording fools it.
    let run_only: String = recording
        .lines()
        .filter(|l| !l.starts_with('-') && !l.starts_with("0,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, lines) = replay("noisy-run-only", &run_only);
    let last = lines.last().expect("decision");
    assert_eq!(last["decision"], "rollback", "{last:#}");
    assert!(last.get("noise").is_none());
    // The table says what was learnt, before the first interval.
    let (_, _, table) = replay_paced("noisy-table", TEMPLATE, recording, &[]);
    assert!(
        table.starts_with("before the run: stable's 5xx rate wandered by "),
        "{table}"
    );
}

/// Rows before the run are stable's history: a canary row there is an
/// error that names its place.
#[test]
fn a_canary_row_before_the_run_is_refused_with_its_place() {
    let obs = "t,arm,requests,errors,latency_avg,latency_p99\n-60,stable,1843,2,0.051,0.412\n-60,canary,201,0,0.049,0.398\n60,stable,1843,2,0.051,0.412\n";
    let out = run_replay("canary-before", TEMPLATE, obs, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("obs.csv:3:1: a canary row at t=-60, before the run started"),
        "{stderr}"
    );
}

/// `rolloutctl replay … | head -1`: the reader goes away after one line.
/// The command ends quietly with 0; it panicked on the broken pipe.
#[test]
fn a_reader_that_stops_early_ends_replay_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("head");
    std::fs::write(dir.join("t.yaml"), TEMPLATE).expect("write");
    // 2,000 intervals: far more output than a pipe holds.
    std::fs::write(dir.join("obs.csv"), csv(2000, 2000, 1.0)).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolloutctl"))
        .args(["replay", "-o", "json", "-f"])
        .arg(dir.join("t.yaml"))
        .arg("--observations")
        .arg(dir.join("obs.csv"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    assert!(first.starts_with("{\"t\":60,"), "{first}");
    // The reader is dropped here: the pipe closes.
    let out = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Past a pause's duration, replay holds as the daemon does while the
/// intervals at the weight point outside the tolerance, for the template's
/// `inconclusiveLimit` (5) more intervals and one. Then a canary just over
/// its 1% ceiling (1.1%) ends the pause as a fixed one would (`hold`);
/// one half as far again over it (1.5%), which the failure test over
/// those intervals leans against, would wait for a person (`person`), and
/// no later pause ends.
#[test]
fn replay_holds_a_pause_as_the_daemon_does() {
    let template = TEMPLATE.replace("errorRate: {maxIncrease: 50%}", "errorRate: {maxRate: 1%}");
    let recording = |rate: f64| {
        let mut out = String::from("t,arm,requests,errors,latency_avg,latency_p99\n");
        for m in 1..=30 {
            let t = m * 60;
            let errors = (2000.0 * rate).round();
            out.push_str(&format!("{t},stable,18000,18,0.051,0.412\n"));
            out.push_str(&format!("{t},canary,2000,{errors},0.050,0.405\n"));
        }
        out
    };
    let ends = |name: &str, rate: f64| -> Vec<serde_json::Value> {
        let (code, lines, _) = replay_paced(
            name,
            &template,
            &recording(rate),
            &["-o", "json", "--pause", "5m", "--minimum", "1m"],
        );
        assert_eq!(code, 0);
        lines
            .iter()
            .filter_map(|l| l.get("stepEnded").cloned())
            .collect()
    };
    let near = ends("hold-near", 0.011);
    assert_eq!(near.len(), 2, "{near:#?}");
    for e in &near {
        assert_eq!(
            (e["by"].as_str(), e["after"].as_i64()),
            (Some("hold"), Some(660)),
            "{e:#}"
        );
    }
    let beyond = ends("hold-beyond", 0.015);
    assert_eq!(beyond.len(), 1, "{beyond:#?}");
    assert_eq!(beyond[0]["by"], "person", "{:#}", beyond[0]);
    assert!(
        beyond[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("errorRate") && w.contains("would wait for a person")),
        "{:#}",
        beyond[0]
    );
}
