//! Root tests of the `faultline agent` process against real pod namespaces: it applies a work
//! item only when a running experiment that recorded the pod stands behind it, in a namespace
//! that opted in, on a pod that is not protected, while chaos is not paused; it refuses every
//! other one with a status and a Warning Event and puts no rule in the kernel; and it reverts a
//! fault at once when the namespace drops its opt-in label, the pod becomes protected, or chaos
//! is paused.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{ApiServer, cluster::apply_namespace, wait_for};
use faultline::agent::nft;
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::{PodProcess, TestNode, root_or_skip};
use faultline::api::{
    ConditionStatus, Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, NODE_LABEL,
    NetworkFault, ObjectRef, PROTECTED_LABEL, PodRef, all_crds,
};
use faultline::sandbox::testkit::vouch_for;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const NODE: &str = "consent-node";
const WAIT: Duration = Duration::from_secs(30);

/// A test node whose pods are registered in the API server under the names and namespaces
/// given, and the real agent process serving it.
struct Setup {
    _server: ApiServer,
    client: Client,
    node: TestNode,
    /// (namespace, name, uid, process)
    pods: Vec<(String, String, String, PodProcess)>,
    dir: tempfile::TempDir,
    agent: Option<Child>,
}

impl Setup {
    /// `pods`: (namespace, name, labels); the namespaces exist, opted in unless named in
    /// `closed`.
    async fn start(pods: &[(&str, &str, serde_json::Value)], closed: &[&str]) -> Self {
        common::init_tracing();
        let server = ApiServer::start(0).await.unwrap();
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        // The last test pod is the partition's peer.
        let node = TestNode::new(pods.len() + 1).unwrap();
        apply_namespace(&client, "faultline-system", false).await;
        Api::<Node>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap(),
            )
            .await
            .unwrap();
        let mut processes = Vec::new();
        for (i, (namespace, name, labels)) in pods.iter().enumerate() {
            apply_namespace(&client, namespace, !closed.contains(namespace)).await;
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let pod = api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
            let uid = pod.uid().unwrap();
            let process = PodProcess::start(&node.pods[i].ns, &uid).unwrap();
            processes.push((namespace.to_string(), name.to_string(), uid, process));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
        let mut setup = Self {
            _server: server,
            client,
            node,
            pods: processes,
            dir,
            agent: None,
        };
        setup.agent = Some(setup.spawn_agent());
        setup
    }

