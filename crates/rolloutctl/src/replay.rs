//! `rolloutctl replay`: the daemon's judge over recorded metrics.
//!
//! Reads the AnalysisTemplate (validated like any spec), reads the CSV into
//! one [`IntervalMetrics`] per interval, and calls the judge on the growing
//! history, exactly as the daemon does after each interval. Stable's rows
//! at `t ≤ 0` (intervals that ended before the run started) are its
//! history: as the daemon does with the hour it reads at a run's start,
//! replay learns from them how much the 5xx rate wanders, and judges the
//! run (`t > 0`) with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::ExitCode;

use rollout_analysis::stats::lognormal_cv;
use rollout_analysis::{
    judge_learnt, ArmSample, CustomValue, IntervalMetrics, IntervalVerdict, Verdict,
};
use rollout_api::println;
use rollout_spec::{AnalysisTemplateSpec, LatencyStatistic};
use serde::Serialize;

const HEADER: [&str; 6] = [
    "t",
    "arm",
    "requests",
    "errors",
    "latency_avg",
    "latency_p99",
];

/// One arm's row.
#[derive(Debug, Clone, Default)]
struct Row {
    requests: Option<f64>,
    errors: Option<f64>,
    avg: Option<f64>,
    p99: Option<f64>,
    /// The custom metrics' columns, in column order.
    custom: Vec<Option<f64>>,
}

/// One interval: its end (`t`), stable's row and canary's row.
type Interval = (i64, Option<Row>, Option<Row>);

/// The observations: the custom metric columns after the six of the
/// contract, and the intervals.
#[derive(Debug)]
struct Observations {
    custom: Vec<String>,
    intervals: Vec<Interval>,
}

/// Reads the observations: intervals in time order, each with its two arms.
/// Columns after the contract's six carry the template's custom metrics,
/// each named after one (`custom` are the names the template defines).
fn read_csv(name: &str, text: &str, custom: &[&str]) -> Result<Observations, String> {
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(format!(
            "{name}:1:1: the file is empty; expected the header {}",
            HEADER.join(",")
        ));
    };
    let (cols, extra) = read_header(name, header, custom)?;
    let mut out: Vec<Interval> = Vec::new();
    let mut seen: BTreeMap<(i64, bool), usize> = BTreeMap::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (t, canary, row) = read_row(name, line_no, line, &cols)?;
        if canary && t <= 0 {
            return Err(format!(
                "{name}:{line_no}:1: a canary row at t={t}, before the run started; rows at t ≤ 0 are stable's history before the run"
            ));
        }
        if let Some(first) = seen.insert((t, canary), line_no) {
            return Err(format!(
                "{name}:{line_no}:1: a second {} row for t={t} (first at line {first})",
                if canary { "canary" } else { "stable" }
            ));
        }
        match out.last_mut() {
            Some(last) if last.0 == t => {}
            Some(last) if last.0 > t => {
                return Err(format!(
                    "{name}:{line_no}:1: t={t} comes after t={}; rows must be in time order",
                    last.0
                ))
            }
            _ => out.push((t, None, None)),
        }
        if let Some(last) = out.last_mut() {
            if canary {
                last.2 = Some(row);
            } else {
                last.1 = Some(row);
            }
        }
    }
    Ok(Observations {
        custom: extra,
        intervals: out,
    })
}

/// The header: the contract's six columns, then the template's custom
/// metrics, each once. Returns the columns and the custom ones.
fn read_header<'h>(
    name: &str,
    header: &'h str,
    custom: &[&str],
) -> Result<(Vec<&'h str>, Vec<String>), String> {
    let cols: Vec<&str> = header
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    if cols.len() < HEADER.len() || cols[..HEADER.len()] != HEADER {
        return Err(format!(
            "{name}:1:1: the header is `{}`; expected `{}` (then, optionally, a column per custom metric)",
            header.trim_end(),
            HEADER.join(",")
        ));
    }
    let extra: Vec<String> = cols[HEADER.len()..].iter().map(|c| c.to_string()).collect();
    for (k, c) in extra.iter().enumerate() {
        let col = cols[..HEADER.len() + k]
            .iter()
            .map(|c| c.len() + 1)
            .sum::<usize>()
            + 1;
        if !custom.contains(&c.as_str()) {
            let known = if custom.is_empty() {
                "the template has no custom metrics".to_string()
            } else {
                format!("its custom metrics are {}", custom.join(", "))
            };
            return Err(format!(
                "{name}:1:{col}: column `{c}` is not a custom metric of the template; {known}"
            ));
        }
        if extra[..k].contains(c) {
            return Err(format!("{name}:1:{col}: column `{c}` appears twice"));
        }
    }
    Ok((cols, extra))
}

