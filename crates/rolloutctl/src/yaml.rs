//! JSON printed as block-style YAML that reads back as the same values.
//!
//! A string is written plain only when it cannot be read as anything but
//! that string under YAML 1.1 or 1.2: it starts with a letter or `/`,
//! holds only letters, digits, spaces and `-_./@`, does not end in a
//! space, and is none of the words YAML reads as a boolean or null in any
//! letter case. Everything else is double-quoted, with every character a
//! YAML stream may not carry raw (controls, DEL, C1, line and paragraph
//! separators, byte-order marks, non-characters) escaped. Keys follow the
//! same rule.

use serde_json::Value;

/// `v` as a YAML document (block style), each line indented by `indent`.
pub fn to_yaml(v: &Value, indent: usize) -> String {
    let mut out = String::new();
    block(v, indent, &mut out);
    out
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, val) in map {
                out.push_str(&pad);
                out.push_str(&string(k));
                out.push(':');
                nested(val, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        block(item, indent + 2, &mut inner);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(inner.trim_start());
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push('-');
                        nested(item, indent, out);
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// What follows `key:` or `-`: a nested block on the next lines, or a
/// space and an inline value.
fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// A scalar, or an empty mapping or list, on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Words YAML 1.1 or 1.2 reads as a boolean or null (compared ignoring case).
const SPECIAL: [&str; 12] = [
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "nan", "inf",
];

/// A string as a YAML scalar: plain when that is unambiguous, else quoted.
pub fn string(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@ ".contains(c))
        && !s.ends_with(' ')
        && !SPECIAL.iter().any(|w| w.eq_ignore_ascii_case(s));
    if plain {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if needs_escape(c) => {
                let n = u32::from(c);
                if n <= 0xFFFF {
                    q.push_str(&format!("\\u{n:04X}"));
                } else {
                    q.push_str(&format!("\\U{n:08X}"));
                }
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Characters a YAML stream may not carry raw in a double-quoted scalar
/// (outside YAML's printable set, or read as a line break or a BOM).
fn needs_escape(c: char) -> bool {
    let n = u32::from(c);
    n < 0x20
        || (0x7F..=0x9F).contains(&n)
        || matches!(n, 0x2028 | 0x2029 | 0xFEFF)
        || (0xFDD0..=0xFDEF).contains(&n)
        || (n & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_spec::tree::{parse_stream, Value as Tree};

    #[test]
    fn nested_values() {
        let v = serde_json::json!({"a": {"b": [1, "two words", "x:y"]}, "c": true, "d": "5", "e": [], "f": {}, "g": [[1, 2], {"h": null}]});
        assert_eq!(
            to_yaml(&v, 0),
            "a:\n  b:\n    - 1\n    - two words\n    - \"x:y\"\nc: true\nd: \"5\"\ne: []\nf: {}\ng:\n  -\n    - 1\n    - 2\n  - h: null\n"
        );
        assert_eq!(parse_stream(&to_yaml(&v, 0)).expect("valid YAML").len(), 1);
    }

    #[test]
    fn strings_yaml_would_read_as_something_else_are_quoted() {
        for s in [
            "True",
            "TRUE",
            "Null",
            "NULL",
            "~",
            "No",
            "off",
            "Y",
            ".inf",
            "-.Inf",
            ".NaN",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "1e3",
            "+1",
            "12:30:00",
            "2026-11-30",
            "'",
            "\"",
            "- a",
            "a: b",
            "#x",
            "a #b",
            "",
            " a",
            "a ",
            "@x",
            "`x",
            "!x",
            "&x",
            "*x",
            "|",
            ">",
            "%x",
            "{a}",
            "[a]",
            "?",
            "a\nb",
        ] {
            assert!(
                string(s).starts_with('"'),
                "{s:?} was written {}",
                string(s)
            );
        }
        for s in ["abc", "two words", "/api/v1", "shop-canary_2.v1", "r1@eu"] {
            assert_eq!(string(s), s);
        }
    }

    /// The scalar the document `k: <v>` reads back as: its text, and
    /// whether it was plain.
    fn read_back(yaml: &str) -> Vec<(String, bool, String, bool)> {
        let docs = parse_stream(yaml).expect("valid YAML");
        let Tree::Map(entries) = &docs[0].root.value else {
            panic!("not a mapping: {yaml}");
        };
        entries
            .iter()
            .map(|(k, v)| match (&k.value, &v.value) {
                (
                    Tree::Scalar {
                        text: kt,
                        plain: kp,
                    },
                    Tree::Scalar {
                        text: vt,
                        plain: vp,
                    },
                ) => (kt.clone(), *kp, vt.clone(), *vp),
                other => panic!("not scalars: {other:?} in {yaml}"),
            })
            .collect()
    }

    /// What a YAML 1.1 or 1.2 reader makes of a plain scalar other than a
    /// string: the core schema's null, bool, int and float forms and YAML
    /// 1.1's extra booleans, bases, sexagesimals and timestamps.
    fn resolves_to_non_string(t: &str) -> bool {
        let lower = t.to_ascii_lowercase();
        let digits = |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.chars().all(ok);
        let unsigned = t.trim_start_matches(['+', '-']);
        matches!(
            lower.as_str(),
            "" | "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        ) || matches!(lower.trim_start_matches(['+', '-']), ".inf" | ".nan")
            || digits(&unsigned.replace('_', ""), |c| c.is_ascii_digit())
            || unsigned.parse::<f64>().is_ok()
            || lower
                .strip_prefix("0x")
                .is_some_and(|h| digits(h, |c| c.is_ascii_hexdigit()))
            || lower
                .strip_prefix("0o")
                .is_some_and(|h| digits(h, |c| ('0'..='7').contains(&c)))
            || lower
                .strip_prefix("0b")
                .is_some_and(|h| digits(h, |c| c == '0' || c == '1'))
            || (t.contains(':')
                && digits(&unsigned.replace([':', '.', '_'], ""), |c| {
                    c.is_ascii_digit()
                }))
            || (t.len() >= 10 && t.as_bytes()[4] == b'-' && digits(&t[..4], |c| c.is_ascii_digit()))
    }

    proptest::proptest! {
        /// Any key and string value read back as the same strings, and a
        /// plain one is never something YAML reads as a non-string.
        #[test]
        fn any_string_reads_back_as_itself(k in "\\PC{0,12}|[ -~]{0,12}", v in proptest::prelude::any::<String>()) {
            let doc = serde_json::json!({ "key": v, k.clone(): "x" });
            let yaml = to_yaml(&doc, 0);
            let back = read_back(&yaml);
            let value = back.iter().find(|e| e.0 == "key" && k != "key");
            if let Some((_, _, text, plain)) = value {
                proptest::prop_assert_eq!(text, &v, "{}", yaml);
                proptest::prop_assert!(!*plain || !resolves_to_non_string(text), "{}", yaml);
            }
            let key = back.iter().find(|e| e.2 == "x" && e.0 == k);
            proptest::prop_assert!(key.is_some(), "{} did not read back in {}", k, yaml);
            if let Some((text, plain, _, _)) = key {
                proptest::prop_assert!(!*plain || !resolves_to_non_string(text), "{}", yaml);
            }
        }

        /// Words and numbers YAML resolves, in any letter case.
        #[test]
        fn yaml_words_in_any_case_are_quoted(
            w in "(?i)(true|false|null|yes|no|on|off|y|n|~|\\.inf|-\\.inf|\\.nan|0x[0-9a-f]{1,4}|0o[0-7]{1,4}|[0-9]{1,6}|[0-9]+\\.[0-9]*|[0-9]{4}-[0-9]{2}-[0-9]{2})"
        ) {
            proptest::prop_assert!(string(&w).starts_with('"'), "{:?} -> {}", w, string(&w));
            let yaml = to_yaml(&serde_json::json!({ "key": w.clone() }), 0);
            let back = read_back(&yaml);
            proptest::prop_assert_eq!(&back[0].2, &w);
            proptest::prop_assert!(!back[0].3);
        }
    }
}
