//! A YAML (or JSON) document tree in which every node knows where it came from.
//!
//! Serde deserialisers stop at the first error and forget positions; an
//! operator wants every mistake in a file at once, each with its line and
//! column. So documents are first read into this small tree (through the
//! event API of `saphyr-parser`, a maintained YAML 1.2 parser that reports a
//! position for every event), and [`crate::decode`] turns the tree into typed
//! values while collecting errors.
//!
//! The tree refuses what could make a small input expensive: aliases (the
//! "billion laughs" expansion) are rejected outright, and nesting deeper than
//! [`MAX_DEPTH`] or more than [`MAX_NODES`] nodes stop the parse with an error.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Nesting deeper than this is refused; no valid document comes close.
pub const MAX_DEPTH: usize = 64;
/// More nodes than this in one stream are refused.
pub const MAX_NODES: usize = 200_000;

/// A position in a source text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl Pos {
    /// A position from a 1-based line and column.
    pub fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }

    fn from_span(span: &Span) -> Self {
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Pos {
            line: to_u32(span.start.line()),
            column: to_u32(span.start.col()).saturating_add(1),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One node of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The three kinds of YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar. `plain` is false for quoted and block scalars (and `!!str`),
    /// which are always strings; a plain scalar may be a number, bool or null.
    Scalar {
        /// The scalar's text.
        text: String,
        /// Whether it was written without quotes.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicates are kept for the decoder to report).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Whether this is a YAML null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's kind, for messages ("a mapping", "a string").
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar { .. } if self.is_null() => "nothing (null)",
            Value::Scalar { plain: false, .. } => "a string",
            Value::Scalar { text, .. } => {
                if text.parse::<i64>().is_ok() {
                    "an integer"
                } else if text.parse::<f64>().is_ok() {
                    "a number"
                } else if matches!(text.as_str(), "true" | "false" | "True" | "False") {
                    "a boolean"
                } else {
                    "a string"
                }
            }
        }
    }
}

/// One document of a multi-document stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDocument {
    /// Where the document's content starts.
    pub pos: Pos,
    /// Its root node.
    pub root: Node,
}

/// The stream could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// What it says.
    pub message: String,
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// A parser's error, with its place.
fn syntax_error(e: &saphyr_parser::ScanError) -> SyntaxError {
    SyntaxError {
        pos: Pos {
            line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
            column: u32::try_from(e.marker().col())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
        },
        message: format!("invalid YAML: {}", e.info()),
    }
}

/// Puts a finished node where it belongs: into the open sequence, as the
/// open mapping's key or value, or as a document of its own.
fn place(done: Node, stack: &mut [Frame], docs: &mut Vec<RawDocument>) {
    match stack.last_mut() {
        Some(Frame::Seq(_, items)) => items.push(done),
        Some(Frame::Map(_, entries, pending)) => match pending.take() {
            None => *pending = Some(done),
            Some(key) => entries.push((key, done)),
        },
        None => {
            if !done.is_null() {
                docs.push(RawDocument {
                    pos: done.pos,
                    root: done,
                });
            }
        }
    }
}

/// Parses a YAML stream (JSON is YAML too) into its documents. Empty documents
/// (only comments, or a trailing `---`) are left out.
pub fn parse_stream(src: &str) -> Result<Vec<RawDocument>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut nodes = 0usize;
    let mut last_pos = Pos::new(1, 1);
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| syntax_error(&e))?;
        let pos = Pos::from_span(&span);
        last_pos = pos;
        let done = match event {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => continue,
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "YAML aliases (*name) are not accepted: write the value out".into(),
                })
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                Node {
                    pos,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain && !tagged_str,
                    },
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nesting deeper than {MAX_DEPTH} levels is not accepted"),
                    });
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(pos, Vec::new())
                } else {
                    Frame::Map(pos, Vec::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node {
                    pos: p,
                    value: Value::Seq(items),
                },
                Some(Frame::Map(p, entries, _)) => Node {
                    pos: p,
                    value: Value::Map(entries),
                },
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "invalid YAML: unbalanced collection end".into(),
                    })
                }
            },
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!("more than {MAX_NODES} YAML nodes are not accepted"),
            });
        }
        place(done, &mut stack, &mut docs);
    }
    if !stack.is_empty() {
        return Err(SyntaxError {
            pos: last_pos,
            message: "invalid YAML: the document ends inside a collection".into(),
        });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_stream("a: 1\nb:\n  - x\n").expect("parses");
        assert_eq!(docs.len(), 1);
        let Value::Map(entries) = &docs[0].root.value else {
            panic!("expected a map")
        };
        assert_eq!(entries[0].0.pos, Pos::new(1, 1));
        assert_eq!(entries[1].0.pos, Pos::new(2, 1));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a seq")
        };
        assert_eq!(items[0].pos, Pos::new(3, 5));
    }

    #[test]
    fn empty_documents_are_left_out() {
        let docs = parse_stream("---\n# nothing\n---\na: 1\n---\n").expect("parses");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].pos, Pos::new(4, 1));
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let docs = parse_stream("a: \"5\"\nb: 5\nc: !!str 5\n").expect("parses");
        let Value::Map(e) = &docs[0].root.value else {
            panic!()
        };
        assert!(matches!(e[0].1.value, Value::Scalar { plain: false, .. }));
        assert!(matches!(e[1].1.value, Value::Scalar { plain: true, .. }));
        assert!(matches!(e[2].1.value, Value::Scalar { plain: false, .. }));
    }

    #[test]
    fn aliases_are_refused() {
        let err = parse_stream("a: &x [1, 2]\nb: *x\n").expect_err("alias");
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("aliases"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = "[".repeat(100) + &"]".repeat(100);
        let err = parse_stream(&src).expect_err("too deep");
        assert!(err.message.contains("nesting"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_stream("a: 1\n b: [\n").expect_err("bad");
        assert!(err.pos.line >= 2, "{err}");
    }

    #[test]
    fn json_is_accepted() {
        let docs = parse_stream("{\"a\": [1, \"two\"]}").expect("parses");
        assert_eq!(docs.len(), 1);
    }
}
