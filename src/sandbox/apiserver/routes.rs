//! HTTP dispatch: turns a request into a [`Route`] and calls the read, write, delete, watch or
//! subresource handler, rendering results and errors (`Status` bodies) in the format the
//! client accepts (see `respond`).

use super::errors::{ApiError, Cause};
use super::request::{self, Format, Params, Route, Target};
use super::{
    Shared, State, discovery, disruption, eviction, gc, log, meta, partial, protobuf, read,
    respond, scale, store, watch, write,
};
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body accepted: the real server's `MaxRequestBodyBytes`, 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// How much of a body over [`MAX_BODY`] is still read (and dropped) before answering 413. The
/// real server speaks HTTP/2 to kubectl and can answer while the client still sends; over this
/// server's HTTP/1.1, answering early leaves the client writing into a closed connection
/// (kubectl: `Unable to connect to the server: ... broken pipe`) instead of reading the 413.
const MAX_DRAINED: usize = 64 * 1024 * 1024;

/// The request body, or the real server's 413 (`Request entity too large: limit is 3145728`)
/// once the whole of a body over the limit has been read.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiError::bad_request("the request body could not be read").into_response());
        };
        total += chunk.len();
        if total <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        } else if total > MAX_DRAINED {
            break;
        }
    }
    if total <= MAX_BODY {
        return Ok(Bytes::from(kept));
    }
    let mut response =
        ApiError::too_large(format!("Request entity too large: limit is {MAX_BODY}"))
            .into_response();
    if total > MAX_DRAINED {
        // The rest is not read: the connection cannot carry another request.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    Err(response)
}

pub(super) async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let path = uri.path().to_string();
    // A client that accepts nothing we write gets its 406 in JSON, as from the real server.
    let (format, result) = match request::format_of(&headers) {
        Ok(format) => (
            format,
            dispatch(shared, &method, &uri, &headers, format, bytes),
        ),
        Err(e) => (Format::Json, Err(e)),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, message = %e.message, "request failed");
            respond::error(e, format)
        }
    }
}

fn dispatch(
    shared: Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    format: Format,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let route = {
        let st = shared.lock();
        request::route(uri.path(), &st.registry)?
    };
    let read_only = |v: Option<Value>| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
        // Discovery and OpenAPI documents are JSON whatever the client prefers.
        let v = v.ok_or_else(|| ApiError::no_route(uri.path()))?;
        respond::object(200, &v, &[], Format::Json)
    };
    match route {
        Route::Version => read_only(Some(discovery::version())),
        Route::Health => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed("only GET is allowed"));
            }
            Ok((axum::http::StatusCode::OK, "ok").into_response())
        }
        Route::CoreVersions => read_only(Some(discovery::core_versions(&shared.address))),
        Route::Groups => read_only(Some(discovery::groups(&shared.lock().registry))),
        Route::Group(g) => read_only(discovery::group(&shared.lock().registry, &g)),
        Route::ResourceList { group, version } => read_only(discovery::resource_list(
            &shared.lock().registry,
            &group,
            &version,
        )),
        Route::OpenApiV2 => Err(ApiError::no_route(uri.path())),
        Route::OpenApiV3Index => {
            read_only(Some(discovery::openapi_v3_index(&shared.lock().registry)))
        }
        Route::OpenApiV3 { group, version } => read_only(discovery::openapi_v3_doc(
            &shared.lock().registry,
            &group,
            &version,
        )),
        Route::Resource(t) => resource(shared, method, headers, &params, format, *t, body),
    }
}

