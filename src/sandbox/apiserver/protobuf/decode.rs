//! Protobuf to JSON: the JSON a Go server would produce after reading the message into its Go
//! type and marshalling that (omitempty zero scalars left out, pointers kept when set, Go's
//! special types in their JSON form). Every field number must be in the table: an unknown one is
//! an error, never skipped.

use super::schema::{Field, Scalar, Schema, Type};
use super::wire::{LEN, Reader, VARINT};
use super::{MAGIC, ProtoError};
use serde_json::{Map, Value, json};

/// Nesting limit (messages within messages, and objects within RawExtensions). The served
/// kinds nest about 12 deep; the limit keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// What one field has collected from its occurrences on the wire.
enum Acc<'a> {
    /// Last occurrence wins, as in Go.
    Varint(u64),
    Bytes(&'a [u8]),
    /// Occurrences of a singular message are merged, i.e. concatenated.
    Message(Vec<u8>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

pub(super) fn message(
    schema: &Schema,
    index: usize,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::malformed("messages nested too deeply"));
    }
    let msg = &schema.messages[index];
    let mut accs: Vec<Option<Acc>> = (0..msg.fields.len()).map(|_| None).collect();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (number, wire) = r.key()?;
        let Ok(pos) = msg.fields.binary_search_by_key(&number, |f| f.number) else {
            return Err(ProtoError::UnknownField {
                message: msg.name.clone(),
                number,
            });
        };
        let field = &msg.fields[pos];
        let slot = &mut accs[pos];
        let wrong_wire = || {
            ProtoError::malformed(format!(
                "wrong wire type {wire} for field {} of {}",
                field.number, msg.name
            ))
        };
        match &field.ty {
            Type::Map(key, value) => {
                if wire != LEN {
                    return Err(wrong_wire());
                }
                let (k, v) = map_entry(schema, *key, value, r.bytes()?, depth)?;
                match slot.get_or_insert_with(|| Acc::Map(Map::new())) {
                    Acc::Map(m) => {
                        m.insert(k, v);
                    }
                    _ => unreachable!("a map field only collects map entries"),
                }
            }
            ty if field.repeated => {
                let Acc::List(items) = slot.get_or_insert_with(|| Acc::List(vec![])) else {
                    unreachable!("a repeated field only collects lists")
                };
                match (ty, wire) {
                    (Type::Scalar(s), LEN) if is_varint(*s) => {
                        // Packed (Go never writes it, but any protobuf writer may).
                        let mut packed = Reader::new(r.bytes()?);
                        while !packed.done() {
                            items.push(varint_json(*s, packed.varint()?));
                        }
                    }
                    (Type::Scalar(s), VARINT) if is_varint(*s) => {
                        items.push(varint_json(*s, r.varint()?));
                    }
                    (Type::Scalar(s), LEN) => items.push(bytes_json(*s, r.bytes()?)?),
                    (_, LEN) => {
                        let v = value(schema, ty, r.bytes()?, depth)?;
                        items.push(v.unwrap_or(Value::Null));
                    }
                    _ => return Err(wrong_wire()),
                }
            }
            Type::Scalar(s) if is_varint(*s) => {
                if wire != VARINT {
                    return Err(wrong_wire());
                }
                *slot = Some(Acc::Varint(r.varint()?));
            }
            Type::Scalar(_) => {
                if wire != LEN {
                    return Err(wrong_wire());
                }
                *slot = Some(Acc::Bytes(r.bytes()?));
            }
            _ => {
                if wire != LEN {
                    return Err(wrong_wire());
                }
                let b = r.bytes()?;
                match slot.get_or_insert_with(|| Acc::Message(vec![])) {
                    Acc::Message(buf) => buf.extend_from_slice(b),
                    _ => unreachable!("a message field only collects messages"),
                }
            }
        }
    }
    let mut out = Map::new();
    for (field, acc) in msg.fields.iter().zip(accs) {
        let Some(acc) = acc else { continue };
        let v = match (acc, &field.ty) {
            (Acc::Varint(v), Type::Scalar(s)) => Some(varint_json(*s, v)),
            (Acc::Bytes(b), Type::Scalar(s)) => Some(bytes_json(*s, b)?),
            (Acc::Message(buf), ty) => value(schema, ty, &buf, depth)?,
            (Acc::List(items), _) => (!items.is_empty()).then_some(Value::Array(items)),
            (Acc::Map(m), _) => Some(Value::Object(m)),
            _ => unreachable!("accumulators follow the field's type"),
        };
        let Some(v) = v else { continue };
        match &field.json {
            None => {
                // Inline: the nested message's JSON fields belong to this object.
                if let Value::Object(m) = v {
                    out.extend(m);
                }
            }
            Some(name) => {
                if left_out(field, &v) {
                    continue;
                }
                out.insert(name.clone(), v);
            }
        }
    }
    Ok(out)
}

fn is_varint(s: Scalar) -> bool {
    matches!(s, Scalar::Bool | Scalar::Int32 | Scalar::Int64)
}

