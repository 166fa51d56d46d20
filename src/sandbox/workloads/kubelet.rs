//! Scheduler and kubelet in one: places each unscheduled pod on a simulated node (round robin,
//! `spec.nodeName` set by a patch), then, after `start_delay`, "starts" it through the
//! [`PodRuntime`](super::runtime::PodRuntime) and reports it Running and Ready with a pod IP
//! from the node's 10.244.<node>.0/24. A pod being deleted (only visible when finalizers hold
//! it: the API server removes other pods at once) is stopped when its grace period is over,
//! reported terminated and confirmed with a delete of grace period 0. Pods removed from the API
//! are stopped by [`reap`].
//!
//! Simplifications: no binding subresource (a patch of `spec.nodeName`), no resource fit,
//! taints, affinity or `schedulerName` other than the default; no probes of its own (a
//! container is ready when the runtime says so: at once when simulated), restarts only as the
//! runtime reports them ([`container_updates`](super::container_updates)) or after a restart of
//! the sandbox itself ([`resume`]), a status sync only for the Ready condition
//! ([`keep_ready_true`]), no init containers, no image pulls (the `Pulled` event says the image
//! is present).

use super::events;
use super::naming::{node_index, node_ip};
use super::runtime::{Placement, RuntimeError};
use super::{Context, ControlPlane, Error, lock, now, patch_params};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn is_ours(ctx: &Context, node: &str) -> bool {
    ctx.nodes.iter().any(|n| n == node)
}

pub(super) fn conditions(ready: bool) -> serde_json::Value {
    let t = now();
    let ready = if ready { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": ready, "lastTransitionTime": t},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
    ])
}

pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));

    if let Some(deleted_at) = &pod.metadata.deletion_timestamp {
        let Some(node) = node.filter(|n| is_ours(&ctx, n)) else {
            return Ok(Action::await_change());
        };
        return terminate(&api, &pod, &node, deleted_at.0, finished, &ctx).await;
    }
    if finished {
        return Ok(Action::await_change());
    }
    match node {
        // A real kube-scheduler binds pods itself; the kubelet waits for that.
        None if ctx.options.control_plane == ControlPlane::Real => Ok(Action::await_change()),
        None => schedule(&api, &pod, &ctx).await,
        Some(node) if is_ours(&ctx, &node) => start(&api, &pod, &node, &ctx).await,
        Some(_) => Ok(Action::await_change()),
    }
}

/// The scheduler's part: pick a node and bind the pod to it.
async fn schedule(api: &Api<Pod>, pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    let scheduler = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref());
    if !matches!(scheduler, None | Some("default-scheduler")) {
        return Ok(Action::await_change());
    }
    let Some(node) = lock(&ctx.placement).round_robin.pick(&ctx.nodes).cloned() else {
        return Ok(Action::await_change());
    };
    let name = pod.name_any();
    api.patch(
        &name,
        &patch_params(),
        &Patch::Merge(json!({"spec": {"nodeName": node}})),
    )
    .await
    .map_err(|source| Error::kube("bind", &name, source))?;
    let scheduled = json!({"status": {"conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
    ]}});
    api.patch_status(&name, &patch_params(), &Patch::Merge(scheduled))
        .await
        .map_err(|source| Error::kube("mark scheduled", &name, source))?;
    tracing::debug!(pod = %name, node = %node, "pod scheduled");
    events::scheduled(&ctx.client, events::reference(pod), &node).await;
    Ok(Action::await_change())
}

/// The kubelet's part: after the start delay, start the pod and report it Running and Ready.
/// For a pod already Running: [`keep_ready_true`] when its containers run, [`resume`] when they
/// died with an earlier run of the sandbox.
async fn start(api: &Api<Pod>, pod: &Pod, node: &str, ctx: &Context) -> Result<Action, Error> {
    let uid = pod.uid().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some("Running") && status.pod_ip.is_some() {
        let ours = lock(&ctx.synced).contains(&uid);
        if ours || ctx.options.runtime.survives_kubelet_restart() {
            lock(&ctx.synced).insert(uid);
            return keep_ready_true(api, pod, ctx).await;
        }
        return resume(api, pod, node, ctx).await;
    }
    let seen = *lock(&ctx.starting)
        .entry(uid.clone())
        .or_insert_with(Instant::now);
    if seen.elapsed() < ctx.options.start_delay {
        return Ok(Action::requeue(ctx.options.start_delay - seen.elapsed()));
    }
    let placement = place(pod, node, None, ctx).await?;
    let containers = match ctx.options.runtime.start(pod, &placement).await {
        Ok(containers) => containers,
        Err(error) => return Ok(could_not_start(pod, node, ctx, &error).await),
    };
    lock(&ctx.start_failures).remove(&uid);
    report_running(api, pod, &placement, &containers, Some(now())).await?;
    lock(&ctx.starting).remove(&uid);
    lock(&ctx.synced).insert(uid);
    let name = pod.name_any();
    tracing::debug!(pod = %name, node = %node, ip = %placement.pod_ip, "pod running");
    containers_started(pod, node, ctx).await;
    Ok(Action::await_change())
}