fn resource(
    shared: Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    format: Format,
    t: Target,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let content_type = header("content-type");
    let ctx = || -> Result<write::WriteCtx, ApiError> {
        Ok(write::WriteCtx {
            dry_run: params.dry_run()?,
            validation: params.field_validation()?,
            manager: meta::update_manager(params.get("fieldManager"), Some(&header("user-agent"))),
            apply: false,
            force: params.get("force") == Some("true"),
            patched: false,
            warnings: vec![],
        })
    };
    // What a write answers takes the asked-for form too: kube-rs's `patch_metadata` reads back
    // PartialObjectMetadata, as the real server sends it. (GET and LIST convert in `read`.)
    let reply = |code: u16, v: Value, warnings: &[String]| {
        respond::object(code, &partial::convert(&t, v, format)?, warnings, format)
    };
    let is_item = t.name.is_some();
    let not_allowed = || {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            t.def.plural
        )))
    };
    if t.is_log() {
        if method != Method::GET {
            return not_allowed();
        }
        return log::logs(shared, &t, params);
    }
    if t.is_scale() {
        let v = match method.as_str() {
            "GET" => scale::get(&shared.lock(), &t)?,
            "PUT" => {
                let mut c = ctx()?;
                let obj = request::decode_object(&body, &content_type, &t)?;
                scale::update(&mut shared.lock(), &t, obj, &mut c)?
            }
            "PATCH" => {
                let mut c = ctx()?;
                if content_type.starts_with("application/apply-patch") {
                    c.manager = apply_manager(params)?;
                }
                scale::patch(&mut shared.lock(), &t, &body, &content_type, &mut c)?
            }
            _ => return not_allowed(),
        };
        return reply(200, v, &[]);
    }
    if t.def.is_access_review() {
        if method != Method::POST || is_item {
            return not_allowed();
        }
        let review = request::decode_object(&body, &content_type, &t)?;
        return reply(201, access_review(review), &[]);
    }
    if t.is_eviction() {
        if method != Method::POST {
            return not_allowed();
        }
        let obj = request::decode_object(&body, &content_type, &t)?;
        let ns = t.namespace.clone().unwrap_or_default();
        let name = t.name.clone().unwrap_or_default();
        let (v, warnings) = eviction::evict(
            &mut shared.lock(),
            &ns,
            &name,
            &obj,
            params.dry_run()?,
            params.field_validation()?,
        )?;
        return reply(201, v, &warnings);
    }
    match (method.as_str(), is_item) {
        ("GET", false) if params.flag("watch") => watch::watch(shared, t, params, format),
        ("GET", true) if params.flag("watch") => {
            // `watch` on a single object: a watch with a metadata.name field selector.
            let mut p = params.clone();
            let name = t.name.clone().unwrap_or_default();
            let mut list_t = t.clone();
            list_t.name = None;
            p = Params::parse(Some(&format!(
                "{}&fieldSelector=metadata.name%3D{name}",
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(
                        [
                            "watch",
                            "resourceVersion",
                            "timeoutSeconds",
                            "allowWatchBookmarks"
                        ]
                        .iter()
                        .filter_map(|k| p.get(k).map(|v| (*k, v.to_string())))
                    )
                    .finish()
            )));
            watch::watch(shared, list_t, &p, format)
        }
        ("GET", false) => {
            let v = read::list(&shared.lock(), &t, params, format)?;
            respond::object(200, &v, &[], format)
        }
        ("GET", true) => {
            let v = read::get(&shared.lock(), &t, format)?;
            respond::object(200, &v, &[], format)
        }
        ("POST", false) => {
            let mut c = ctx()?;
            let obj = request::decode_object(&body, &content_type, &t)?;
            let mut st = shared.lock();
            let (code, v) = write::create(&mut st, &t, obj, &mut c)?;
            after_write(&mut st, &t);
            reply(code, read::present(&t, v), &c.warnings)
        }
        ("PUT", true) => {
            let mut c = ctx()?;
            let obj = request::decode_object(&body, &content_type, &t)?;
            let mut st = shared.lock();
            let (code, v) = write::update(&mut st, &t, obj, &mut c)?;
            after_write(&mut st, &t);
            reply(code, read::present(&t, v), &c.warnings)
        }
        ("PATCH", true) => {
            let mut c = ctx()?;
            if content_type.starts_with("application/apply-patch") {
                c.manager = apply_manager(params)?;
            }
            let mut st = shared.lock();
            let (code, v) = write::patch(&mut st, &t, &body, &content_type, &mut c)?;
            after_write(&mut st, &t);
            reply(code, read::present(&t, v), &c.warnings)
        }
        ("DELETE", true) => {
            if t.is_status() {
                return not_allowed();
            }
            let opts = delete_opts(params, &body, &content_type)?;
            let ns = t.namespace.clone().unwrap_or_default();
            let name = t.name.clone().unwrap_or_default();
            let mut st = shared.lock();
            let v = gc::delete(&mut st, &t.def.key(), &ns, &name, &opts)?;
            after_write(&mut st, &t);
            reply(200, read::present(&t, v), &[])
        }
        ("DELETE", false) if t.def.namespaced || t.def.is_custom() => {
            let opts = delete_opts(params, &body, &content_type)?;
            let filter = read::Filter::from_params(&t, params)?;
            let mut st = shared.lock();
            let targets: Vec<(String, String)> = st
                .store
                .list(&t.def.key(), t.namespace.as_deref())
                .filter(|o| filter.matches(o))
                .map(store::obj_key)
                .collect();
            let mut items = Vec::new();
            for (ns, name) in targets {
                match gc::delete(&mut st, &t.def.key(), &ns, &name, &opts) {
                    Ok(v) => items.push(read::present(&t, v)),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            after_write(&mut st, &t);
            let list = json!({
                "kind": format!("{}List", t.def.kind),
                "apiVersion": t.def.api_version(&t.version),
                "metadata": {"resourceVersion": st.store.current_rv().to_string()},
                "items": items,
            });
            reply(200, list, &[])
        }
        _ => not_allowed(),
    }
}

/// The answer to a SelfSubjectAccessReview. This server has no authorization at all (every
/// client may do everything), so every request it is asked about is allowed, and the answer
/// says so. The real API server answers from RBAC; tests of refusals run there.
fn access_review(mut review: Value) -> Value {
    review["status"] = json!({
        "allowed": true,
        "reason": "the faultline sandbox API server has no authorization: every request is allowed",
    });
    if review["metadata"].is_null() {
        review["metadata"] = json!({});
    }
    review
}

/// The field manager of a server-side apply, which the real server requires.
fn apply_manager(params: &Params) -> Result<String, ApiError> {
    match params.get("fieldManager") {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                field: "fieldManager".into(),
                message: "Required value: is required for apply patch".into(),
                reason: "FieldValueRequired".into(),
            }],
        )),
    }
}

