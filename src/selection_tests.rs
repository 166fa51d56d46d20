use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::*;

fn namespace(name: &str, opted_in: bool) -> Namespace {
    let labels = opted_in.then(|| {
        BTreeMap::from([(
            NAMESPACE_OPT_IN_LABEL.to_string(),
            NAMESPACE_OPT_IN_VALUE.to_string(),
        )])
    });
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.1".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn not_ready(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    p
}

fn app_pods(ns: &str, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| pod(ns, &format!("web-{i:02}"), &[("app", "web")]))
        .collect()
}

fn selector(mode: SelectionMode, value: Option<i32>) -> TargetSelector {
    TargetSelector {
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        }),
        mode,
        value,
        ..Default::default()
    }
}

fn policy() -> SafetyPolicy {
    SafetyPolicy {
        controller_namespace: "faultline-system".into(),
        ..Default::default()
    }
}

fn names(selection: &Selection) -> Vec<&str> {
    selection.targets.iter().map(|t| t.name.as_str()).collect()
}

fn select(spec: &TargetSelector, pods: &[Pod], seed: u64) -> Result<Selection, SelectionError> {
    select_targets(
        spec,
        "shop",
        &[namespace("shop", true)],
        pods,
        &policy(),
        seed,
    )
}

#[test]
fn all_mode_selects_every_matching_running_ready_pod() {
    let mut pods = app_pods("shop", 3);
    pods.push(pod("shop", "db-0", &[("app", "db")]));
    pods.push(not_ready(pod("shop", "web-sick", &[("app", "web")])));
    let selection = select(&selector(SelectionMode::All, None), &pods, 1).unwrap();
    assert_eq!(names(&selection), ["web-00", "web-01", "web-02"]);
    assert_eq!(selection.matched, 3);
    assert_eq!(selection.targets[0].uid, "uid-web-00");
    assert_eq!(selection.targets[0].node_name.as_deref(), Some("node-1"));
}

#[test]
fn include_not_ready_also_selects_unready_pods() {
    let pods = vec![not_ready(pod("shop", "web-sick", &[("app", "web")]))];
    let mut spec = selector(SelectionMode::All, None);
    spec.include_not_ready = true;
    assert_eq!(names(&select(&spec, &pods, 1).unwrap()), ["web-sick"]);
}

#[test]
fn terminating_pods_are_never_selected() {
    let mut p = pod("shop", "web-going", &[("app", "web")]);
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(
        select(&selector(SelectionMode::All, None), &[p], 1)
            .unwrap()
            .targets
            .is_empty()
    );
}

#[test]
fn one_fixed_and_percent_modes_choose_the_right_counts() {
    let pods = app_pods("shop", 10);
    let count = |mode, value| {
        select(&selector(mode, value), &pods, 7)
            .unwrap()
            .targets
            .len()
    };
    assert_eq!(count(SelectionMode::One, None), 1);
    assert_eq!(count(SelectionMode::Fixed, Some(3)), 3);
    assert_eq!(
        count(SelectionMode::Fixed, Some(30)),
        10,
        "fewer match than asked: all of them"
    );
    assert_eq!(count(SelectionMode::FixedPercent, Some(50)), 5);
    assert_eq!(
        count(SelectionMode::FixedPercent, Some(1)),
        1,
        "rounds down but at least one"
    );
    assert_eq!(count(SelectionMode::FixedPercent, Some(100)), 10);
}

#[test]
fn random_max_percent_stays_between_one_and_the_percentage() {
    let pods = app_pods("shop", 10);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let n = select(
            &selector(SelectionMode::RandomMaxPercent, Some(40)),
            &pods,
            seed,
        )
        .unwrap()
        .targets
        .len();
        assert!((1..=4).contains(&n), "seed {seed}: {n}");
        seen.insert(n);
    }
    assert_eq!(seen.len(), 4, "every count from 1 to 4 occurs: {seen:?}");
}

#[test]
fn the_same_seed_reproduces_the_same_choice_and_seeds_differ() {
    let pods = app_pods("shop", 20);
    let spec = selector(SelectionMode::Fixed, Some(3));
    let first = select(&spec, &pods, 42).unwrap();
    assert_eq!(first, select(&spec, &pods, 42).unwrap());
    let others: Vec<_> = (0..10)
        .map(|s| names(&select(&spec, &pods, s).unwrap()).join(","))
        .collect();
    assert!(others.iter().any(|o| *o != names(&first).join(",")));
}

#[test]
fn a_pinned_seed_gives_a_pinned_choice() {
    // Guards the generator itself: a recorded seed must select the same pods in every release.
    let pods = app_pods("shop", 10);
    let selection = select(&selector(SelectionMode::Fixed, Some(2)), &pods, 12345).unwrap();
    assert_eq!(names(&selection), ["web-01", "web-04"]);
}

#[test]
fn no_match_is_an_empty_selection_not_an_error() {
    let selection = select(&selector(SelectionMode::One, None), &[], 1).unwrap();
    assert!(selection.targets.is_empty());
    assert_eq!(selection.matched, 0);
}

#[test]
fn namespaces_must_opt_in_unless_the_controller_allows_all() {
    let pods = app_pods("other", 2);
    let mut spec = selector(SelectionMode::All, None);
    spec.namespaces = vec!["other".into()];
    let namespaces = [namespace("other", false)];
    let err = select_targets(&spec, "shop", &namespaces, &pods, &policy(), 1).unwrap_err();
    assert_eq!(
        err,
        SelectionError::NamespaceNotOptedIn {
            namespace: "other".into()
        }
    );
    assert!(
        err.to_string()
            .contains("kubectl label namespace other faultline.dev/chaos=enabled")
    );

    let open = SafetyPolicy {
        allow_all_namespaces: true,
        ..policy()
    };
    assert_eq!(
        select_targets(&spec, "shop", &namespaces, &pods, &open, 1)
            .unwrap()
            .targets
            .len(),
        2
    );
}

