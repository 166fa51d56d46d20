//! One corpus of manifests through `faultline validate`, the sandbox API server and, with
//! `FAULTLINE_TEST_CLUSTER=real`, a real kube-apiserver v1.36 (the referee).
//!
//! The corpus: every YAML file under experiments/, tests/fixtures/validate/ and
//! tests/fixtures/differential/; every faultline document in them is a case. Adding a file is
//! all it takes to add cases.
//!
//! Each case is sent as `kubectl create` sends it (POST, `fieldValidation=Strict`) and as
//! `kubectl apply --server-side` sends it (an apply patch), both as server-side dry runs. Then:
//!
//! 1. the verdicts agree: validate refuses exactly what the servers refuse, except the checks
//!    only validate makes (`faultline::validate::VALIDATE_ONLY`, each listed with why): a case
//!    whose only problems are those must be accepted by the servers;
//! 2. the field paths agree: the servers name the fields validate names. Where the server
//!    stopped early (it runs no CEL rule after a blocking schema error and says so; a strict
//!    decoding error stops everything) it names a subset of them;
//! 3. the sandbox answers as the real server does: same HTTP code, same reason, same causes
//!    (field, reason and message), same message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::cluster::{TestCluster, real_cluster_requested};
use faultline::sandbox::apiserver::ApiServer;
use faultline::validate::{Severity, check_text, yaml_lines};
use serde::Deserialize;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the corpus lives.
const CORPUS: &[&str] = &[
    "experiments",
    "tests/fixtures/validate",
    "tests/fixtures/differential",
];

/// One faultline document of the corpus.
struct Case {
    /// `tests/fixtures/differential/selectors.yaml#2`
    name: String,
    object: Value,
    /// Field paths validate reports, excluding its validate-only checks.
    validate_paths: BTreeSet<String>,
    /// The validate-only checks that fired.
    validate_only: BTreeSet<&'static str>,
}

impl Case {
    fn validate_refuses(&self) -> bool {
        !self.validate_paths.is_empty()
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for dir in CORPUS {
        for path in yaml_files(&repo().join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(repo()).unwrap().display().to_string();
            // A file kubectl cannot read never reaches a server.
            let Ok(documents) = yaml_lines::parse_documents(&text) else {
                continue;
            };
            let report = check_text(&relative, &text);
            for (index, document) in documents.into_iter().enumerate() {
                let object = document.value;
                let is_faultline = object["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("faultline.dev/"));
                if !is_faultline || !object["kind"].is_string() {
                    continue;
                }
                let problems = report
                    .problems
                    .iter()
                    .filter(|p| p.document == index && p.severity == Severity::Error);
                let (only, shared): (Vec<_>, Vec<_>) =
                    problems.partition(|p| p.validate_only.is_some());
                cases.push(Case {
                    name: format!("{relative}#{index}"),
                    object,
                    validate_paths: shared.iter().map(|p| p.path.clone()).collect(),
                    validate_only: only.iter().filter_map(|p| p.validate_only).collect(),
                });
            }
        }
    }
    cases
}

/// A server's answer to one request.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    code: u16,
    reason: String,
    message: String,
    /// `(field, reason, message)`, sorted: the order of causes is the server's business.
    causes: Vec<(String, String, String)>,
}

impl Answer {
    /// The answer without the order of the causes in its message (`Kind "x" is invalid: [a, b]`
    /// lists them in the order the server found them; the causes are compared as a set).
    fn comparable(&self) -> Answer {
        let mut answer = self.clone();
        if let Some(at) = answer.message.find(" is invalid: ") {
            answer.message.truncate(at);
        }
        answer
    }

