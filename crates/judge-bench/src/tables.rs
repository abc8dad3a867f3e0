//! The main benchmark's tables: false rollbacks and detection per judge.

use rollout_analysis::stats::wilson;

use super::{JudgeName, Tallies, Tally, SCENARIOS};

pub(crate) fn percentile(xs: &mut [u32], q: f64) -> Option<u32> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_unstable();
    let idx = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
    Some(xs[idx])
}

pub(crate) fn median_f(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[(xs.len() - 1) / 2])
}

/// The false-rollback table of one judge.
pub(crate) fn print_good(tallies: &Tallies, name: JudgeName) {
    println!("| scenario | runs | false rollbacks (95% CI) |");
    println!("|---|---|---|");
    let mut good_all = (0u64, 0u64);
    for (si, s) in SCENARIOS.iter().enumerate().filter(|(_, s)| s.good) {
        let mut t = Tally::default();
        for showable in [false, true] {
            if let Some(x) = tallies.get(&(name, si, showable)) {
                t.runs += x.runs;
                t.rolled_back += x.rolled_back;
            }
        }
        good_all.0 += t.rolled_back;
        good_all.1 += t.runs;
        let (lo, hi) = wilson(t.rolled_back, t.runs);
        println!(
            "| {} | {} | {:.2}% ({:.2}–{:.2}%) |",
            s.name,
            t.runs,
            100.0 * t.rolled_back as f64 / t.runs.max(1) as f64,
            lo * 100.0,
            hi * 100.0
        );
    }
    let (lo, hi) = wilson(good_all.0, good_all.1);
    println!(
        "| **all good canaries** | {} | **{:.2}%** ({:.2}–{:.2}%) |\n",
        good_all.1,
        100.0 * good_all.0 as f64 / good_all.1.max(1) as f64,
        lo * 100.0,
        hi * 100.0
    );
}

/// The detection table of one judge.
pub(crate) fn print_bad(tallies: &Tallies, name: JudgeName) {
    println!("| regression | runs (canary ≥ 100 req/min) | detected | median / p90 minutes to detect | in the first full interval (canary ≥ 300 req/min) | median canary requests before rollback | detected, all traffic levels | rolled back before it began |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut bad_show = (0u64, 0u64);
    let mut all_minutes: Vec<u32> = Vec::new();
    for (si, s) in SCENARIOS.iter().enumerate().filter(|(_, s)| !s.good) {
        let show = tallies.get(&(name, si, true)).cloned().unwrap_or_default();
        let low = tallies.get(&(name, si, false)).cloned().unwrap_or_default();
        let mut minutes = show.minutes.clone();
        let mut exposed = show.exposed.clone();
        let blind = s.name.contains("cannot see it");
        if !blind {
            bad_show.0 += show.rolled_back;
            bad_show.1 += show.runs;
            all_minutes.extend(&show.minutes);
        }
        let med = percentile(&mut minutes, 0.5).map_or("-".into(), |m| m.to_string());
        let p90 = percentile(&mut minutes, 0.9).map_or("-".into(), |m| m.to_string());
        let exp = median_f(&mut exposed).map_or("-".into(), |e| format!("{e:.0}"));
        let early = if s.from > 0 {
            format!("{}", show.early + low.early)
        } else {
            "-".into()
        };
        println!(
            "| {} | {} | {:.1}% | {med} / {p90} | {:.1}% of {} | {exp} | {:.1}% | {early} |",
            s.name,
            show.runs,
            100.0 * show.rolled_back as f64 / show.runs.max(1) as f64,
            100.0 * show.first_300 as f64 / show.runs_300.max(1) as f64,
            show.runs_300,
            100.0 * (show.rolled_back + low.rolled_back) as f64
                / (show.runs + low.runs).max(1) as f64,
        );
    }
    let (lo, hi) = wilson(bad_show.0, bad_show.1);
    let med = percentile(&mut all_minutes, 0.5).map_or("-".into(), |m| m.to_string());
    let p90 = percentile(&mut all_minutes, 0.9).map_or("-".into(), |m| m.to_string());
    println!(
        "| **all regressions the data can show** | {} | **{:.1}%** ({:.1}–{:.1}%) | **{med} / {p90}** | | | | |\n",
        bad_show.1,
        100.0 * bad_show.0 as f64 / bad_show.1.max(1) as f64,
        lo * 100.0,
        hi * 100.0
    );
}
