//! Rollout and AnalysisTemplate documents: YAML or JSON in, validated typed
//! values out, and every problem reported with file, line, column and field
//! path, all at once.
//!
//! The pipeline is three small steps:
//! 1. [`tree::parse_stream`] reads a multi-document YAML stream into a tree
//!    whose nodes carry positions (aliases and deep nesting refused);
//! 2. [`decode`] turns each document into the types of [`types`] by its
//!    `kind`, collecting unknown fields, wrong types and bad values;
//! 3. [`validate::validate_set`] checks what needs typed values or the whole
//!    set of documents: ARNs that must agree, steps that must reach 100%,
//!    templates that must exist, unique names.
//!
//! [`load`] runs all three. Nothing here does I/O; callers read the files.
#![forbid(unsafe_code)]

pub mod decode;
pub mod files;
pub mod schema;
pub mod tree;
pub mod types;
pub mod validate;
pub mod values;

pub use decode::{Diagnostic, Locations};
pub use tree::Pos;
pub use types::*;
pub use values::*;

use decode::Ctx;
use tree::{Node, Value};

/// The kinds of document this crate reads.
pub const KINDS: [&str; 2] = ["Rollout", "AnalysisTemplate"];

/// A value with the place it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The source's name (a path, or `<request>`).
    pub file: String,
    /// Where the document starts.
    pub pos: Pos,
    /// The document.
    pub value: T,
    /// Where each of its fields was written.
    pub locs: Locations,
}

/// The documents of one or more sources, sorted by kind, in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecSet {
    /// The Rollouts.
    pub rollouts: Vec<Located<Rollout>>,
    /// The AnalysisTemplates.
    pub templates: Vec<Located<AnalysisTemplate>>,
    /// Names of AnalysisTemplates that were refused for their own errors, so
    /// that a rollout naming one is not also told the template is missing.
    pub refused_templates: Vec<String>,
}

impl SpecSet {
    /// How many documents the set holds.
    pub fn len(&self) -> usize {
        self.rollouts.len() + self.templates.len()
    }

