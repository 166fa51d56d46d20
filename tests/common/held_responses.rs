//! A kube client whose chosen responses are held back until released: a watch cache kept
//! behind the API server on purpose (its watch request is answered, its events wait), to test
//! what a component does with a stale cache.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use kube::Client;
use tokio::sync::watch;

/// Holds the responses to requests whose path and query contain every one of `matching`
/// until `release` is called.
pub struct HeldResponses {
    matching: Vec<String>,
    released: watch::Sender<bool>,
}

impl HeldResponses {
    pub fn new(matching: &[&str]) -> Self {
        Self {
            matching: matching.iter().map(|m| m.to_string()).collect(),
            released: watch::channel(false).0,
        }
    }

    /// A client of the server `kubeconfig_yaml` names, holding the matching responses.
    pub async fn client(&self, kubeconfig_yaml: &str) -> Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        self.client_of(config)
    }

    /// A client with `config`, holding the matching responses.
    pub fn client_of(&self, config: kube::Config) -> Client {
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&Layer {
                matching: self.matching.clone(),
                released: self.released.subscribe(),
            })
            .build()
    }

    /// Lets every held response through, and every later one at once.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

struct Layer {
    matching: Vec<String>,
    released: watch::Receiver<bool>,
}

impl<S> tower_layer::Layer<S> for Layer {
    type Service = Held<S>;

    fn layer(&self, inner: S) -> Held<S> {
        Held {
            inner,
            matching: self.matching.clone(),
            released: self.released.clone(),
        }
    }
}

pub struct Held<S> {
    inner: S,
    matching: Vec<String>,
    released: watch::Receiver<bool>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Held<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let hold = self.matching.iter().all(|m| target.contains(m.as_str()));
        let mut released = self.released.clone();
        // Sent now (the server answers), delivered once released.
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if hold {
                let _ = released.wait_for(|r| *r).await;
            }
            Ok(response)
        })
    }
}
