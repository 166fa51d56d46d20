//! The target pods of a running experiment, read again to see which left (see
//! `departures`): the metadata of each target's pod under its name, and of the namespaces they
//! are in (from the controller's namespace watch). Read at most once a second per experiment
//! ([`TARGET_READ_EVERY`]). (client required, read only)
//!
//! What a departure depends on is metadata (identity, deletion, labels), so only metadata is
//! asked for, and from the API server's watch cache (`resourceVersion=0`): a second's
//! staleness is what the once-a-second read allows anyway. Where a namespace holds many
//! targets, one list of it by the experiment's own label selector replaces their GETs: on the
//! real kube-apiserver v1.36, 500 single GETs of pods cost it and etcd 200-400 ms of CPU, one
//! list of the same 500 pods 10-30 ms. A target the list does not show (deleted, or relabelled
//! out of the selector) is then read on its own, so a relabelled pod is still found under its
//! name.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{
    Api,
    api::{GetParams, ListParams},
};

use super::{
    Context, Error, Result,
    departures::{self, TargetWorld},
    targets::pod_list_params,
};
use crate::api::ChaosExperimentStatus;

/// The metadata now under the names of the targets whose faults may be in, and of their
/// namespaces. `selector` is the experiment's target selector: namespaces with at least
/// [`LIST_FROM`] such targets are listed by it.
pub(super) async fn target_world(
    ctx: &Context,
    selector: Option<&LabelSelector>,
    status: &ChaosExperimentStatus,
) -> Result<TargetWorld> {
    let mut world = TargetWorld {
        allow_all_namespaces: ctx.settings.policy.allow_all_namespaces,
        ..Default::default()
    };
    let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in status.targets.iter().filter(|r| departures::watched(r)) {
        by_namespace
            .entry(record.namespace.clone())
            .or_default()
            .insert(record.name.clone());
    }
    world.namespaces = namespaces(ctx, by_namespace.keys()).await?;

    let listing = list_by(selector);
    let mut unlisted: Vec<(String, String)> = Vec::new();
    for (namespace, names) in by_namespace {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        match &listing {
            Some(params) if names.len() >= LIST_FROM => {
                let listed = api.list_metadata(params).await.map_err(Error::Observe)?;
                for pod in listed.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if names.contains(&name) {
                        world.pods.insert((namespace.clone(), name), pod.metadata);
                    }
                }
                unlisted.extend(
                    names
                        .into_iter()
                        .filter(|name| !world.pods.contains_key(&(namespace.clone(), name.clone())))
                        .map(|name| (namespace.clone(), name)),
                );
            }
            _ => unlisted.extend(names.into_iter().map(|name| (namespace.clone(), name))),
        }
    }
    let read: Vec<((String, String), ObjectMeta)> =
        futures::stream::iter(unlisted.into_iter().map(|(namespace, name)| {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            async move {
                let found = api.get_metadata_opt_with(&name, &GetParams::any()).await?;
                Ok::<_, kube::Error>(found.map(|pod| ((namespace, name), pod.metadata)))
            }
        }))
        .buffer_unordered(PARALLEL_READS)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await
        .map_err(Error::Observe)?;
    world.pods.extend(read);
    Ok(world)
}

/// The metadata of the namespaces among `names` that exist: from the controller's namespace
/// watch, or, where it may not watch them, from the API server's watch cache.
async fn namespaces(
    ctx: &Context,
    names: impl Iterator<Item = &String>,
) -> Result<Vec<ObjectMeta>> {
    let names: Vec<String> = names.cloned().collect();
    if let Some(cached) = names
        .iter()
        .map(|name| ctx.caches.namespaces.get(name))
        .collect::<Option<Vec<_>>>()
    {
        return Ok(cached.into_iter().flatten().collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    futures::stream::iter(names.into_iter().map(|name| {
        let api = api.clone();
        async move { api.get_metadata_opt_with(&name, &GetParams::any()).await }
    }))
    .buffered(PARALLEL_READS)
    .try_filter_map(|found| async move { Ok(found.map(|ns| ns.metadata)) })
    .try_collect()
    .await
    .map_err(Error::Observe)
}

/// How a namespace's targets are listed: by the experiment's label selector, from the watch
/// cache. `None` when the selector cannot go to the server as is (or selects every pod), so
/// that a namespace of thousands of pods is never listed whole for a few targets.
fn list_by(selector: Option<&LabelSelector>) -> Option<ListParams> {
    let params = pod_list_params(selector, &BTreeMap::new(), false);
    params.label_selector.is_some().then(|| params.match_any())
}

/// The shortest time between two reads of one experiment's targets: below the 2 s poll of a
/// running experiment, so that every poll reads them.
pub(super) const TARGET_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads in flight at once for [`target_world`].
const PARALLEL_READS: usize = 16;

/// Targets in one namespace from which one list by the selector replaces their GETs: below it,
/// a few GETs cost the API server less than a list of a selector that may match many more pods.
const LIST_FROM: usize = 16;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_plain_selector_lists_from_the_watch_cache_and_none_lists_nothing() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        };
        let params = list_by(Some(&selector)).unwrap();
        assert_eq!(params.label_selector.as_deref(), Some("app=web"));
        assert_eq!(params.resource_version.as_deref(), Some("0"));
        // Field selectors (running pods only) would hide a pod that stopped being ready.
        assert_eq!(params.field_selector, None);
        assert!(list_by(None).is_none());
        assert!(list_by(Some(&LabelSelector::default())).is_none());
    }
}