/// How soon the kubelet reports a pod Ready again after it last did: while its node is not
/// ready the node lifecycle controller marks the pod not ready on every change, and the two
/// must not chase each other.
const READY_AGAIN_EVERY: Duration = Duration::from_secs(5);

/// The kubelet's status manager for a running pod: a pod whose containers are all ready but
/// whose Ready condition someone else set otherwise (the node lifecycle controller, after the
/// node missed its heartbeats: an API server outage, a stalled machine, a restart of the
/// sandbox) is reported Ready again, as a kubelet's status sync does.
async fn keep_ready_true(api: &Api<Pod>, pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    let uid = pod.uid().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let containers = ctx
        .options
        .runtime
        .statuses(&uid)
        .unwrap_or_else(|| status.container_statuses.clone().unwrap_or_default());
    let ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let shown_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || shown_ready {
        // Not ready by the runtime's word is what `container_updates` reports.
        return Ok(Action::await_change());
    }
    let last = lock(&ctx.ready_again).get(&uid).copied();
    if let Some(wait) = last.and_then(|at| READY_AGAIN_EVERY.checked_sub(at.elapsed())) {
        return Ok(Action::requeue(wait));
    }
    let name = pod.name_any();
    let ready_again = json!({"status": {"conditions": conditions(true)}});
    api.patch_status(&name, &patch_params(), &Patch::Merge(ready_again))
        .await
        .map_err(|source| Error::kube("report ready", &name, source))?;
    lock(&ctx.ready_again).insert(uid, Instant::now());
    tracing::info!(pod = %name, "pod reported Ready again: its containers are ready");
    Ok(Action::await_change())
}

/// What a kubelet does after a restart for a pod it finds Running whose processes died with
/// the earlier kubelet (real pods: the next sandbox removes an earlier one's leftovers): a new
/// pod sandbox (`SandboxChanged`), the pod's old address when it is still free, and each
/// container's `restartCount` one higher.
async fn resume(api: &Api<Pod>, pod: &Pod, node: &str, ctx: &Context) -> Result<Action, Error> {
    let uid = pod.uid().unwrap_or_default();
    let name = pod.name_any();
    let status = pod.status.clone().unwrap_or_default();
    events::sandbox_changed(&ctx.client, events::reference(pod), node).await;
    let previous_ip = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
    let placement = place(pod, node, previous_ip, ctx).await?;
    // The runtime counts on from the restart counts the status shows.
    let containers = match ctx.options.runtime.start(pod, &placement).await {
        Ok(containers) => containers,
        Err(error) => return Ok(could_not_start(pod, node, ctx, &error).await),
    };
    lock(&ctx.start_failures).remove(&uid);
    // A kubelet keeps the pod's startTime: the pod is the same, its sandbox is new.
    report_running(api, pod, &placement, &containers, None).await?;
    lock(&ctx.synced).insert(uid);
    tracing::info!(pod = %name, node = %node, ip = %placement.pod_ip, "pod started again after a kubelet restart");
    containers_started(pod, node, ctx).await;
    Ok(Action::await_change())
}

/// A pod whose sandbox the runtime could not make stays Pending, as on a kubelet: a Warning
/// Event `FailedCreatePodSandBox` in the runtime's words (once per distinct message, not on
/// every retry), and another try after a backoff. A stopped pod is not tried again.
async fn could_not_start(pod: &Pod, node: &str, ctx: &Context, error: &RuntimeError) -> Action {
    if matches!(error, RuntimeError::Stopped(_)) {
        return Action::await_change();
    }
    let uid = pod.uid().unwrap_or_default();
    let message = sandbox_failure_message(&error.to_string());
    let (failures, news) = {
        let mut failures = lock(&ctx.start_failures);
        let entry = failures.entry(uid).or_default();
        entry.0 = entry.0.saturating_add(1);
        let news = entry.1 != message;
        entry.1.clone_from(&message);
        (entry.0, news)
    };
    let retry = start_retry_after(failures);
    if news {
        tracing::warn!(pod = %pod.name_any(), node, error = %message, retry_in = ?retry, "could not start a pod");
        events::failed_create_pod_sandbox(&ctx.client, events::reference(pod), node, &message)
            .await;
    }
    Action::requeue(retry)
}

