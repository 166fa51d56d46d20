//! A real kubectl (v1.35, from scripts/fetch-tools.sh) against the sandbox API server:
//! apply a CRD and a CR, get by short name, -o yaml, get -w, delete, and a rejected invalid CR.

mod common;

use common::server;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.test.faultline.dev
spec:
  group: test.faultline.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [color]
            x-kubernetes-validations:
            - {rule: "self.size <= 10", message: "size must be at most 10"}
            properties:
              color: {type: string}
              size: {type: integer, default: 1}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

const CR: &str =
    "apiVersion: test.faultline.dev/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  color: red\n";
const BAD_CR: &str = "apiVersion: test.faultline.dev/v1\nkind: Gadget\nmetadata:\n  name: g2\nspec:\n  color: blue\n  size: 50\n";

fn kubectl_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-tools.sh",
        p.display()
    );
    p
}

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        let kubeconfig = self.dir.path().join("kubeconfig");
        // Never the machine's ~/.kube: explicit KUBECONFIG, HOME and cache dir in our tempdir.
        c.env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=10s")
            .args(args)
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(20), self.command(args).output())
            .await
            .expect("kubectl finished in time")
            .expect("kubectl runs");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        (out.status.success(), so, se)
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, so, se) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed:\nstdout: {so}\nstderr: {se}");
        so
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }
}

#[tokio::test]
async fn kubectl_apply_get_watch_delete() {
    let bin = kubectl_path();
    let srv = server().await;
    let k = Kubectl {
        bin,
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(k.dir.path().join("kubeconfig"), srv.kubeconfig_yaml()).unwrap();

    let crd = k.file("crd.yaml", CRD);
    let out = k.ok(&["apply", "-f", &crd]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/gadgets.test.faultline.dev created"
        ),
        "{out}"
    );
    let cr = k.file("cr.yaml", CR);
    let out = k.ok(&["apply", "-f", &cr]).await;
    assert!(
        out.contains("gadget.test.faultline.dev/g1 created"),
        "{out}"
    );
    let out = k.ok(&["apply", "-f", &cr]).await;
    assert!(out.contains("unchanged"), "{out}");

    let out = k.ok(&["get", "gdg"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].split_whitespace().eq(["NAME", "COLOR", "AGE"]),
        "{out}"
    );
    assert!(
        lines[1].starts_with("g1") && lines[1].contains("red"),
        "{out}"
    );

    let yaml = k.ok(&["get", "gadget", "g1", "-o", "yaml"]).await;
    assert!(
        yaml.contains("color: red") && yaml.contains("size: 1"),
        "schema default applied:\n{yaml}"
    );
    assert!(yaml.contains("generation: 1"), "{yaml}");

    // get -w sees a change made through the kube client
    let mut watch = k
        .command(&["get", "gdg", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("NAME"), "{first}");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.faultline.dev", "v1", "Gadget"),
        "gadgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(srv.client().await, "default", &ar);
    let mut seen = Vec::new();
    let saw_update = tokio::time::timeout(Duration::from_secs(10), async {
        // the initial row first, then patch and wait for the update
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push(l.clone());
            if l.contains("red") {
                api.patch(
                    "g1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"color": "purple"}})),
                )
                .await
                .unwrap();
            }
            if l.contains("purple") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = watch.kill().await;
    assert_eq!(saw_update, Ok(true), "kubectl get -w output: {seen:?}");

    // an invalid CR is rejected with a readable message (CEL rule)
    let bad = k.file("bad.yaml", BAD_CR);
    let (ok, _, err) = k.run(&["apply", "-f", &bad]).await;
    assert!(!ok);
    assert!(
        err.contains("The Gadget \"g2\" is invalid") && err.contains("size must be at most 10"),
        "{err}"
    );
    // and a type error
    let typed = k.file(
        "typed.yaml",
        &CR.replace("color: red", "color: 7").replace("g1", "g3"),
    );
    let (ok, _, err) = k.run(&["apply", "-f", &typed]).await;
    assert!(!ok);
    assert!(
        err.contains("spec.color: Invalid value: \"integer\""),
        "{err}"
    );

    let out = k.ok(&["delete", "gdg", "g1"]).await;
    assert!(out.contains("deleted"), "{out}");
    let (_, out, err) = k.run(&["get", "gdg"]).await;
    assert!(
        out.is_empty() && err.contains("No resources found"),
        "{out} {err}"
    );
    srv.shutdown().await;
}

/// The same flow with faultline's own files: `kubectl apply -f crds/`, an example from
/// `experiments/`, the short name, `-o yaml`, `explain`, a rejected manifest, delete.
#[tokio::test]
async fn kubectl_works_with_faultlines_crds_and_examples() {
    let bin = kubectl_path();
    let srv = server().await;
    let k = Kubectl {
        bin,
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(k.dir.path().join("kubeconfig"), srv.kubeconfig_yaml()).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    let out = k
        .ok(&["apply", "-f", repo.join("crds").to_str().unwrap()])
        .await;
    for crd in [
        "chaosexperiments",
        "chaosschedules",
        "gamedays",
        "faultinjections",
    ] {
        assert!(
            out.contains(&format!("{crd}.faultline.dev created")),
            "{out}"
        );
    }
    let example = repo.join("experiments/pod-kill-http.yaml");
    let out = k.ok(&["apply", "-f", example.to_str().unwrap()]).await;
    assert!(
        out.contains("chaosexperiment.faultline.dev/checkout-pod-kill created"),
        "{out}"
    );

    let table = k.ok(&["get", "fex"]).await;
    assert!(
        table.starts_with("NAME") && table.contains("PHASE") && table.contains("VERDICT"),
        "{table}"
    );
    assert!(
        table.contains("checkout-pod-kill") && table.contains("30s"),
        "{table}"
    );
    let yaml = k
        .ok(&["get", "fex", "checkout-pod-kill", "-o", "yaml"])
        .await;
    assert!(
        yaml.contains("method: evict") && yaml.contains("name: checkout-healthy"),
        "{yaml}"
    );
    let all = k.ok(&["get", "chaos"]).await;
    assert!(
        all.contains("chaosexperiment.faultline.dev/checkout-pod-kill"),
        "{all}"
    );
    let explain = k.ok(&["explain", "chaosexperiment.spec.target.mode"]).await;
    assert!(
        explain.contains("How many of the matching pods to target")
            && explain.contains("RandomMaxPercent"),
        "{explain}"
    );

    let bad = k.file(
        "bad.yaml",
        "apiVersion: faultline.dev/v1alpha1\nkind: ChaosExperiment\nmetadata:\n  name: bad\nspec:\n  duration: fast\n  faults:\n  - podKill: {}\n    networkLoss: {percent: 5}\n",
    );
    let (ok, _, stderr) = k.run(&["apply", "-f", &bad]).await;
    assert!(!ok);
    assert!(
        stderr.contains("spec.duration: Invalid value: \"fast\": must be a duration such as 60s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("each fault must set exactly one of podKill"),
        "{stderr}"
    );

    let out = k.ok(&["delete", "fex", "checkout-pod-kill"]).await;
    assert!(out.contains("deleted"), "{out}");
    let (_, table, _) = k.run(&["get", "fex"]).await;
    assert!(!table.contains("checkout-pod-kill"), "{table}");
    srv.shutdown().await;
}
