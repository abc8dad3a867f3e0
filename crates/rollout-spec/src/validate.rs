//! The checks that need typed values or several documents at once: ARNs that
//! must agree with each other, steps that must reach 100%, templates that
//! must exist, names that must be unique.

use std::collections::BTreeMap;

use crate::decode::{Diagnostic, Locations};
use crate::types::{
    placeholders, AnalysisTemplate, BlueGreenStrategy, CustomMetric, PhaseAnalysis, Rollout,
    RolloutAnalysis, DIMENSION_PLACEHOLDERS,
};
use crate::values::{Duration, ElbArnParts};
use crate::Located;

mod steps;
mod targets;
pub use steps::MAX_STEPS;
use steps::{
    check_canary_steps, check_chaos_steps, check_evidence_pauses, check_experiment,
    check_rollback_steps,
};

struct Report<'a> {
    file: &'a str,
    locs: &'a Locations,
    out: &'a mut Vec<Diagnostic>,
}

impl Report<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.locs.get(path);
        self.out.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: crate::decode::clip(message.into(), crate::decode::MAX_MESSAGE),
        });
    }
}

/// Checks a set of documents as a whole. `known_templates` are the names of
/// AnalysisTemplates that exist outside the set (on the server).
pub fn validate_set(
    rollouts: &[Located<Rollout>],
    templates: &[Located<AnalysisTemplate>],
    known_templates: &[String],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut template_periods: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut seen_templates: BTreeMap<&str, &Located<AnalysisTemplate>> = BTreeMap::new();
    for t in templates {
        let mut rep = Report {
            file: &t.file,
            locs: &t.locs,
            out: &mut out,
        };
        let name = t.value.metadata.name.as_str();
        if let Some(first) = seen_templates.get(name) {
            rep.at(
                "metadata.name",
                format!(
                    "AnalysisTemplate `{name}` is defined twice (first at {}:{})",
                    first.file, first.pos
                ),
            );
        } else {
            seen_templates.insert(name, t);
        }
        let longest = t
            .value
            .spec
            .metrics
            .iter()
            .map(|m| m.period_or(&t.value.spec.alb))
            .fold(t.value.spec.alb.period, Duration::max);
        template_periods.insert(name, longest);
        check_template(&t.value, &mut rep);
    }
    for name in known_templates {
        template_periods
            .entry(name.as_str())
            .or_insert(Duration::from_secs(0));
    }

    let mut seen_rollouts: BTreeMap<&str, &Located<Rollout>> = BTreeMap::new();
    let mut routes: BTreeMap<String, &Located<Rollout>> = BTreeMap::new();
    for r in rollouts {
        let mut rep = Report {
            file: &r.file,
            locs: &r.locs,
            out: &mut out,
        };
        let name = r.value.metadata.name.as_str();
        if let Some(first) = seen_rollouts.get(name) {
            rep.at(
                "metadata.name",
                format!(
                    "Rollout `{name}` is defined twice (first at {}:{})",
                    first.file, first.pos
                ),
            );
        } else {
            seen_rollouts.insert(name, r);
            for (key, path) in targets::places(&r.value.spec) {
                match routes.get(&key) {
                    Some(other) if other.value.metadata.name.as_str() != name => rep.at(
                        &path,
                        format!(
                            "Rollout `{}` ({}:{}) already shifts {key}; two rollouts cannot share it",
                            other.value.metadata.name, other.file, other.pos
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        routes.insert(key, r);
                    }
                }
            }
        }
        check_rollout(&r.value, &template_periods, &mut rep);
    }
    out
}

fn check_period(period: Duration, path: &str, rep: &mut Report<'_>) {
    let ms = period.as_millis();
    let ok = matches!(ms, 1_000 | 5_000 | 10_000 | 30_000) || (ms > 0 && ms % 60_000 == 0);
    if !ok {
        rep.at(
            path,
            format!(
                "CloudWatch period {period} is not allowed: use 1s, 5s, 10s, 30s or a multiple of 60s"
            ),
        );
    }
}

fn check_template(t: &AnalysisTemplate, rep: &mut Report<'_>) {
    let alb = &t.spec.alb;
    check_period(alb.period, "spec.alb.period", rep);
    let alpha = t.spec.alpha.value();
    if alpha <= 0.0 || alpha > 50.0 {
        rep.at(
            "spec.alpha",
            format!(
                "alpha {} is outside (0%, 50%]: it is the false-rollback rate the judge allows",
                t.spec.alpha
            ),
        );
    }
    if alb.error_rate.is_none() && alb.latency.is_none() && t.spec.metrics.is_empty() {
        rep.at(
            "spec.alb",
            "nothing to compare: give `errorRate`, `latency` or custom `metrics`",
        );
    }
    check_custom_metrics(&t.spec.metrics, rep);
    for (i, m) in t.spec.metrics.iter().enumerate() {
        if m.min_improvement.is_none() {
            continue;
        }
        let path = format!("spec.metrics[{i}]");
        if !(m.per_request && m.statistic.grows_with_traffic()) {
            rep.at(
                &format!("{path}.minImprovement"),
                "an improvement is required of a count per request: `perRequest: true` with `Sum` or `SampleCount`",
            );
        } else if !m.dimensions_differ_by_arm() {
            rep.at(
                &format!("{path}.minImprovement"),
                "both arms would read the same series: give a dimension that tells them apart, e.g. `TargetGroup: ${targetGroup}` or `Version: ${arm}`",
            );
        } else {
            check_min_improvement(m.min_improvement, &path, t, rep);
        }
    }
    if let Some(er) = &alb.error_rate {
        if er.max_increase.is_none() && er.max_rate.is_none() && er.min_improvement.is_none() {
            rep.at(
                "spec.alb.errorRate",
                "give `maxIncrease` (relative to stable), `maxRate` (absolute), `minImprovement` (a required improvement) or several",
            );
        }
        check_min_improvement(er.min_improvement, "spec.alb.errorRate", t, rep);
        if let Some(rate) = er.max_rate {
            if rate.value() > 100.0 {
                rep.at(
                    "spec.alb.errorRate.maxRate",
                    format!("an error rate of {rate} can never be reached; use at most 100%"),
                );
            }
        }
    }
    if let Some(lat) = &alb.latency {
        if lat.max_increase.is_none() && lat.max.is_none() && lat.min_improvement.is_none() {
            rep.at(
                "spec.alb.latency",
                "give `maxIncrease` (relative to stable), `max` (absolute), `minImprovement` (a required improvement) or several",
            );
        }
        check_min_improvement(lat.min_improvement, "spec.alb.latency", t, rep);
        if lat.max == Some(Duration::from_millis(0)) {
            rep.at(
                "spec.alb.latency.max",
                "a latency ceiling of 0s fails every interval",
            );
        }
    }
}

/// A required improvement is a share of stable's value below 100%, shown
/// with the sequential judge's anytime-valid evidence.
fn check_min_improvement(
    min: Option<crate::Percent>,
    path: &str,
    t: &AnalysisTemplate,
    rep: &mut Report<'_>,
) {
    let Some(min) = min else {
        return;
    };
    let path = format!("{path}.minImprovement");
    if min.value() <= 0.0 || min.value() >= 100.0 {
        rep.at(
            &path,
            format!(
                "an improvement of {min} cannot be required: give more than 0% and less than 100%"
            ),
        );
    } else if t.spec.judge != crate::JudgeKind::Sequential {
        rep.at(
            &path,
            "an improvement is shown by the sequential judge's evidence; this template's judge is not `sequential`",
        );
    }
}

fn check_custom_metrics(metrics: &[CustomMetric], rep: &mut Report<'_>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in metrics.iter().enumerate() {
        let base = format!("spec.metrics[{i}]");
        let name = m.name.as_str();
        if name == "latency" {
            rep.at(
                &format!("{base}.name"),
                "`latency` is the built-in ALB check's name; choose another",
            );
        }
        if let Some(first) = seen.insert(name, i) {
            rep.at(
                &format!("{base}.name"),
                format!("metric `{name}` is already defined at spec.metrics[{first}]"),
            );
        }
        if m.namespace.is_empty() || m.namespace.len() > 255 || m.namespace.starts_with(':') {
            rep.at(
                &format!("{base}.namespace"),
                "a CloudWatch namespace is 1 to 255 characters and does not start with `:`",
            );
        }
        if m.metric_name.is_empty() || m.metric_name.len() > 255 {
            rep.at(
                &format!("{base}.metricName"),
                "a CloudWatch metric name is 1 to 255 characters",
            );
        }
        if m.dimensions.len() > 30 {
            rep.at(
                &format!("{base}.dimensions"),
                format!(
                    "{} dimensions; CloudWatch allows at most 30",
                    m.dimensions.len()
                ),
            );
        }
        for (k, v) in &m.dimensions {
            check_dimension(&format!("{base}.dimensions.{k}"), k, v, rep);
        }
        if let Some(period) = m.period {
            check_period(period, &format!("{base}.period"), rep);
        }
        if m.max_increase.is_none() && m.max.is_none() && m.min_improvement.is_none() {
            rep.at(
                &base,
                "give `maxIncrease` (relative to stable), `max` (absolute), `minImprovement` (a required improvement of a count per request) or several",
            );
        }
        if m.max_increase.is_some() {
            if !m.dimensions_differ_by_arm() {
                rep.at(
                    &format!("{base}.maxIncrease"),
                    "both arms would read the same series: give a dimension that tells them apart, e.g. `TargetGroup: ${targetGroup}` or `Version: ${arm}`",
                );
            }
            if m.statistic.grows_with_traffic() && !m.per_request {
                rep.at(
                    &format!("{base}.maxIncrease"),
                    format!(
                        "a {} grows with the arm's traffic, so the canary's small share cannot be compared with stable's: set `perRequest: true`, or use an absolute `max`",
                        m.statistic
                    ),
                );
            }
        }
        if let Some(max) = m.max {
            if max < 0.0 {
                rep.at(
                    &format!("{base}.max"),
                    format!("a ceiling of {max} is below 0"),
                );
            }
        }
    }
}

