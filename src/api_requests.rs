//! Counts every request a component sends to the Kubernetes API, by verb, resource and answer:
//! `faultline_api_requests_total` on the controller's `/metrics` (and
//! `faultline_agent_api_requests_total` on the agent's). What load a controller puts on the API
//! server is the first thing an operator asks of it; client-go's `rest_client_requests_total`
//! answers it by host only, this by the resource the request touched.
//!
//! The request's verb and resource are read from its method and path as the API server's audit
//! log names them (`list` and `watch` are GETs of a collection, `deletecollection` a DELETE of
//! one); [`classify`] is pure.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// One series of `api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource with its subresource, e.g. `pods`, `pods/eviction`,
    /// `chaosexperiments/status`; `other` for paths that name none (`/version`).
    pub resource: String,
    /// The answer's status code, or `error` when none came (a connection that failed).
    pub code: String,
}

/// The counters every request adds to; cheap to clone.
pub type RequestCounts = Family<RequestLabel, Counter>;

/// The verb and resource of a request, from its method, path and query.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> (String, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest.filter(|r| !r.is_empty()) else {
        return (method.as_str().to_ascii_lowercase(), "other".into());
    };
    // `namespaces/NS/RESOURCE...`; `namespaces` or `namespaces/NAME[/SUB]` alone is the
    // Namespace resource itself.
    if rest[0] == "namespaces" && rest.len() >= 3 {
        rest = &rest[2..];
    }
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    let named = rest.len() >= 2;
    let watching = query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let verb = match (method.as_str(), named) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return (other.to_ascii_lowercase(), resource),
    };
    (verb.into(), resource)
}

/// A kube client built from `config` that counts its requests in `counts`.
pub fn counted_client(
    config: kube::Config,
    counts: RequestCounts,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountLayer { counts })
        .build())
}

/// Counts requests into `counts` (see [`counted_client`]).
pub struct CountLayer {
    counts: RequestCounts,
}

impl CountLayer {
    pub fn new(counts: RequestCounts) -> Self {
        CountLayer { counts }
    }
}

impl<S> tower_layer::Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            counts: self.counts.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    counts: RequestCounts,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Count<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (verb, resource) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let counts = self.counts.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".into(),
            };
            counts
                .get_or_create(&RequestLabel {
                    verb,
                    resource,
                    code,
                })
                .inc();
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn of(method: Method, path_and_query: &str) -> (String, String) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        classify(&method, path, query)
    }

    fn pair(verb: &str, resource: &str) -> (String, String) {
        (verb.into(), resource.into())
    }

    #[test]
    fn core_resources_in_a_namespace() {
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/shop/pods/web-1"),
            pair("get", "pods")
        );
        assert_eq!(
            of(
                Method::GET,
                "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb"
            ),
            pair("list", "pods")
        );
        assert_eq!(
            of(Method::POST, "/api/v1/namespaces/shop/pods/web-1/eviction"),
            pair("create", "pods/eviction")
        );
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/shop/pods/web-1"),
            pair("delete", "pods")
        );
    }

    #[test]
    fn watches_are_gets_with_watch_set() {
        assert_eq!(
            of(
                Method::GET,
                "/apis/faultline.dev/v1alpha1/faultinjections?watch=true&resourceVersion=12"
            ),
            pair("watch", "faultinjections")
        );
        assert_eq!(
            of(
                Method::GET,
                "/api/v1/namespaces/faultline-system/configmaps?watch=1&fieldSelector=metadata.name%3Dx"
            ),
            pair("watch", "configmaps")
        );
        assert_eq!(
            of(Method::GET, "/api/v1/pods?watch=false"),
            pair("list", "pods")
        );
    }

    #[test]
    fn custom_resources_and_their_status() {
        assert_eq!(
            of(
                Method::PATCH,
                "/apis/faultline.dev/v1alpha1/namespaces/shop/chaosexperiments/e/status?fieldManager=faultline"
            ),
            pair("patch", "chaosexperiments/status")
        );
        assert_eq!(
            of(
                Method::DELETE,
                "/apis/faultline.dev/v1alpha1/namespaces/shop/faultinjections?labelSelector=x"
            ),
            pair("deletecollection", "faultinjections")
        );
        assert_eq!(
            of(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/faultline-system/leases/faultline"
            ),
            pair("update", "leases")
        );
    }

    #[test]
    fn namespaces_and_cluster_scoped_objects() {
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/shop"),
            pair("get", "namespaces")
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces"),
            pair("list", "namespaces")
        );
        assert_eq!(
            of(Method::PATCH, "/api/v1/nodes/node-a/status"),
            pair("patch", "nodes/status")
        );
        assert_eq!(of(Method::GET, "/api/v1/nodes"), pair("list", "nodes"));
    }

    #[test]
    fn paths_that_name_no_resource() {
        assert_eq!(of(Method::GET, "/version"), pair("get", "other"));
        assert_eq!(of(Method::GET, "/apis"), pair("get", "other"));
        assert_eq!(
            of(Method::GET, "/apis/faultline.dev/v1alpha1"),
            pair("get", "other")
        );
        assert_eq!(of(Method::GET, "/api/v1"), pair("get", "other"));
    }
}