/// One row: its time, its arm, and its numbers (an empty cell is no
/// datapoint).
fn read_row(
    name: &str,
    line_no: usize,
    line: &str,
    cols: &[&str],
) -> Result<(i64, bool, Row), String> {
    let cells: Vec<&str> = line.split(',').collect();
    if cells.len() != cols.len() {
        return Err(format!(
            "{name}:{line_no}:1: {} fields; expected {} ({})",
            cells.len(),
            cols.len(),
            cols.join(",")
        ));
    }
    let col = |k: usize| cells[..k].iter().map(|c| c.len() + 1).sum::<usize>() + 1;
    let t: i64 = cells[0].trim().parse().map_err(|_| {
        format!(
            "{name}:{line_no}:1: t `{}` is not a whole number of seconds",
            cells[0]
        )
    })?;
    let canary = match cells[1].trim() {
        "stable" => false,
        "canary" => true,
        other => {
            return Err(format!(
                "{name}:{line_no}:{}: arm `{other}` is neither stable nor canary",
                col(1)
            ))
        }
    };
    let num = |k: usize| -> Result<Option<f64>, String> {
        let c = cells[k].trim();
        if c.is_empty() {
            return Ok(None);
        }
        // The ALB's counts and times are never negative; a custom
        // metric may be.
        let custom = k >= HEADER.len();
        match c.parse::<f64>() {
            Ok(v) if v.is_finite() && (custom || v >= 0.0) => Ok(Some(v)),
            _ => Err(format!(
                "{name}:{line_no}:{}: {} `{c}` is not a {}number",
                col(k),
                cols[k],
                if custom { "" } else { "non-negative " }
            )),
        }
    };
    let row = Row {
        requests: num(2)?,
        errors: num(3)?,
        avg: num(4)?,
        p99: num(5)?,
        custom: (HEADER.len()..cols.len())
            .map(num)
            .collect::<Result<_, _>>()?,
    };
    Ok((t, canary, row))
}

