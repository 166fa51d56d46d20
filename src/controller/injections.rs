//! FaultInjections: the controller's side of network faults. One object per target pod and
//! fault, owned by the experiment, labelled with the node, peers resolved to addresses.
//! (client required)

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use crate::{
    api::{
        AGENT_FINALIZER, ChaosExperiment, EXPERIMENT_LABEL, FAULT_INDEX_LABEL, FaultInjection,
        FaultInjectionSpec, FaultKind, NODE_LABEL, NetworkFault, NetworkScope, ObjectRef, PodRef,
        TargetRecord,
    },
    selection::{LabelMatcher, is_running_and_ready},
};

use super::targets::pod_list_params;

/// The FaultInjection name for a record: stable, so a retry after a crash finds the same object.
pub fn injection_name(experiment: &str, fault_index: i32, pod_uid: &str) -> String {
    let uid: String = pod_uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let mut name = format!("{experiment}-{fault_index}-{uid}").to_lowercase();
    name.truncate(253);
    name
}

/// Resolves a scope's selector to the current IPs of the pods it matches, as /32 CIDRs, plus the
/// scope's own CIDRs.
pub async fn resolve_peers(
    client: &kube::Client,
    scope: &NetworkScope,
    experiment_namespace: &str,
) -> Result<Vec<String>, kube::Error> {
    let mut cidrs = scope.cidrs.clone();
    if let Some(selector) = &scope.selector {
        let Ok(matcher) = LabelMatcher::new(selector) else {
            return Ok(cidrs);
        };
        let namespaces = if scope.namespaces.is_empty() {
            vec![experiment_namespace.to_string()]
        } else {
            scope.namespaces.clone()
        };
        // Peers must be Running and Ready: the API server filters on the selector and the phase.
        let params = pod_list_params(Some(selector), &BTreeMap::new(), true);
        for namespace in namespaces {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let mut peer_labels = Vec::new();
            for pod in pods.list(&params).await?.items {
                if matcher.matches(pod.metadata.labels.as_ref())
                    && is_running_and_ready(&pod)
                    && let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref())
                {
                    cidrs.push(format!("{ip}/32"));
                    peer_labels.push(pod.metadata.labels.clone().unwrap_or_default());
                }
            }
            // Traffic to a Service leaves the pod addressed to its ClusterIP (kube-proxy
            // translates it on the node, outside the pod's namespace), so a peer is also every
            // ClusterIP that leads to one of the peer pods.
            if !peer_labels.is_empty() {
                let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
                let list = services.list(&Default::default()).await?;
                cidrs.extend(service_ips_leading_to(&list.items, &peer_labels));
            }
        }
    }
    cidrs.sort();
    cidrs.dedup();
    Ok(cidrs)
}

