//! The kubelet's status manager for what happens to containers after they started: the runtime
//! reports a process that died, was restarted (`restartCount` + 1) or became ready, and this
//! writes the pod's `containerStatuses` and its Ready conditions; after missing updates it
//! reports every pod's state that differs from what it last reported. A pod that is gone,
//! being deleted or replaced by another of the same name is left alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::kubelet::conditions;
use super::realpod::PodUpdate;
use super::{Context, Error, patch_params};

/// How many pod status writes are on their way at once: one at a time (a read and a patch,
/// about 30 ms on the real API server), 500 pods becoming ready took the reporter longer than
/// they took to start, and the channel overflowed.
const PARALLEL_WRITES: usize = 8;

/// Reports the runtime's container updates until `shutdown`.
pub async fn report(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(mut updates) = ctx.options.runtime.subscribe() else {
        return;
    };
    let mut reported = Reported::default();
    loop {
        let first = tokio::select! {
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            update = updates.recv() => update,
        };
        match first {
            Ok(first) => {
                // Every update queued by now, the last of each pod's: written in parallel, one
                // write per pod, so that no older state of a pod lands after a newer one.
                let mut batch = vec![first];
                let lagged = loop {
                    match updates.try_recv() {
                        Ok(update) => batch.push(update),
                        Err(TryRecvError::Lagged(_)) => break true,
                        Err(_) => break false,
                    }
                };
                reported.write_all(&ctx, latest_of_each_pod(batch)).await;
                if lagged {
                    catch_up(&ctx, &mut updates, &mut reported).await;
                } else if reported.outgrown() {
                    reported.keep_only(&ctx.options.runtime.current_states());
                }
            }
            // An update is about one pod: a later one does not stand for a missed one of
            // another pod (hundreds of pods becoming ready at once overflow the channel).
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "container updates missed");
                catch_up(&ctx, &mut updates, &mut reported).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Reports every pod's state now. What is still queued is older than that and goes unread:
/// read one by one after a catch-up, it had overflowed the channel again by the end of it, and
/// at 500 pods every pod's status was written again about every ten seconds for a minute after
/// the last one started.
async fn catch_up(ctx: &Context, updates: &mut Receiver<PodUpdate>, reported: &mut Reported) {
    tracing::debug!("reporting every pod's state");
    *updates = updates.resubscribe();
    let states = ctx.options.runtime.current_states();
    reported.keep_only(&states);
    reported.write_all(ctx, states).await;
}

/// The last update of each pod in `batch`, in the order the pods first appear.
fn latest_of_each_pod(batch: Vec<PodUpdate>) -> Vec<PodUpdate> {
    let mut latest: Vec<PodUpdate> = Vec::with_capacity(batch.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for update in batch {
        match index.get(&update.uid) {
            Some(&i) => latest[i] = update,
            None => {
                index.insert(update.uid.clone(), latest.len());
                latest.push(update);
            }
        }
    }
    latest
}

/// What was last reported for each pod (by UID): an update that says the same again (a
/// catch-up after missed updates says it for every pod) is not written twice, as a kubelet's
/// status manager writes a pod's status only when it changed. Pods that stopped are forgotten
/// at a catch-up, and whenever the record has doubled since it was last trimmed: a sandbox
/// that kills a pod a minute for a week would otherwise remember 10,000 of them.
#[derive(Default)]
struct Reported {
    last: HashMap<String, Vec<ContainerStatus>>,
    /// How many pods were left at the last trim.
    kept: usize,
}

/// The fewest pods remembered before a trim is worth its listing of every running pod.
const TRIM_FROM: usize = 64;

impl Reported {
    /// Writes the updates that are news, [`PARALLEL_WRITES`] at a time (at most one per pod).
    async fn write_all(&mut self, ctx: &Context, updates: Vec<PodUpdate>) {
        let news: Vec<PodUpdate> = updates.into_iter().filter(|u| self.is_news(u)).collect();
        let results: Vec<(PodUpdate, Result<(), Error>)> = futures::stream::iter(news)
            .map(|update| async move {
                let result = write(ctx, &update).await;
                (update, result)
            })
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        for (update, result) in results {
            match result {
                Ok(()) => self.written(&update),
                Err(error) => {
                    tracing::warn!(pod = %update.name, %error, "container status not reported");
                }
            }
        }
    }

    fn is_news(&self, update: &PodUpdate) -> bool {
        self.last.get(&update.uid) != Some(&update.containers)
    }

    fn written(&mut self, update: &PodUpdate) {
        self.last
            .insert(update.uid.clone(), update.containers.clone());
    }

    /// Whether the record has doubled since its last trim (see [`Reported`]).
    fn outgrown(&self) -> bool {
        self.last.len() > 2 * self.kept.max(TRIM_FROM)
    }

    /// Forgets the pods that no longer run.
    fn keep_only(&mut self, running: &[PodUpdate]) {
        let running: HashSet<&str> = running.iter().map(|u| u.uid.as_str()).collect();
        self.last.retain(|uid, _| running.contains(uid.as_str()));
        self.kept = self.last.len();
    }
}

async fn write(ctx: &Context, update: &PodUpdate) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &update.namespace);
    let pod = api
        .get_opt(&update.name)
        .await
        .map_err(|source| Error::kube("read", &update.name, source))?;
    let Some(pod) = pod else {
        return Ok(());
    };
    if pod.uid().as_deref() != Some(update.uid.as_str())
        || pod.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let ready = update.containers.iter().all(|c| c.ready);
    let status = json!({"status": {
        "containerStatuses": update.containers,
        "conditions": conditions(ready),
    }});
    api.patch_status(&update.name, &patch_params(), &Patch::Merge(status))
        .await
        .map_err(|source| Error::kube("report container status of", &update.name, source))?;
    tracing::debug!(pod = %update.name, ready, "container status reported");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(uid: &str, ready: bool, restarts: i32) -> PodUpdate {
        PodUpdate {
            namespace: "default".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            containers: vec![ContainerStatus {
                name: "app".into(),
                ready,
                restart_count: restarts,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_state_already_reported_is_not_written_again() {
        let mut reported = Reported::default();
        assert!(reported.is_news(&update("a", false, 0)));
        reported.written(&update("a", false, 0));
        assert!(!reported.is_news(&update("a", false, 0)));
        assert!(reported.is_news(&update("a", true, 0)), "became ready");
        reported.written(&update("a", true, 0));
        assert!(reported.is_news(&update("a", false, 1)), "restarted");
        assert!(reported.is_news(&update("b", true, 0)), "another pod");
    }

    #[test]
    fn a_batch_keeps_the_last_update_of_each_pod_in_first_seen_order() {
        let latest = latest_of_each_pod(vec![
            update("a", false, 0),
            update("b", false, 0),
            update("a", true, 0),
            update("c", false, 0),
            update("b", true, 0),
        ]);
        let seen: Vec<(&str, bool)> = latest
            .iter()
            .map(|u| (u.uid.as_str(), u.containers[0].ready))
            .collect();
        assert_eq!(seen, [("a", true), ("b", true), ("c", false)]);
    }

    #[test]
    fn the_record_is_trimmed_each_time_it_doubles() {
        let mut reported = Reported::default();
        let churned: Vec<PodUpdate> = (0..=2 * TRIM_FROM)
            .map(|i| update(&i.to_string(), true, 0))
            .collect();
        for pod in &churned[..2 * TRIM_FROM] {
            reported.written(pod);
        }
        assert!(!reported.outgrown());
        reported.written(&churned[2 * TRIM_FROM]);
        assert!(reported.outgrown(), "every pod ever started is remembered");
        let running = &churned[..TRIM_FROM + 1];
        reported.keep_only(running);
        assert_eq!(reported.last.len(), TRIM_FROM + 1);
        for pod in (0..=TRIM_FROM).map(|i| update(&format!("new-{i}"), true, 0)) {
            reported.written(&pod);
        }
        assert!(!reported.outgrown(), "twice what was kept, not yet more");
        reported.written(&update("one-more", true, 0));
        assert!(reported.outgrown());
    }

    #[test]
    fn pods_that_stopped_are_forgotten_and_reported_afresh_if_seen_again() {
        let mut reported = Reported::default();
        reported.written(&update("a", true, 0));
        reported.written(&update("b", true, 0));
        reported.keep_only(&[update("b", true, 0)]);
        assert!(reported.is_news(&update("a", true, 0)));
        assert!(!reported.is_news(&update("b", true, 0)));
    }
}