/// The kubelet's words for a sandbox it could not make, with what to do where the cause is
/// one a user can act on.
fn sandbox_failure_message(error: &str) -> String {
    // EXFULL from the bridge: a Linux bridge takes at most 1024 ports (BR_MAX_PORTS).
    let hint = if error.contains("Exchange full") {
        "; the sandbox's pod bridge has no port left (a Linux bridge takes 1024, so one sandbox \
         runs at most 1023 real pods): scale down, or start another sandbox for more"
    } else {
        ""
    };
    format!("Failed to create pod sandbox: {error}{hint}")
}

/// How long before the next try after `failures` failed starts in a row: doubling from
/// 300 ms, at most 10 s.
fn start_retry_after(failures: u32) -> Duration {
    let doubled = 300u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_millis(doubled.min(10_000))
}

/// The node's address for the pod and a pod address on the node: `preferred` (an address the
/// pod's status shows, in the runtime's form) when it is this node's and free.
async fn place(
    pod: &Pod,
    node: &str,
    preferred: Option<Ipv4Addr>,
    ctx: &Context,
) -> Result<Placement, Error> {
    let uid = pod.uid().unwrap_or_default();
    let index =
        node_index(node).ok_or_else(|| Error::Invalid(format!("{node} is not a sandbox node")))?;
    // Addresses of existing pods count as taken (they may predate this simulator). Only this
    // node's pods can hold this node's addresses: listing every pod of the cluster for each
    // start made starting N pods cost N^2 (a sandbox filling to 1,000 pods slowed from 10
    // starts a second to 2).
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|source| Error::kube("list pods for", "IP allocation", source))?;
    let in_use: HashSet<Ipv4Addr> = pods
        .iter()
        .filter(|p| p.uid().as_deref() != Some(uid.as_str()))
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
        .filter_map(|ip| ctx.options.runtime.allocated_ip(ip))
        .collect();
    let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    let preferred = preferred.and_then(|ip| ctx.options.runtime.allocated_ip(ip));
    let allocated = {
        let mut placement = lock(&ctx.placement);
        placement.ips.retain_on_node(index, &live);
        placement
            .ips
            .allocate_preferring(&uid, index, preferred, &in_use)
    }
    .ok_or_else(|| Error::Invalid(format!("no pod IP left on {node}")))?;
    Ok(Placement {
        node: node.to_string(),
        pod_ip: ctx.options.runtime.pod_ip(allocated),
        host_ip: node_ip(index),
    })
}

/// Report the pod Running where `placement` says, with these containers (`start_time` only
/// when the pod starts for the first time).
async fn report_running(
    api: &Api<Pod>,
    pod: &Pod,
    placement: &Placement,
    containers: &[ContainerStatus],
    start_time: Option<String>,
) -> Result<(), Error> {
    let ready = containers.iter().all(|c| c.ready);
    let name = pod.name_any();
    let mut running = json!({"status": {
        "phase": "Running",
        "conditions": conditions(ready),
        "hostIP": placement.host_ip.to_string(),
        "hostIPs": [{"ip": placement.host_ip.to_string()}],
        "podIP": placement.pod_ip.to_string(),
        "podIPs": [{"ip": placement.pod_ip.to_string()}],
        "containerStatuses": containers,
    }});
    if let Some(start_time) = start_time {
        running["status"]["startTime"] = json!(start_time);
    }
    api.patch_status(&name, &patch_params(), &Patch::Merge(running))
        .await
        .map_err(|source| Error::kube("report running", &name, source))?;
    Ok(())
}

async fn containers_started(pod: &Pod, node: &str, ctx: &Context) {
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let image = c.image.as_deref().unwrap_or_default();
        events::container_started(&ctx.client, events::reference(pod), node, &c.name, image).await;
    }
}