    fn accepted(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The field paths the answer names, in validate's spelling, and whether the server
    /// stopped before running every check.
    fn paths(&self, object: &Value) -> (BTreeSet<String>, bool) {
        let mut paths = BTreeSet::new();
        let mut partial = self.code != 422;
        let quoted = regex::Regex::new(r#"unknown field "([^"]+)""#).unwrap();
        for found in quoted.captures_iter(&self.message) {
            paths.insert(found[1].to_string());
        }
        let undeclared = regex::Regex::new(r"\.(\S+): field not declared in schema").unwrap();
        for found in undeclared.captures_iter(&self.message) {
            paths.insert(found[1].to_string());
        }
        let checked = regex::Regex::new(r"Checked value must be of type .* in (\S+)$").unwrap();
        let all_of = regex::Regex::new(r#""([^"]+)" must validate all the schemas"#).unwrap();
        for (field, _, message) in &self.causes {
            if field != "<nil>" && !field.is_empty() {
                paths.insert(field.clone());
            } else if message.contains("some validation rules were not checked") {
                partial = true;
            } else if let Some(found) = checked.captures(message) {
                paths.insert(found[1].to_string());
            } else if let Some(found) = all_of.captures(message) {
                paths.insert(found[1].to_string());
            } else {
                paths.insert(String::new());
            }
        }
        let paths = paths.iter().map(|p| by_index(p, object)).collect();
        (paths, partial)
    }
}

/// A server-side apply path names list entries by key (`spec.stages[name="one"].x`); validate
/// and the 422 answers name them by index (`spec.stages[0].x`).
fn by_index(path: &str, object: &Value) -> String {
    let keyed = regex::Regex::new(r#"^\[([A-Za-z]+)="((?:[^"\\]|\\.)*)"\]"#).unwrap();
    let mut out = String::new();
    let mut node = Some(object);
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(found) = keyed.captures(rest) {
            let (key, value) = (&found[1], &found[2]);
            let index = node
                .and_then(Value::as_array)
                .and_then(|items| items.iter().position(|i| i[key].as_str() == Some(value)));
            match index {
                Some(i) => {
                    out.push_str(&format!("[{i}]"));
                    node = node.and_then(|n| n.get(i));
                }
                None => return path.to_string(),
            }
            rest = &rest[found[0].len()..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').unwrap_or(after.len());
            let index: Option<usize> = after[..end].parse().ok();
            out.push_str(&format!("[{}]", &after[..end]));
            node = index.and_then(|i| node.and_then(|n| n.get(i)));
            rest = after.get(end + 1..).unwrap_or_default();
        } else if let Some(key) = dotted_key(rest.trim_start_matches('.'), node) {
            // A map key with dots (`fieldSelectors.spec.nodeName`): validate spells it
            // `fieldSelectors[spec.nodeName]`.
            out.push_str(&format!("[{key}]"));
            node = node.and_then(|n| n.get(&key));
            rest = &rest.trim_start_matches('.')[key.len()..];
        } else {
            let segment = rest.trim_start_matches('.');
            let end = segment.find(['.', '[']).unwrap_or(segment.len());
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment[..end]);
            node = node.and_then(|n| n.get(&segment[..end]));
            rest = &segment[end..];
        }
    }
    out
}

/// The key of the map `node` with a '.' in it that `path` starts with, if any.
fn dotted_key(path: &str, node: Option<&Value>) -> Option<String> {
    node?
        .as_object()?
        .keys()
        .filter(|key| key.contains('.') && path.starts_with(key.as_str()))
        .find(|key| matches!(path[key.len()..].chars().next(), None | Some('.' | '[')))
        .cloned()
}

/// A server the corpus is sent to.
struct Server {
    name: &'static str,
    client: kube::Client,
}

impl Server {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Answer {
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .unwrap_or_else(|e| panic!("{}: request failed: {e}", self.name));
        let code = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let status: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            return Answer {
                code,
                reason: String::new(),
                message: String::new(),
                causes: Vec::new(),
            };
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut causes: Vec<(String, String, String)> = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (text(&c["field"]), text(&c["reason"]), text(&c["message"])))
            .collect();
        causes.sort();
        Answer {
            code,
            reason: text(&status["reason"]),
            message: text(&status["message"]),
            causes,
        }
    }

    /// `kubectl create --dry-run=server` (and a client-side `kubectl apply` of a new object).
    async fn create(&self, url: &str, object: &Value) -> Answer {
        let request = http::Request::post(format!("{url}?dryRun=All&fieldValidation=Strict"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(object).unwrap())
            .unwrap();
        self.send(request).await
    }

    /// `kubectl apply --server-side --dry-run=server`.
    async fn apply(&self, url: &str, name: &str, object: &Value) -> Answer {
        let request = http::Request::patch(format!(
            "{url}/{name}?dryRun=All&fieldValidation=Strict&fieldManager=kubectl&force=true"
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(object).unwrap())
        .unwrap();
        self.send(request).await
    }
}

/// `/apis/faultline.dev/v1alpha1/namespaces/NS/PLURAL` for the case's kind, if it is one.
fn collection_url(object: &Value) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let plural = faultline::api::all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)?
        .spec
        .names
        .plural;
    let version = object["apiVersion"].as_str()?;
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    Some(format!("/apis/{version}/namespaces/{namespace}/{plural}"))
}

fn namespaces(cases: &[Case]) -> BTreeSet<String> {
    cases
        .iter()
        .filter_map(|c| c.object["metadata"]["namespace"].as_str())
        .filter(|ns| {
            regex::Regex::new(faultline::api::bounds::DNS_LABEL_PATTERN)
                .unwrap()
                .is_match(ns)
        })
        .map(str::to_owned)
        .chain(["default".to_string()])
        .collect()
}

/// What one case got from each server, per request kind.
type Answers = BTreeMap<&'static str, BTreeMap<&'static str, Answer>>;

/// The embedded API server with faultline's CRDs.
async fn sandbox_with_crds() -> ApiServer {
    let sandbox = ApiServer::start(0)
        .await
        .expect("start the sandbox API server");
    sandbox
        .install_crds(&faultline::api::all_crds())
        .await
        .unwrap();
    sandbox
}

/// A sandbox and, with `FAULTLINE_TEST_CLUSTER=real`, the real server after it: the same
/// requests go to each, in that order.
struct SideBySide {
    servers: Vec<Server>,
    sandbox: ApiServer,
    real: Option<TestCluster>,
}

impl SideBySide {
    async fn start(sandbox: ApiServer) -> SideBySide {
        let mut servers = vec![Server {
            name: "sandbox",
            client: sandbox.client().await,
        }];
        let real = if real_cluster_requested() {
            let real = TestCluster::start().await;
            servers.push(Server {
                name: "real",
                client: real.client().await,
            });
            Some(real)
        } else {
            None
        };
        SideBySide {
            servers,
            sandbox,
            real,
        }
    }

    async fn shutdown(self) {
        self.sandbox.shutdown().await;
        if let Some(real) = self.real {
            real.shutdown().await;
        }
    }
}

// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_the_sandbox_and_the_real_server_agree_on_every_manifest() {
    let cases = corpus();
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());