/// One dimension of a custom metric: its lengths and its placeholders.
fn check_dimension(path: &str, k: &str, v: &str, rep: &mut Report<'_>) {
    if k.is_empty() || k.len() > 255 || v.is_empty() || v.len() > 1024 {
        rep.at(
            path,
            "a dimension name is 1 to 255 characters and its value 1 to 1024",
        );
    }
    for p in placeholders(v) {
        match p {
            Ok(p) if DIMENSION_PLACEHOLDERS.contains(&p) => {}
            Ok(p) => {
                let hint = crate::decode::closest(p, &DIMENSION_PLACEHOLDERS)
                    .map(|c| format!("did you mean `${{{c}}}`?"))
                    .unwrap_or_else(|| {
                        "known: ${targetGroup}, ${targetGroupName}, ${arm}, ${loadBalancer}".into()
                    });
                rep.at(path, format!("unknown placeholder `${{{p}}}`; {hint}"));
            }
            Err(text) => rep.at(
                path,
                format!("`{text}` opens a placeholder it never closes"),
            ),
        }
    }
}

fn same_place(a: &ElbArnParts, b: &ElbArnParts) -> Option<String> {
    if a.partition != b.partition || a.region != b.region {
        Some(format!(
            "it is in region {} but the listener is in {}",
            a.region, b.region
        ))
    } else if a.account != b.account {
        Some(format!(
            "it is in account {} but the listener is in {}",
            a.account, b.account
        ))
    } else {
        None
    }
}

