//! YAML text to JSON values, remembering the line every node came from.
//!
//! The checks work on `serde_json::Value` (the shape the API server sees after it converts the
//! YAML), and report problems by JSON path (`spec.faults[0].networkLatency.latency`). This
//! module keeps the bridge back to the file: a [`LineIndex`] per document maps each path to the
//! 1-based line of the key that holds it (or of the list item), counted across the whole
//! stream so that line numbers in the second document of a file point into that document.
//!
//! Parsing uses serde-saphyr with its default budget (depth 64, alias and node limits), so a
//! hostile file (alias bombs, deep nesting) fails with an error instead of exhausting memory or
//! the stack. Pure; no IO.

use std::{collections::HashMap, fmt};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// A YAML document converted to JSON, with its line index.
#[derive(Debug, Clone)]
pub struct ParsedDocument {
    pub value: Value,
    pub lines: LineIndex,
}

/// A file that is not YAML at all, with the line the parser stopped at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Maps a JSON path of one document to a line of the file.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
    root: usize,
}

impl LineIndex {
    /// The line of the document's first node.
    pub fn root(&self) -> usize {
        self.root
    }

    /// The line of `path`, or of its closest ancestor present in the file (a missing required
    /// field is reported on the line of the object that lacks it).
    pub fn line_of(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return *line;
            }
            match parent_path(path) {
                Some(parent) => path = parent,
                None => return self.root,
            }
        }
    }
}

/// `spec.faults[0].latency` -> `spec.faults[0]` -> `spec.faults` -> `spec` -> None.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind(['.', '['].as_ref())
    };
    match cut {
        Some(0) | None => Some(""),
        Some(i) if path.as_bytes().get(i) == Some(&b'.') => Some(&path[..i]),
        Some(i) => Some(&path[..i]),
    }
}

/// Appends a key to a path the way Kubernetes prints field paths: `a.b` for plain names,
/// `a[app.kubernetes.io/name]` for map keys that are not identifiers.
pub fn join_key(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (base.is_empty(), plain) {
        (true, true) => key.to_string(),
        (true, false) => format!("[{key}]"),
        (false, true) => format!("{base}.{key}"),
        (false, false) => format!("{base}[{key}]"),
    }
}

pub fn join_index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// How deeply mappings and lists may nest.
pub const MAX_DEPTH: usize = 32;

/// Parses every document of a YAML stream. Empty documents (only comments, or nothing between
/// two `---`) are skipped, as kubectl skips them.
pub fn parse_documents(text: &str) -> Result<Vec<ParsedDocument>, YamlError> {
    // Non-finite floats (`.inf`) become strings so the schema check reports them on their line
    // (the API server cannot hold them in JSON either).
    // Depth: the deepest faultline manifest (a GameDay's stage experiment's fault scope selector
    // values) nests 16 levels; 32 leaves room and keeps the recursive deserializer well inside a
    // 2 MiB thread stack even in debug builds (the default of 64 does not).
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        with_snippet: false,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
    };
    let nodes: Vec<Spanned<Node>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|err| YamlError {
            line: err
                .location()
                .map_or(1, |l| usize::try_from(l.line()).unwrap_or(1).max(1)),
            message: yaml_message(&err),
        })?;
    let mut docs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut lines = HashMap::new();
        let root = line(&node);
        let value = to_json(node, "", &mut lines)?;
        docs.push(ParsedDocument {
            value,
            lines: LineIndex { lines, root },
        });
    }
    Ok(docs)
}

fn yaml_message(err: &serde_saphyr::Error) -> String {
    // serde-saphyr appends " at line X column Y"; we print the line ourselves.
    let text = err.to_string();
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("key \"{key}\" appears twice in the same mapping; keep one");
    }
    if text.starts_with("budget breached: Depth") {
        return format!(
            "nested more than {MAX_DEPTH} levels deep; no faultline manifest needs that"
        );
    }
    if let Some(rest) = text.strip_prefix("budget breached: ") {
        let limits = serde_saphyr::Budget::default();
        let over = match rest.split([' ', '{']).next() {
            Some("Documents") => format!("more than {} documents", limits.max_documents),
            Some("Nodes") => format!(
                "more than {} YAML nodes (keys, values and list items; an alias counts every node it repeats)",
                limits.max_nodes
            ),
            Some("Aliases") => format!("more than {} aliases (*name)", limits.max_aliases),
            Some("Anchors") => format!("more than {} anchors (&name)", limits.max_anchors),
            Some("Events") => format!("more than {} YAML events", limits.max_events),
            _ => "more YAML".to_string(),
        };
        return format!(
            "{over}, more than faultline reads from one file: split it into several files"
        );
    }
    format!("not valid YAML: {text}")
}