fn sample(row: Option<&Row>, stat: LatencyStatistic) -> ArmSample {
    let Some(r) = row else {
        return ArmSample::default();
    };
    ArmSample {
        requests: r.requests,
        errors: r.errors,
        latency: match stat {
            LatencyStatistic::Average => r.avg,
            _ => r.p99,
        },
        latency_cv: match (r.avg, r.p99) {
            (Some(a), Some(p)) => lognormal_cv(a, p),
            _ => None,
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IntervalLine<'a> {
    t: i64,
    verdict: Verdict,
    metrics: &'a [rollout_analysis::MetricVerdict],
    /// With `--pause`: the pause that would have ended at this interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_ended: Option<StepEnd>,
}

/// `--pause D --minimum M`: the pacing of the daemon's evidence-driven
/// pauses, over the recorded intervals as one pause after another.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The pause's duration.
    pub duration: rollout_spec::Duration,
    /// Its minimum (the pause may end from then on).
    pub minimum: rollout_spec::Duration,
}

/// A pause that would have ended, or would have waited for a person.
#[derive(Debug, Serialize)]
struct StepEnd {
    /// The pause's number, from 1.
    pause: u32,
    /// `evidence` (ended early), `duration`, `hold` (after holding past
    /// its duration while the intervals at its weight pointed outside the
    /// tolerance) or `person` (the run would wait for one).
    by: &'static str,
    /// Seconds it lasted.
    after: i64,
    /// Why: the evidence, or what it lacked.
    why: String,
}

/// Where the pauses stand.
struct Pauses {
    pacing: Pacing,
    number: u32,
    /// The current pause's start (seconds) and its first interval's index.
    start: (i64, usize),
    /// Intervals the current pause has held past its duration.
    held: u32,
    /// The run waits for a person: no pause ends any more.
    waiting: bool,
}

impl Pauses {
    /// After the interval ending at `t` (the last of `history`), judged
    /// `v` with the learnt wander `error_cv`: the pause that ends there,
    /// as the daemon would end it.
    fn after(
        &mut self,
        spec: &AnalysisTemplateSpec,
        (history, error_cv): (&[IntervalMetrics], Option<f64>),
        t: i64,
        v: &IntervalVerdict,
    ) -> Option<StepEnd> {
        if self.waiting {
            return None;
        }
        let (start, first) = self.start;
        let elapsed = t - start;
        let ms =
            |d: rollout_spec::Duration| i64::try_from(d.as_millis() / 1000).unwrap_or(i64::MAX);
        let tail = &history[first.min(history.len())..];
        let within = v.within_tolerance();
        // The tail is judged once, and only when a pause may end.
        let outside = || rollout_analysis::pointing_outside(spec, error_cv, tail);
        let end = if elapsed >= ms(self.pacing.duration) {
            let outside = outside();
            let names = |keep: fn(&rollout_analysis::PointingOutside) -> bool| {
                let v: Vec<&str> = outside
                    .iter()
                    .filter(|o| keep(o))
                    .map(|o| o.metric.as_str())
                    .collect();
                v.join(", ")
            };
            if !outside.iter().any(|o| o.strongly) {
                let by = if self.held == 0 { "duration" } else { "hold" };
                Some((by, within.text))
            } else if self.held <= spec.inconclusive_limit {
                self.held += 1;
                return None;
            } else if outside
                .iter()
                .any(rollout_analysis::PointingOutside::beyond)
            {
                self.waiting = true;
                Some(("person", format!(
                    "{} at this weight still point(s) beyond the tolerance after {} interval(s) past the duration; the daemon would wait for a person",
                    names(rollout_analysis::PointingOutside::beyond),
                    self.held
                )))
            } else {
                Some(("hold", format!(
                    "{} at this weight pointed outside the tolerance, but the judge did not find the canary worse in {} more interval(s)",
                    names(|o| o.strongly),
                    self.held
                )))
            }
        } else if elapsed >= ms(self.pacing.minimum)
            && v.verdict == Verdict::Pass
            && within.shown
            && outside().is_empty()
        {
            Some(("evidence", within.text))
        } else {
            None
        };
        let (by, why) = end?;
        self.number += 1;
        self.start = (t, history.len());
        self.held = 0;
        Some(StepEnd {
            pause: self.number,
            by,
            after: elapsed,
            why,
        })
    }
}

#[derive(Serialize)]
struct DecisionLine {
    decision: &'static str,
    t: i64,
    /// Each check's measured effect over the replayed intervals.
    report: std::collections::BTreeMap<String, rollout_analysis::effect::Effect>,
    /// What stable's rows before the run (`t ≤ 0`) taught, when there
    /// were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    noise: Option<Learnt>,
}

/// The 5xx wander learnt from stable's rows before the run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Learnt {
    /// The per-interval CV the judge assumed for both arms (none: too
    /// little history, and the judge's default applies).
    error_cv: Option<f64>,
    /// Stable's intervals with requests it was learnt from.
    intervals: usize,
    /// In words.
    message: String,
}

/// Learns the 5xx wander from the intervals before the run (`t ≤ 0`),
/// as the daemon does from the hour it reads at a run's start; `None`
/// when there are none.
fn learn(before: &[Interval], stat: LatencyStatistic) -> Option<Learnt> {
    if before.is_empty() {
        return None;
    }
    let stable: Vec<ArmSample> = before
        .iter()
        .map(|(_, s, _)| sample(s.as_ref(), stat))
        .collect();
    let (error_cv, intervals) = rollout_analysis::noise::stable_error_cv(&stable);
    Some(Learnt {
        error_cv,
        intervals,
        message: rollout_analysis::noise::describe(error_cv, intervals),
    })
}