/// A rule, when given, belongs to the listener named beside it.
fn check_rule(alb: &crate::types::AlbTrafficRouting, path: &str, rep: &mut Report<'_>) {
    let (Some(rule), listener) = (&alb.rule_arn, &alb.listener_arn) else {
        return;
    };
    if rule.load_balancer != listener.load_balancer || rule.listener_id != listener.listener_id {
        rep.at(
            path,
            format!(
                "the rule belongs to listener {}/{} of {}, not to the listener in listenerArn",
                rule.load_balancer, rule.listener_id, rule.parts.region
            ),
        );
    }
}

fn check_rollout(r: &Rollout, templates: &BTreeMap<&str, Duration>, rep: &mut Report<'_>) {
    let spec = &r.spec;
    if spec.revision.trim().is_empty() {
        rep.at(
            "spec.revision",
            "the revision is empty; give the version being rolled out",
        );
    }
    let listener = &spec.traffic_routing.alb.listener_arn;
    check_rule(
        &spec.traffic_routing.alb,
        "spec.trafficRouting.alb.ruleArn",
        rep,
    );
    let [(first_path, first), (second_path, second)] = spec.target_group_paths();
    for (path, tg) in [(&first_path, first), (&second_path, second)] {
        if let Some(why) = same_place(&tg.parts, &listener.parts) {
            rep.at(
                path,
                format!("the target group cannot receive this listener's traffic: {why}"),
            );
        }
    }
    if first == second {
        let why = if spec.target_groups.is_some() {
            "the two target groups are the same; ping-pong needs two"
        } else {
            "stable and canary are the same target group; the canary needs its own"
        };
        rep.at(&second_path, why);
    }
    targets::check_targets(spec, rep);
    if spec.progress_deadline.as_millis() < 60_000 {
        rep.at(
            "spec.progressDeadline",
            format!(
                "a progress deadline of {} is shorter than one analysis; use at least 1m",
                spec.progress_deadline
            ),
        );
    }
    if let Some(canary) = &spec.strategy.canary {
        check_canary_steps(&canary.steps, rep);
        check_evidence_pauses(&canary.steps, spec.analysis.is_some(), rep);
        check_chaos_steps(&canary.steps, spec.analysis.as_ref(), rep);
    }
    if let Some(e) = &spec.strategy.experiment {
        check_experiment(e, spec.analysis.as_ref(), rep);
    }
    if let Some(bg) = &spec.strategy.blue_green {
        check_blue_green(bg, listener, templates, rep);
        if spec
            .analysis
            .as_ref()
            .is_some_and(|a| !a.templates.is_empty())
        {
            rep.at(
                "spec.analysis",
                "background analysis belongs to the canary strategy; a blueGreen run uses strategy.blueGreen.prePromotionAnalysis and postPromotionAnalysis",
            );
        }
    }
    if let Some(analysis) = &spec.analysis {
        check_analysis(analysis, templates, rep);
    }
    if let Some(rollback) = &spec.rollback {
        check_rollback_steps(&rollback.steps, rep);
        if rollback.steps.is_empty() && rollback.on_failure == crate::OnFailure::Rollback {
            rep.at(
                "spec.rollback",
                "neither steps nor onFailure: freeze; leave `rollback` out to return all traffic at once",
            );
        }
        if !rollback.steps.is_empty() && rollback.on_failure == crate::OnFailure::Freeze {
            rep.at(
                "spec.rollback.steps",
                "onFailure: freeze holds the weights, so rollback steps would never run; give one or the other",
            );
        }
    }
}

