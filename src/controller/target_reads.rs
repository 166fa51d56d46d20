//! The target pods of a running experiment, read again to see which left (see
//! `departures`): each target's pod under its name, and the namespaces they are in. Read at
//! most once a second per experiment ([`TARGET_READ_EVERY`]), one GET per target. A paged list
//! of a namespace holding many targets was tried and measured worse: at 500 targets on the
//! sandbox, serving and decoding the 500-pod pages each second starved the probes (a probe
//! with a 90 ms timeout timed out while the faults went in, in 9 runs of 9; with the GETs in
//! none of 2). (client required, read only)

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;

use super::{
    Context, Error, Result,
    departures::{self, TargetWorld},
};
use crate::api::ChaosExperimentStatus;

/// The pods now under the names of the targets whose faults may be in, and their namespaces.
/// One read per pod (bounded by the blast radius) and per namespace, [`PARALLEL_READS`] at a
/// time: a pod's labels may have changed, so a list by the experiment's selector could miss
/// one that is still there.
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
    world.pods = futures::stream::iter(keys.into_iter().map(|(namespace, name)| {
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
    Ok(world)
}

/// The shortest time between two reads of one experiment's targets: below the 2 s poll of a
/// running experiment, so that every poll reads them.
pub(super) const TARGET_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads in flight at once for [`target_world`].
const PARALLEL_READS: usize = 16;
