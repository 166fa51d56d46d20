//! Errors of the embedded API server, rendered as `meta/v1` `Status` bodies.
//!
//! Every failure a handler can produce is an [`ApiError`]; it carries the HTTP code and the
//! machine-readable `reason` the real kube-apiserver would use, so that `kube::Error::Api` and
//! kubectl see the same thing they would see against a real cluster. Messages follow the real
//! server's wording where clients or humans rely on it (`pods "x" not found`, `... is invalid:`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One `details.causes[]` entry of a Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub message: String,
    pub reason: String,
}

/// `details` of a Status.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// The plural resource for NotFound/AlreadyExists/Conflict, the Kind for Invalid.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    /// `retryAfterSeconds`, also sent as a `Retry-After` header (429 and friends).
    pub retry_after_seconds: Option<u32>,
}

/// A failed request, convertible into a `Status` response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed to keep `Result<_, ApiError>` small.
    pub details: Box<Details>,
}

/// `plural` or `plural.group`, the way the real server names resources in messages.
pub fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    fn with_target(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details.group = (!group.is_empty()).then(|| group.to_string());
        self.details.kind = (!kind.is_empty()).then(|| kind.to_string());
        self.details.name = (!name.is_empty()).then(|| name.to_string());
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", qualified(plural, group));
        Self::new(404, "NotFound", msg).with_target(group, plural, name)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", qualified(plural, group));
        Self::new(409, "AlreadyExists", msg).with_target(group, plural, name)
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            qualified(plural, group)
        );
        Self::new(409, "Conflict", msg).with_target(group, plural, name)
    }

    /// 422 Invalid, message `Kind.group "name" is invalid: cause[, cause...]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let msg = format!("{} \"{name}\" is invalid: {joined}", qualified(kind, group));
        let mut e = Self::new(422, "Invalid", msg).with_target(group, kind, name);
        e.details.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// A 500 without a reason: what the real server answers when a handler returns a failure
    /// `Status` of its own (e.g. an eviction of a pod with several disruption budgets).
    pub fn failure(code: u16, message: impl Into<String>) -> Self {
        Self::new(code, "", message)
    }

    /// 429 TooManyRequests (`errors.NewTooManyRequests`): `retry_after` of 0 sends none.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details.retry_after_seconds = (retry_after > 0).then_some(retry_after);
        e
    }

    /// 403 Forbidden: `plural.group "name" is forbidden: why`.
    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "{} \"{name}\" is forbidden: {why}",
            qualified(plural, group)
        );
        Self::new(403, "Forbidden", msg).with_target(group, plural, name)
    }

    /// A plain 404 for a URL that names no resource at all (the real server answers
    /// `404 page not found` there, but a Status is friendlier and kube-rs parses it).
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// The `Status` object as JSON.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if let Some(n) = &d.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &d.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &d.kind {
            details.insert("kind".into(), json!(k));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| {
                    // Empty members are omitted, as Go's `omitempty` does.
                    let mut cause = serde_json::Map::new();
                    for (k, v) in [
                        ("reason", &c.reason),
                        ("message", &c.message),
                        ("field", &c.field),
                    ] {
                        if !v.is_empty() {
                            cause.insert(k.into(), json!(v));
                        }
                    }
                    Value::Object(cause)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(s) = d.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        let mut resp = (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.details.retry_after_seconds {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_lists_causes() {
        let e = ApiError::invalid(
            "chaos.example.dev",
            "Exp",
            "x",
            vec![Cause {
                field: "spec.a".into(),
                message: "Required value".into(),
                reason: "FieldValueRequired".into(),
            }],
        );
        assert_eq!(
            e.message,
            "Exp.chaos.example.dev \"x\" is invalid: spec.a: Required value"
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.a");
    }

    #[test]
    fn not_found_core() {
        let e = ApiError::not_found("", "pods", "p");
        assert_eq!(e.message, "pods \"p\" not found");
        assert!(e.to_status()["details"].get("group").is_none());
    }
}