/// `omitempty` drops a zero scalar that Go holds by value; a pointer that is set stays.
fn left_out(field: &Field, v: &Value) -> bool {
    if field.ptr || !field.omitempty || !matches!(field.ty, Type::Scalar(_)) {
        return false;
    }
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

fn varint_json(s: Scalar, v: u64) -> Value {
    match s {
        Scalar::Bool => json!(v != 0),
        // Go reads an int32 field into an int32: the high bits are dropped.
        Scalar::Int32 => json!(v as u32 as i32),
        _ => json!(v as i64),
    }
}

fn bytes_json(s: Scalar, b: &[u8]) -> Result<Value, ProtoError> {
    match s {
        Scalar::String => std::str::from_utf8(b)
            .map(|s| json!(s))
            .map_err(|_| ProtoError::malformed("a string field is not valid UTF-8")),
        _ => Ok(serde_json::to_value(k8s_openapi::ByteString(b.to_vec()))
            .map_err(|e| ProtoError::malformed(e.to_string()))?),
    }
}

/// A value of a message-like type; `None` for Go's zero time (JSON null, left out).
fn value(
    schema: &Schema,
    ty: &Type,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtoError> {
    Ok(Some(match ty {
        Type::Message(i) => Value::Object(message(schema, *i, bytes, depth + 1)?),
        Type::Time | Type::MicroTime => {
            if bytes.is_empty() {
                return Ok(None);
            }
            let f = small_fields(bytes, &[(1, VARINT), (2, VARINT)], "Timestamp")?;
            let seconds = f[0].as_ref().map_or(Ok(0), SmallValue::int)?;
            let nanos = f[1].as_ref().map_or(Ok(0), SmallValue::int)? as u32 as i32;
            json!(super::time::format(seconds, nanos, *ty == Type::MicroTime)?)
        }
        Type::Quantity => {
            let f = small_fields(bytes, &[(1, LEN)], "Quantity")?;
            match &f[0] {
                Some(v) => json!(v.string()?),
                None => json!("0"),
            }
        }
        Type::IntOrString => {
            let f = small_fields(bytes, &[(1, VARINT), (2, VARINT), (3, LEN)], "IntOrString")?;
            match f[0].as_ref().map_or(Ok(0), SmallValue::int)? {
                0 => json!(f[1].as_ref().map_or(Ok(0), SmallValue::int)? as u32 as i32),
                1 => json!(f[2].as_ref().map_or(Ok(""), SmallValue::string)?),
                other => {
                    return Err(ProtoError::malformed(format!(
                        "IntOrString has an impossible type {other}"
                    )));
                }
            }
        }
        Type::FieldsV1 | Type::RawExtension => {
            let f = small_fields(bytes, &[(1, LEN)], "RawExtension")?;
            let raw = match &f[0] {
                Some(SmallValue::Bytes(b)) if !b.is_empty() => *b,
                _ => return Ok(Some(Value::Null)),
            };
            if *ty == Type::RawExtension && raw.starts_with(&MAGIC) {
                super::decode_object(raw, None, depth + 1)?
            } else {
                serde_json::from_slice(raw).map_err(|e| {
                    ProtoError::malformed(format!("embedded JSON does not parse: {e}"))
                })?
            }
        }
        Type::Scalar(_) | Type::Map(..) => unreachable!("not message-like"),
    }))
}

fn map_entry(
    schema: &Schema,
    key: Scalar,
    value_ty: &Type,
    bytes: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtoError> {
    let mut k = String::new();
    let mut v = None;
    let mut r = Reader::new(bytes);
    while !r.done() {
        match r.key()? {
            (1, LEN) if key == Scalar::String => {
                k = bytes_json(Scalar::String, r.bytes()?)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            (2, VARINT) if matches!(value_ty, Type::Scalar(s) if is_varint(*s)) => {
                let Type::Scalar(s) = value_ty else {
                    unreachable!()
                };
                v = Some(varint_json(*s, r.varint()?));
            }
            (2, LEN) => {
                let b = r.bytes()?;
                v = match value_ty {
                    Type::Scalar(s) => Some(bytes_json(*s, b)?),
                    ty => Some(value(schema, ty, b, depth)?.unwrap_or(Value::Null)),
                };
            }
            (number, _) => {
                return Err(ProtoError::malformed(format!(
                    "unexpected field {number} in a map entry"
                )));
            }
        }
    }
    let v = match (v, value_ty) {
        (Some(v), _) => v,
        (None, Type::Scalar(Scalar::String | Scalar::Bytes)) => json!(""),
        (None, Type::Quantity) => json!("0"),
        (None, Type::Scalar(_)) => json!(0),
        (None, _) => Value::Null,
    };
    Ok((k, v))
}

/// A field of one of the small fixed messages (Timestamp, Quantity, IntOrString, RawExtension).
enum SmallValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> SmallValue<'a> {
    fn int(&self) -> Result<i64, ProtoError> {
        match self {
            SmallValue::Varint(v) => Ok(*v as i64),
            SmallValue::Bytes(_) => Err(ProtoError::malformed("expected a varint")),
        }
    }

    fn string(&self) -> Result<&'a str, ProtoError> {
        match self {
            SmallValue::Bytes(b) => std::str::from_utf8(b)
                .map_err(|_| ProtoError::malformed("a string field is not valid UTF-8")),
            SmallValue::Varint(_) => Err(ProtoError::malformed("expected a string")),
        }
    }
}

/// Reads a small message whose fields are `expected` (number, wire type), last one wins.
fn small_fields<'a>(
    bytes: &'a [u8],
    expected: &[(u32, u8)],
    name: &str,
) -> Result<Vec<Option<SmallValue<'a>>>, ProtoError> {
    let mut out: Vec<Option<SmallValue>> = expected.iter().map(|_| None).collect();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (number, wire) = r.key()?;
        let Some(i) = expected.iter().position(|e| e.0 == number) else {
            return Err(ProtoError::UnknownField {
                message: name.to_string(),
                number,
            });
        };
        if expected[i].1 != wire {
            return Err(ProtoError::malformed(format!(
                "wrong wire type {wire} for field {number} of {name}"
            )));
        }
        out[i] = Some(if wire == VARINT {
            SmallValue::Varint(r.varint()?)
        } else {
            SmallValue::Bytes(r.bytes()?)
        });
    }
    Ok(out)
}
