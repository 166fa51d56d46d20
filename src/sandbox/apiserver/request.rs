//! Parsing of what a request asks for: the URL into a [`Route`], the query into [`Params`], the
//! `Accept` header into a [`Format`] and the body into JSON (from JSON, YAML or protobuf).

use super::errors::{ApiError, ApiResult};
use super::protobuf::{self, ProtoError};
use super::resources::{Registry, ResourceDef};
use axum::http::HeaderMap;
use serde_json::Value;

/// Query parameters (repeated keys: the first wins, as in Go's `url.Values.Get`).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    /// A non-negative integer parameter; garbage is a 400 like in the real server.
    pub fn int(&self, key: &str) -> ApiResult<Option<u64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun: {other:?}: supported values: \"All\""
            ))),
        }
    }

    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// How to render objects: plain JSON, a `meta.k8s.io/v1` Table (kubectl get), metadata only
/// (`meta.k8s.io/v1` PartialObjectMetadata and PartialObjectMetadataList), or protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
    /// One object's metadata (GET, writes, and each event of a watch); a list asked for in
    /// this form is 406, as on the real server.
    Metadata,
    /// A list's metadata and its items'; one object asked for in this form is 406.
    MetadataList,
    /// Only for clients that accept protobuf and not JSON (kubectl and client-go list JSON
    /// too, and get JSON: easier to read in `-v=8` logs, and every kind has it).
    Protobuf,
}

/// What one `Accept` choice asks the server to turn objects into (its `as`, `g` and `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// No `as=`, or one this server ignores (it serves the object itself, as it always has).
    None,
    Table,
    Metadata,
    MetadataList,
    /// PartialObjectMetadata without `g=meta.k8s.io;v=v1`: the real server passes over such a
    /// choice (v1beta1 it would serve; this server does not).
    Unserved,
}

struct Choice {
    media: String,
    conversion: Conversion,
}

impl Choice {
    fn parse(choice: &str) -> Choice {
        let mut parts = choice.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut as_, mut group, mut version) = ("", "", "");
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "as" => as_ = value,
                "g" => group = value,
                "v" => version = value,
                _ => {}
            }
        }
        let meta_v1 = group == "meta.k8s.io" && version == "v1";
        let conversion = if as_.eq_ignore_ascii_case("Table") {
            Conversion::Table
        } else if as_ == "PartialObjectMetadata" || as_ == "PartialObjectMetadataList" {
            match (meta_v1, as_ == "PartialObjectMetadata") {
                (false, _) => Conversion::Unserved,
                (true, true) => Conversion::Metadata,
                (true, false) => Conversion::MetadataList,
            }
        } else {
            Conversion::None
        };
        Choice { media, conversion }
    }

    fn json_like(&self) -> bool {
        matches!(
            self.media.as_str(),
            "application/json" | "application/yaml" | "application/*" | "*/*"
        ) && self.conversion != Conversion::Unserved
    }

    /// Protobuf of the object itself: this server converts to Tables and metadata in JSON only.
    fn plain_protobuf(&self) -> bool {
        self.media == protobuf::MEDIA_TYPE && self.conversion == Conversion::None
    }
}

/// The response format the `Accept` header asks for. JSON wins over protobuf whenever both are
/// acceptable, and the first JSON choice decides the form: a Table (kubectl lists Table first
/// and plain JSON as a fallback), metadata only (kube-rs sends that choice alone; client-go's
/// metadata client lists it in protobuf first, then in JSON), or the object itself. No header
/// or a wildcard is JSON; protobuf when only protobuf is acceptable; otherwise 406 Not
/// Acceptable, as the real server answers.
pub fn format_of(headers: &HeaderMap) -> ApiResult<Format> {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    let choices: Vec<Choice> = accept.split(',').map(Choice::parse).collect();
    if let Some(json) = choices.iter().find(|c| c.json_like()) {
        return Ok(match json.conversion {
            Conversion::Table => Format::Table,
            Conversion::Metadata => Format::Metadata,
            Conversion::MetadataList => Format::MetadataList,
            Conversion::None | Conversion::Unserved => Format::Json,
        });
    }
    if choices.iter().any(Choice::plain_protobuf) {
        return Ok(Format::Protobuf);
    }
    Err(ApiError::not_acceptable(format!(
        "406: Not Acceptable\n\nAvailable representations: application/json, {}, \
         application/json;stream=watch, {}",
        protobuf::MEDIA_TYPE,
        protobuf::WATCH_MEDIA_TYPE
    )))
}

/// A resource request's target.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: ResourceDef,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub fn is_status(&self) -> bool {
        self.sub.as_deref() == Some("status")
    }

    pub fn is_eviction(&self) -> bool {
        self.sub.as_deref() == Some("eviction")
    }

    pub fn is_scale(&self) -> bool {
        self.sub.as_deref() == Some("scale")
    }

    pub fn is_log(&self) -> bool {
        self.sub.as_deref() == Some("log")
    }

    /// The `(apiVersion, kind)` of the objects a request on this target reads and writes.
    pub fn object_kind(&self) -> (String, String) {
        match self.sub.as_deref() {
            Some("scale") => ("autoscaling/v1".into(), "Scale".into()),
            Some("eviction") => ("policy/v1".into(), "Eviction".into()),
            _ => (self.def.api_version(&self.version), self.def.kind.clone()),
        }
    }
}