/// The ClusterIPs (as /32 or /128) of the Services whose selector matches one of these pods'
/// label sets. Headless Services have none: their names lead to the pod IPs already listed.
pub fn service_ips_leading_to(
    services: &[Service],
    pods: &[BTreeMap<String, String>],
) -> Vec<String> {
    services
        .iter()
        .filter_map(|service| {
            let spec = service.spec.as_ref()?;
            let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
            let leads_to_a_peer = pods
                .iter()
                .any(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
            let ip: std::net::IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
            leads_to_a_peer.then(|| match ip {
                std::net::IpAddr::V4(_) => format!("{ip}/32"),
                std::net::IpAddr::V6(_) => format!("{ip}/128"),
            })
        })
        .collect()
}

/// The network fault an injection carries for `fault`, with peers resolved.
pub fn network_fault(kind: FaultKind<'_>, peer_cidrs: Vec<String>) -> Option<NetworkFault> {
    let mut fault = NetworkFault {
        peer_cidrs,
        ..Default::default()
    };
    match kind {
        FaultKind::PodKill(_) => return None,
        FaultKind::NetworkLatency(f) => {
            fault.ports = f.to.as_ref().map(|t| t.ports.clone()).unwrap_or_default();
            fault.latency = Some(f.clone());
        }
        FaultKind::NetworkLoss(f) => {
            fault.ports = f.to.as_ref().map(|t| t.ports.clone()).unwrap_or_default();
            fault.loss = Some(f.clone());
        }
        FaultKind::NetworkBandwidth(f) => {
            fault.ports = f.to.as_ref().map(|t| t.ports.clone()).unwrap_or_default();
            fault.bandwidth = Some(f.clone());
        }
        FaultKind::NetworkPartition(f) => {
            fault.ports = f.peers.ports.clone();
            fault.partition = Some(f.direction);
        }
    }
    Some(fault)
}

/// The scope whose selector must be resolved for `kind`.
pub fn scope_of(kind: FaultKind<'_>) -> Option<&NetworkScope> {
    match kind {
        FaultKind::PodKill(_) => None,
        FaultKind::NetworkLatency(f) => f.to.as_ref(),
        FaultKind::NetworkLoss(f) => f.to.as_ref(),
        FaultKind::NetworkBandwidth(f) => f.to.as_ref(),
        FaultKind::NetworkPartition(f) => Some(&f.peers),
    }
}

/// Creates the injection for one record; an existing one (a retry) is left as it is. Returns
/// whether this call created it.
pub async fn create(
    api: &Api<FaultInjection>,
    experiment: &ChaosExperiment,
    record: &TargetRecord,
    fault: NetworkFault,
    expires_at: DateTime<Utc>,
) -> Result<bool, kube::Error> {
    let name = record.injection.clone().unwrap_or_default();
    let node = record.node_name.clone().unwrap_or_default();
    let injection = FaultInjection {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: experiment.namespace(),
            labels: Some(BTreeMap::from([
                (NODE_LABEL.to_string(), node.clone()),
                (EXPERIMENT_LABEL.to_string(), experiment.name_any()),
                (
                    FAULT_INDEX_LABEL.to_string(),
                    record.fault_index.to_string(),
                ),
            ])),
            owner_references: experiment.controller_owner_ref(&()).map(|o| vec![o]),
            // The agent's finalizer from the start: the agent need not write it before its
            // apply (a third of the API server's writes per target), and nothing can be
            // applied for an injection that is already gone. One no agent takes up is let
            // go of by `release_unclaimed`.
            finalizers: Some(vec![AGENT_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: FaultInjectionSpec {
            experiment: ObjectRef {
                name: experiment.name_any(),
                uid: experiment.uid(),
            },
            target: PodRef {
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                uid: record.uid.clone(),
            },
            node_name: node,
            fault,
            expires_at,
        },
        status: None,
    };
    match api.create(&PostParams::default(), &injection).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(other) => Err(other),
    }
}

/// Asks for every injection of the experiment to be removed, in one request: a
/// deletecollection on the experiment label, so nothing depends on what a cache has seen.
/// Idempotent: the agents hold finalizers until their rules are gone, so "deleted" here means
/// "revert requested". (The label is the experiment's name: it also matches leftovers of an
/// earlier experiment of that name, which are orphans the garbage collector deletes anyway.)
pub async fn delete_all(api: &Api<FaultInjection>, experiment: &str) -> Result<(), kube::Error> {
    let params = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={experiment}"));
    match api
        .delete_collection(&DeleteParams::background(), &params)
        .await
    {
        Ok(_) => Ok(()),
        // The resource is not served (its CRD was deleted, with every injection): nothing left.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Asks for one FaultInjection to be deleted (its target left the experiment). Idempotent: one
/// already gone is fine.
pub async fn delete_one(api: &Api<FaultInjection>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lets go of the agent finalizer on deleted injections that no agent took up within the
/// revert timeout (see `revert_progress::unclaimed`), so that a node without a running agent
/// does not hold the experiment's revert forever.
pub async fn release_unclaimed(
    client: &kube::Client,
    experiment: &ChaosExperiment,
    unclaimed: &[Arc<FaultInjection>],
) {
    for injection in unclaimed {
        let name = injection.name_any();
        match release_agent_finalizer(client, injection).await {
            Ok(true) => tracing::warn!(
                experiment = %experiment.name_any(),
                injection = %name,
                node = %injection.spec.node_name,
                pod = %injection.spec.target.name,
                "no agent took up this FaultInjection before the revert timeout; released its agent finalizer (its revert stays unconfirmed)"
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                experiment = %experiment.name_any(),
                injection = %name,
                %error,
                "could not release the agent finalizer of an unclaimed FaultInjection; trying again at the next reconcile"
            ),
        }
    }
}

/// Removes the agent's finalizer from `injection`, keeping any other. The patch carries the
/// resourceVersion it was decided on: an agent that wrote meanwhile wins, and whoever decided
/// looks again. Ok(false) when the object changed or went meanwhile.
pub async fn release_agent_finalizer(
    client: &kube::Client,
    injection: &FaultInjection,
) -> Result<bool, kube::Error> {
    let api: Api<FaultInjection> =
        Api::namespaced(client.clone(), &injection.namespace().unwrap_or_default());
    let finalizers: Vec<&String> = injection
        .finalizers()
        .iter()
        .filter(|f| *f != AGENT_FINALIZER)
        .collect();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": injection.resource_version(),
        "finalizers": finalizers,
    }});
    match api
        .patch(
            &injection.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether any network fault of the experiment names peers by a pod selector.
pub fn has_selector_scopes(experiment: &ChaosExperiment) -> bool {
    experiment
        .spec
        .faults
        .iter()
        .filter_map(|f| f.kind())
        .filter_map(scope_of)
        .any(|scope| scope.selector.is_some())
}

/// Resolves every injection's peers again and updates those whose peer list changed. Returns
/// the pods whose injections changed, with their new peers.
pub async fn refresh_peers(
    client: &kube::Client,
    experiment: &ChaosExperiment,
    existing: &[Arc<FaultInjection>],
) -> Result<Vec<(String, Vec<String>)>, kube::Error> {
    let namespace = experiment.namespace().unwrap_or_default();
    let api: Api<FaultInjection> = Api::namespaced(client.clone(), &namespace);
    let mut changed = Vec::new();
    let mut resolved: std::collections::HashMap<usize, Vec<String>> = Default::default();
    for injection in existing
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        let Some((index, kind)) = fault_of(experiment, injection) else {
            continue;
        };
        let Some(scope) = scope_of(kind).filter(|s| s.selector.is_some()) else {
            continue;
        };
        let peers = match resolved.get(&index) {
            Some(peers) => peers.clone(),
            None => {
                let peers = resolve_peers(client, scope, &namespace).await?;
                resolved.insert(index, peers.clone());
                peers
            }
        };
        if peers != injection.spec.fault.peer_cidrs {
            let patch = serde_json::json!({ "spec": { "fault": { "peerCidrs": peers } } });
            api.patch(
                &injection.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await?;
            changed.push((
                format!(
                    "{}/{}",
                    injection.spec.target.namespace, injection.spec.target.name
                ),
                peers,
            ));
        }
    }
    Ok(changed)
}

/// The experiment fault an injection carries (its index is in the fault-index label).
fn fault_of<'a>(
    experiment: &'a ChaosExperiment,
    injection: &FaultInjection,
) -> Option<(usize, FaultKind<'a>)> {
    let index: usize = injection.labels().get(FAULT_INDEX_LABEL)?.parse().ok()?;
    Some((index, experiment.spec.faults.get(index)?.kind()?))
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn cluster_ips_of_services_that_lead_to_a_peer_are_peers_too() {
        let service = |name: &str, app: &str, ip: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": app}, "clusterIP": ip}
            }))
            .unwrap()
        };
        let services = [
            service("api", "api", "10.96.0.10"),
            service("db", "db", "10.96.0.11"),
            service("api-headless", "api", "None"),
        ];
        let peers = [BTreeMap::from([
            ("app".to_string(), "api".to_string()),
            ("tier".to_string(), "backend".to_string()),
        ])];
        assert_eq!(
            service_ips_leading_to(&services, &peers),
            vec!["10.96.0.10/32".to_string()]
        );
    }
}
