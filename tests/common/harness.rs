//! A controller test bed: the cluster (the embedded API server, or the real control plane with
//! `FAULTLINE_TEST_CLUSTER=real`), the controller as it runs in production (kube-runtime
//! Controller, real kube client), a stand-in node agent, and either scripted probes or the real
//! probe hub.

use std::{sync::Arc, time::Duration};

use faultline::{
    api::{
        ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus, FaultInjection, Phase,
        TargetState, all_crds,
    },
    controller::{self, Clients, HypothesisSource, Settings, probe_hub::ProbeHub},
    sandbox::{
        testkit::{ScriptedProbes, stand_in_agent},
        workloads::{ControlPlane, WorkloadOptions, Workloads, deployment},
    },
};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{TestCluster, held_responses::HeldResponses, wait_for};

pub struct Harness {
    pub cluster: TestCluster,
    pub client: Client,
    pub probes: Arc<ScriptedProbes>,
    pub trigger: mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    /// Set when the controller runs with the real probe hub instead of scripted probes.
    pub real_probes: bool,
    /// The controller's own namespace (its revert signal's home).
    pub controller_namespace: String,
    /// The controller's metrics (a restarted controller counts on in the same).
    pub metrics: faultline::metrics::Metrics,
    injection_timeout: Duration,
    controller: tokio::task::JoinHandle<()>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long the harness's controller waits for an agent's report: short, for quick tests.
const INJECTION_TIMEOUT: Duration = Duration::from_secs(5);

fn spawn_controller(
    clients: Clients,
    scripted: &Arc<ScriptedProbes>,
    real_probes: bool,
    controller_namespace: &str,
    injection_timeout: Duration,
    metrics: &faultline::metrics::Metrics,
) -> (
    mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    tokio::task::JoinHandle<()>,
) {
    let (trigger, triggers) = mpsc::unbounded_channel();
    let hypotheses: Arc<dyn HypothesisSource> = if real_probes {
        Arc::new(ProbeHub::new(
            clients.main.clone(),
            trigger.clone(),
            Default::default(),
        ))
    } else {
        scripted.clone()
    };
    let settings = Settings {
        injection_timeout,
        signal_sweep_every: Duration::from_secs(1),
        expired_hold_margin: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut settings = settings;
    settings.policy.controller_namespace = controller_namespace.to_string();
    let task = tokio::spawn(controller::run(
        clients,
        settings,
        hypotheses,
        triggers,
        controller::Telemetry {
            metrics: metrics.clone(),
            readiness: Default::default(),
        },
        std::future::pending(),
    ));
    (trigger, task)
}

impl Harness {
    /// The controller with scripted probes (set them with `probes.set`).
    pub async fn start() -> Harness {
        Self::start_with(false).await
    }

    /// The controller with the real probe hub: probes make real HTTP / PromQL checks.
    pub async fn start_with_real_probes() -> Harness {
        Self::start_with(true).await
    }

    /// The controller with scripted probes and no node agent at all: FaultInjections are
    /// written and nothing applies them (or holds them).
    pub async fn start_without_agent() -> Harness {
        let mut h = Self::start_with(false).await;
        for stop in h.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in h.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        h
    }

    /// The controller with scripted probes, its own namespace `namespace`, which is not
    /// created (so its revert signal cannot be written).
    pub async fn start_in_missing_namespace(namespace: &str) -> Harness {
        Self::start_in(false, namespace, false).await
    }

    async fn start_with(real_probes: bool) -> Harness {
        Self::start_in(real_probes, "faultline-system", true).await
    }

    async fn start_in(real_probes: bool, controller_namespace: &str, create: bool) -> Harness {
        Self::start_full(
            real_probes,
            controller_namespace,
            create,
            None,
            INJECTION_TIMEOUT,
        )
        .await
    }

    /// The controller with scripted probes, its responses that match `held` held back until
    /// released (a watch cache kept behind on purpose).
    pub async fn start_holding(held: &HeldResponses) -> Harness {
        let make = |config| held.client_of(config);
        Self::start_full(
            false,
            "faultline-system",
            true,
            Some(&make),
            INJECTION_TIMEOUT,
        )
        .await
    }

    /// The controller with scripted probes and the injection timeout of production (30 s):
    /// for an experiment of many targets, whose FaultInjections the stand-in agent of a loaded
    /// machine may take longer than the tests' 5 s to apply.
    pub async fn start_with_production_timeout() -> Harness {
        let production = faultline::controller::Settings::default().injection_timeout;
        Self::start_full(false, "faultline-system", true, None, production).await
    }

    /// The controller with scripted probes, its clients made by `make` (e.g. with a layer
    /// that loses responses), and the injection timeout of production (30 s): its retries
    /// need the time a real controller has.
    pub async fn start_via(make: impl Fn(kube::Config) -> Client) -> Harness {
        let production = faultline::controller::Settings::default().injection_timeout;
        Self::start_full(false, "faultline-system", true, Some(&make), production).await
    }

    async fn start_full(
        real_probes: bool,
        controller_namespace: &str,
        create: bool,
        make: Option<&dyn Fn(kube::Config) -> Client>,
        injection_timeout: Duration,
    ) -> Harness {
        let cluster = TestCluster::start().await;
        cluster.install_crds(&all_crds()).await;
        let client = cluster.client().await;
        if create {
            super::cluster::apply_namespace(&client, controller_namespace, false).await;
        }
        let probes = Arc::new(ScriptedProbes::default());
        let clients = match make {
            None => Clients::from_config(cluster.client_config()),
            Some(make) => Clients::from_config_via(cluster.client_config(), |c| Ok(make(c))),
        }
        .expect("clients");
        let metrics = faultline::metrics::Metrics::default();
        let (trigger, controller) = spawn_controller(
            clients,
            &probes,
            real_probes,
            controller_namespace,
            injection_timeout,
            &metrics,
        );
        let (stop_agent, agent_stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(stand_in_agent(client.clone(), agent_stopped));
        Harness {
            cluster,
            client,
            probes,
            trigger,
            real_probes,
            controller_namespace: controller_namespace.to_string(),
            metrics,
            injection_timeout,
            controller,
            stop: vec![stop_agent],
            tasks: vec![agent],
        }
    }

    /// Kills the controller where it stands (its task is dropped mid-flight, as a crash would)
    /// and starts a fresh one.
    pub async fn crash_and_restart_controller(&mut self) {
        self.controller.abort();
        let _ = (&mut self.controller).await;
        let clients = Clients::from_config(self.cluster.client_config()).expect("clients");
        let (trigger, controller) = spawn_controller(
            clients,
            &self.probes,
            self.real_probes,
            &self.controller_namespace,
            self.injection_timeout,
            &self.metrics,
        );
        self.trigger = trigger;
        self.controller = controller;
    }

    /// Breaks the hypothesis of `running` (its `web` probe fails from now on) and tells the
    /// controller at once, as the probe hub would.
    pub fn break_hypothesis(&self, running: &ChaosExperiment) {
        self.probes.set(
            faultline::api::ProbePhase::During,
            faultline::lifecycle::HypothesisView::Violated {
                probe: "web".into(),
                message: "probe web: status 503, expected 200".into(),
                since: chrono::Utc::now(),
            },
        );
        self.trigger.send(ObjectRef::from_obj(running)).unwrap();
    }

    /// Whether the controller's task still runs (a panic that escaped would have ended it).
    pub fn controller_alive(&self) -> bool {
        !self.controller.is_finished()
    }

    pub async fn namespace(&self, name: &str, opted_in: bool) {
        super::cluster::apply_namespace(&self.client, name, opted_in).await;
    }

    /// A Running, Ready pod on `node-1` with `ip`, reported as a kubelet would (none runs: on a
    /// real cluster `node-1` is registered unschedulable, so the scheduler never uses it).
    pub async fn pod(&self, namespace: &str, name: &str, app: &str, ip: &str) {
        self.ready_pod(namespace, name, app, ip, None).await;
    }

    /// [`Harness::pod`] with a grace period of 0: with no kubelet to confirm a graceful
    /// deletion, on a real cluster only such a pod goes when it is deleted.
    pub async fn pod_that_goes_at_once(&self, namespace: &str, name: &str, app: &str, ip: &str) {
        self.ready_pod(namespace, name, app, ip, Some(0)).await;
    }

    async fn ready_pod(
        &self,
        namespace: &str,
        name: &str,
        app: &str,
        ip: &str,
        grace: Option<i64>,
    ) {
        if self.cluster.is_real() {
            super::cluster::cordoned_node(&self.client, "node-1").await;
        }
        super::cluster::ready_pod(&self.client, namespace, name, app, ip, grace).await;
    }

    pub async fn create(&self, namespace: &str, name: &str, spec: serde_json::Value) {
        let spec: ChaosExperimentSpec = serde_json::from_value(spec).unwrap();
        let experiment = ChaosExperiment::new(name, spec);
        self.experiments(namespace)
            .create(&PostParams::default(), &experiment)
            .await
            .unwrap();
    }

    pub fn experiments(&self, namespace: &str) -> Api<ChaosExperiment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub fn injections(&self, namespace: &str) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub async fn wait_phase(&self, namespace: &str, name: &str, phase: Phase) -> ChaosExperiment {
        // Generous: a whole lifecycle on a real control plane beside another test run.
        self.wait_phase_within(namespace, name, phase, Duration::from_secs(30))
            .await
    }

    /// [`Harness::wait_phase`], waiting up to `timeout`.
    pub async fn wait_phase_within(
        &self,
        namespace: &str,
        name: &str,
        phase: Phase,
        timeout: Duration,
    ) -> ChaosExperiment {
        let api = self.experiments(namespace);
        wait_for(&format!("{name} to reach {phase:?}"), timeout, || async {
            let e = api.get_opt(name).await.ok().flatten()?;
            (e.status.as_ref()?.phase == phase).then_some(e)
        })
        .await
    }

    /// How many FaultInjections exist in `namespace`.
    pub async fn injection_count(&self, namespace: &str) -> usize {
        self.injections(namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
    }

    /// The first Event in `namespace` with `reason` that `matching` accepts, once there is one
    /// (within 10 s).
    pub async fn wait_event(
        &self,
        namespace: &str,
        reason: &str,
        matching: impl Fn(&Event) -> bool,
    ) -> Event {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        wait_for(
            &format!("a {reason} Event in {namespace}"),
            Duration::from_secs(10),
            || async {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(reason) && matching(e))
            },
        )
        .await
    }

    /// Waits until no FaultInjection is left in `namespace`.
    pub async fn wait_no_injections(&self, namespace: &str, within: Duration) {
        let injections = self.injections(namespace);
        wait_for(
            &format!("every FaultInjection in {namespace} gone"),
            within,
            || async {
                let left = injections.list(&ListParams::default()).await.ok()?.items;
                left.is_empty().then_some(())
            },
        )
        .await;
    }

    /// A `web` Deployment in the opted-in namespace `shop` on the workload simulator, with
    /// `replicas` Ready pods; a killed pod is replaced after `replacement_delay`. (On a real
    /// control plane the ReplicaSet controller replaces a pod at once; the replacement then takes
    /// `replacement_delay` to start, as an image pull and a readiness probe would.)
    pub async fn web_deployment(&self, replicas: i32, replacement_delay: Duration) -> Workloads {
        let start_delay = if self.cluster.is_real() {
            replacement_delay.max(Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        let options = WorkloadOptions {
            nodes: 2,
            replacement_delay,
            start_delay,
            control_plane: if self.cluster.is_real() {
                ControlPlane::Real
            } else {
                ControlPlane::Simulated
            },
            ..Default::default()
        };
        let workloads = Workloads::start(self.client.clone(), options)
            .await
            .unwrap();
        self.namespace("shop", true).await;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), "shop");
        let web = deployment("shop", "web", replicas, &[("app", "web")]);
        deployments
            .create(&PostParams::default(), &web)
            .await
            .unwrap();
        wait_for("web to be Ready", Duration::from_secs(30), || async {
            let d = deployments.get("web").await.ok()?;
            (d.status?.ready_replicas == Some(replicas)).then_some(())
        })
        .await;
        workloads
    }

    pub async fn stop(mut self) {
        self.controller.abort();
        let _ = (&mut self.controller).await;
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.cluster.shutdown().await;
    }
}

/// Panics, listing every record's state, unless each of `status`'s target records is in `state`.
pub fn assert_every_target(status: &ChaosExperimentStatus, state: TargetState) {
    let states: Vec<TargetState> = status.targets.iter().map(|t| t.state).collect();
    assert!(
        states.iter().all(|s| *s == state),
        "every target {state:?}: {states:?}"
    );
}

pub fn latency_spec(duration: &str) -> serde_json::Value {
    let mut probe = json!({"name": "web", "http": {"url": "http://127.0.0.1:1/"}});
    // A during-probe must check at least once while the faults last (the CRD refuses one whose
    // interval, 5s by default, is longer than the experiment), and its timeout be shorter.
    let total = faultline::api::parse_go_duration(duration).expect("a Go duration");
    if total < Duration::from_secs(5) {
        probe["interval"] = json!(duration);
        probe["timeout"] = json!(faultline::api::GoDuration::from_duration(total / 2).0);
    }
    json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
        "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
        "steadyState": {"probes": [probe]}
    })
}

pub async fn shop_with_web_pods(h: &Harness, n: usize) {
    h.namespace("shop", true).await;
    for i in 0..n {
        h.pod(
            "shop",
            &format!("web-{i}"),
            "web",
            &format!("10.244.0.{}", i + 10),
        )
        .await;
    }
}
