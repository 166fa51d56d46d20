//! Root tests of the `faultline agent` process against real pod namespaces: it reverts at the
//! deadline with nothing else running, and `kill -9` at random moments (20 times, while
//! injections come and go) never leaves a rule behind or applies one twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{ApiServer, wait_for};
use faultline::agent::nft;
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::{PodProcess, TestNode, root_or_skip};
use faultline::api::{
    Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, NODE_LABEL, NetworkFault,
    ObjectRef, PodRef, all_crds,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const NODE: &str = "crash-node";
const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    server: ApiServer,
    client: Client,
    node: TestNode,
    pods: Vec<(String, PodProcess)>,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(pods: usize) -> Self {
        common::init_tracing();
        let server = ApiServer::start(0).await.unwrap();
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        let node = TestNode::new(pods + 1).unwrap();
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut processes = Vec::new();
        for i in 0..pods {
            let pod = api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": format!("pod-{i}")},
                        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
            let uid = pod.uid().unwrap();
            let process = PodProcess::start(&node.pods[i].ns, &uid).unwrap();
            processes.push((uid, process));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
        Self {
            server,
            client,
            node,
            pods: processes,
            dir,
        }
    }

    fn agent(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args([
                "agent",
                "--node",
                NODE,
                "--admin-addr",
                "127.0.0.1:0",
                "--resync",
                "200ms",
            ])
            .arg("--journal-dir")
            .arg(self.dir.path().join("journal"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn injections(&self) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A partition of pod `target` from the spare pod's address.
    async fn inject(&self, name: &str, target: usize, expires_in: TimeDelta) -> FaultInjection {
        let peer = self.node.pods.last().unwrap().ip;
        let mut injection = FaultInjection::new(
            name,
            FaultInjectionSpec {
                experiment: ObjectRef {
                    name: "exp".into(),
                    uid: None,
                },
                target: PodRef {
                    namespace: "default".into(),
                    name: format!("pod-{target}"),
                    uid: self.pods[target].0.clone(),
                },
                node_name: NODE.into(),
                fault: NetworkFault {
                    partition: Some(Direction::Both),
                    peer_cidrs: vec![format!("{peer}/32")],
                    ..Default::default()
                },
                expires_at: Utc::now() + expires_in,
            },
        );
        injection
            .labels_mut()
            .insert(NODE_LABEL.into(), NODE.into());
        // A running experiment stands behind it, as the controller's would.
        faultline::sandbox::testkit::vouch_for(&self.client, &mut injection)
            .await
            .unwrap();
        self.injections()
            .create(&PostParams::default(), &injection)
            .await
            .unwrap()
    }

    /// faultline tables per pod namespace, with duplicates kept.
    fn tables(&self) -> Vec<Vec<InjectionTag>> {
        self.pods
            .iter()
            .enumerate()
            .map(|(i, _)| nft::owned(&self.node.pods[i].ns.netns().unwrap()).unwrap())
            .collect()
    }
}

fn kill9(mut agent: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = agent.wait();
}

fn tag_of(injection: &FaultInjection) -> InjectionTag {
    InjectionTag::from_uid(&injection.uid().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reverts_at_the_deadline_on_its_own() {
    if !root_or_skip("agent_crash::the_agent_reverts_at_the_deadline_on_its_own") {
        return;
    }
    let setup = Setup::start(1).await;
    let agent = setup.agent();
    let injection = setup.inject("short", 0, TimeDelta::seconds(8)).await;
    let tag = tag_of(&injection);
    let tables = || setup.tables();
    wait_for("the partition applied", WAIT, || async {
        (tables()[0] == vec![tag.clone()]).then_some(())
    })
    .await;
    // Nothing but the agent acts: no controller deletes the injection.
    wait_for("the partition reverted at expiresAt", WAIT, || async {
        tables()[0].is_empty().then_some(())
    })
    .await;
    let api = setup.injections();
    let reverted = wait_for("status Reverted", WAIT, || {
        let api = api.clone();
        async move {
            api.get("short").await.ok().filter(|i| {
                i.status
                    .as_ref()
                    .is_some_and(|s| s.phase == InjectionPhase::Reverted)
            })
        }
    })
    .await;
    let status = reverted.status.unwrap();
    assert_eq!(status.residual_rules, Some(0), "{status:?}");
    assert!(status.message.unwrap().contains("expiresAt"));
    kill9(agent);
    drop(setup.server);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_twenty_times_leaves_every_rule_exactly_where_it_belongs() {
    if !root_or_skip(
        "agent_crash::kill_dash_nine_twenty_times_leaves_every_rule_exactly_where_it_belongs",
    ) {
        return;
    }
    let setup = Setup::start(3).await;
    let api = setup.injections();
    let mut live: BTreeMap<String, (usize, InjectionTag)> = BTreeMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut agent = setup.agent();
    for round in 0..20 {
        // Injections come and go while the agent runs, and it dies at a random moment.
        match next() % 3 {
            0 | 1 => {
                let name = format!("inj-{round}");
                let target = (next() % 3) as usize;
                let created = setup.inject(&name, target, TimeDelta::minutes(10)).await;
                live.insert(name, (target, tag_of(&created)));
            }
            _ => {
                if let Some(name) = live
                    .keys()
                    .nth((next() as usize) % live.len().max(1))
                    .cloned()
                {
                    api.delete(&name, &DeleteParams::default()).await.unwrap();
                    live.remove(&name);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(next() % 400)).await;
        kill9(agent);
        agent = setup.agent();
    }
    // Converged: every live injection's table once in its pod, nothing of the ended ones, every
    // deleted injection released.
    let expected: Vec<BTreeSet<InjectionTag>> = (0..3)
        .map(|pod| {
            live.values()
                .filter(|(target, _)| *target == pod)
                .map(|(_, tag)| tag.clone())
                .collect()
        })
        .collect();
    let live_names: BTreeSet<String> = live.keys().cloned().collect();
    wait_for("the agent to converge", WAIT, || {
        let api = api.clone();
        let live_names = live_names.clone();
        let expected = expected.clone();
        let tables = setup.tables();
        async move {
            let names: BTreeSet<String> = api
                .list(&Default::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|i| i.name_any())
                .collect();
            let sets: Vec<BTreeSet<InjectionTag>> =
                tables.iter().map(|t| t.iter().cloned().collect()).collect();
            let once = tables.iter().zip(&sets).all(|(t, s)| t.len() == s.len());
            (names == live_names && sets == expected && once).then_some(())
        }
    })
    .await;
    // And everything goes when the injections do.
    for name in live.keys() {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_for("every rule gone", WAIT, || {
        let tables = setup.tables();
        async move { tables.iter().all(Vec::is_empty).then_some(()) }
    })
    .await;
    kill9(agent);
}