fn line<T>(node: &Spanned<T>) -> usize {
    usize::try_from(node.referenced.line()).unwrap_or(0).max(1)
}

fn to_json(
    node: Spanned<Node>,
    path: &str,
    lines: &mut HashMap<String, usize>,
) -> Result<Value, YamlError> {
    Ok(match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::UInt(u) => Value::Number(u.into()),
        Node::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let item_path = join_index(path, i);
                lines.insert(item_path.clone(), line(&item));
                out.push(to_json(item, &item_path, lines)?);
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let mut out = Map::new();
            for (key, value) in entries {
                let key_line = line(&key);
                let key = match key.value {
                    Node::Str(s) => s,
                    Node::Int(i) => i.to_string(),
                    Node::UInt(u) => u.to_string(),
                    Node::Bool(b) => b.to_string(),
                    Node::Float(f) => f.to_string(),
                    Node::Null => "null".to_string(),
                    Node::Seq(_) | Node::Map(_) => {
                        return Err(YamlError {
                            line: key_line,
                            message: "a mapping key must be a plain value, not a list or mapping"
                                .into(),
                        });
                    }
                };
                let child_path = join_key(path, &key);
                lines.insert(child_path.clone(), key_line);
                let child = to_json(value, &child_path, lines)?;
                out.insert(key, child);
            }
            Value::Object(out)
        }
    })
}

/// A YAML node as serde-saphyr resolves it, children with their spans.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        // Beyond 64 bits the API server cannot hold the number either; keep it as a float
        // so that the schema check reports it rather than the parser.
        Ok(Node::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<Node>, Spanned<Node>>()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_the_line_of_their_key_or_list_item() {
        let text = "apiVersion: v1\nspec:\n  faults:\n  - networkLatency:\n      latency: fast\n  - podKill: {}\n";
        let docs = parse_documents(text).unwrap();
        let lines = &docs[0].lines;
        assert_eq!(lines.line_of("spec"), 2);
        assert_eq!(lines.line_of("spec.faults[0].networkLatency.latency"), 5);
        assert_eq!(lines.line_of("spec.faults[1]"), 6);
        assert_eq!(lines.line_of("spec.faults[1].podKill"), 6);
    }

    #[test]
    fn a_missing_path_falls_back_to_its_closest_ancestor() {
        let docs = parse_documents("kind: X\nspec:\n  target:\n    mode: Fixed\n").unwrap();
        assert_eq!(docs[0].lines.line_of("spec.target.value"), 3);
        assert_eq!(docs[0].lines.line_of("spec.faults[3].podKill"), 2);
        assert_eq!(docs[0].lines.line_of("status"), 1);
    }

    #[test]
    fn counts_lines_across_documents_of_a_stream() {
        let text = "a: 1\n---\n# only a comment\n---\nkind: X\nspec:\n  duration: 5\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2, "the empty document is skipped");
        assert_eq!(docs[1].lines.root(), 5);
        assert_eq!(docs[1].lines.line_of("spec.duration"), 7);
    }

    #[test]
    fn map_keys_that_are_not_identifiers_are_bracketed() {
        let docs = parse_documents("labels:\n  app.kubernetes.io/name: x\n").unwrap();
        assert_eq!(docs[0].lines.line_of("labels[app.kubernetes.io/name]"), 2);
        assert_eq!(
            parent_path("labels[app.kubernetes.io/name]"),
            Some("labels")
        );
        assert_eq!(parent_path("a.b[0]"), Some("a.b"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn reads_scalars_like_kubectl() {
        let docs = parse_documents("a: yes\nb: '5'\nc: 5\nd: ~\ne: 1.5\nf: .inf\n").unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": true, "b": "5", "c": 5, "d": null, "e": 1.5, "f": ".inf"})
        );
    }

    #[test]
    fn reports_syntax_errors_and_duplicate_keys_with_their_line() {
        let err = parse_documents("a: 1\nb: [1\nc: 2\n").unwrap_err();
        assert!(err.message.starts_with("not valid YAML"), "{err}");
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.message,
            "key \"a\" appears twice in the same mapping; keep one"
        );
    }

    #[test]
    fn rejects_alias_bombs_and_deep_nesting_without_blowing_up() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(parse_documents(&bomb).is_err());
        let deep = "[".repeat(100_000);
        assert!(parse_documents(&deep).is_err());
        let deep_block: String = (0..500).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(parse_documents(&deep_block).is_err());
    }
}
