//! The simulated Nodes: created (or refreshed) at start, Ready, with a pod CIDR each.

use super::Error;
use super::naming::{node_ip, node_name, pod_cidr};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The Node object for the `index`-th simulated node, status included.
pub fn node(index: u8) -> Value {
    let name = node_name(index);
    let now = super::now();
    let resources =
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "faultline.dev/sandbox": "true",
            },
        },
        "spec": {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)]},
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index).to_string()},
                {"type": "Hostname", "address": name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux",
                "osImage": "faultline sandbox", "kernelVersion": "simulated",
                "kubeletVersion": "v1.36.3-sandbox", "kubeProxyVersion": "",
                "containerRuntimeVersion": "sandbox://simulated",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// Create nodes 1..=count (a node that already exists keeps its spec) and mark them Ready.
pub async fn ensure(client: &Client, count: u8) -> Result<Vec<String>, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for index in 1..=count {
        let body = node(index);
        let name = node_name(index);
        let typed: Node = serde_json::from_value(body.clone()).map_err(Error::Encode)?;
        match api.create(&PostParams::default(), &typed).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => return Err(Error::kube("create", &name, source)),
        }
        let status = json!({"status": body["status"]});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|source| Error::kube("mark Ready", &name, source))?;
        names.push(name);
    }
    tracing::info!(nodes = count, "simulated nodes ready");
    Ok(names)
}

/// How often a kubelet renews its node Lease (the kubelet's default), and how long the Lease
/// says it holds.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

/// What a kubelet does to stay in the cluster: renew the node's Lease in `kube-node-lease`
/// and post a Ready condition with a fresh heartbeat, every 10 seconds until `shutdown`. A real
/// node lifecycle controller marks a node that stops doing this NotReady (50 s) and evicts its
/// pods.
pub async fn heartbeat(
    client: Client,
    nodes: Vec<String>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let api: Api<Node> = Api::all(client);
    let params = PatchParams::apply(super::FIELD_MANAGER).force();
    loop {
        let now = chrono::Utc::now();
        for node in &nodes {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": node,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                },
            });
            if let Err(error) = leases.patch(node, &params, &Patch::Apply(&lease)).await {
                tracing::warn!(%node, %error, "node lease not renewed");
            }
            let ready = json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }]}});
            if let Err(error) = api
                .patch_status(node, &PatchParams::default(), &Patch::Strategic(&ready))
                .await
            {
                tracing::warn!(%node, %error, "node status not posted");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Deletes the Nodes (a simulator that stops for good takes its nodes with it).
pub async fn remove(client: &Client, nodes: &[String]) {
    let api: Api<Node> = Api::all(client.clone());
    for node in nodes {
        if let Err(error) = api.delete(node, &Default::default()).await {
            tracing::debug!(%node, %error, "node not deleted");
        }
    }
}