    let side_by_side = SideBySide::start(sandbox_with_crds().await).await;
    for server in &side_by_side.servers {
        for ns in namespaces(&cases) {
            common::cluster::apply_namespace(&server.client, &ns, true).await;
        }
    }

    let mut problems = Vec::new();
    let mut compared = 0;
    for case in &cases {
        let Some(url) = collection_url(&case.object) else {
            // kubectl refuses a kind the cluster does not serve before sending anything.
            if !case.validate_refuses() {
                problems.push(format!(
                    "{}: not a served kind, yet validate accepts it",
                    case.name
                ));
            }
            continue;
        };
        let mut answers: Answers = BTreeMap::new();
        for server in &side_by_side.servers {
            let created = server.create(&url, &case.object).await;
            answers
                .entry("create")
                .or_default()
                .insert(server.name, created);
            if let Some(name) = case.object["metadata"]["name"].as_str() {
                let applied = server.apply(&url, name, &case.object).await;
                answers
                    .entry("apply")
                    .or_default()
                    .insert(server.name, applied);
            }
        }
        compared += 1;
        judge(case, &answers, &mut problems);
    }
    eprintln!(
        "differential: {} cases, {compared} sent to {}",
        cases.len(),
        side_by_side
            .servers
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    assert!(
        problems.is_empty(),
        "{} disagreements:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    side_by_side.shutdown().await;
}

fn judge(case: &Case, answers: &Answers, problems: &mut Vec<String>) {
    for (request, by_server) in answers {
        for (server, answer) in by_server {
            let at = format!("{} ({request}, {server})", case.name);
            if answer.accepted() == case.validate_refuses() {
                problems.push(format!(
                    "{at}: validate {} (fields {:?}, validate-only {:?}) but the server {}: {} {}",
                    if case.validate_refuses() {
                        "refuses"
                    } else {
                        "accepts"
                    },
                    case.validate_paths,
                    case.validate_only,
                    if answer.accepted() {
                        "accepts"
                    } else {
                        "refuses"
                    },
                    answer.code,
                    describe(answer)
                ));
                continue;
            }
            if answer.accepted() {
                continue;
            }
            let (paths, partial) = answer.paths(&case.object);
            let agree = if partial {
                paths.is_subset(&case.validate_paths)
            } else {
                paths == case.validate_paths
            };
            if !agree {
                problems.push(format!(
                    "{at}: validate names {:?}, the server {:?}{}: {}",
                    case.validate_paths,
                    paths,
                    if partial { " (it stopped early)" } else { "" },
                    describe(answer)
                ));
            }
        }
        if let (Some(sandbox), Some(real)) = (by_server.get("sandbox"), by_server.get("real"))
            && sandbox.comparable() != real.comparable()
        {
            problems.push(format!(
                "{} ({request}): the sandbox answers\n  {} {}\nthe real server\n  {} {}",
                case.name,
                sandbox.code,
                describe(sandbox),
                real.code,
                describe(real)
            ));
        }
    }
}

fn describe(answer: &Answer) -> String {
    if answer.causes.is_empty() {
        return format!("{} {:?}", answer.reason, answer.message);
    }
    let causes: Vec<String> = answer
        .causes
        .iter()
        .map(|(field, reason, message)| format!("{field} [{reason}] {message}"))
        .collect();
    format!("{}:\n    {}", answer.reason, causes.join("\n    "))
}

/// `kubectl apply --server-side` of an object over the API server's 3 MiB request limit (a 5 MB
/// annotation): the sandbox answers the real server's 413, and kubectl reads it instead of
/// failing to write the rest of the body into a closed connection.
// Multi-threaded: kubectl blocks this thread while the embedded API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_request_limit_is_a_413_kubectl_can_read() {
    let kubectl = repo().join(".tools/bin/kubectl");
    assert!(
        kubectl.exists(),
        "{} is missing: run scripts/setup.sh",
        kubectl.display()
    );
    let sandbox = sandbox_with_crds().await;
    let mut kubeconfigs = vec![("sandbox", sandbox.kubeconfig_yaml())];
    let real = if real_cluster_requested() {
        let real = TestCluster::start().await;
        kubeconfigs.push(("real", real.kubeconfig_yaml()));
        Some(real)
    } else {
        None
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("big.json");
    let object = serde_json::json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "big", "namespace": "default",
                     "annotations": {"example.com/notes": "a".repeat(5 * 1024 * 1024)}},
        "spec": {"duration": "60s", "faults": [{"podKill": {}}]},
    });
    std::fs::write(&manifest, object.to_string()).unwrap();
    for (name, kubeconfig) in kubeconfigs {
        let config = dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&config, kubeconfig).unwrap();
        let out = std::process::Command::new(&kubectl)
            .args(["apply", "--server-side", "--dry-run=server", "-f"])
            .arg(&manifest)
            .env("KUBECONFIG", &config)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            stderr.contains("Request entity too large: limit is 3145728"),
            "{name}: {stderr}"
        );
    }
    sandbox.shutdown().await;
    if let Some(real) = real {
        real.shutdown().await;
    }
}

