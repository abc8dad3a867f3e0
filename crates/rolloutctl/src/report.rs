//! `rolloutctl report NAME [--run N] [-o table|json|markdown]`: what a run
//! did, from the server's run reports (`/api/v1/rollouts/{name}/runs`).

use std::process::ExitCode;

use rollout_analysis::effect::Effect;
use rollout_api::{print, println};
use rollout_core::report::RunReport;

use crate::remote::{typed, Client};

/// A check's value, for people: milliseconds for latency, a percentage for
/// rates, the number otherwise.
fn value(check: &str, v: Option<f64>) -> String {
    match (check, v) {
        (_, None) => "-".into(),
        ("latency", Some(s)) => format!("{:.1} ms", s * 1000.0),
        ("errorRate", Some(r)) => format!("{:.3}%", r * 100.0),
        (_, Some(x)) => format!("{x:.4}"),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:+.1}%", v * 100.0))
}

fn interval(e: &Effect) -> String {
    match (e.low, e.high) {
        (Some(_), Some(_)) => format!("[{}, {}]", pct(e.low), pct(e.high)),
        _ => e
            .intervals_needed
            .map_or("-".into(), |n| format!("about {n:.0} more interval(s)")),
    }
}

fn rows(r: &RunReport) -> Vec<[String; 7]> {
    let mut out = Vec::new();
    let chaos = r
        .under_chaos
        .iter()
        .map(|(t, c)| (format!("{t} (during the FIS experiment)"), c));
    let all = r.checks.iter().map(|(t, c)| (t.clone(), c)).chain(chaos);
    for (template, checks) in all {
        for (check, e) in checks {
            out.push([
                template.clone(),
                check.clone(),
                value(check, e.stable),
                value(check, e.canary),
                pct(e.effect),
                interval(e),
                e.verdict.as_str().to_string(),
            ]);
        }
    }
    out
}

fn when(t: Option<rollout_core::Time>) -> String {
    t.map_or("-".into(), |t| t.to_string())
}

/// The Markdown form, to paste into a pull request.
/// In place of an empty table.
const NO_CHECKS: &str = "No check was measured in this run: its rollout names no analysis template, or no interval has been judged yet.";

fn markdown(name: &str, r: &RunReport) -> String {
    let mut s = format!(
        "### rollout `{name}`, run {} (revision `{}`): {}\n\n{}\n\n",
        r.run, r.revision, r.outcome, r.message
    );
    let body = rows(r);
    if body.is_empty() {
        s.push_str(NO_CHECKS);
        s.push('\n');
    } else {
        s.push_str("| template | check | stable | canary | effect | 95% interval | verdict |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
    }
    for row in body {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    s.push_str(&format!(
        "\nCanary requests judged: {:.0}. Started {}, ended {}. The effect is canary/stable − 1; its interval holds whenever the run stopped.\n",
        r.canary_requests,
        when(r.started_at),
        when(r.ended_at)
    ));
    s
}

fn table(name: &str, r: &RunReport) -> String {
    let mut s = format!(
        "rollout/{name} run {} revision {}: {}\n{}\n",
        r.run, r.revision, r.outcome, r.message
    );
    let header = [
        "TEMPLATE",
        "CHECK",
        "STABLE",
        "CANARY",
        "EFFECT",
        "95% INTERVAL",
        "VERDICT",
    ];
    let body = rows(r);
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            body.iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    if body.is_empty() {
        s.push_str(NO_CHECKS);
    } else {
        s.push_str(&line(header.to_vec()));
    }
    s.push('\n');
    for row in &body {
        s.push_str(&line(row.iter().map(String::as_str).collect()));
        s.push('\n');
    }
    s.push_str(&format!(
        "canary requests judged: {:.0}; started {}, ended {}\n",
        r.canary_requests,
        when(r.started_at),
        when(r.ended_at)
    ));
    s
}

/// `rolloutctl report NAME [--run N] [-o …]`: the run `run`, or the
/// newest.
pub fn report(client: &Client, name: &str, run: Option<u32>, output: &str) -> ExitCode {
    let path = match run {
        Some(n) => format!("/api/v1/rollouts/{name}/runs/{n}"),
        None => format!("/api/v1/rollouts/{name}/runs"),
    };
    let value = match client.call("GET", &path, None) {
        Ok(v) => v,
        Err(f) => return f.report(),
    };
    let found: Result<Option<RunReport>, _> = match run {
        Some(_) => typed::<RunReport>(value).map(Some),
        None => typed::<rollout_api::RunList>(value).map(|l| l.items.into_iter().next()),
    };
    let r = match found {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("rolloutctl: rollout/{name} has not run yet");
            return ExitCode::from(1);
        }
        Err(f) => return f.report(),
    };
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        "markdown" => print!("{}", markdown(name, &r)),
        _ => print!("{}", table(name, &r)),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that measured nothing says so in words, not with an empty
    /// table (before, the table's header stood alone).
    #[test]
    fn a_run_with_no_checks_says_so() {
        let r = RunReport {
            run: 1,
            revision: "1".into(),
            outcome: "Paused".into(),
            started_at: None,
            ended_at: None,
            message: "paused at step 2 of 3: waiting for promote".into(),
            canary_requests: 0.0,
            checks: Default::default(),
            under_chaos: Default::default(),
        };
        for text in [table("probe", &r), markdown("probe", &r)] {
            assert!(text.contains(NO_CHECKS), "{text}");
            assert!(
                !text.contains("TEMPLATE") && !text.contains("| template |"),
                "{text}"
            );
        }
    }
}