#[test]
fn kube_system_and_the_controller_namespace_are_never_targets() {
    let open = SafetyPolicy {
        allow_all_namespaces: true,
        ..policy()
    };
    let open = SafetyPolicy {
        protected_namespaces: vec!["payments".into()],
        ..open
    };
    for forbidden in ["kube-system", "faultline-system", "payments"] {
        let mut spec = selector(SelectionMode::All, None);
        spec.namespaces = vec![forbidden.into()];
        let namespaces = [namespace(forbidden, true)];
        let pods = app_pods(forbidden, 1);
        let err = select_targets(&spec, "shop", &namespaces, &pods, &open, 1).unwrap_err();
        assert!(
            matches!(err, SelectionError::NamespaceForbidden { .. }),
            "{forbidden}: {err}"
        );
    }
}

#[test]
fn protected_pods_are_never_targets() {
    let pods = vec![
        pod("shop", "web-a", &[("app", "web")]),
        pod(
            "shop",
            "web-b",
            &[("app", "web"), (PROTECTED_LABEL, "true")],
        ),
    ];
    assert_eq!(
        names(&select(&selector(SelectionMode::All, None), &pods, 1).unwrap()),
        ["web-a"]
    );
}

#[test]
fn pods_outside_the_target_namespaces_are_ignored() {
    let mut pods = app_pods("shop", 1);
    pods.extend(app_pods("elsewhere", 3));
    assert_eq!(
        select(&selector(SelectionMode::All, None), &pods, 1)
            .unwrap()
            .targets
            .len(),
        1
    );
}

#[test]
fn selections_over_a_cap_are_refused_whole() {
    let pods = app_pods("shop", 5);
    let mut spec = selector(SelectionMode::All, None);
    spec.max_targets = Some(4);
    let err = select(&spec, &pods, 1).unwrap_err();
    assert_eq!(
        err,
        SelectionError::OverCap {
            selected: 5,
            cap: 4,
            source_of_cap: "spec.target.maxTargets"
        }
    );

    let capped = SafetyPolicy {
        max_targets: Some(2),
        ..policy()
    };
    let spec = selector(SelectionMode::Fixed, Some(3));
    let err =
        select_targets(&spec, "shop", &[namespace("shop", true)], &pods, &capped, 1).unwrap_err();
    assert!(
        matches!(err, SelectionError::OverCap { cap: 2, .. }),
        "{err}"
    );
}

#[test]
fn field_selectors_match_node_phase_and_name() {
    let mut on_node_2 = pod("shop", "web-b", &[("app", "web")]);
    on_node_2.spec.as_mut().unwrap().node_name = Some("node-2".into());
    let pods = vec![pod("shop", "web-a", &[("app", "web")]), on_node_2];
    let mut spec = selector(SelectionMode::All, None);
    spec.field_selectors = BTreeMap::from([("spec.nodeName".into(), "node-2".into())]);
    assert_eq!(names(&select(&spec, &pods, 1).unwrap()), ["web-b"]);
    spec.field_selectors = BTreeMap::from([("metadata.name".into(), "web-a".into())]);
    assert_eq!(names(&select(&spec, &pods, 1).unwrap()), ["web-a"]);
    spec.field_selectors = BTreeMap::from([("status.phase".into(), "Pending".into())]);
    assert!(select(&spec, &pods, 1).unwrap().targets.is_empty());
    spec.field_selectors = BTreeMap::from([("status.hostIP".into(), "x".into())]);
    assert!(matches!(
        select(&spec, &pods, 1),
        Err(SelectionError::InvalidFieldSelector(_))
    ));
}

fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

#[test]
fn match_expressions_cover_every_operator() {
    let labels = BTreeMap::from([("tier".to_string(), "web".to_string())]);
    let check = |req: LabelSelectorRequirement| {
        LabelMatcher::new(&LabelSelector {
            match_expressions: Some(vec![req]),
            ..Default::default()
        })
        .unwrap()
        .matches(Some(&labels))
    };
    assert!(check(expression("tier", "In", &["web", "api"])));
    assert!(!check(expression("tier", "In", &["api"])));
    assert!(check(expression("tier", "NotIn", &["api"])));
    assert!(!check(expression("tier", "NotIn", &["web"])));
    assert!(
        check(expression("zone", "NotIn", &["a"])),
        "NotIn matches a missing label"
    );
    assert!(check(expression("tier", "Exists", &[])));
    assert!(!check(expression("zone", "Exists", &[])));
    assert!(check(expression("zone", "DoesNotExist", &[])));
    assert!(!check(expression("tier", "DoesNotExist", &[])));
}

#[test]
fn malformed_match_expressions_are_errors_naming_the_key() {
    for bad in [
        expression("tier", "In", &[]),
        expression("tier", "Exists", &["x"]),
        expression("tier", "Has", &["x"]),
    ] {
        let err = LabelMatcher::new(&LabelSelector {
            match_expressions: Some(vec![bad]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.target.labelSelector: matchExpressions key tier"),
            "{err}"
        );
    }
}

#[test]
fn an_empty_selector_matches_every_pod_in_the_namespace() {
    let pods = vec![pod("shop", "a", &[]), pod("shop", "b", &[("x", "y")])];
    let spec = TargetSelector::default();
    assert_eq!(select(&spec, &pods, 1).unwrap().targets.len(), 2);
}
