//! Turning a located [`Node`] tree into typed values, collecting every error.
//!
//! Each type implements [`Decode`]. A decoder reports problems into the
//! [`Ctx`] (with the node's position and the field path) and returns `None`
//! for a value it could not build; its parent goes on with its other fields,
//! so one pass finds every mistake in a document. The context also records the
//! position of every value it decodes by path ([`Locations`]), so the
//! semantic checks that run on typed values can still point at a line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::tree::{Node, Pos, Value};

/// One problem found in a document: where, at which field, and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    /// The source's name (a file path, or `<request>` for an API body).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The field path, like `spec.strategy.canary.steps[2].setWeight`; empty
    /// for a problem with the document as a whole.
    pub path: String,
    /// What is wrong, in a sentence a person can act on.
    pub message: String,
}

impl Diagnostic {
    /// The message with its field path in front, as printed after the location.
    pub fn text(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COLUMN: path: message`, the form `rolloutctl validate` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file,
            self.line,
            self.column,
            self.text()
        )
    }
}

/// Positions of the values of one document, by field path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locations {
    map: HashMap<String, Pos>,
    root: Pos,
}

impl Locations {
    /// Where the value at `path` starts; the document's start when unknown
    /// (for a defaulted field that was never written).
    pub fn get(&self, path: &str) -> Pos {
        self.map.get(path).copied().unwrap_or(self.root)
    }

    /// Whether the document wrote a value at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The state of one document's decoding.
#[derive(Debug)]
pub struct Ctx {
    file: String,
    path: Vec<Seg>,
    diags: Vec<Diagnostic>,
    locs: Locations,
}

impl Ctx {
    /// A context for a document of `file` that starts at `root`.
    pub fn new(file: &str, root: Pos) -> Self {
        Ctx {
            file: file.to_string(),
            path: Vec::new(),
            diags: Vec::new(),
            locs: Locations {
                map: HashMap::new(),
                root,
            },
        }
    }

    /// The current field path, rendered.
    pub fn path(&self) -> String {
        render_path(&self.path)
    }

    /// Reports a problem at `pos` for the current path.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        let path = clip(self.path(), MAX_MESSAGE);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path,
            message: clip(message.into(), MAX_MESSAGE),
        });
    }

    /// Decodes `node` as a `T` at the current path, recording its position.
    pub fn decode<T: Decode>(&mut self, node: &Node) -> Option<T> {
        let path = self.path();
        self.locs.map.entry(path).or_insert(node.pos);
        T::decode(node, self)
    }

    /// Runs `f` with `key` appended to the path.
    pub fn at_key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Key(key.to_string()));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn at_index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Index(index));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Opens `node` as a mapping with the given field names. Reports a node that
    /// is not a mapping, keys that are not strings, duplicate keys, and unknown
    /// fields (with the closest known name when one is near).
    pub fn fields<'n>(&mut self, node: &'n Node, known: &[&'static str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut seen: BTreeMap<&'n str, (Pos, &'n Node)> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (key, value) in entries {
            let Value::Scalar { text, .. } = &key.value else {
                self.error(key.pos, "mapping keys must be strings");
                continue;
            };
            if text.len() > MAX_KEY {
                self.error(
                    key.pos,
                    format!(
                        "unknown field `{}` (a field name of {} bytes; none is longer than {MAX_KEY})",
                        shown(text),
                        text.len()
                    ),
                );
                unknown.push(None);
                continue;
            }
            if let Some((first, _)) = seen.get(text.as_str()) {
                let first = *first;
                self.at_key(text, |cx| {
                    cx.error(
                        key.pos,
                        format!("duplicate field (first given at line {})", first.line),
                    )
                });
                continue;
            }
            if !known.contains(&text.as_str()) {
                self.error(key.pos, unknown_field_message(text, known));
                unknown.push(closest(text, known));
                continue;
            }
            seen.insert(text.as_str(), (key.pos, value));
        }
        Some(Fields {
            pos: node.pos,
            entries: seen,
            unknown,
        })
    }

    /// Finishes: the diagnostics found, and the positions of the values.
    pub fn finish(self) -> (Vec<Diagnostic>, Locations) {
        (self.diags, self.locs)
    }
}

fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// `unknown field `x``, with a suggestion when a known name is close, else the list.
pub fn unknown_field_message(name: &str, known: &[&str]) -> String {
    let name = shown(name);
    match closest(&name, known) {
        Some(best) => format!("unknown field `{name}`, did you mean `{best}`?"),
        None => format!(
            "unknown field `{name}` (expected one of: {})",
            known.join(", ")
        ),
    }
}

/// The candidate closest to `name`, when one is close enough to be a typo.
/// Bounded work whatever the input: a name longer than [`MAX_KEY`] gets no
/// suggestion, only candidates whose length could be within the allowed
/// distance are compared, and at most 1,000 of them.
pub fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if name.len() > MAX_KEY {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let allowed = |c: &str| 2.max(c.len() / 4);
    candidates
        .iter()
        .filter(|c| c.len() <= MAX_KEY && c.len().abs_diff(name.len()) <= allowed(c))
        .take(1_000)
        .map(|c| {
            let d = strsim::levenshtein(&lower, &c.to_ascii_lowercase());
            (d, *c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The fields of one mapping, by name.
pub struct Fields<'n> {
    pos: Pos,
    entries: BTreeMap<&'n str, (Pos, &'n Node)>,
    /// For each unknown field, the known name it was suggested to be.
    unknown: Vec<Option<&'static str>>,
}

impl<'n> Fields<'n> {
    /// Where the mapping starts.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Where the value of field `name` starts (the mapping's start when
    /// absent).
    pub fn pos_of(&self, name: &str) -> Pos {
        self.entries.get(name).map_or(self.pos, |(_, n)| n.pos)
    }

    /// Whether the mapping had fields that were reported unknown.
    pub fn had_unknown(&self) -> bool {
        !self.unknown.is_empty()
    }

    /// Whether the field is present with a non-null value.
    pub fn has(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|(_, n)| !n.is_null())
    }

    /// The raw node of a field, when present.
    pub fn node(&self, name: &str) -> Option<&'n Node> {
        self.entries.get(name).map(|(_, n)| *n)
    }

    /// A required field: reports it missing (or null) at the mapping.
    pub fn req<T: Decode>(&self, cx: &mut Ctx, name: &str) -> Option<T> {
        match self.entries.get(name) {
            Some((_, node)) if !node.is_null() => cx.at_key(name, |cx| cx.decode(node)),
            Some((key_pos, _)) => {
                let key_pos = *key_pos;
                cx.at_key(name, |cx| cx.error(key_pos, "a value is required"));
                None
            }
            // A misspelling of it was already reported with a suggestion.
            None if self.unknown.contains(&Some(name)) => None,
            None => {
                cx.error(self.pos, format!("missing field `{name}`"));
                None
            }
        }
    }

    /// An optional field: absent and null both mean "not given". Returns
    /// `Err(())` when it was given but invalid (already reported).
    #[allow(clippy::result_unit_err)]
    pub fn opt<T: Decode>(&self, cx: &mut Ctx, name: &str) -> Result<Option<T>, ()> {
        match self.entries.get(name) {
            Some((_, node)) if !node.is_null() => {
                cx.at_key(name, |cx| cx.decode(node)).map(Some).ok_or(())
            }
            _ => Ok(None),
        }
    }

    /// An optional field with a default.
    pub fn or<T: Decode>(&self, cx: &mut Ctx, name: &str, default: T) -> Option<T> {
        self.opt(cx, name).ok().map(|v| v.unwrap_or(default))
    }
}

/// A type that can be read from a located node.
pub trait Decode: Sized {
    /// Reads `node`, reporting problems into `cx`; `None` when it could not.
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self>;
}

/// The longest scalar value accepted anywhere in a document, in bytes
/// (fields with a shorter limit of their own check it too). Checked before
/// anything else looks at the value.
pub const MAX_SCALAR: usize = 4096;

/// The longest field name worth comparing with the known ones.
pub const MAX_KEY: usize = 128;

/// The most problems reported for one apply or validation; the rest are
/// counted.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The longest message or path kept in a diagnostic (a value quoted in it
/// is cut first, see [`shown`]).
pub(crate) const MAX_MESSAGE: usize = 1024;

/// A value as quoted in a message: at most 64 characters, then how long it
/// was.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 64;
    match s.char_indices().nth(KEEP) {
        None => std::borrow::Cow::Borrowed(s),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len())),
    }
}

/// `s` cut to `max` bytes (at a character boundary), saying so.
pub(crate) fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let len = s.len();
        s.truncate(cut);
        s.push_str(&format!("… (cut from {len} bytes)"));
    }
    s
}

/// Reads the text of a scalar, reporting a collection or one longer than
/// [`MAX_SCALAR`].
pub fn scalar<'n>(node: &'n Node, cx: &mut Ctx, what: &str) -> Option<(&'n str, bool)> {
    match &node.value {
        Value::Scalar { text, .. } if text.len() > MAX_SCALAR => {
            cx.error(
                node.pos,
                format!(
                    "{what} of {} bytes is too long: at most {MAX_SCALAR} are accepted",
                    text.len()
                ),
            );
            None
        }
        Value::Scalar { text, plain } if !node.is_null() => Some((text.as_str(), *plain)),
        _ => {
            cx.error(
                node.pos,
                format!("expected {what}, found {}", node.describe()),
            );
            None
        }
    }
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        scalar(node, cx, "a string").map(|(t, _)| t.to_string())
    }
}

impl Decode for bool {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        match scalar(node, cx, "true or false")? {
            ("true" | "True" | "TRUE", true) => Some(true),
            ("false" | "False" | "FALSE", true) => Some(false),
            _ => {
                cx.error(
                    node.pos,
                    format!("expected true or false, found {}", node.describe()),
                );
                None
            }
        }
    }
}

macro_rules! decode_uint {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
                let (text, plain) = scalar(node, cx, "a whole number")?;
                let parsed = if plain { text.parse::<i128>().ok() } else { None };
                match parsed {
                    Some(n) if n >= 0 && n <= <$t>::MAX as i128 => Some(n as $t),
                    Some(n) if n < 0 => {
                        cx.error(node.pos, format!("{n} is negative; expected a whole number, 0 or more"));
                        None
                    }
                    Some(n) => {
                        cx.error(node.pos, format!("{n} is too large (at most {})", <$t>::MAX));
                        None
                    }
                    None => {
                        cx.error(
                            node.pos,
                            format!("expected a whole number, found {} `{text}`", node.describe()),
                        );
                        None
                    }
                }
            }
        }
    )*};
}
decode_uint!(u16, u32, u64);

impl Decode for f64 {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let (text, plain) = scalar(node, cx, "a number")?;
        let parsed = if plain {
            text.parse::<f64>().ok().filter(|v| v.is_finite())
        } else {
            None
        };
        if parsed.is_none() {
            cx.error(
                node.pos,
                format!("expected a number, found {} `{text}`", node.describe()),
            );
        }
        parsed
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.error(
                node.pos,
                format!("expected a list, found {}", node.describe()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match cx.at_index(i, |cx| cx.decode::<T>(item)) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

impl Decode for BTreeMap<String, String> {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.error(
                node.pos,
                format!("expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(k) = cx.decode::<String>(key) else {
                ok = false;
                continue;
            };
            if out.contains_key(&k) {
                cx.at_key(&k, |cx| cx.error(key.pos, "duplicate key"));
                ok = false;
                continue;
            }
            match cx.at_key(&k, |cx| cx.decode::<String>(value)) {
                Some(v) => {
                    out.insert(k, v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_for_typos_only() {
        let known = ["setWeight", "pause"];
        assert_eq!(closest("setweight", &known), Some("setWeight"));
        assert_eq!(closest("setWieght", &known), Some("setWeight"));
        assert_eq!(closest("puase", &known), Some("pause"));
        assert_eq!(closest("analysis", &known), None);
    }

    #[test]
    fn paths_render_like_json_paths() {
        let path = vec![
            Seg::Key("spec".into()),
            Seg::Key("steps".into()),
            Seg::Index(2),
            Seg::Key("setWeight".into()),
        ];
        assert_eq!(render_path(&path), "spec.steps[2].setWeight");
    }
}
