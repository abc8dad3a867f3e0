//! `docs/spec-reference.md` is generated from the JSON Schemas (which are
//! generated from the types), so the reference cannot drift from what the
//! validator accepts: this test regenerates it and fails when the committed
//! copy differs. `BLESS=1 cargo test -p rollout-spec --test reference`
//! rewrites it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A type as a reader should see it, with links to other sections.
fn type_of(v: &Value) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(c) = v.get("const") {
        return format!(
            "`{}`",
            c.as_str().map_or_else(|| c.to_string(), str::to_string)
        );
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = v.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .map(type_of)
                .collect();
            return parts.join(" or ");
        }
    }
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|x| format!("`{}`", x.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!(
                "list of {}",
                v.get("items").map_or_else(String::new, type_of)
            )
        }
        Some(Value::String(t)) if t == "object" => match v.get("additionalProperties") {
            Some(a @ Value::Object(_)) => format!("map of string to {}", type_of(a)),
            _ => "object".to_string(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn default_of(v: &Value) -> String {
    match v.get("default") {
        Some(Value::String(s)) => format!("`{s}`"),
        Some(Value::Null) | None => String::new(),
        Some(other) => format!("`{other}`"),
    }
}

/// A table of an object's fields.
fn fields(out: &mut String, obj: &Value) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: BTreeSet<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| field | type | required | default | description |\n|---|---|---|---|---|\n");
    for (name, p) in props {
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} | {} |",
            type_of(p),
            if required.contains(name.as_str()) {
                "yes"
            } else {
                ""
            },
            default_of(p),
            one_line(p.get("description").and_then(Value::as_str).unwrap_or(""))
        );
    }
    out.push('\n');
}

fn section(out: &mut String, name: &str, def: &Value) {
    let _ = writeln!(out, "### {name}\n");
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", one_line(d));
    }
    if def.get("properties").is_some() {
        fields(out, def);
    } else if let Some(alts) = def
        .get("oneOf")
        .or_else(|| def.get("anyOf"))
        .and_then(Value::as_array)
    {
        out.push_str("One of:\n\n");
        for a in alts {
            let what = if a.get("properties").is_some() {
                let keys: Vec<String> = a["properties"]
                    .as_object()
                    .map(|o| o.keys().map(|k| format!("`{k}`")).collect())
                    .unwrap_or_default();
                format!("an object with {}", keys.join(", "))
            } else {
                type_of(a)
            };
            let _ = writeln!(
                out,
                "- {what}: {}",
                one_line(a.get("description").and_then(Value::as_str).unwrap_or(""))
            );
            if a.get("properties").is_some() {
                for (k, p) in a["properties"].as_object().into_iter().flatten() {
                    let _ = writeln!(out, "  - `{k}`: {}", type_of(p));
                }
            }
        }
        out.push('\n');
    } else {
        let mut facts = vec![format!("type: {}", type_of(def))];
        if let Some(p) = def.get("pattern").and_then(Value::as_str) {
            facts.push(format!("pattern: `{p}`"));
        }
        for k in ["minimum", "maximum", "minLength", "maxLength"] {
            if let Some(v) = def.get(k) {
                facts.push(format!("{k}: {v}"));
            }
        }
        let _ = writeln!(out, "{}.\n", facts.join("; "));
    }
}

fn kind(out: &mut String, title: &str, schema_file: &str, example: &str) {
    let path = repo().join("docs/schema").join(schema_file);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("json");
    let _ = writeln!(out, "## {title}\n");
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", one_line(d));
    }
    let _ = writeln!(
        out,
        "Schema: [`schema/{schema_file}`](schema/{schema_file}). Example ([`{example}`]({example})):\n"
    );
    let text = std::fs::read_to_string(repo().join("docs").join(example)).expect("example");
    let _ = writeln!(out, "```yaml\n{}```\n", text);
    let _ = writeln!(out, "### {title} (the document)\n");
    fields(out, &schema);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            section(out, name, def);
        }
    }
}

fn generate() -> String {
    let mut out = String::from(
        "# Spec reference\n\n\
         Every field of the two kinds rolloutd reads, with its type, whether it\n\
         is required, its default and what it means. This page is generated from\n\
         the JSON Schemas in [`schema/`](schema/), which are generated from the\n\
         types the validator decodes into, so it cannot drift from what\n\
         `rolloutctl validate` accepts (`BLESS=1 cargo test -p rollout-spec --test\n\
         reference` regenerates it; the test fails when it is stale).\n\n\
         Both kinds are YAML documents (several per file, separated by `---`).\n\
         Unknown fields are errors (with a \"did you mean\"), as are YAML aliases\n\
         and nesting deeper than 64. Durations are written `500ms`, `90s`, `5m`,\n\
         `1h30m`; percentages `50%`.\n\n",
    );
    kind(
        &mut out,
        "Rollout",
        "rollout.json",
        "examples/checkout-canary.yaml",
    );
    kind(
        &mut out,
        "AnalysisTemplate",
        "analysistemplate.json",
        "examples/demo.yaml",
    );
    out
}

#[test]
fn the_reference_matches_the_schemas() {
    let path = repo().join("docs/spec-reference.md");
    let want = generate();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &want).expect("write");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/spec-reference.md is stale: run `BLESS=1 cargo test -p rollout-spec --test reference`"
    );
}
