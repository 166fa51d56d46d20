//! The namespace watch's cache: what a running experiment's check of its targets' consent reads.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    core::PartialObjectMeta,
    runtime::{reflector::Store, watcher},
};

/// Every namespace's metadata, as the controller's namespace watch has it, once that watch has
/// listed; `None` where the controller may not watch namespaces (an older chart's
/// permissions), so readers ask the API server instead.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<PartialObjectMeta<Namespace>>,
    listed: Arc<std::sync::atomic::AtomicBool>,
}

impl NamespaceCache {
    pub fn new(store: Store<PartialObjectMeta<Namespace>>) -> Self {
        Self {
            store,
            listed: Arc::default(),
        }
    }

    /// For `inspect` on the namespace watch: the cache answers from each complete list on, and
    /// not from the watch's first error until it has listed again (a watch that fails keeps
    /// its last state, which would hide a withdrawal for as long as it fails; a grant taken
    /// away while the controller runs, say). A refused watch is said once; the readers ask the
    /// API server meanwhile.
    pub fn marker<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let listed = self.listed.clone();
        let mut refusal_said = false;
        move |event| match event {
            Ok(watcher::Event::InitDone) => {
                listed.store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(_) => {}
            Err(error) => {
                listed.store(false, std::sync::atomic::Ordering::Release);
                if let watcher::Error::InitialListFailed(kube::Error::Api(status)) = error
                    && status.code == 403
                    && !refusal_said
                {
                    refusal_said = true;
                    tracing::warn!(
                        error = %status.message,
                        "the controller may not list and watch namespaces (a chart older than this controller?): each running experiment reads its target namespaces from the API server instead; `helm upgrade` the chart to grant the watch"
                    );
                }
            }
        }
    }

    /// `Some(metadata)` of namespace `name` if it exists, `Some(None)` if it does not, `None`
    /// when the cache cannot tell (its watch never listed).
    pub fn get(&self, name: &str) -> Option<Option<ObjectMeta>> {
        if !self.listed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let key = kube::runtime::reflector::ObjectRef::new(name);
        Some(self.store.get(&key).map(|ns| ns.metadata.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_cache_answers_only_once_its_watch_has_listed() {
        use kube::runtime::reflector;

        let (store, mut writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let cache = NamespaceCache::new(store);
        let mut marker = cache.marker::<PartialObjectMeta<Namespace>>();
        let mut shop = PartialObjectMeta::<Namespace>::default();
        shop.metadata.name = Some("shop".into());
        shop.metadata.labels = Some([("faultline.dev/chaos".into(), "enabled".into())].into());
        writer.apply_watcher_event(&watcher::Event::Apply(shop));

        // Refused (an older chart) or not listed yet: the readers ask the API server.
        marker(&Err(watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(kube::core::Status::failure("forbidden", "Forbidden").with_code(403)),
        ))));
        assert_eq!(cache.get("shop"), None);

        marker(&Ok(watcher::Event::InitDone));
        let shop = cache.get("shop").expect("listed").expect("exists");
        assert_eq!(
            shop.labels.unwrap_or_default().get("faultline.dev/chaos"),
            Some(&"enabled".to_string())
        );
        assert_eq!(cache.get("gone"), Some(None), "listed, and not there");

        // A watch that fails after listing keeps its last state: not trusted until it lists
        // again.
        marker(&Err(watcher::Error::WatchFailed(kube::Error::Api(
            Box::new(kube::core::Status::failure("forbidden", "Forbidden").with_code(403)),
        ))));
        assert_eq!(cache.get("shop"), None, "the failed watch is not read");
        marker(&Ok(watcher::Event::Init));
        assert_eq!(cache.get("shop"), None, "still listing");
        marker(&Ok(watcher::Event::InitDone));
        assert!(cache.get("shop").is_some(), "listed again");
    }
}