    fn spawn_agent(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args([
                "agent",
                "--node",
                NODE,
                "--admin-addr",
                "127.0.0.1:0",
                "--resync",
                "200ms",
                "--controller-namespace",
                "faultline-system",
            ])
            .arg("--journal-dir")
            .arg(self.dir.path().join("journal"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A partition of test pod `target` from the spare pod, as the controller would write it
    /// (node label, `spec.experiment`), not yet created.
    fn partition(&self, name: &str, target: usize, experiment: &str) -> FaultInjection {
        let peer = self.node.pods.last().unwrap().ip;
        let (namespace, pod, uid, _) = &self.pods[target];
        let mut injection = FaultInjection::new(
            name,
            FaultInjectionSpec {
                experiment: ObjectRef {
                    name: experiment.into(),
                    uid: None,
                },
                target: PodRef {
                    namespace: namespace.clone(),
                    name: pod.clone(),
                    uid: uid.clone(),
                },
                node_name: NODE.into(),
                fault: NetworkFault {
                    partition: Some(Direction::Both),
                    peer_cidrs: vec![format!("{peer}/32")],
                    ..Default::default()
                },
                expires_at: Utc::now() + TimeDelta::minutes(5),
            },
        );
        injection.metadata.namespace = Some(namespace.clone());
        injection
            .labels_mut()
            .insert(NODE_LABEL.into(), NODE.into());
        injection
    }

    /// Creates `injection` with a running experiment that recorded it behind it.
    async fn vouched(&self, mut injection: FaultInjection) -> FaultInjection {
        vouch_for(&self.client, &mut injection).await.unwrap();
        self.create(injection).await
    }

    async fn create(&self, injection: FaultInjection) -> FaultInjection {
        let namespace = injection.namespace().unwrap();
        Api::<FaultInjection>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &injection)
            .await
            .unwrap()
    }

    /// faultline's nftables tables in test pod `i`'s network namespace.
    fn tables(&self, i: usize) -> Vec<InjectionTag> {
        nft::owned(&self.node.pods[i].ns.netns().unwrap()).unwrap()
    }

    async fn wait_phase(
        &self,
        injection: &FaultInjection,
        phase: InjectionPhase,
    ) -> FaultInjection {
        let api: Api<FaultInjection> =
            Api::namespaced(self.client.clone(), &injection.namespace().unwrap());
        let name = injection.name_any();
        wait_for(&format!("{name} to be {phase:?}"), WAIT, || {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.get_opt(&name)
                    .await
                    .unwrap()
                    .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == phase))
            }
        })
        .await
    }

    /// Waits for a Warning Event with `reason` about `injection` and returns its note.
    async fn warning(&self, injection: &FaultInjection, reason: &str) -> String {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &injection.namespace().unwrap());
        let name = injection.name_any();
        wait_for(&format!("a {reason} Event about {name}"), WAIT, || {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .find(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&name)
                            && e.reason.as_deref() == Some(reason)
                            && e.type_.as_deref() == Some("Warning")
                    })
                    .and_then(|e| e.note)
            }
        })
        .await
    }

    /// Waits until `injection` is refused for `reason`: phase Failed, condition Admitted=False
    /// with that reason, a Warning Event; returns the status message.
    async fn refused(&self, injection: &FaultInjection, reason: &str) -> String {
        let failed = self.wait_phase(injection, InjectionPhase::Failed).await;
        let status = failed.status.clone().unwrap();
        let admitted = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Admitted")
            .unwrap_or_else(|| panic!("no Admitted condition: {status:?}"));
        assert_eq!(admitted.status, ConditionStatus::False, "{status:?}");
        assert_eq!(admitted.reason, reason, "{status:?}");
        let message = status.message.unwrap();
        assert!(
            message.starts_with("refused by the node agent: "),
            "{message}"
        );
        let note = self.warning(injection, reason).await;
        assert_eq!(note, message);
        assert!(
            failed.finalizers().is_empty(),
            "a refused injection holds no finalizer: {:?} ({message})",
            failed.finalizers()
        );
        message
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

fn tag_of(injection: &FaultInjection) -> InjectionTag {
    InjectionTag::from_uid(&injection.uid().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_work_items_without_consent_and_reverts_when_consent_is_withdrawn() {
    if !root_or_skip("agent_consent::the_agent_refuses_work_items_without_consent") {
        return;
    }
    let web = json!({"app": "web"});
    let setup = Setup::start(
        &[
            ("shop", "web-0", web.clone()),
            ("cart", "web-1", web.clone()),
            (
                "shop",
                "guarded",
                json!({"app": "web", PROTECTED_LABEL: "true"}),
            ),
            ("closed", "web-3", web.clone()),
            ("shop", "web-4", web.clone()),
        ],
        &["closed"],
    )
    .await;

    // An experiment that does not exist.
    let ghost = setup
        .create(setup.partition("ghost", 4, "no-such-experiment"))
        .await;
    let message = setup.refused(&ghost, "ExperimentNotFound").await;
    assert!(message.contains("shop/no-such-experiment"), "{message}");

    // An experiment that exists, owns it, runs, but did not record this injection: the
    // owner reference is copied from one it did record.
    let mut decoy = setup.partition("decoy", 4, "exp");
    vouch_for(&setup.client, &mut decoy).await.unwrap();
    let mut unrecorded = decoy.clone();
    unrecorded.metadata.name = Some("unrecorded".into());
    let unrecorded = setup.create(unrecorded).await;
    let message = setup.refused(&unrecorded, "TargetNotRecorded").await;
    assert!(
        message.contains("did not record pod shop/web-4"),
        "{message}"
    );

    // A pod in a namespace that did not opt in (vouch_for opts it in, as an admin could have
    // done before the experiment; the label is gone again by the time the agent looks).
    let mut closed = setup.partition("closed", 3, "exp-closed");
    vouch_for(&setup.client, &mut closed).await.unwrap();
    apply_namespace(&setup.client, "closed", false).await;
    let closed = setup.create(closed).await;
    let message = setup.refused(&closed, "NamespaceNotOptedIn").await;
    assert!(
        message.contains("kubectl label namespace closed faultline.dev/chaos=enabled"),
        "{message}"
    );

    // A protected pod.
    let guarded = setup.vouched(setup.partition("guarded", 2, "exp")).await;
    setup.refused(&guarded, "PodProtected").await;

    // No node label: not ignored silently.
    let mut unlabelled = setup.partition("unlabelled", 4, "exp");
    unlabelled.labels_mut().remove(NODE_LABEL);
    vouch_for(&setup.client, &mut unlabelled).await.unwrap();
    let unlabelled = setup.create(unlabelled).await;
    setup.refused(&unlabelled, "NodeLabelMismatch").await;

    // Valid ones are applied.
    let shop = setup.vouched(setup.partition("shop", 0, "exp")).await;
    let cart = setup.vouched(setup.partition("cart", 1, "exp-cart")).await;
    setup.wait_phase(&shop, InjectionPhase::Applied).await;
    setup.wait_phase(&cart, InjectionPhase::Applied).await;
    assert_eq!(setup.tables(0), vec![tag_of(&shop)]);
    assert_eq!(setup.tables(1), vec![tag_of(&cart)]);
    // Nothing of the refused ones reached the kernel.
    for i in [2, 3, 4] {
        assert!(setup.tables(i).is_empty(), "pod {i}: {:?}", setup.tables(i));
    }

    // The namespace drops its opt-in label mid-fault: reverted at once, saying why.
    apply_namespace(&setup.client, "shop", false).await;
    let reverted = setup.wait_phase(&shop, InjectionPhase::Reverted).await;
    let message = reverted.status.unwrap().message.unwrap();
    assert!(
        message.contains("no longer carries faultline.dev/chaos=enabled"),
        "{message}"
    );
    assert!(setup.tables(0).is_empty(), "{:?}", setup.tables(0));
    let note = setup.warning(&shop, "ConsentWithdrawn").await;
    assert!(note.contains("shop/web-0"), "{note}");

    // The pod becomes protected mid-fault: reverted at once.
    Api::<Pod>::namespaced(setup.client.clone(), "cart")
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {PROTECTED_LABEL: "true"}}})),
        )
        .await
        .unwrap();
    let reverted = setup.wait_phase(&cart, InjectionPhase::Reverted).await;
    let message = reverted.status.unwrap().message.unwrap();
    assert!(
        message.contains("faultline.dev/protected=true"),
        "{message}"
    );
    assert!(setup.tables(1).is_empty(), "{:?}", setup.tables(1));
    setup.warning(&cart, "ConsentWithdrawn").await;

    // Consent back: a reverted fault stays reverted (the experiment decides what comes next).
    apply_namespace(&setup.client, "shop", true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(setup.tables(0).is_empty(), "{:?}", setup.tables(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_honours_the_pause_switch() {
    if !root_or_skip("agent_consent::the_agent_honours_the_pause_switch") {
        return;
    }
    let setup = Setup::start(&[("shop", "web-0", json!({"app": "web"}))], &[]).await;
    let first = setup.vouched(setup.partition("first", 0, "exp")).await;
    setup.wait_phase(&first, InjectionPhase::Applied).await;
    assert_eq!(setup.tables(0), vec![tag_of(&first)]);

    // `faultline pause` (the ConfigMap it writes): the fault in place is reverted...
    let pause = |paused: bool| common::cluster::set_paused(&setup.client, paused);
    pause(true).await;
    let reverted = setup.wait_phase(&first, InjectionPhase::Reverted).await;
    let message = reverted.status.unwrap().message.unwrap();
    assert!(message.contains("chaos was paused"), "{message}");
    assert!(setup.tables(0).is_empty(), "{:?}", setup.tables(0));
    setup.warning(&first, "ChaosPaused").await;

    // ...and one written while paused is refused, with nothing applied.
    let during = setup.vouched(setup.partition("during", 0, "exp")).await;
    let message = setup.refused(&during, "ChaosPaused").await;
    assert!(message.contains("faultline resume"), "{message}");
    assert!(setup.tables(0).is_empty(), "{:?}", setup.tables(0));

    // `faultline resume`: new work is applied again.
    pause(false).await;
    let after = setup.vouched(setup.partition("after", 0, "exp")).await;
    setup.wait_phase(&after, InjectionPhase::Applied).await;
    assert_eq!(setup.tables(0), vec![tag_of(&after)]);
}
