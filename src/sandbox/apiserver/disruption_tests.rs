use super::*;
use serde_json::json;

fn pod(name: &str, ready: bool, owner: Option<&str>) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}
        ]}
    });
    if let Some(uid) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true
        }]);
    }
    serde_json::from_value(p).unwrap()
}

fn budget(spec: Value) -> PodDisruptionBudget {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "generation": 3},
        "spec": spec
    }))
    .unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn scales(replicas: i32) -> ControllerScales {
    [("rs-uid".to_string(), ("deploy-uid".to_string(), replicas))].into()
}

#[test]
fn min_available_integer_counts_ready_pods_and_allows_the_surplus() {
    let pods = [
        pod("a", true, None),
        pod("b", true, None),
        pod("c", false, None),
    ];
    let s = pdb_status(
        &budget(json!({"minAvailable": 1})),
        &pods,
        &scales(3),
        now(),
    );
    assert_eq!(
        (
            s.current_healthy,
            s.desired_healthy,
            s.expected_pods,
            s.disruptions_allowed
        ),
        (2, 1, 3, 1)
    );
    assert_eq!(s.observed_generation, Some(3));
    let c = &s.conditions.unwrap()[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("DisruptionAllowed", "True", "SufficientPods")
    );
}

#[test]
fn min_available_equal_to_ready_pods_allows_nothing() {
    let pods = [pod("a", true, None), pod("b", true, None)];
    let s = pdb_status(
        &budget(json!({"minAvailable": 2})),
        &pods,
        &scales(2),
        now(),
    );
    assert_eq!(s.disruptions_allowed, 0);
    assert_eq!(s.conditions.unwrap()[0].reason, "InsufficientPods");
}

#[test]
fn percentages_scale_against_the_controllers_replicas_rounding_up() {
    let pods: Vec<Pod> = ["a", "b", "c"]
        .iter()
        .map(|n| pod(n, true, Some("rs-uid")))
        .collect();
    // 50% of 3 rounds up to 2 desired.
    let s = pdb_status(
        &budget(json!({"minAvailable": "50%"})),
        &pods,
        &scales(3),
        now(),
    );
    assert_eq!(
        (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
        (3, 2, 1)
    );
    // maxUnavailable 34% of 3 rounds up to 2 unavailable: 1 desired.
    let s = pdb_status(
        &budget(json!({"maxUnavailable": "34%"})),
        &pods,
        &scales(3),
        now(),
    );
    assert_eq!((s.desired_healthy, s.disruptions_allowed), (1, 2));
    // The expected count is the controller's scale, not the pods seen (one is missing).
    let s = pdb_status(
        &budget(json!({"maxUnavailable": 1})),
        &pods[..2],
        &scales(3),
        now(),
    );
    assert_eq!(
        (
            s.expected_pods,
            s.desired_healthy,
            s.current_healthy,
            s.disruptions_allowed
        ),
        (3, 2, 2, 0)
    );
}

#[test]
fn a_pod_whose_controller_is_unknown_fails_safe() {
    let pods = [pod("a", true, Some("someone-else"))];
    let s = pdb_status(
        &budget(json!({"maxUnavailable": 1})),
        &pods,
        &scales(3),
        now(),
    );
    assert_eq!(s.disruptions_allowed, 0);
    let c = &s.conditions.unwrap()[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "SyncFailed")
    );
    assert!(c.message.contains("found no controllers"), "{}", c.message);
}

#[test]
fn disrupted_and_terminating_pods_are_not_healthy_until_the_entry_expires() {
    let mut pods = vec![
        pod("a", true, None),
        pod("b", true, None),
        pod("c", true, None),
    ];
    pods[2].metadata.deletion_timestamp = Some(Time(now()));
    let mut pdb = budget(json!({"minAvailable": 1}));
    let evicted_at = Time(Timestamp::from_second(now().as_second() - 10).unwrap());
    pdb.status = Some(PodDisruptionBudgetStatus {
        disrupted_pods: Some(
            [
                ("a".to_string(), evicted_at),
                ("gone".to_string(), Time(now())),
            ]
            .into(),
        ),
        ..Default::default()
    });
    let s = pdb_status(&pdb, &pods, &scales(3), now());
    assert_eq!(s.current_healthy, 1, "a is disrupted, c is terminating");
    assert_eq!(
        s.disrupted_pods.unwrap().keys().collect::<Vec<_>>(),
        ["a"],
        "entries of missing pods are dropped"
    );

    let later = Timestamp::from_second(now().as_second() + DELETION_TIMEOUT_SECONDS).unwrap();
    let s = pdb_status(&pdb, &pods, &scales(3), later);
    assert_eq!(s.current_healthy, 2, "an expired entry no longer counts");
    assert!(s.disrupted_pods.is_none());
}

#[test]
fn empty_selector_and_other_namespaces_select_nothing() {
    let mut pdb = budget(json!({"minAvailable": 1}));
    assert!(selects(&pdb, &pod("a", true, None)));
    let mut elsewhere = pod("a", true, None);
    elsewhere.metadata.namespace = Some("other".into());
    assert!(!selects(&pdb, &elsewhere));
    pdb.spec.as_mut().unwrap().selector = Some(Default::default());
    assert!(!selects(&pdb, &pod("a", true, None)));
}

#[test]
fn the_transition_time_is_kept_while_the_condition_holds() {
    let pods = [pod("a", true, None), pod("b", true, None)];
    let mut pdb = budget(json!({"minAvailable": 1}));
    let first = pdb_status(&pdb, &pods, &scales(2), now());
    pdb.status = Some(first.clone());
    let later = Timestamp::from_second(now().as_second() + 60).unwrap();
    let second = pdb_status(&pdb, &pods, &scales(2), later);
    assert_eq!(first, second);
}
