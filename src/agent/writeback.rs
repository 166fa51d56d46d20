//! What the agent writes back to the API server: injection status, its finalizer, and the
//! node's capabilities; and how it reads an injection.
//!
//! Status writes carry only the fields the agent is changing (never a field copied from an
//! earlier read), as a merge patch conditional on the object's resourceVersion: a write based
//! on an outdated object gets 409 and is retried against a fresh read. A write that failed
//! otherwise (the API server unreachable, the answer lost) is kept and tried again every
//! resync, and goes with the next write of the same injection. A write that would move
//! the phase backwards for the generation it describes (`Applied` over `Reverted`, `Pending`
//! over anything) is dropped: status cannot go back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::admission::Verdict;
use super::converge::LiveInjection;
use super::tag::InjectionTag;
use crate::api::{AGENT_FINALIZER, FaultInjection, InjectionPhase, NODE_CAPABILITIES_ANNOTATION};

/// How often a conflicting write is retried against a fresh read.
const CONFLICT_RETRIES: usize = 5;

/// Publishes `capabilities` on every node, retrying until it works (abort the task when
/// another value supersedes it).
pub(super) async fn publish_capabilities(client: Client, nodes: Vec<String>, capabilities: String) {
    let api: Api<Node> = Api::all(client);
    let patch = json!({"metadata": {"annotations": {NODE_CAPABILITIES_ANNOTATION: capabilities}}});
    for node in nodes {
        loop {
            match api
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(%node, %capabilities, "published node capabilities");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%node, %error, "cannot publish node capabilities yet; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

pub(super) fn api_for(client: &Client, injection: &FaultInjection) -> Api<FaultInjection> {
    Api::namespaced(client.clone(), &injection.namespace().unwrap_or_default())
}

/// Rank of a phase: writes never lower it for the same observed generation.
pub(super) fn rank(phase: InjectionPhase) -> u8 {
    match phase {
        InjectionPhase::Pending => 0,
        InjectionPhase::Applied => 1,
        InjectionPhase::Reverted | InjectionPhase::Failed => 2,
    }
}

/// Writes status fields, shared by the agent's concurrent tasks. Remembers the
/// resourceVersion its own writes produced, so a write that follows another of ours does not
/// start from the (lagging) watch cache's copy.
#[derive(Clone)]
pub(super) struct StatusWriter {
    client: Client,
    /// What our last write of each injection returned: newer than the watch cache's copy
    /// until the watch catches up.
    versions: Arc<Mutex<HashMap<String, Written>>>,
    /// Injections whose finalizer we released, and when: the watch still shows it until the
    /// object's deletion arrives, and asking again would only get a 404.
    released: Arc<Mutex<HashMap<String, Instant>>>,
    /// Changes whose write failed for a reason other than the object itself (the API server
    /// unreachable, an answer lost on the way), by injection UID: tried again every resync
    /// and carried by the next write of the same injection, so that an `Applied` whose write
    /// was lost is not lost for good (the fault is in, and the controller waits for it).
    unwritten: Arc<Mutex<Unwritten>>,
}

#[derive(Default)]
struct Unwritten {
    changes: HashMap<String, (FaultInjection, StatusChange)>,
    tried_at: Option<Instant>,
}

/// How often failed status writes are tried again.
const RETRY_UNWRITTEN_EVERY: Duration = Duration::from_secs(1);

/// How long a released finalizer is remembered (the watch catches up well within it).
const RELEASED_FOR: Duration = Duration::from_secs(60);

/// The parts of an injection as our own last write left it.
#[derive(Clone, Debug)]
struct Written {
    resource_version: String,
    finalizers: Vec<String>,
}

/// What a status write changes.
#[derive(Clone, Debug, Default)]
pub(super) struct StatusChange {
    /// The new phase, with the generation it describes (`observedGeneration`).
    pub phase: Option<(InjectionPhase, Option<i64>)>,
    /// Other status fields (camelCase) and their new values; `null` removes one.
    pub fields: serde_json::Map<String, Value>,
}

impl StatusChange {
    pub fn phase(phase: InjectionPhase, generation: Option<i64>, message: String) -> Self {
        let mut change = StatusChange {
            phase: Some((phase, generation)),
            ..Self::default()
        };
        change.fields.insert("message".into(), json!(message));
        change
    }

    pub fn set(mut self, field: &str, value: Value) -> Self {
        self.fields.insert(field.into(), value);
        self
    }

    /// This change followed by `later`: the later phase and fields win, the others stay.
    fn then(mut self, later: StatusChange) -> StatusChange {
        if later.phase.is_some() {
            self.phase = later.phase;
        }
        self.fields.extend(later.fields);
        self
    }

    fn body(&self, resource_version: Option<&str>) -> Value {
        let mut status = self.fields.clone();
        if let Some((phase, generation)) = &self.phase {
            status.insert("phase".into(), json!(phase));
            status.insert("observedGeneration".into(), json!(generation));
        }
        let mut body = json!({ "status": status });
        if let Some(rv) = resource_version {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        body
    }

    /// Whether writing this over `current` would move the phase backwards.
    fn goes_backwards(&self, current: &FaultInjection) -> bool {
        let Some((phase, generation)) = self.phase else {
            return false;
        };
        let Some(status) = &current.status else {
            return false;
        };
        status.observed_generation == generation && rank(phase) < rank(status.phase)
    }
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            versions: Arc::default(),
            released: Arc::default(),
            unwritten: Arc::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn remember(&self, written: &FaultInjection) {
        if let (Some(uid), Some(rv)) = (written.uid(), written.resource_version()) {
            self.versions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    uid,
                    Written {
                        resource_version: rv,
                        finalizers: written.finalizers().to_vec(),
                    },
                );
        }
    }

    fn written(&self, injection: &FaultInjection) -> Option<Written> {
        let uid = injection.uid()?;
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .cloned()
    }

    pub fn forget(&self, uid: &str) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changes
            .remove(uid);
    }

    /// Tries again the writes that failed (at most every [`RETRY_UNWRITTEN_EVERY`]).
    pub async fn retry_unwritten(&self) {
        let pending: Vec<(FaultInjection, StatusChange)> = {
            let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
            if unwritten.changes.is_empty()
                || unwritten
                    .tried_at
                    .is_some_and(|at| at.elapsed() < RETRY_UNWRITTEN_EVERY)
            {
                return;
            }
            unwritten.tried_at = Some(Instant::now());
            unwritten
                .changes
                .drain()
                .map(|(_, pending)| pending)
                .collect()
        };
        for (injection, change) in pending {
            if self.write(&injection, change).await {
                tracing::info!(injection = %key_of(&injection), "wrote injection status that an earlier attempt could not");
            }
        }
    }

    fn keep_unwritten(&self, injection: &FaultInjection, change: StatusChange) {
        if let Some(uid) = injection.uid() {
            self.unwritten
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .changes
                .insert(uid, (injection.clone(), change));
        }
    }

    fn take_unwritten(&self, injection: &FaultInjection) -> Option<StatusChange> {
        let uid = injection.uid()?;
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changes
            .remove(&uid)
            .map(|(_, change)| change)
    }

    fn was_released(&self, uid: &str) -> bool {
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .is_some_and(|at| at.elapsed() < RELEASED_FOR)
    }

    fn mark_released(&self, uid: String) {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released.retain(|_, at| at.elapsed() < RELEASED_FOR);
        released.insert(uid, Instant::now());
    }

    /// Whether `seen` (an object as a watch event brings it) is exactly what this writer's
    /// last write of it returned: the echo of the agent's own write, which tells it nothing
    /// it does not know.
    pub fn is_own_write(&self, seen: &FaultInjection) -> bool {
        let Some(version) = seen.resource_version() else {
            return false;
        };
        self.written(seen)
            .is_some_and(|written| written.resource_version == version)
    }

    /// The version of the injection this writer knows to be the latest: its own last write's,
    /// else the one `injection` carries.
    pub fn known_version(&self, injection: &FaultInjection) -> Option<String> {
        self.written(injection)
            .map(|w| w.resource_version)
            .or_else(|| injection.resource_version())
    }

    /// Writes `change` to the injection's status. Returns whether it was written.
    pub async fn write(&self, injection: &FaultInjection, change: StatusChange) -> bool {
        let version = self.known_version(injection);
        self.write_since(injection, change, version).await
    }

    /// [`Self::write`] based on the object as it was at `version`: if anything wrote it since
    /// (a revert's status, say), the object is read again and a change that would move its
    /// phase backwards is dropped. For a status held back a while (see the runner's
    /// `acknowledge`).
    pub async fn write_since(
        &self,
        injection: &FaultInjection,
        change: StatusChange,
        version: Option<String>,
    ) -> bool {
        // A change not written yet goes with this one.
        let change = match self.take_unwritten(injection) {
            Some(earlier) => earlier.then(change),
            None => change,
        };
        let api = api_for(&self.client, injection);
        let name = injection.name_any();
        // What we know of the object; the watch cache's copy may be behind, never ahead.
        let mut current: Option<FaultInjection> = Some(injection.clone());
        let mut version = version;
        for _ in 0..CONFLICT_RETRIES {
            if let Some(fresh) = &current
                && change.goes_backwards(fresh)
            {
                tracing::debug!(injection = %key_of(injection), ?change.phase, "dropped a status write that would move the phase backwards");
                return false;
            }
            let body = change.body(version.as_deref());
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(written) => {
                    self.remember(&written);
                    return true;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Someone wrote since the object we based this on: read it again.
                    match api.get_opt(&name).await {
                        Ok(Some(fresh)) => {
                            version = fresh.resource_version();
                            current = Some(fresh);
                        }
                        Ok(None) => return false,
                        Err(error) => {
                            tracing::warn!(injection = %key_of(injection), %error, "cannot re-read the injection after a conflict; trying again later");
                            self.keep_unwritten(injection, change);
                            return false;
                        }
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 404 => return false,
                Err(error) => {
                    tracing::warn!(injection = %key_of(injection), %error, "cannot write injection status; trying again later");
                    self.keep_unwritten(injection, change);
                    return false;
                }
            }
        }
        tracing::warn!(injection = %key_of(injection), "gave up writing injection status after repeated conflicts; trying again later");
        self.keep_unwritten(injection, change);
        false
    }

    /// Adds or removes the agent's finalizer: a compare-and-swap on the finalizers alone (a
    /// JSON patch that tests the list it replaces), because other writers, the controller, may
    /// change that list at the same time. Not on the resourceVersion: the controller's delete
    /// moves it just before every removal, so a removal based on it met a conflict, a read and
    /// a second patch each time (three requests per injection at the end of every experiment).
    pub async fn set_finalizer(&self, injection: &FaultInjection, present: bool) {
        let uid = injection.uid().unwrap_or_default();
        if !present && self.was_released(&uid) {
            return;
        }
        let api = api_for(&self.client, injection);
        let name = injection.name_any();
        let mut finalizers = match self.written(injection) {
            Some(written) => written.finalizers,
            None => injection.finalizers().to_vec(),
        };
        for _ in 0..CONFLICT_RETRIES {
            let has = finalizers.iter().any(|f| f == AGENT_FINALIZER);
            if has == present {
                return;
            }
            let patch = finalizer_patch(&finalizers, present);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
            {
                Ok(written) if present => {
                    self.remember(&written);
                    return;
                }
                // Released: the object goes, and so does what we knew of it.
                Ok(_) => {
                    self.forget(&uid);
                    self.mark_released(uid);
                    return;
                }
                // The list is not what we based the patch on (422: its test failed).
                Err(kube::Error::Api(status)) if matches!(status.code, 409 | 422) => {
                    match api.get_opt(&name).await {
                        Ok(Some(fresh)) => finalizers = fresh.finalizers().to_vec(),
                        Ok(None) => return,
                        Err(error) => {
                            tracing::debug!(injection = %key_of(injection), %error, "cannot re-read the injection; the next event retries the finalizer");
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(injection = %key_of(injection), %error, "finalizer update failed; the next event retries");
                    return;
                }
            }
        }
        tracing::debug!(injection = %key_of(injection), "finalizer update lost repeated races; the next event retries");
    }
}

/// A JSON patch that sets the finalizers to `current` with (`present`) or without the agent's,
/// and applies only while they are still `current` (a missing list tests as `null`).
fn finalizer_patch(current: &[String], present: bool) -> json_patch::Patch {
    let mut wanted: Vec<&String> = current.iter().filter(|f| *f != AGENT_FINALIZER).collect();
    let agent = AGENT_FINALIZER.to_string();
    if present {
        wanted.push(&agent);
    }
    let tested = if current.is_empty() {
        serde_json::Value::Null
    } else {
        json!(current)
    };
    serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": tested},
        {"op": "add", "path": "/metadata/finalizers", "value": wanted},
    ]))
    .expect("a well-formed JSON patch")
}

pub(super) fn key_of(injection: &FaultInjection) -> String {
    format!(
        "{}/{}",
        injection.namespace().unwrap_or_default(),
        injection.name_any()
    )
}

pub(super) fn tag_of(injection: &FaultInjection) -> Option<InjectionTag> {
    InjectionTag::from_uid(injection.metadata.uid.as_deref()?)
}

pub(super) fn live_injection(
    injection: &FaultInjection,
    consent: Verdict,
    ending: bool,
) -> Option<LiveInjection> {
    let status = injection.status.clone().unwrap_or_default();
    Some(LiveInjection {
        key: key_of(injection),
        tag: tag_of(injection)?,
        pod_uid: injection.spec.target.uid.clone(),
        expires_at: injection.spec.expires_at,
        generation: injection.metadata.generation,
        deleting: injection.metadata.deletion_timestamp.is_some(),
        ending,
        has_finalizer: injection.finalizers().iter().any(|f| f == AGENT_FINALIZER),
        phase: status.phase,
        observed_generation: status.observed_generation,
        consent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FaultInjectionStatus;

    #[tokio::test]
    async fn only_the_version_of_its_own_last_write_is_an_echo() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let writer = StatusWriter::new(Client::try_from(config).unwrap());
        let version = |uid: &str, rv: Option<&str>| -> FaultInjection {
            let mut injection: FaultInjection = serde_json::from_value(json!({
                "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
                "metadata": {"name": "fi", "namespace": "shop", "uid": uid},
                "spec": {"experiment": {"name": "e"}, "target": {"namespace": "shop", "name": "a", "uid": "p"},
                         "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                         "expiresAt": "2030-01-01T00:00:00Z"},
            }))
            .unwrap();
            injection.metadata.resource_version = rv.map(String::from);
            injection
        };
        assert!(
            !writer.is_own_write(&version("u1", Some("5"))),
            "nothing written yet"
        );
        writer.remember(&version("u1", Some("5")));
        assert!(writer.is_own_write(&version("u1", Some("5"))));
        assert!(
            !writer.is_own_write(&version("u1", Some("6"))),
            "someone wrote after us"
        );
        assert!(
            !writer.is_own_write(&version("u2", Some("5"))),
            "another injection"
        );
        assert!(!writer.is_own_write(&version("u1", None)));
        writer.forget("u1");
        assert!(!writer.is_own_write(&version("u1", Some("5"))));
    }

    #[test]
    fn an_unwritten_change_followed_by_another_keeps_what_the_later_does_not_say() {
        let lost = StatusChange::phase(InjectionPhase::Applied, Some(1), "applied".into())
            .set("mechanism", json!("nfqueue"))
            .set("matchedPackets", json!(0));
        let counts = StatusChange::default().set("matchedPackets", json!(40));
        assert_eq!(
            lost.clone().then(counts).body(None),
            json!({"status": {"phase": "Applied", "observedGeneration": 1, "message": "applied",
                              "mechanism": "nfqueue", "matchedPackets": 40}})
        );
        let reverted = StatusChange::phase(InjectionPhase::Reverted, Some(1), "reverted".into());
        assert_eq!(
            lost.then(reverted).body(None)["status"]["phase"],
            json!("Reverted")
        );
    }

    #[test]
    fn a_change_carries_only_its_own_fields_and_the_version_it_is_based_on() {
        let change = StatusChange::default().set("bypassedPackets", json!(7));
        assert_eq!(
            change.body(Some("42")),
            json!({"status": {"bypassedPackets": 7}, "metadata": {"resourceVersion": "42"}})
        );
        let applied = StatusChange::phase(InjectionPhase::Applied, Some(3), "ok".into());
        assert_eq!(
            applied.body(None),
            json!({"status": {"phase": "Applied", "observedGeneration": 3, "message": "ok"}})
        );
    }

    #[test]
    fn a_phase_never_goes_back_for_the_same_generation() {
        let mut current = FaultInjection::new("x", Default::default());
        current.status = Some(FaultInjectionStatus {
            phase: InjectionPhase::Reverted,
            observed_generation: Some(1),
            ..Default::default()
        });
        let applied =
            |generation| StatusChange::phase(InjectionPhase::Applied, generation, "".into());
        assert!(applied(Some(1)).goes_backwards(&current));
        // A new generation starts over.
        assert!(!applied(Some(2)).goes_backwards(&current));
        // Counters never touch the phase.
        assert!(!StatusChange::default().goes_backwards(&current));
        assert!(
            !StatusChange::phase(InjectionPhase::Failed, Some(1), "".into())
                .goes_backwards(&current)
        );
    }

    #[test]
    fn a_finalizer_patch_changes_only_the_agents_entry_and_only_on_the_list_it_saw() {
        use crate::sandbox::apiserver::patch::{PatchError, json_patch};
        let apply = |finalizers: Option<Value>, patch: json_patch::Patch| {
            let mut doc = json!({"metadata": {"name": "x", "resourceVersion": "9"}});
            if let Some(list) = finalizers {
                doc["metadata"]["finalizers"] = list;
            }
            json_patch(&mut doc, &serde_json::to_value(patch).unwrap()).map(|()| doc)
        };
        let ours = AGENT_FINALIZER.to_string();
        let theirs = "example.com/keep".to_string();

        let released = apply(
            Some(json!([theirs, ours])),
            finalizer_patch(&[theirs.clone(), ours.clone()], false),
        )
        .unwrap();
        assert_eq!(released["metadata"]["finalizers"], json!([theirs]));
        // The object's version moved (a delete): nothing of it is tested.
        assert_eq!(released["metadata"]["resourceVersion"], "9");

        let added = apply(None, finalizer_patch(&[], true)).unwrap();
        assert_eq!(added["metadata"]["finalizers"], json!([ours]));

        // Someone else's finalizer arrived since the list was read: the patch does not apply.
        let raced = apply(
            Some(json!([ours, theirs])),
            finalizer_patch(std::slice::from_ref(&ours), false),
        );
        assert!(matches!(raced, Err(PatchError::Failed(_))), "{raced:?}");
    }
}
