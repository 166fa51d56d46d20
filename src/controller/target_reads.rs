//! The target pods of a running experiment, read again to see which left (see
//! `departures`): each target's pod under its name, and the namespaces they are in. Read at
//! most once a second per experiment ([`TARGET_READ_EVERY`]), by GET where a namespace holds
//! few targets and by a paged list of the namespace where it holds many. (client required,
//! read only)

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    Context, Error, Result,
    departures::{self, TargetWorld},
};
use crate::api::ChaosExperimentStatus;

/// The pods now under the names of the targets whose faults may be in, and their namespaces.
/// One read per namespace, and per pod (bounded by the blast radius) [`PARALLEL_READS`] at a
/// time, or a list of the namespace's pods where it holds many targets: never a list by the
/// experiment's selector, since a pod whose labels changed would be missed while still there.
pub(super) async fn target_world(
    ctx: &Context,
    status: &ChaosExperimentStatus,
) -> Result<TargetWorld> {
    let mut world = TargetWorld {
        allow_all_namespaces: ctx.settings.policy.allow_all_namespaces,
        ..Default::default()
    };
    let keys: BTreeSet<(String, String)> = status
        .targets
        .iter()
        .filter(|r| departures::watched(r))
        .map(|r| (r.namespace.clone(), r.name.clone()))
        .collect();
    let namespaces: BTreeSet<String> = keys.iter().map(|(ns, _)| ns.clone()).collect();
    let namespace_api: Api<Namespace> = Api::all(ctx.client.clone());
    world.namespaces = futures::stream::iter(namespaces.into_iter().map(|name| {
        let api = namespace_api.clone();
        async move { api.get_opt(&name).await }
    }))
    .buffered(PARALLEL_READS)
    .try_filter_map(|found| async move { Ok(found) })
    .try_collect()
    .await
    .map_err(Error::Observe)?;
    // Many targets in one namespace: a paged list of its pods costs a few requests where a
    // GET per target costs hundreds (0.2 s at 500 targets, every second of the injection).
    let mut per_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (namespace, name) in keys {
        per_namespace.entry(namespace).or_default().insert(name);
    }
    let (listed, fetched): (Vec<_>, Vec<_>) = per_namespace
        .into_iter()
        .partition(|(_, names)| names.len() >= LIST_FROM);
    for (namespace, names) in listed {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = api.list(&params).await.map_err(Error::Observe)?;
            for pod in page.items {
                let name = pod.name_any();
                if names.contains(&name) {
                    world.pods.insert((namespace.clone(), name), pod);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    let fetched = fetched.into_iter().flat_map(|(namespace, names)| {
        names.into_iter().map(move |name| (namespace.clone(), name))
    });
    let got: Vec<((String, String), Pod)> =
        futures::stream::iter(fetched.map(|(namespace, name)| {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            async move {
                let found = api.get_opt(&name).await?;
                Ok::<_, kube::Error>(found.map(|pod| ((namespace, name), pod)))
            }
        }))
        .buffer_unordered(PARALLEL_READS)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await
        .map_err(Error::Observe)?;
    world.pods.extend(got);
    Ok(world)
}

/// From this many targets in one namespace on, [`target_world`] lists the namespace's pods
/// (in pages of [`LIST_PAGE`]) instead of reading each target.
const LIST_FROM: usize = 32;
const LIST_PAGE: u32 = 500;

/// The shortest time between two reads of one experiment's targets: below the 2 s poll of a
/// running experiment, so that every poll reads them.
pub(super) const TARGET_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads in flight at once for [`target_world`].
const PARALLEL_READS: usize = 16;
