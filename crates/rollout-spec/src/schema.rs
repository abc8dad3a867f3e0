//! JSON Schemas of the two document kinds, generated from the types in
//! [`crate::types`]. The committed copies under `docs/schema/` are what
//! editors use for completion; a test fails when they are stale.

use schemars::generate::SchemaSettings;

use crate::types::{AnalysisTemplate, Rollout};

fn render<T: schemars::JsonSchema>(id: &str) -> String {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    schema.insert(
        "$id".into(),
        serde_json::Value::String(format!("https://rolloutd.dev/schema/v1alpha1/{id}")),
    );
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The schema of a `Rollout` document, as pretty JSON.
pub fn rollout_schema() -> String {
    render::<Rollout>("rollout.json")
}

/// The schema of an `AnalysisTemplate` document, as pretty JSON.
pub fn analysis_template_schema() -> String {
    render::<AnalysisTemplate>("analysistemplate.json")
}

/// The committed schema files: path under `docs/schema/` and content.
pub fn files() -> [(&'static str, String); 2] {
    [
        ("rollout.json", rollout_schema()),
        ("analysistemplate.json", analysis_template_schema()),
    ]
}
