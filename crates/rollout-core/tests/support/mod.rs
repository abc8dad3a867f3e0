//! What the decision tests share.

use std::collections::BTreeMap;

use rollout_spec::{load, AnalysisTemplateSpec, Rollout};

/// The first Rollout of `text` and every AnalysisTemplate beside it, by
/// name (the text must be valid).
pub fn rollout_and_templates(
    file: &str,
    text: &str,
) -> (Rollout, BTreeMap<String, AnalysisTemplateSpec>) {
    let set = load([(file, text)], &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let templates = set
        .templates
        .iter()
        .map(|t| (t.value.metadata.name.to_string(), t.value.spec.clone()))
        .collect();
    (set.rollouts[0].value.clone(), templates)
}
