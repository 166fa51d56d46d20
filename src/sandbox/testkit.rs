//! Stand-ins for the parts of a cluster the controller talks to but that need root or real
//! services: scripted probes and a node agent that only pretends to apply faults. Shared by the
//! integration tests and the benchmarks; also usable against the sandbox API server.
//!
//! Caveats: [`stand_in_agent`] applies nothing. It plays the agent's protocol (finalizer on,
//! status `Applied`, finalizer off once deleted) for every FaultInjection on every node, one
//! watch event at a time.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{
    api::{
        AGENT_FINALIZER, ChaosExperiment, FaultInjection, FaultInjectionStatus, InjectionPhase,
        NAMESPACE_OPT_IN_LABEL, NAMESPACE_OPT_IN_VALUE, Phase, ProbePhase, TargetRecord,
        TargetState,
    },
    controller::HypothesisSource,
    lifecycle::HypothesisView,
    probes::hypothesis::ProbeRecord,
};

/// Probes whose verdict is set per phase by whoever drives the controller; unset phases hold.
/// They can also be told to panic, to show that a panic stays with its experiment.
#[derive(Default)]
pub struct ScriptedProbes {
    views: Mutex<HashMap<ProbePhase, HypothesisView>>,
    panics: Mutex<HashMap<String, Phase>>,
}

impl ScriptedProbes {
    pub fn set(&self, phase: ProbePhase, view: HypothesisView) {
        self.views().insert(phase, view);
    }

    /// Forgets every scripted view: all phases hold again.
    pub fn clear(&self) {
        self.views().clear();
    }

    /// Panics inside the controller's reconcile of the experiment `name` when its probes are
    /// watched while it is in `phase` (as a bug in the probe code would).
    pub fn panic_while(&self, name: &str, phase: Phase) {
        self.panics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), phase);
    }

    /// A panic elsewhere cannot leave the map half-written; a poisoned lock is taken over.
    fn views(&self) -> MutexGuard<'_, HashMap<ProbePhase, HypothesisView>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HypothesisSource for ScriptedProbes {
    fn preflight(&self, _: &ChaosExperiment) -> Result<(), String> {
        Ok(())
    }
    fn watch(&self, experiment: &ChaosExperiment, _: Option<ProbePhase>) {
        let name = experiment.name_any();
        let phase = experiment.status.as_ref().map(|s| s.phase);
        let panics = self.panics.lock().unwrap_or_else(|p| p.into_inner());
        if phase.is_some() && panics.get(&name) == phase.as_ref() {
            drop(panics);
            panic!("scripted panic while watching the probes of {name}");
        }
    }
    fn view(&self, _: &str, phase: ProbePhase) -> HypothesisView {
        self.views()
            .get(&phase)
            .cloned()
            .unwrap_or(HypothesisView::Holding)
    }
    fn snapshot(&self, _: &str) -> Option<ProbeRecord> {
        None
    }
    fn forget(&self, _: &str) {}
}

/// Plays the node agent for every node until `stop` resolves: holds its finalizer on each
/// FaultInjection, reports it Applied, and lets go once it is deleted. Failed writes are
/// dropped; the next watch event for the object retries.
pub async fn stand_in_agent(client: Client, stop: impl std::future::Future) {
    let all: Api<FaultInjection> = Api::all(client.clone());
    let events = watcher(all, watcher::Config::default()).applied_objects();
    let work = events.for_each(|event| {
        let client = client.clone();
        async move {
            let Ok(injection) = event else { return };
            let api: Api<FaultInjection> =
                Api::namespaced(client, &injection.namespace().unwrap_or_default());
            let name = injection.name_any();
            let has_finalizer = injection.finalizers().iter().any(|f| f == AGENT_FINALIZER);
            if injection.metadata.deletion_timestamp.is_some() {
                let patch = json!({"metadata": {"finalizers": null}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            } else if !has_finalizer {
                let patch = json!({"metadata": {"finalizers": [AGENT_FINALIZER]}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            } else if injection
                .status
                .as_ref()
                .is_none_or(|s| s.phase != InjectionPhase::Applied)
            {
                let status = FaultInjectionStatus {
                    phase: InjectionPhase::Applied,
                    mechanism: Some("stand-in".into()),
                    applied_at: Some(chrono::Utc::now()),
                    ..Default::default()
                };
                let patch = json!({"status": status});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            }
        }
    });
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

/// Stands a running ChaosExperiment behind a hand-written FaultInjection, as the controller
/// would have, so that the node agent accepts it (see `agent::admission`): labels the target's
/// namespace `faultline.dev/chaos=enabled`, creates the experiment `spec.experiment.name` in
/// the injection's namespace if it is missing, records the pod and this injection among its
/// targets with phase Running, and sets the injection's experiment UID and owner reference.
/// Call it before creating the injection. For tests and benchmarks only.
pub async fn vouch_for(client: &Client, injection: &mut FaultInjection) -> Result<(), kube::Error> {
    let target = injection.spec.target.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let opt_in = json!({"metadata": {"labels": {NAMESPACE_OPT_IN_LABEL: NAMESPACE_OPT_IN_VALUE}}});
    namespaces
        .patch(
            &target.namespace,
            &PatchParams::default(),
            &Patch::Merge(&opt_in),
        )
        .await?;
    let namespace = injection.namespace().unwrap_or_else(|| "default".into());
    injection.metadata.namespace = Some(namespace.clone());
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), &namespace);
    let name = injection.spec.experiment.name.clone();
    let experiment = match experiments.get_opt(&name).await? {
        Some(existing) => existing,
        None => {
            let spec = serde_json::from_value(json!({
                "duration": "10m",
                "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
                "faults": [{"networkLatency": {"latency": "50ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
            }))
            .map_err(kube::Error::SerdeError)?;
            experiments
                .create(&PostParams::default(), &ChaosExperiment::new(&name, spec))
                .await?
        }
    };
    let mut status = experiment.status.clone().unwrap_or_default();
    status.phase = Phase::Running;
    let record = TargetRecord {
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        uid: target.uid.clone(),
        node_name: Some(injection.spec.node_name.clone()),
        fault_index: 0,
        fault: "networkLatency".into(),
        state: TargetState::Injecting,
        injection: Some(injection.name_any()),
        ..Default::default()
    };
    status
        .targets
        .retain(|t| t.injection.as_deref() != Some(injection.name_any().as_str()));
    status.targets.push(record);
    experiments
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    injection.spec.experiment.uid = experiment.uid();
    injection.metadata.owner_references = experiment.controller_owner_ref(&()).map(|o| vec![o]);
    Ok(())
}
