//! JSON to protobuf, writing what Go's generated `Marshal` writes for the same object: fields in
//! number order; scalars and messages that Go holds by value always (their zero value when the
//! JSON lacks them), pointers only when set, lists element by element, maps sorted by key.
//! JSON members the table does not know are not written: a real server would not have stored
//! them in the first place (it drops unknown fields of built-in kinds on write).

use super::schema::{Field, Scalar, Schema, Type};
use super::wire::{LEN, VARINT, Writer};
use super::{ProtoError, time};
use serde_json::{Map, Value};

pub(super) fn message(
    schema: &Schema,
    index: usize,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<Vec<u8>, ProtoError> {
    let mut w = Writer::default();
    for field in &schema.messages[index].fields {
        match (&field.json, &field.ty) {
            // Inline: the nested message reads its fields from this same object.
            (None, Type::Message(i)) => {
                w.bytes_field(field.number, &message(schema, *i, obj, path)?);
            }
            (None, _) => unreachable!("the schema parser only allows inline messages"),
            (Some(name), _) => {
                let v = obj.get(name).filter(|v| !v.is_null());
                write_field(schema, field, v, &format!("{path}.{name}"), &mut w)?;
            }
        }
    }
    Ok(w.buf)
}

fn write_field(
    schema: &Schema,
    field: &Field,
    v: Option<&Value>,
    path: &str,
    w: &mut Writer,
) -> Result<(), ProtoError> {
    let n = field.number;
    if let Type::Map(key, value_ty) = &field.ty {
        let Some(v) = v else { return Ok(()) };
        let m = v.as_object().ok_or_else(|| mismatch(path, "an object"))?;
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            let mut entry = Writer::default();
            scalar(&mut entry, 1, *key, &Value::String(k.clone()), path)?;
            let item_path = format!("{path}[{k:?}]");
            write_value(schema, value_ty, 2, &m[k], &item_path, &mut entry)?;
            w.bytes_field(n, &entry.buf);
        }
        return Ok(());
    }
    if field.repeated {
        let Some(v) = v else { return Ok(()) };
        let items = v.as_array().ok_or_else(|| mismatch(path, "a list"))?;
        for (i, item) in items.iter().enumerate() {
            write_value(schema, &field.ty, n, item, &format!("{path}[{i}]"), w)?;
        }
        return Ok(());
    }
    match (v, field.ptr) {
        (Some(v), _) => write_value(schema, &field.ty, n, v, path, w),
        (None, true) => Ok(()),
        // Held by value in Go: written even when zero.
        (None, false) => write_zero(schema, &field.ty, n, w),
    }
}

fn write_zero(schema: &Schema, ty: &Type, n: u32, w: &mut Writer) -> Result<(), ProtoError> {
    match ty {
        Type::Scalar(Scalar::String | Scalar::Bytes) => w.bytes_field(n, &[]),
        Type::Scalar(_) => w.varint_field(n, 0),
        Type::Message(i) => w.bytes_field(n, &message(schema, *i, &Map::new(), "")?),
        Type::Quantity => w.bytes_field(n, &quantity("0")),
        Type::IntOrString => w.bytes_field(n, &int_or_string(0, 0, "")),
        // Zero times and empty raw messages marshal to nothing.
        Type::Time | Type::MicroTime | Type::FieldsV1 | Type::RawExtension => w.bytes_field(n, &[]),
        Type::Map(..) => {}
    }
    Ok(())
}

fn write_value(
    schema: &Schema,
    ty: &Type,
    n: u32,
    v: &Value,
    path: &str,
    w: &mut Writer,
) -> Result<(), ProtoError> {
    match ty {
        Type::Scalar(s) => scalar(w, n, *s, v, path)?,
        Type::Message(i) => {
            let obj = match v {
                Value::Null => &Map::new(),
                Value::Object(m) => m,
                _ => return Err(mismatch(path, "an object")),
            };
            w.bytes_field(n, &message(schema, *i, obj, path)?);
        }
        Type::Time | Type::MicroTime => {
            let mut t = Writer::default();
            if let Some(text) = v.as_str() {
                let (seconds, nanos) = time::parse(text)?;
                t.varint_field(1, seconds as u64);
                t.varint_field(2, nanos as i64 as u64);
            } else if !v.is_null() {
                return Err(mismatch(path, "a timestamp"));
            }
            w.bytes_field(n, &t.buf);
        }
        Type::Quantity => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(num) => num.to_string(),
                _ => return Err(mismatch(path, "a quantity")),
            };
            w.bytes_field(n, &quantity(&text));
        }
        Type::IntOrString => {
            let bytes = match v {
                Value::String(s) => int_or_string(1, 0, s),
                Value::Number(num) => {
                    let i = num
                        .as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| mismatch(path, "an int32 or a string"))?;
                    int_or_string(0, i, "")
                }
                _ => return Err(mismatch(path, "an int32 or a string")),
            };
            w.bytes_field(n, &bytes);
        }
        Type::FieldsV1 | Type::RawExtension => {
            let mut raw = Writer::default();
            if !v.is_null() {
                raw.bytes_field(1, v.to_string().as_bytes());
            }
            w.bytes_field(n, &raw.buf);
        }
        Type::Map(..) => return Err(mismatch(path, "not a map inside a list")),
    }
    Ok(())
}

fn scalar(w: &mut Writer, n: u32, s: Scalar, v: &Value, path: &str) -> Result<(), ProtoError> {
    match (s, v) {
        (Scalar::String, Value::String(text)) => w.bytes_field(n, text.as_bytes()),
        (Scalar::Bytes, Value::String(_)) => {
            let b: k8s_openapi::ByteString =
                serde_json::from_value(v.clone()).map_err(|_| mismatch(path, "base64 data"))?;
            w.bytes_field(n, &b.0);
        }
        (Scalar::Bool, Value::Bool(b)) => w.varint_field(n, u64::from(*b)),
        (Scalar::Int32, Value::Number(num)) => {
            let i = num
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| mismatch(path, "an int32"))?;
            // Go widens a negative int32 to 64 bits: ten bytes on the wire.
            w.varint_field(n, i64::from(i) as u64);
        }
        (Scalar::Int64, Value::Number(num)) => {
            let i = num.as_i64().ok_or_else(|| mismatch(path, "an int64"))?;
            w.varint_field(n, i as u64);
        }
        (s, _) => {
            let want = match s {
                Scalar::String => "a string",
                Scalar::Bool => "a boolean",
                Scalar::Int32 => "an int32",
                Scalar::Int64 => "an int64",
                Scalar::Bytes => "base64 data",
            };
            return Err(mismatch(path, want));
        }
    }
    Ok(())
}

fn quantity(text: &str) -> Vec<u8> {
    let mut q = Writer::default();
    q.bytes_field(1, text.as_bytes());
    q.buf
}

fn int_or_string(kind: u64, int: i32, string: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.key(1, VARINT);
    w.varint(kind);
    w.key(2, VARINT);
    w.varint(i64::from(int) as u64);
    w.key(3, LEN);
    w.varint(string.len() as u64);
    w.buf.extend_from_slice(string.as_bytes());
    w.buf
}

fn mismatch(path: &str, want: &str) -> ProtoError {
    ProtoError::unencodable(format!("{} must be {want}", path.trim_start_matches('.')))
}
