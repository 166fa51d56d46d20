//! HTTP dispatch: turns a request into a [`Route`] and calls the read, write, delete or watch
//! handler, rendering results and errors as JSON (`Status` bodies for errors).

use super::errors::{ApiError, Cause};
use super::request::{self, Format, Params, Route, Target};
use super::{Shared, State, discovery, disruption, eviction, gc, meta, read, store, watch, write};
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private");
    for w in warnings {
        resp = resp.header("warning", format!("299 - {w:?}"));
    }
    resp.body(Body::from(body.to_string()))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

pub(super) async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large("the request body is too large").into_response(),
    };
    let path = uri.path().to_string();
    let result = dispatch(shared, &method, &uri, &headers, bytes);
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

fn dispatch(
    shared: Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let format = request::format_of(headers);
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
        v.map(|v| json_response(200, &v, &[]))
            .ok_or_else(|| ApiError::no_route(uri.path()))
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
            warnings: vec![],
        })
    };
    let is_item = t.name.is_some();
    let not_allowed = || {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            t.def.plural
        )))
    };
    if t.is_eviction() {
        if method != Method::POST {
            return not_allowed();
        }
        let obj = request::decode_body(&body, &content_type)?;
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
        return Ok(json_response(201, &v, &warnings));
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
            Ok(json_response(200, &v, &[]))
        }
        ("GET", true) => {
            let v = read::get(&shared.lock(), &t, format)?;
            Ok(json_response(200, &v, &[]))
        }
        ("POST", false) => {
            let mut c = ctx()?;
            let obj = request::decode_body(&body, &content_type)?;
            let mut st = shared.lock();
            let (code, v) = write::create(&mut st, &t, obj, &mut c)?;
            after_write(&mut st, &t);
            Ok(json_response(code, &read::present(&t, v), &c.warnings))
        }
        ("PUT", true) => {
            let mut c = ctx()?;
            let obj = request::decode_body(&body, &content_type)?;
            let mut st = shared.lock();
            let (code, v) = write::update(&mut st, &t, obj, &mut c)?;
            after_write(&mut st, &t);
            Ok(json_response(code, &read::present(&t, v), &c.warnings))
        }
        ("PATCH", true) => {
            let mut c = ctx()?;
            let is_apply = content_type.starts_with("application/apply-patch");
            if is_apply {
                match params.get("fieldManager") {
                    Some(m) if !m.is_empty() => c.manager = m.to_string(),
                    _ => {
                        return Err(ApiError::invalid(
                            "meta.k8s.io",
                            "PatchOptions",
                            "",
                            vec![Cause {
                                field: "fieldManager".into(),
                                message: "Required value: is required for apply patch".into(),
                                reason: "FieldValueRequired".into(),
                            }],
                        ));
                    }
                }
            }
            let mut st = shared.lock();
            let (code, v) = write::patch(&mut st, &t, &body, &content_type, &mut c)?;
            after_write(&mut st, &t);
            Ok(json_response(code, &read::present(&t, v), &c.warnings))
        }
        ("DELETE", true) => {
            if t.is_status() {
                return not_allowed();
            }
            let opts_body = if body.is_empty() {
                None
            } else {
                Some(request::decode_body(&body, "application/json")?)
            };
            let opts = delete_opts(params, opts_body.as_ref())?;
            let ns = t.namespace.clone().unwrap_or_default();
            let name = t.name.clone().unwrap_or_default();
            let mut st = shared.lock();
            let v = gc::delete(&mut st, &t.def.key(), &ns, &name, &opts)?;
            after_write(&mut st, &t);
            Ok(json_response(200, &read::present(&t, v), &[]))
        }
        ("DELETE", false) if t.def.namespaced || t.def.is_custom() => {
            let opts_body = if body.is_empty() {
                None
            } else {
                Some(request::decode_body(&body, "application/json")?)
            };
            let opts = delete_opts(params, opts_body.as_ref())?;
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
            Ok(json_response(200, &list, &[]))
        }
        _ => not_allowed(),
    }
}

/// DeleteOptions from the query and the optional body (the query's `gracePeriodSeconds` wins).
fn delete_opts(params: &Params, body: Option<&Value>) -> Result<gc::DeleteOpts, ApiError> {
    let mut opts =
        gc::DeleteOpts::from_request(params.get("propagationPolicy"), params.dry_run()?, body)?;
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