fn load_template(path: &Path) -> Result<AnalysisTemplateSpec, Vec<String>> {
    let name = path.display().to_string();
    let text =
        fs::read_to_string(path).map_err(|e| vec![format!("{name}:1:1: cannot read: {e}")])?;
    let set = rollout_spec::load([(name.as_str(), text.as_str())], &[])
        .map_err(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let mut templates = set.templates.into_iter();
    let Some(first) = templates.next() else {
        return Err(vec![format!(
            "{name}:1:1: no AnalysisTemplate in this file"
        )]);
    };
    if let Some(second) = templates.next() {
        return Err(vec![format!(
            "{name}:{}: a second AnalysisTemplate; replay takes one",
            second.pos
        )]);
    }
    Ok(first.value.spec)
}

/// One interval's metrics from its two rows (`custom`: the custom
/// metrics' column names).
fn interval_metrics(
    stable: &Option<Row>,
    canary: &Option<Row>,
    custom: &[String],
    stat: LatencyStatistic,
) -> IntervalMetrics {
    let column = |row: &Option<Row>, k: usize| row.as_ref().and_then(|r| r.custom[k]);
    IntervalMetrics {
        stable: sample(stable.as_ref(), stat),
        canary: sample(canary.as_ref(), stat),
        custom: custom
            .iter()
            .enumerate()
            .map(|(k, name)| CustomValue {
                name: name.clone(),
                stable: column(stable, k),
                canary: column(canary, k),
            })
            .collect(),
        merged: 0,
    }
}

/// One interval's line (and the pause that would end there).
fn print_interval(json: bool, t: i64, v: &IntervalVerdict, step_ended: Option<StepEnd>) {
    if json {
        let line = IntervalLine {
            t,
            verdict: v.verdict,
            metrics: &v.metrics,
            step_ended,
        };
        println!("{}", serde_json::to_string(&line).unwrap_or_default());
    } else {
        println!("t={t:>6}  {:<12}  {}", v.verdict.as_str(), v.summary());
        match step_ended {
            Some(e) if e.by == "person" => println!(
                "t={t:>6}  pause {} would wait for a person after {} s: {}",
                e.pause, e.after, e.why
            ),
            Some(e) => println!(
                "t={t:>6}  pause {} would end after {} s by its {}: {}",
                e.pause, e.after, e.by, e.why
            ),
            None => {}
        }
    }
}

/// Runs the command.
pub fn run(template: &Path, observations: &Path, json: bool, pacing: Option<Pacing>) -> ExitCode {
    let spec = match load_template(template) {
        Ok(s) => s,
        Err(lines) => {
            for l in lines {
                eprintln!("{l}");
            }
            return ExitCode::from(1);
        }
    };
    let stat = spec
        .alb
        .latency
        .as_ref()
        .map_or(LatencyStatistic::Average, |l| l.statistic);
    if !matches!(
        stat,
        LatencyStatistic::Average | LatencyStatistic::Percentile(99.0)
    ) {
        eprintln!(
            "{}: the template compares latency {stat}; recorded observations carry Average and p99 only",
            template.display()
        );
        return ExitCode::from(1);
    }
    let obs_name = observations.display().to_string();
    let text = match fs::read_to_string(observations) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{obs_name}:1:1: cannot read: {e}");
            return ExitCode::from(1);
        }
    };
    let names: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    let obs = match read_csv(&obs_name, &text, &names) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let (before, run): (Vec<Interval>, Vec<Interval>) =
        obs.intervals.into_iter().partition(|(t, _, _)| *t <= 0);
    let noise = learn(&before, stat);
    let error_cv = noise.as_ref().and_then(|n| n.error_cv);
    if let (Some(n), false) = (&noise, json) {
        println!("before the run: {}", n.message);
    }
    let mut history = Vec::new();
    let mut failed = 0u32;
    let mut decision: Option<(&'static str, i64)> = None;
    let mut last: Option<(i64, IntervalVerdict)> = None;
    let mut pauses = pacing.map(|pacing| Pauses {
        pacing,
        number: 0,
        start: (0, 0),
        held: 0,
        waiting: false,
    });
    for (t, stable, canary) in run {
        history.push(interval_metrics(&stable, &canary, &obs.custom, stat));
        let v = judge_learnt(&spec, error_cv, &history);
        let step_ended = pauses
            .as_mut()
            .and_then(|p| p.after(&spec, (&history, error_cv), t, &v));
        print_interval(json, t, &v, step_ended);
        if v.verdict == Verdict::Fail {
            failed += 1;
            if failed > spec.failure_limit {
                decision = Some(("rollback", t));
                break;
            }
        }
        last = Some((t, v));
    }
    let (what, t) = decision.unwrap_or(match &last {
        Some((t, v)) if v.verdict == Verdict::Pass => ("promote", *t),
        Some((t, _)) => ("inconclusive", *t),
        None => ("inconclusive", 0),
    });
    let report = rollout_analysis::effect::report_learnt(&spec, error_cv, &history);
    if json {
        let line = DecisionLine {
            decision: what,
            t,
            report,
            noise,
        };
        println!("{}", serde_json::to_string(&line).unwrap_or_default());
    } else {
        println!("decision: {what} at t={t}");
        for (check, e) in &report {
            println!("report: {check}: {}", e.describe());
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_by_interval_and_missing_rows_are_no_data() {
        let text = "t,arm,requests,errors,latency_avg,latency_p99\n60,stable,1843,2,0.051,0.412\n60,canary,201,0,0.049,0.398\n120,stable,1800,1,0.05,0.4\n";
        let rows = read_csv("o.csv", text, &[]).expect("parses").intervals;
        assert_eq!(rows.len(), 2);
        assert!(rows[1].2.is_none(), "no canary row at 120");
        assert_eq!(rows[0].2.as_ref().and_then(|r| r.requests), Some(201.0));
    }

    #[test]
    fn custom_metric_columns_follow_the_six() {
        let text = "t,arm,requests,errors,latency_avg,latency_p99,declines\n60,stable,1843,2,0.051,0.412,40\n60,canary,201,0,0.049,0.398,\n";
        let obs = read_csv("o.csv", text, &["declines"]).expect("parses");
        assert_eq!(obs.custom, ["declines"]);
        let (_, stable, canary) = &obs.intervals[0];
        assert_eq!(
            stable.as_ref().map(|r| r.custom.clone()),
            Some(vec![Some(40.0)])
        );
        assert_eq!(canary.as_ref().map(|r| r.custom.clone()), Some(vec![None]));
        assert_eq!(
            read_csv("o.csv", text, &["refunds"]).expect_err("unknown column"),
            "o.csv:1:47: column `declines` is not a custom metric of the template; its custom metrics are refunds"
        );
        let short =
            "t,arm,requests,errors,latency_avg,latency_p99,declines\n60,stable,1,0,0.1,0.2\n";
        assert!(read_csv("o.csv", short, &["declines"])
            .expect_err("short row")
            .starts_with("o.csv:2:1: 6 fields; expected 7"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let bad = "t,arm,requests,errors,latency_avg,latency_p99\n60,stable,abc,2,0.051,0.412\n";
        assert_eq!(
            read_csv("o.csv", bad, &[]).expect_err("bad"),
            "o.csv:2:11: requests `abc` is not a non-negative number"
        );
        let order = "t,arm,requests,errors,latency_avg,latency_p99\n120,stable,1,0,0.1,0.2\n60,stable,1,0,0.1,0.2\n";
        assert!(read_csv("o.csv", order, &[])
            .expect_err("order")
            .starts_with("o.csv:3:1: t=60 comes after t=120"));
        let header = "time,arm\n";
        assert!(read_csv("o.csv", header, &[])
            .expect_err("header")
            .starts_with("o.csv:1:1: the header"));
        let arm = "t,arm,requests,errors,latency_avg,latency_p99\n60,blue,1,0,0.1,0.2\n";
        assert_eq!(
            read_csv("o.csv", arm, &[]).expect_err("arm"),
            "o.csv:2:4: arm `blue` is neither stable nor canary"
        );
    }
}
