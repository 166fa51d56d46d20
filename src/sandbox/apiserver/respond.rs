//! Responses: objects and `Status` errors as JSON or, for clients that accept only protobuf,
//! as `application/vnd.kubernetes.protobuf` (built-in kinds only; a custom resource asked for
//! in protobuf alone is 406 Not Acceptable, as on a real server).

use super::errors::ApiError;
use super::protobuf::{self, ProtoError};
use super::request::Format;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// An object (or list) in the format the client asked for.
pub fn object(
    code: u16,
    body: &Value,
    warnings: &[String],
    format: Format,
) -> Result<Response, ApiError> {
    let (content_type, bytes) = match format {
        Format::Protobuf => (protobuf::MEDIA_TYPE, encode(body)?),
        Format::Json | Format::Table | Format::Metadata | Format::MetadataList => {
            ("application/json", body.to_string().into_bytes())
        }
    };
    let mut resp = Response::builder()
        .status(code)
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private");
    for w in warnings {
        resp = resp.header("warning", format!("299 - {w:?}"));
    }
    resp.body(Body::from(bytes))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A failed request's `Status`, in protobuf when that is all the client takes.
pub fn error(e: ApiError, format: Format) -> Response {
    if format != Format::Protobuf {
        return e.into_response();
    }
    let code = e.code;
    match protobuf::encode(&e.to_status()) {
        Ok(bytes) => Response::builder()
            .status(code)
            .header("content-type", protobuf::MEDIA_TYPE)
            .body(Body::from(bytes))
            .unwrap_or_else(|_| e.into_response()),
        Err(_) => e.into_response(),
    }
}

/// Protobuf for a response; 406 for kinds without protobuf tables.
fn encode(body: &Value) -> Result<Vec<u8>, ApiError> {
    protobuf::encode(body).map_err(|e| match e {
        ProtoError::UnknownKind { .. } => protobuf_not_acceptable(),
        other => ApiError::internal(other.to_string()),
    })
}

/// A kind without protobuf (custom resources) asked for in protobuf alone: the real server's
/// answer, word for word.
pub fn protobuf_not_acceptable() -> ApiError {
    ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, \
         application/vnd.kubernetes.protobuf",
    )
}