    /// Whether the set holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the documents of one source into `set`, reporting problems into `diags`.
/// A document with problems is not added.
pub fn parse_source(file: &str, text: &str, set: &mut SpecSet, diags: &mut Vec<Diagnostic>) {
    let docs = match tree::parse_stream(text) {
        Ok(docs) => docs,
        Err(e) => {
            diags.push(Diagnostic {
                file: file.to_string(),
                line: e.pos.line,
                column: e.pos.column,
                path: String::new(),
                message: e.message,
            });
            return;
        }
    };
    let total = docs.len();
    for (i, doc) in docs.into_iter().enumerate() {
        // Enough said: the rest is counted, not checked (bounded work and a
        // bounded answer for any input).
        if diags.len() >= decode::MAX_DIAGNOSTICS {
            diags.push(Diagnostic {
                file: file.to_string(),
                line: doc.pos.line,
                column: doc.pos.column,
                path: String::new(),
                message: format!(
                    "checking stopped after {} problems: {} more documents not checked",
                    decode::MAX_DIAGNOSTICS,
                    total - i
                ),
            });
            return;
        }
        let mut cx = Ctx::new(file, doc.pos);
        match document_kind(&doc.root, &mut cx) {
            Some(DocKind::Rollout) => {
                let value = cx.decode::<Rollout>(&doc.root);
                let (mut found, locs) = cx.finish();
                match value {
                    Some(value) if found.is_empty() => set.rollouts.push(Located {
                        file: file.to_string(),
                        pos: doc.pos,
                        value,
                        locs,
                    }),
                    _ => diags.append(&mut found),
                }
            }
            Some(DocKind::AnalysisTemplate) => {
                let value = cx.decode::<AnalysisTemplate>(&doc.root);
                let (mut found, locs) = cx.finish();
                match value {
                    Some(value) if found.is_empty() => set.templates.push(Located {
                        file: file.to_string(),
                        pos: doc.pos,
                        value,
                        locs,
                    }),
                    _ => {
                        set.refused_templates.extend(raw_name(&doc.root));
                        diags.append(&mut found)
                    }
                }
            }
            None => diags.append(&mut cx.finish().0),
        }
    }
}

/// `metadata.name` of a document, read without validating anything else.
fn raw_name(root: &Node) -> Option<String> {
    let field = |node: &Node, name: &str| match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == name))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    match field(&field(root, "metadata")?, "name")?.value {
        Value::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

enum DocKind {
    Rollout,
    AnalysisTemplate,
}

/// Reads `apiVersion` and `kind` before anything else, so a document of a
/// foreign kind gets one clear message instead of a list of unknown fields.
fn document_kind(root: &Node, cx: &mut Ctx) -> Option<DocKind> {
    let Value::Map(entries) = &root.value else {
        cx.error(
            root.pos,
            format!(
                "expected a document (a mapping with apiVersion, kind, metadata and spec), found {}",
                root.describe()
            ),
        );
        return None;
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == name))
            .map(|(_, v)| v)
    };
    match field("apiVersion") {
        None => cx.error(root.pos, "missing field `apiVersion`"),
        Some(node) => match &node.value {
            Value::Scalar { text, .. } if text == types::API_VERSION => {}
            _ => {
                let shown = match &node.value {
                    Value::Scalar { text, .. } => format!("`{text}`"),
                    _ => node.describe().to_string(),
                };
                cx.at_key("apiVersion", |cx| {
                    cx.error(
                        node.pos,
                        format!(
                            "unsupported apiVersion {shown}: expected {}",
                            types::API_VERSION
                        ),
                    )
                });
            }
        },
    }
    let kind = match field("kind") {
        None => {
            cx.error(root.pos, "missing field `kind`");
            return None;
        }
        Some(node) => match &node.value {
            Value::Scalar { text, .. } if text == "Rollout" => DocKind::Rollout,
            Value::Scalar { text, .. } if text == "AnalysisTemplate" => DocKind::AnalysisTemplate,
            _ => {
                let message = match &node.value {
                    Value::Scalar { text, .. } => match decode::closest(text, &KINDS) {
                        Some(c) => format!("unknown kind `{text}`, did you mean `{c}`?"),
                        None => {
                            format!("unknown kind `{text}`: expected Rollout or AnalysisTemplate")
                        }
                    },
                    _ => format!(
                        "expected Rollout or AnalysisTemplate, found {}",
                        node.describe()
                    ),
                };
                cx.at_key("kind", |cx| cx.error(node.pos, message));
                return None;
            }
        },
    };
    // A wrong apiVersion was reported into `cx`, so the document is refused
    // after decoding; decoding it anyway reports its other problems too.
    Some(kind)
}

/// Reads and validates a set of sources (name, text) as one set: every
/// template a rollout names must be among them or in `known_templates`.
/// Returns the documents, or every problem found, ordered by source and
/// position.
pub fn load<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    known_templates: &[String],
) -> Result<SpecSet, Vec<Diagnostic>> {
    let mut set = SpecSet::default();
    let mut diags = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for (file, text) in sources {
        order.push(file.to_string());
        parse_source(file, text, &mut set, &mut diags);
    }
    let mut known: Vec<String> = known_templates.to_vec();
    known.extend(set.refused_templates.iter().cloned());
    diags.extend(validate::validate_set(
        &set.rollouts,
        &set.templates,
        &known,
    ));
    if diags.is_empty() {
        return Ok(set);
    }
    let rank = |f: &str| order.iter().position(|o| o == f).unwrap_or(usize::MAX);
    diags.sort_by(|a, b| {
        (rank(&a.file), a.line, a.column, &a.path, &a.message).cmp(&(
            rank(&b.file),
            b.line,
            b.column,
            &b.path,
            &b.message,
        ))
    });
    diags.dedup();
    if diags.len() > decode::MAX_DIAGNOSTICS + 1 {
        let more = diags.len() - decode::MAX_DIAGNOSTICS;
        diags.truncate(decode::MAX_DIAGNOSTICS);
        let last = diags.last().map(|d| (d.file.clone(), d.line, d.column));
        let (file, line, column) = last.unwrap_or_default();
        diags.push(Diagnostic {
            file,
            line,
            column,
            path: String::new(),
            message: format!("{more} more problems not shown"),
        });
    }
    Err(diags)
}
