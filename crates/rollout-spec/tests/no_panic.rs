//! No input makes the parser or the validator panic: arbitrary text, and
//! mutations of a valid document set (the likelier shape of a real mistake).

use proptest::prelude::*;
use rollout_spec::load;

const BASE: &str = include_str!("valid-base.yaml");

/// Pieces of YAML syntax that mutations splice in.
const PIECES: &[&str] = &[
    ":", "- ", "[", "]", "{", "}", "\n", "  ", "---\n", "&a ", "*a", "!!str ", "\"", "'", "|\n",
    ">\n", "#", "~", "null", "-1", "101", "1e400", "0x1F", "%", "5m", "p99", "\t", "? ", ",",
    "\u{feff}", "é", "arn:aws:", "…",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), 0..PIECES.len()).prop_map(|(a, p)| Mutation::Insert(a, p)),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, m: &Mutation) -> String {
    match *m {
        Mutation::Delete(a, n) => {
            let start = boundary(&s, a);
            let end = boundary(&s, start.saturating_add(n).min(s.len()));
            if end > start {
                s.replace_range(start..end, "");
            }
        }
        Mutation::Insert(a, p) => {
            let at = boundary(&s, a);
            s.insert_str(at, PIECES[p]);
        }
        Mutation::Duplicate(a, n) => {
            let start = boundary(&s, a);
            let end = boundary(&s, start.saturating_add(n).min(s.len()));
            let copy = s[start..end].to_string();
            s.insert_str(end, &copy);
        }
        Mutation::Truncate(a) => {
            let at = boundary(&s, a);
            s.truncate(at);
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = load([("fuzz.yaml", text.as_str())], &[]);
    }

    #[test]
    fn yamlish_text_never_panics(parts in proptest::collection::vec(0..PIECES.len(), 0..80)) {
        let text: String = parts.iter().map(|&p| PIECES[p]).collect();
        let _ = load([("fuzz.yaml", text.as_str())], &[]);
    }

    #[test]
    fn mutated_documents_never_panic(muts in proptest::collection::vec(mutation(), 1..6)) {
        let text = muts.iter().fold(BASE.to_string(), apply);
        match load([("fuzz.yaml", text.as_str())], &[]) {
            Ok(_) => {}
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in &diags {
                    prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                    prop_assert!(!d.message.is_empty());
                }
            }
        }
    }
}

#[test]
fn the_base_document_is_valid() {
    let set = load([("base", BASE)], &[]).expect("valid");
    assert_eq!(set.len(), 2);
}
