//! The CEL type of a schema node as the API server declares it for cost estimation
//! (apiserver's `common.SchemaDeclType`): what a field holds, and the most elements it can
//! hold (`MaxElements`: a string's length in bytes, a list's items, a map's entries), which is
//! what every size-dependent cost is computed from.

use std::collections::BTreeMap;

use serde_json::Value;

/// kube-apiserver's request size limit, which bounds everything nothing else bounds.
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;
const MIN_DURATION_SIZE: u64 = 3;
const JSON_DATE_SIZE: u64 = 12;
const MIN_DATETIME_SIZE: u64 = 21;
const MAX_DURATION_SIZE: u64 = 32;
const MAX_DATETIME_SIZE: u64 = 32;

/// A declared type.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub kind: DeclKind,
    /// Bytes of a string, items of a list, entries of a map; 0 for everything else.
    pub max_elements: u64,
    /// The fewest bytes a value of this type takes in JSON.
    pub min_serialized_size: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    List(Box<Decl>),
    /// A map (`additionalProperties`): keys are strings with no declared size (0).
    Map(Box<Decl>),
    /// An object with properties: CEL sees a struct, fields by their escaped names.
    Object(BTreeMap<String, Decl>),
    /// `x-kubernetes-int-or-string`.
    Dyn,
}

impl Decl {
    fn simple(kind: DeclKind, min: u64) -> Decl {
        Decl {
            kind,
            max_elements: 0,
            min_serialized_size: min,
        }
    }

    /// The string type of a map's keys: no size.
    pub fn map_key() -> Decl {
        Decl::simple(DeclKind::String, MIN_STRING_SIZE)
    }

    /// The declared type of `schema`; `root` for the root of a resource (or an embedded one),
    /// which always has `apiVersion`, `kind`, `metadata.name` and `metadata.generateName`.
    pub fn of(schema: &Value, root: bool) -> Option<Decl> {
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            let max = match schema.get("maxLength").and_then(Value::as_u64) {
                Some(max) => max * 4,
                None => MAX_REQUEST_SIZE_BYTES - 2,
            };
            return Some(Decl {
                kind: DeclKind::Dyn,
                max_elements: max,
                min_serialized_size: 1,
            });
        }
        let schema = if root {
            with_type_and_object_meta(schema)
        } else {
            schema.clone()
        };
        let max_length = schema.get("maxLength").and_then(Value::as_u64);
        match schema.get("type").and_then(Value::as_str)? {
            "array" => {
                let items = schema.get("items")?;
                let embedded =
                    items.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
                let elem = Decl::of(items, embedded)?;
                let max = match schema.get("maxItems").and_then(Value::as_u64) {
                    Some(max) => max,
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (elem.min_serialized_size + 1),
                };
                Some(Decl {
                    kind: DeclKind::List(Box::new(elem)),
                    max_elements: max,
                    min_serialized_size: 2,
                })
            }
            "object" => {
                if let Some(props) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    let embedded =
                        props.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
                    let elem = Decl::of(props, embedded)?;
                    let max = match schema.get("maxProperties").and_then(Value::as_u64) {
                        Some(max) => max,
                        None => (MAX_REQUEST_SIZE_BYTES - 2) / (elem.min_serialized_size + 6),
                    };
                    return Some(Decl {
                        kind: DeclKind::Map(Box::new(elem)),
                        max_elements: max,
                        min_serialized_size: 2,
                    });
                }
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut fields = BTreeMap::new();
                let mut min = 2;
                for (name, prop) in schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let embedded =
                        prop.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
                    let Some(field) = Decl::of(prop, embedded) else {
                        continue;
                    };
                    if required.contains(&name.as_str()) && prop.get("default").is_none() {
                        min += name.len() as u64 + field.min_serialized_size + 4;
                    }
                    if let Some(escaped) = escape(name) {
                        fields.insert(escaped, field);
                    }
                }
                Some(Decl {
                    kind: DeclKind::Object(fields),
                    max_elements: 0,
                    min_serialized_size: min,
                })
            }
            "string" => Some(match schema.get("format").and_then(Value::as_str) {
                Some("byte") => Decl {
                    kind: DeclKind::Bytes,
                    max_elements: max_length.unwrap_or(MAX_REQUEST_SIZE_BYTES - 2),
                    min_serialized_size: MIN_STRING_SIZE,
                },
                Some("duration") => Decl {
                    kind: DeclKind::Duration,
                    max_elements: MAX_DURATION_SIZE,
                    min_serialized_size: MIN_DURATION_SIZE,
                },
                Some("date") => Decl {
                    kind: DeclKind::Timestamp,
                    max_elements: JSON_DATE_SIZE,
                    min_serialized_size: JSON_DATE_SIZE,
                },
                Some("date-time") => Decl {
                    kind: DeclKind::Timestamp,
                    max_elements: MAX_DATETIME_SIZE,
                    min_serialized_size: MIN_DATETIME_SIZE,
                },
                _ => {
                    let enum_max = schema.get("enum").and_then(Value::as_array).map(|values| {
                        values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.len() as u64)
                            .max()
                            .unwrap_or(0)
                    });
                    Decl {
                        kind: DeclKind::String,
                        max_elements: match (max_length, enum_max) {
                            (Some(max), _) => max * 4,
                            (None, Some(max)) => max,
                            (None, None) => MAX_REQUEST_SIZE_BYTES - 2,
                        },
                        min_serialized_size: MIN_STRING_SIZE,
                    }
                }
            }),
            "boolean" => Some(Decl::simple(DeclKind::Bool, MIN_BOOL_SIZE)),
            "number" => Some(Decl::simple(DeclKind::Double, MIN_NUMBER_SIZE)),
            "integer" => Some(Decl::simple(DeclKind::Int, MIN_NUMBER_SIZE)),
            _ => None,
        }
    }

    /// The field `name` (escaped) of an object.
    pub fn field(&self, name: &str) -> Option<&Decl> {
        match &self.kind {
            DeclKind::Object(fields) => fields.get(name),
            _ => None,
        }
    }

    /// The elements of a list, the values of a map.
    pub fn elem(&self) -> Option<&Decl> {
        match &self.kind {
            DeclKind::List(elem) | DeclKind::Map(elem) => Some(elem),
            _ => None,
        }
    }
}

/// The root of a resource always declares `apiVersion`, `kind`, `metadata.name` and
/// `metadata.generateName`, as plain strings (whatever else `metadata` says).
fn with_type_and_object_meta(schema: &Value) -> Value {
    let mut schema = schema.clone();
    let string = serde_json::json!({"type": "string"});
    let Some(map) = schema.as_object_mut() else {
        return schema;
    };
    let props = map
        .entry("properties")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(props) = props.as_object_mut() {
        props.insert("kind".into(), string.clone());
        props.insert("apiVersion".into(), string.clone());
        props.insert(
            "metadata".into(),
            serde_json::json!({"type": "object", "properties": {"name": string, "generateName": string}}),
        );
    }
    schema
}

const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property name as CEL sees it (apiserver's `cel.Escape`); `None` when it cannot be
/// escaped (the field is then not visible to rules).
pub fn escape(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
    {
        return None;
    }
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '_' if chars.get(i + 1) == Some(&'_') => {
                out.push_str("__underscores__");
                i += 2;
                continue;
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}
