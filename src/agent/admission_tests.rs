use super::*;
use crate::api::{ChaosExperimentStatus, FaultInjectionSpec, ObjectRef, PodRef, TargetRecord};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

const NODE: &str = "node-a";

fn nodes() -> Vec<String> {
    vec![NODE.to_string()]
}

fn policy() -> Policy {
    Policy {
        controller_namespace: "faultline-system".into(),
        protected_namespaces: BTreeSet::from(["payments".to_string()]),
        allow_all_namespaces: false,
    }
}

/// An injection as the controller writes it: `shop/inj-1` for pod `shop/web-0` on node-a,
/// owned by experiment `exp` (UID exp-uid).
fn injection() -> FaultInjection {
    let mut injection = FaultInjection::new(
        "inj-1",
        FaultInjectionSpec {
            experiment: ObjectRef {
                name: "exp".into(),
                uid: Some("exp-uid".into()),
            },
            target: PodRef {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "pod-uid".into(),
            },
            node_name: NODE.into(),
            ..Default::default()
        },
    );
    injection.metadata.namespace = Some("shop".into());
    injection
        .labels_mut()
        .insert(NODE_LABEL.into(), NODE.into());
    injection.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "faultline.dev/v1alpha1".into(),
        kind: "ChaosExperiment".into(),
        name: "exp".into(),
        uid: "exp-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    injection
}

fn pod() -> PodFacts {
    PodFacts {
        namespace: "shop".into(),
        name: "web-0".into(),
        node_name: Some(NODE.into()),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
    }
}

fn opted_in() -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_OPT_IN_LABEL.to_string(), "enabled".to_string())])
}