/// What a URL designates.
#[derive(Debug, Clone)]
pub enum Route {
    CoreVersions,
    Groups,
    Group(String),
    ResourceList { group: String, version: String },
    Version,
    Health,
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3 { group: String, version: String },
    Resource(Box<Target>),
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && !s.chars().any(|c| c.is_control())
}

pub fn route(path: &str, reg: &Registry) -> ApiResult<Route> {
    let segs: Vec<&str> = path
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/')
        .collect();
    if segs.iter().any(|s| !valid_segment(s)) {
        return Err(ApiError::no_route(path));
    }
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3Index),
        ["openapi", "v3", "api", v] => {
            return Ok(Route::OpenApiV3 {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiV3 {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => {
            return Ok(Route::ResourceList {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["apis", g, v] => {
            return Ok(Route::ResourceList {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let find = |plural: &str| reg.find(group, version, plural).cloned();
    let target = |def: ResourceDef, ns: Option<&str>, rest: &[&str]| -> ApiResult<Route> {
        let (name, sub) = match rest {
            [] => (None, None),
            [n] => (Some(n.to_string()), None),
            [n, s] => (Some(n.to_string()), Some(s.to_string())),
            _ => return Err(ApiError::no_route(path)),
        };
        let is_pod = def.group.is_empty() && def.plural == "pods";
        if let Some(s) = &sub
            && !(s == "status" && def.has_status(version))
            && !((s == "eviction" || s == "log") && is_pod)
            && !(s == "scale" && def.has_scale())
        {
            return Err(ApiError::no_route(path));
        }
        if ns.is_some() && !def.namespaced {
            return Err(ApiError::no_route(path));
        }
        if ns.is_none() && def.namespaced && name.is_some() {
            return Err(ApiError::no_route(path));
        }
        Ok(Route::Resource(Box::new(Target {
            def,
            version: version.to_string(),
            namespace: ns.map(String::from),
            name,
            sub,
        })))
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|d| d.namespaced) => {
            let def = find(plural).ok_or_else(|| ApiError::no_route(path))?;
            target(def, Some(ns), tail)
        }
        [plural, tail @ ..] => {
            let def = find(plural).ok_or_else(|| ApiError::no_route(path))?;
            target(def, None, tail)
        }
        [] => Err(ApiError::no_route(path)),
    }
}

/// Decode the object a create, update, eviction or scale request carries: JSON or YAML, or
/// protobuf for the built-in kinds (custom resources are JSON-only, as on a real server).
pub fn decode_object(body: &[u8], content_type: &str, t: &Target) -> ApiResult<Value> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case(protobuf::MEDIA_TYPE) {
        return decode_body(body, content_type);
    }
    let (api_version, kind) = t.object_kind();
    if !protobuf::supports(&api_version, &kind) {
        return Err(unsupported_media(
            content_type,
            " (protobuf is served for built-in kinds only, as on a real server)",
        ));
    }
    protobuf::decode(body, (&api_version, &kind)).map_err(|e| match e {
        ProtoError::NoMagic => {
            let hex: String = body.iter().take(30).map(|b| format!("{b:02x}")).collect();
            let more = if body.len() > 30 { " ..." } else { "" };
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): {e} ({hex}{more})"
            ))
        }
        e => ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
            t.version
        )),
    })
}

fn unsupported_media(content_type: &str, why: &str) -> ApiError {
    ApiError::unsupported_media_type(format!(
        "the body of the request was in an unknown format - accepted media types include: \
         application/json, application/yaml (got {content_type}){why}"
    ))
}

/// Decode a JSON body (patches, DeleteOptions); YAML too for apply patches
/// (`application/apply-patch+yaml`).
pub fn decode_body(body: &[u8], content_type: &str) -> ApiResult<Value> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(unsupported_media(content_type, ""));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    // The real server reads an apply patch with its YAML reader even when it is JSON, and that
    // reader refuses a raw control character anywhere (JSON would take a DEL in a string).
    if content_type.contains("yaml")
        && String::from_utf8_lossy(body)
            .chars()
            .any(|c| !yaml_printable(c))
    {
        return Err(ApiError::bad_request(
            "error decoding YAML: error converting YAML to JSON: yaml: control characters are not allowed",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) if content_type.contains("yaml") => serde_yaml::from_slice::<Value>(body)
            .map_err(|e| {
                ApiError::bad_request(format!("error decoding YAML: {e} (as JSON: {json_err})"))
            }),
        Err(e) => Err(ApiError::bad_request(format!(
            "error decoding request body as JSON: {e}"
        ))),
    }
}

/// What YAML's reader takes as a character (the YAML 1.1 printable set, as go-yaml checks it).
fn yaml_printable(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}'
        | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