/// DeleteOptions from the query and the optional body, JSON or protobuf (the query's
/// `gracePeriodSeconds` wins).
fn delete_opts(
    params: &Params,
    body: &[u8],
    content_type: &str,
) -> Result<gc::DeleteOpts, ApiError> {
    let body = match (body.is_empty(), content_type.contains("protobuf")) {
        (true, _) => None,
        (false, true) => {
            let opts = protobuf::decode(body, ("v1", "DeleteOptions"))
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            if opts["kind"] != "DeleteOptions" {
                return Err(ApiError::bad_request(format!(
                    "the body of a delete must be DeleteOptions, not {}",
                    opts["kind"]
                )));
            }
            Some(opts)
        }
        (false, false) => Some(request::decode_body(body, "application/json")?),
    };
    let mut opts = gc::DeleteOpts::from_request(
        params.get("propagationPolicy"),
        params.dry_run()?,
        body.as_ref(),
    )?;
    if let Some(grace) = params.int("gracePeriodSeconds")? {
        opts.grace_period_seconds = Some(i64::try_from(grace).unwrap_or(i64::MAX));
    }
    Ok(opts)
}

/// Keep what depends on the written resource current (PodDisruptionBudget status).
fn after_write(st: &mut State, t: &Target) {
    let key = t.def.key();
    if !disruption::affects_budgets(&key) {
        return;
    }
    match &t.namespace {
        Some(ns) => disruption::sync_namespace(st, ns),
        None => {
            // A cluster-wide deletecollection: every namespace may have changed.
            let namespaces: std::collections::BTreeSet<String> = st
                .store
                .list(&disruption::pdb_key(), None)
                .map(|b| store::obj_key(b).0)
                .collect();
            for ns in namespaces {
                disruption::sync_namespace(st, &ns);
            }
        }
    }
}