fn check_template_refs(
    base: &str,
    names: &[String],
    interval: Duration,
    templates: &BTreeMap<&str, Duration>,
    rep: &mut Report<'_>,
) {
    if names.is_empty() {
        rep.at(
            &format!("{base}.templates"),
            "no templates: name at least one AnalysisTemplate",
        );
    }
    if interval.as_millis() < 1_000 {
        rep.at(
            &format!("{base}.interval"),
            format!("an analysis interval of {interval} is too short; use at least 1s"),
        );
    }
    for (i, name) in names.iter().enumerate() {
        let path = format!("{base}.templates[{i}]");
        match templates.get(name.as_str()) {
            None => {
                let known: Vec<&str> = templates.keys().copied().collect();
                let hint = crate::decode::closest(name, &known)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                rep.at(
                    &path,
                    format!(
                        "AnalysisTemplate `{}` is not defined in these documents{hint}",
                        crate::decode::shown(name)
                    ),
                );
            }
            Some(period) if *period > interval => rep.at(
                &format!("{base}.interval"),
                format!(
                    "the interval {interval} is shorter than the period {period} of AnalysisTemplate `{name}`; each interval needs at least one datapoint"
                ),
            ),
            Some(_) => {}
        }
    }
}

fn check_analysis(a: &RolloutAnalysis, templates: &BTreeMap<&str, Duration>, rep: &mut Report<'_>) {
    if a.templates.is_empty() && !a.alarms.is_empty() {
        // Alarms alone gate the run; nothing to compare.
    } else {
        check_template_refs("spec.analysis", &a.templates, a.interval, templates, rep);
    }
    for (i, name) in a.alarms.iter().enumerate() {
        if name.is_empty() || name.len() > 255 {
            rep.at(
                &format!("spec.analysis.alarms[{i}]"),
                "a CloudWatch alarm name has 1 to 255 characters",
            );
        }
    }
    if a.alarms.len() > 100 {
        rep.at(
            "spec.analysis.alarms",
            format!("{} alarms: at most 100 are allowed", a.alarms.len()),
        );
    }
}

fn check_blue_green(
    bg: &BlueGreenStrategy,
    listener: &crate::values::ListenerArn,
    templates: &BTreeMap<&str, Duration>,
    rep: &mut Report<'_>,
) {
    if let Some(preview) = &bg.preview_listener_arn {
        if preview == listener {
            rep.at(
                "spec.strategy.blueGreen.previewListenerArn",
                "the preview listener is the production listener; preview traffic needs a listener of its own",
            );
        } else if let Some(why) = same_place(&preview.parts, &listener.parts) {
            rep.at(
                "spec.strategy.blueGreen.previewListenerArn",
                format!("the preview listener must sit beside the production one: {why}"),
            );
        }
    }
    if let Some(c) = &bg.pre_promotion_chaos {
        let path = "spec.strategy.blueGreen.prePromotionChaos";
        match &bg.pre_promotion_analysis {
            None => rep.at(
                path,
                "a chaos check judges the preview while the experiment runs: give prePromotionAnalysis",
            ),
            Some(pre) if c.duration.as_millis() < pre.interval.as_millis() => rep.at(
                &format!("{path}.duration"),
                format!(
                    "an experiment of at most {} ends before one analysis interval ({}) is judged",
                    c.duration, pre.interval
                ),
            ),
            Some(_) => {}
        }
    }
    let phases: [(&str, &Option<PhaseAnalysis>); 2] = [
        ("prePromotionAnalysis", &bg.pre_promotion_analysis),
        ("postPromotionAnalysis", &bg.post_promotion_analysis),
    ];
    for (field, phase) in phases {
        if let Some(p) = phase {
            let base = format!("spec.strategy.blueGreen.{field}");
            check_template_refs(&base, &p.templates, p.interval, templates, rep);
            if p.duration < p.interval {
                rep.at(
                    &format!("{base}.duration"),
                    format!(
                        "the phase lasts {} but one analysis interval is {}; it would never be judged",
                        p.duration, p.interval
                    ),
                );
            }
        }
    }
}