/// Graceful termination of a pod held by finalizers: wait out the grace period, stop it,
/// report it terminated, and confirm the deletion (grace period 0).
async fn terminate(
    api: &Api<Pod>,
    pod: &Pod,
    node: &str,
    deadline: k8s_openapi::jiff::Timestamp,
    finished: bool,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = pod.name_any();
    let left = deadline.as_millisecond() - k8s_openapi::jiff::Timestamp::now().as_millisecond();
    // The embedded server only shows deleted pods that finalizers hold, and the simulation
    // keeps them until their grace period ends. A real server shows every deleted pod of a node
    // to its kubelet, which stops the containers at once (the demo app exits on SIGTERM) and
    // confirms: that is what a pod kill looks like on a cluster.
    let wait_out_grace = ctx.options.control_plane == ControlPlane::Simulated;
    if wait_out_grace && !finished && left > 0 {
        return Ok(Action::requeue(Duration::from_millis(left.unsigned_abs())));
    }
    if !finished {
        let uid = pod.uid().unwrap_or_default();
        killed(ctx, pod, node).await;
        ctx.options
            .runtime
            .stop(&pod.namespace().unwrap_or_default(), &name, &uid)
            .await;
        let containers: Vec<serde_json::Value> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now()}},
            }))
            .collect();
        let stopped = json!({"status": {
            "phase": "Succeeded",
            "conditions": conditions(false),
            "containerStatuses": containers,
        }});
        api.patch_status(&name, &patch_params(), &Patch::Merge(stopped))
            .await
            .map_err(|source| Error::kube("report terminated", &name, source))?;
        tracing::debug!(pod = %name, node = %node, "pod terminated");
    }
    if pod.metadata.deletion_grace_period_seconds != Some(0) {
        match api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(source) => return Err(Error::kube("confirm the deletion of", &name, source)),
        }
    }
    Ok(Action::await_change())
}

/// The kubelet's `Killing` events for the containers of a pod it stops.
async fn killed(ctx: &Context, pod: &Pod, node: &str) {
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        events::container_killed(&ctx.client, events::reference(pod), node, &c.name).await;
    }
}

pub fn retry_after(_pod: Arc<Pod>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "kubelet pass failed");
    Action::requeue(Duration::from_millis(300))
}

/// Stop the runtime's copy of every pod that leaves the API, and forget its address.
pub async fn reap(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    loop {
        tokio::select! {
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Delete(pod))) => {
                    let on_our_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| is_ours(&ctx, n));
                    let uid = pod.uid().unwrap_or_default();
                    lock(&ctx.placement).ips.release(&uid);
                    lock(&ctx.starting).remove(&uid);
                    lock(&ctx.synced).remove(&uid);
                    lock(&ctx.ready_again).remove(&uid);
                    lock(&ctx.start_failures).remove(&uid);
                    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|_| on_our_node) {
                        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        if running {
                            killed(&ctx, &pod, node).await;
                        }
                        ctx.options.runtime.stop(&pod.namespace().unwrap_or_default(), &pod.name_any(), &uid).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "pod watch for the kubelet's reaper failed; retrying"),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sandbox_failure_message, start_retry_after};
    use std::time::Duration;

    #[test]
    fn a_full_bridge_says_how_many_pods_a_sandbox_runs_and_what_to_do() {
        let full = sandbox_failure_message(
            "failed to create the pod network for pod web-1: ip link set flv1 master flsbx0 up \
             failed (exit status: 2): RTNETLINK answers: Exchange full",
        );
        assert!(full.starts_with(
            "Failed to create pod sandbox: failed to create the pod network for pod web-1"
        ));
        assert!(full.contains("at most 1023 real pods"), "{full}");
        assert!(full.contains("scale down"), "{full}");
        let other =
            sandbox_failure_message("failed to create the pod cgroup for pod web-1: EACCES");
        assert_eq!(
            other,
            "Failed to create pod sandbox: failed to create the pod cgroup for pod web-1: EACCES"
        );
    }

    #[test]
    fn failed_starts_are_retried_sooner_first_and_at_most_every_ten_seconds() {
        let waits: Vec<Duration> = (1..=9).map(start_retry_after).collect();
        assert_eq!(waits[0], Duration::from_millis(300));
        assert_eq!(waits[1], Duration::from_millis(600));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[8], Duration::from_secs(10));
        assert_eq!(start_retry_after(u32::MAX), Duration::from_secs(10));
        assert_eq!(start_retry_after(0), Duration::from_millis(300));
    }
}
