//! The field tables of `schema.txt` (generated from the Go types by `scripts/protoschema`),
//! parsed once into [`Schema`]: for every message, its fields by number with their JSON name,
//! type and the Go details that decide what goes on the wire and into JSON.

use std::collections::HashMap;
use std::sync::LazyLock;

const SCHEMA_TXT: &str = include_str!("schema.txt");

/// The schema of every kind the codec knows, parsed on first use.
pub(super) static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse(SCHEMA_TXT).expect("schema.txt is valid (a unit test parses it)")
});

/// Wire and JSON form of a non-message value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
    String,
    Bool,
    Int32,
    Int64,
    /// `[]byte`: length-delimited on the wire, base64 in JSON.
    Bytes,
}

/// A field's element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Type {
    Scalar(Scalar),
    /// `metav1.Time`: `{seconds, nanos}`, RFC 3339 to the second in JSON.
    Time,
    /// `metav1.MicroTime`: `{seconds, nanos}`, RFC 3339 to the microsecond in JSON.
    MicroTime,
    /// `metav1.FieldsV1`: `{Raw}` holding JSON, inlined as that JSON.
    FieldsV1,
    /// `resource.Quantity`: `{string}`, a string in JSON.
    Quantity,
    /// `intstr.IntOrString`: `{type, intVal, strVal}`, a number or a string in JSON.
    IntOrString,
    /// `runtime.RawExtension`: `{raw}` holding JSON or a nested protobuf object.
    RawExtension,
    /// Index into [`Schema::messages`].
    Message(usize),
    /// A map: repeated entries `{1: key, 2: value}`.
    Map(Scalar, Box<Type>),
}

#[derive(Debug, Clone)]
pub(super) struct Field {
    pub number: u32,
    /// `None` for an inline field: its message's JSON fields sit in the parent object.
    pub json: Option<String>,
    pub ty: Type,
    pub repeated: bool,
    /// Go holds it by pointer: on the wire only when set, so even a zero value is kept.
    pub ptr: bool,
    /// `json:",omitempty"`: a zero scalar is left out of JSON.
    pub omitempty: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Message {
    pub name: String,
    /// Sorted by number.
    pub fields: Vec<Field>,
}

#[derive(Debug)]
pub(super) struct Schema {
    pub messages: Vec<Message>,
    /// `(apiVersion, kind)` to message index.
    kinds: HashMap<(String, String), usize>,
}

impl Schema {
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .get(&(api_version.to_string(), kind.to_string()))
            .copied()
    }

    pub fn parse(text: &str) -> Result<Schema, String> {
        // Two passes: names first, so that fields can refer to messages defined later.
        let mut index = HashMap::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("message ") {
                let next = index.len();
                if index.insert(name.trim().to_string(), next).is_some() {
                    return Err(format!("message {name} defined twice"));
                }
            }
        }
        let mut messages: Vec<Message> = Vec::with_capacity(index.len());
        let mut kinds = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("schema.txt line {}: {e}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [first, ..] if first.starts_with('#') => {}
                ["kind", api_version, kind, message] => {
                    let i = *index
                        .get(*message)
                        .ok_or_else(|| at(format!("unknown message {message}")))?;
                    kinds.insert((api_version.to_string(), kind.to_string()), i);
                }
                ["message", name] => messages.push(Message {
                    name: name.to_string(),
                    fields: vec![],
                }),
                [number, json, ty, flags @ ..] => {
                    let message = messages
                        .last_mut()
                        .ok_or_else(|| at("field outside a message".into()))?;
                    let number: u32 = number
                        .parse()
                        .map_err(|_| at(format!("bad field number {number}")))?;
                    let ty = parse_type(ty, &index).map_err(at)?;
                    let has = |flag: &str| flags.contains(&flag);
                    if let Some(bad) = flags
                        .iter()
                        .find(|f| !matches!(**f, "inline" | "omitempty" | "ptr" | "rep"))
                    {
                        return Err(at(format!("unknown flag {bad}")));
                    }
                    if message.fields.last().is_some_and(|f| f.number >= number) {
                        return Err(at("fields out of order".into()));
                    }
                    let inline = has("inline");
                    if inline != (*json == "-") || (inline && !matches!(ty, Type::Message(_))) {
                        return Err(at("inline fields are unnamed messages".into()));
                    }
                    message.fields.push(Field {
                        number,
                        json: (!inline).then(|| json.to_string()),
                        ty,
                        repeated: has("rep"),
                        ptr: has("ptr"),
                        omitempty: has("omitempty"),
                    });
                }
                _ => return Err(at(format!("cannot parse {line:?}"))),
            }
        }
        Ok(Schema { messages, kinds })
    }
}

fn parse_scalar(word: &str) -> Option<Scalar> {
    Some(match word {
        "string" => Scalar::String,
        "bool" => Scalar::Bool,
        "int32" => Scalar::Int32,
        "int64" => Scalar::Int64,
        "bytes" => Scalar::Bytes,
        _ => return None,
    })
}

fn parse_type(word: &str, index: &HashMap<String, usize>) -> Result<Type, String> {
    if let Some(s) = parse_scalar(word) {
        return Ok(Type::Scalar(s));
    }
    if let Some(name) = word.strip_prefix("msg:") {
        return index
            .get(name)
            .map(|i| Type::Message(*i))
            .ok_or_else(|| format!("unknown message {name}"));
    }
    if let Some(rest) = word.strip_prefix("map:") {
        let (key, value) = rest
            .split_once(':')
            .ok_or_else(|| format!("bad map type {word}"))?;
        let key = parse_scalar(key).ok_or_else(|| format!("bad map key type {key}"))?;
        return Ok(Type::Map(key, Box::new(parse_type(value, index)?)));
    }
    Ok(match word {
        "time" => Type::Time,
        "microtime" => Type::MicroTime,
        "fieldsv1" => Type::FieldsV1,
        "quantity" => Type::Quantity,
        "intorstring" => Type::IntOrString,
        "rawextension" => Type::RawExtension,
        _ => return Err(format!("unknown type {word}")),
    })
}