fn experiment() -> ChaosExperiment {
    let mut experiment = ChaosExperiment::new("exp", Default::default());
    experiment.metadata.namespace = Some("shop".into());
    experiment.metadata.uid = Some("exp-uid".into());
    experiment.status = Some(ChaosExperimentStatus {
        phase: Phase::Running,
        targets: vec![TargetRecord {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "pod-uid".into(),
            node_name: Some(NODE.into()),
            fault: "networkLatency".into(),
            state: TargetState::Injected,
            injection: Some("inj-1".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    experiment
}

fn consent_with(
    injection: &FaultInjection,
    paused: bool,
    pod: Option<&PodFacts>,
    namespace: Option<&BTreeMap<String, String>>,
) -> Verdict {
    let facts = Facts {
        paused,
        pod,
        namespace_labels: namespace,
    };
    consent(injection, &nodes(), &facts, &policy())
}

#[test]
fn an_injection_for_an_opted_in_unprotected_pod_on_this_node_is_allowed() {
    let verdict = consent_with(&injection(), false, Some(&pod()), Some(&opted_in()));
    assert_eq!(verdict, Verdict::Allowed);
    assert_eq!(vouched(&injection(), Some(&experiment())), Ok(()));
}

#[test]
fn a_missing_or_wrong_node_label_is_refused() {
    let mut unlabelled = injection();
    unlabelled.labels_mut().remove(NODE_LABEL);
    let mut other = injection();
    other
        .labels_mut()
        .insert(NODE_LABEL.into(), "node-b".into());
    let mut elsewhere = injection();
    elsewhere.spec.node_name = "node-b".into();
    elsewhere
        .labels_mut()
        .insert(NODE_LABEL.into(), "node-b".into());
    for injection in [unlabelled, other, elsewhere] {
        assert_eq!(
            consent_with(&injection, false, Some(&pod()), Some(&opted_in())),
            Verdict::Refused(Refusal::NodeLabelMismatch),
            "{:?}",
            injection.metadata.labels
        );
    }
}

#[test]
fn nothing_is_allowed_while_chaos_is_paused() {
    assert_eq!(
        consent_with(&injection(), true, Some(&pod()), Some(&opted_in())),
        Verdict::Refused(Refusal::ChaosPaused)
    );
}

#[test]
fn protected_namespaces_are_refused_whatever_their_labels() {
    for namespace in ["kube-system", "faultline-system", "payments"] {
        let mut injection = injection();
        injection.spec.target.namespace = namespace.into();
        let mut pod = pod();
        pod.namespace = namespace.into();
        assert_eq!(
            consent_with(&injection, false, Some(&pod), Some(&opted_in())),
            Verdict::Refused(Refusal::NamespaceProtected),
            "{namespace}"
        );
    }
}

#[test]
fn a_namespace_without_the_opt_in_label_is_refused_unless_all_are_allowed() {
    let labels = BTreeMap::from([(NAMESPACE_OPT_IN_LABEL.to_string(), "disabled".to_string())]);
    assert_eq!(
        consent_with(&injection(), false, Some(&pod()), Some(&labels)),
        Verdict::Refused(Refusal::NamespaceNotOptedIn)
    );
    assert_eq!(
        consent_with(&injection(), false, Some(&pod()), Some(&BTreeMap::new())),
        Verdict::Refused(Refusal::NamespaceNotOptedIn)
    );
    let all = Policy {
        allow_all_namespaces: true,
        ..policy()
    };
    let facts = Facts {
        paused: false,
        pod: Some(&pod()),
        namespace_labels: Some(&labels),
    };
    assert_eq!(
        consent(&injection(), &nodes(), &facts, &all),
        Verdict::Allowed
    );
}

#[test]
fn a_protected_pod_is_refused() {
    let mut pod = pod();
    pod.labels.insert(PROTECTED_LABEL.into(), "true".into());
    assert_eq!(
        consent_with(&injection(), false, Some(&pod), Some(&opted_in())),
        Verdict::Refused(Refusal::PodProtected)
    );
}

#[test]
fn the_pod_behind_the_uid_must_be_the_one_named_on_this_node() {
    // The UID picks the pod the agent would touch: another namespace (one that did not opt
    // in, say), another name or another node is refused.
    let mut moved = pod();
    moved.namespace = "other".into();
    let mut renamed = pod();
    renamed.name = "db-0".into();
    let mut elsewhere = pod();
    elsewhere.node_name = Some("node-b".into());
    for pod in [moved, renamed, elsewhere] {
        assert_eq!(
            consent_with(&injection(), false, Some(&pod), Some(&opted_in())),
            Verdict::Refused(Refusal::PodNotOnNode),
            "{pod:?}"
        );
    }
}

#[test]
fn missing_facts_give_no_answer_rather_than_a_wrong_one() {
    assert_eq!(
        consent_with(&injection(), false, None, Some(&opted_in())),
        Verdict::Unknown
    );
    assert_eq!(
        consent_with(&injection(), false, Some(&pod()), None),
        Verdict::Unknown
    );
}

#[test]
fn an_injection_without_an_experiment_is_refused() {
    assert_eq!(
        vouched(&injection(), None),
        Err(Refusal::ExperimentNotFound)
    );
    // Another experiment of that name (a new UID): not the one the injection was written for.
    let mut recreated = experiment();
    recreated.metadata.uid = Some("other-uid".into());
    assert_eq!(
        vouched(&injection(), Some(&recreated)),
        Err(Refusal::ExperimentNotFound)
    );
}

#[test]
fn an_injection_the_experiment_does_not_own_is_refused() {
    let mut injection = injection();
    injection.metadata.owner_references = None;
    assert_eq!(
        vouched(&injection, Some(&experiment())),
        Err(Refusal::NotOwnedByExperiment)
    );
    // Owned, but not as its controller.
    let mut weak = self::injection();
    weak.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    assert_eq!(
        vouched(&weak, Some(&experiment())),
        Err(Refusal::NotOwnedByExperiment)
    );
}

#[test]
fn an_experiment_that_is_not_injecting_or_running_vouches_for_nothing() {
    for phase in [
        Phase::Pending,
        Phase::Verifying,
        Phase::Recovering,
        Phase::Aborting,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Aborted,
    ] {
        let mut experiment = experiment();
        experiment.status.as_mut().unwrap().phase = phase;
        assert_eq!(
            vouched(&injection(), Some(&experiment)),
            Err(Refusal::ExperimentNotRunning),
            "{phase:?}"
        );
    }
    let mut fresh = experiment();
    fresh.status = None;
    assert_eq!(
        vouched(&injection(), Some(&fresh)),
        Err(Refusal::ExperimentNotRunning)
    );
    let mut injecting = experiment();
    injecting.status.as_mut().unwrap().phase = Phase::Injecting;
    assert_eq!(vouched(&injection(), Some(&injecting)), Ok(()));
}

#[test]
fn the_experiment_must_have_recorded_that_pod_with_this_injection() {
    type Change = fn(&mut TargetRecord);
    let cases: Vec<(&str, Change)> = vec![
        ("another pod UID", |t| t.uid = "other".into()),
        ("another pod name", |t| t.name = "web-1".into()),
        ("another namespace", |t| t.namespace = "other".into()),
        ("another injection", |t| t.injection = Some("inj-2".into())),
        ("no injection", |t| t.injection = None),
        ("already reverted", |t| t.state = TargetState::Reverted),
        ("failed", |t| t.state = TargetState::Failed),
        ("only selected", |t| t.state = TargetState::Selected),
    ];
    for (case, change) in cases {
        let mut experiment = experiment();
        change(&mut experiment.status.as_mut().unwrap().targets[0]);
        assert_eq!(
            vouched(&injection(), Some(&experiment)),
            Err(Refusal::TargetNotRecorded),
            "{case}"
        );
    }
}

#[test]
fn every_refusal_says_what_to_do() {
    let all = [
        Refusal::NodeLabelMismatch,
        Refusal::ChaosPaused,
        Refusal::ExperimentNotFound,
        Refusal::NotOwnedByExperiment,
        Refusal::ExperimentNotRunning,
        Refusal::TargetNotRecorded,
        Refusal::PodNotOnNode,
        Refusal::NamespaceProtected,
        Refusal::NamespaceNotOptedIn,
        Refusal::PodProtected,
    ];
    for refusal in all {
        let text = refusal.explain(&injection());
        assert!(!text.is_empty() && !refusal.withdrawn().is_empty());
        assert!(
            refusal
                .reason()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase()),
            "{refusal:?}"
        );
    }
    assert!(
        Refusal::NamespaceNotOptedIn
            .explain(&injection())
            .contains("kubectl label namespace shop faultline.dev/chaos=enabled")
    );
}