/// CRDs built to sit just either side of the API server's CEL cost budget
/// (tests/fixtures/celcost/budget/): the sandbox accepts and refuses them as the real server
/// does, with the same errors. Where rules tie for the four "contributed to ... total" errors,
/// the real server picks four of them in no fixed order: those are compared by number.
// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_either_side_of_the_cel_budget_are_judged_as_the_real_server_judges_them() {
    let sandbox = ApiServer::start(0)
        .await
        .expect("start the sandbox API server");
    let side_by_side = SideBySide::start(sandbox).await;
    let dir = repo().join("tests/fixtures/celcost/budget");
    let mut problems = Vec::new();
    for side in ["rule", "total", "gameday"] {
        for (file, refused) in [
            (format!("{side}-under.yaml"), false),
            (format!("{side}-over.yaml"), true),
        ] {
            let crd: Value =
                serde_yaml::from_str(&std::fs::read_to_string(dir.join(&file)).unwrap()).unwrap();
            let mut answers = Vec::new();
            for server in &side_by_side.servers {
                let answer = server
                    .create(
                        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                        &crd,
                    )
                    .await;
                if answer.accepted() == refused {
                    problems.push(format!(
                        "{file}: {} by the {}: {}",
                        if refused { "accepted" } else { "refused" },
                        server.name,
                        describe(&answer)
                    ));
                }
                let mut answer = answer.comparable();
                let contributed = answer
                    .causes
                    .iter()
                    .filter(|c| c.2.contains("contributed to estimated rule cost total"))
                    .count();
                answer
                    .causes
                    .retain(|c| !c.2.contains("contributed to estimated rule cost total"));
                answers.push((server.name, answer, contributed));
            }
            if let [(_, sandbox, a), (_, real, b)] = answers.as_slice()
                && (sandbox != real || a != b)
            {
                problems.push(format!(
                    "{file}: the sandbox answers\n  {} ({a} contributing)\nthe real server\n  {} ({b} contributing)",
                    describe(sandbox),
                    describe(real)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    side_by_side.shutdown().await;
}

/// CRDs with a malformed `x-kubernetes-validations` entry (tests/fixtures/crd-rules/): a
/// `fieldPath` the schema does not declare, a line break in a message, an unknown reason, an
/// empty rule. The sandbox refuses each as the real server does, with the same causes, and
/// accepts the paths the real server accepts (map keys, quoted names with dots).
// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_with_malformed_rule_entries_are_refused_as_the_real_server_refuses_them() {
    let sandbox = ApiServer::start(0)
        .await
        .expect("start the sandbox API server");
    let side_by_side = SideBySide::start(sandbox).await;
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/crd-rules/entries.yaml")).unwrap();
    let mut problems = Vec::new();
    let mut cases = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let case = Value::deserialize(document).unwrap();
        let (why, refused, crd) = (&case["why"], case["refused"] == true, &case["crd"]);
        cases += 1;
        let mut answers = Vec::new();
        for server in &side_by_side.servers {
            let answer = server
                .create(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                    crd,
                )
                .await;
            if answer.accepted() == refused {
                problems.push(format!(
                    "{why}: {} by the {}: {}",
                    if refused { "accepted" } else { "refused" },
                    server.name,
                    describe(&answer)
                ));
            }
            answers.push(answer.comparable());
        }
        if let [sandbox, real] = answers.as_slice()
            && sandbox != real
        {
            problems.push(format!(
                "{why}: the sandbox answers\n  {}\nthe real server\n  {}",
                describe(sandbox),
                describe(real)
            ));
        }
    }
    assert!(cases >= 8, "{cases} cases");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    side_by_side.shutdown().await;
}

/// Server-side apply's removals, side by side: a field a manager applied before and leaves out
/// of its next apply goes, unless another manager owns it; an apply to `/status` touches only
/// status, and one to the main resource leaves status alone. The sandbox's object after each
/// step is the real server's.
// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_an_apply_stops_carrying_go_as_on_the_real_server() {
    use faultline::api::ChaosExperiment;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    use serde_json::json;

    let side_by_side = SideBySide::start(sandbox_with_crds().await).await;
    let apply = |labels: Value, spec: Value| {
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
               "metadata": {"name": "ssa-removal", "labels": labels}, "spec": spec})
    };
    let status = |status: Value| {
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
               "metadata": {"name": "ssa-removal"}, "status": status})
    };
    let spec = json!({"duration": "60s", "faults": [{"podKill": {}}], "dryRun": true,
                      "abort": {"onHypothesisFailure": false}});
    let mut results = Vec::new();
    for server in &side_by_side.servers {
        let api: Api<ChaosExperiment> = Api::namespaced(server.client.clone(), "default");
        let _ = api.delete("ssa-removal", &DeleteParams::default()).await;
        let owner = PatchParams::apply("owner").force();
        api.patch(
            "ssa-removal",
            &owner,
            &Patch::Apply(apply(json!({"a": "1", "b": "2"}), spec.clone())),
        )
        .await
        .unwrap();
        // Another manager's write: the label it sets is its own.
        api.patch(
            "ssa-removal",
            &PatchParams {
                field_manager: Some("other".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": {"labels": {"c": "3"}}})),
        )
        .await
        .unwrap();
        // The owner's next apply leaves out label b, dryRun and abort.
        let smaller = apply(
            json!({"a": "1"}),
            json!({"duration": "60s", "faults": [{"podKill": {}}]}),
        );
        api.patch("ssa-removal", &owner, &Patch::Apply(smaller.clone()))
            .await
            .unwrap();
        api.patch_status(
            "ssa-removal",
            &owner,
            &Patch::Apply(status(
                json!({"phase": "Pending", "seed": 7, "message": "held"}),
            )),
        )
        .await
        .unwrap();
        // The same main-resource apply again: the status it never carried stays.
        api.patch("ssa-removal", &owner, &Patch::Apply(smaller))
            .await
            .unwrap();
        let after_main = api.get("ssa-removal").await.unwrap();
        api.patch_status(
            "ssa-removal",
            &owner,
            &Patch::Apply(status(json!({"phase": "Pending"}))),
        )
        .await
        .unwrap();
        let after_status = api.get("ssa-removal").await.unwrap();
        api.delete("ssa-removal", &DeleteParams::default())
            .await
            .unwrap();
        let seen = |e: &ChaosExperiment| {
            let status = e.status.clone().unwrap_or_default();
            json!({"labels": e.metadata.labels, "dryRun": e.spec.dry_run,
                   "abort": serde_json::to_value(&e.spec.abort).unwrap(),
                   "seed": status.seed, "message": status.message})
        };
        results.push((server.name, seen(&after_main), seen(&after_status)));
    }
    let (_, main, status) = &results[0];
    // Label b and the applied spec fields are gone (back to their defaults); the status the
    // main-resource apply did not mention stays until a status apply leaves it out.
    assert_eq!(main["labels"], json!({"a": "1", "c": "3"}), "{main}");
    assert_eq!(main["dryRun"], json!(false), "{main}");
    assert_eq!(
        (&main["seed"], &main["message"]),
        (&json!(7), &json!("held"))
    );
    assert_eq!(
        (&status["seed"], &status["message"]),
        (&json!(null), &json!(null))
    );
    if let [(_, s_main, s_status), (_, r_main, r_status)] = results.as_slice() {
        assert_eq!(s_main, r_main, "after the main-resource apply");
        assert_eq!(s_status, r_status, "after the status apply");
    }
    side_by_side.shutdown().await;
}

/// Server-side apply's conflicts, side by side, in the steps of leader election on a Lease: a
/// second replica applying itself as holder is refused (409, a cause per field, the real
/// server's message), an unchanged value is shared, a manager's own `Update` entry conflicts
/// with its apply, fields a patch removed conflict with nobody, and a forced apply takes over.
/// The sandbox answers each step as the real server does.
// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_changes_another_managers_field_is_refused_as_on_the_real_server() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    let side_by_side = SideBySide::start(sandbox_with_crds().await).await;
    let holder = |who: &str, at: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "race"},
               "spec": {"holderIdentity": who, "leaseDurationSeconds": 6,
                        "acquireTime": at, "renewTime": at}})
    };
    let apply = |manager: &str| PatchParams::apply(manager);
    let update = |manager: &str| PatchParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    let mut answers: Vec<(&str, Vec<String>)> = Vec::new();
    for server in &side_by_side.servers {
        let leases: Api<Lease> = Api::namespaced(server.client.clone(), "default");
        let _ = leases.delete("race", &DeleteParams::default()).await;
        let empty: Lease = serde_json::from_value(json!({"metadata": {"name": "race"}})).unwrap();
        leases.create(&PostParams::default(), &empty).await.unwrap();
        let steps: Vec<(PatchParams, Patch<Value>)> = vec![
            (
                apply("lm-a"),
                Patch::Apply(holder("a", "2026-12-07T01:00:00.000000Z")),
            ),
            (
                apply("lm-b"),
                Patch::Apply(holder("b", "2026-12-07T01:00:01.000000Z")),
            ),
            (
                apply("lm-b"),
                Patch::Apply(
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "race"}, "spec": {"leaseDurationSeconds": 6}}),
                ),
            ),
            (
                update("upd-a"),
                Patch::Strategic(json!({"spec": {"renewTime": "2026-12-07T01:00:04.000000Z"}})),
            ),
            (
                apply("lm-a"),
                Patch::Apply(
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "race"},
                    "spec": {"renewTime": "2026-12-07T01:00:08.000000Z"}}),
                ),
            ),
            (
                update("lm-b"),
                Patch::Strategic(json!({"spec": {"holderIdentity": null, "acquireTime": null,
                    "renewTime": null}})),
            ),
            (
                apply("lm-b"),
                Patch::Apply(holder("b", "2026-12-07T01:00:09.000000Z")),
            ),
            (
                apply("lm-a").force(),
                Patch::Apply(holder("a", "2026-12-07T01:00:10.000000Z")),
            ),
        ];
        let mut seen = Vec::new();
        for (params, patch) in &steps {
            seen.push(match leases.patch("race", params, patch).await {
                Ok(lease) => format!(
                    "ok: held by {:?}",
                    lease.spec.and_then(|s| s.holder_identity)
                ),
                Err(kube::Error::Api(status)) => {
                    // The real server lists the causes of several managers in any order.
                    let mut causes: Vec<String> = status
                        .details
                        .map(|d| d.causes)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| format!("{} {} {}", c.reason, c.field, c.message))
                        .collect();
                    causes.sort();
                    format!(
                        "{} {}: {} {causes:?}",
                        status.code, status.reason, status.message
                    )
                }
                Err(other) => format!("error: {other}"),
            });
        }
        leases
            .delete("race", &DeleteParams::default())
            .await
            .unwrap();
        answers.push((server.name, seen));
    }
    let sandbox_answers = &answers[0].1;
    assert!(sandbox_answers[0].starts_with("ok"), "{sandbox_answers:#?}");
    assert!(
        sandbox_answers[1].starts_with(
            "409 Conflict: Apply failed with 3 conflicts: conflicts with \"lm-a\":\n\
             - .spec.acquireTime\n- .spec.holderIdentity\n- .spec.renewTime"
        ),
        "{sandbox_answers:#?}"
    );
    assert!(sandbox_answers[2].starts_with("ok"), "{sandbox_answers:#?}");
    assert!(
        sandbox_answers[4].starts_with(
            "409 Conflict: Apply failed with 1 conflict: conflict with \"upd-a\" using coordination.k8s.io/v1: .spec.renewTime"
        ),
        "{sandbox_answers:#?}"
    );
    assert_eq!(sandbox_answers[6], "ok: held by Some(\"b\")");
    assert_eq!(sandbox_answers[7], "ok: held by Some(\"a\")");
    if let [(_, sandbox_seen), (_, real_seen)] = answers.as_slice() {
        assert_eq!(sandbox_seen, real_seen, "the sandbox, then the real server");
    }
    side_by_side.shutdown().await;
}
