//! A newcomer's first kubectl commands against `faultline sandbox up`, with the real kubectl
//! 1.35 (`.tools/bin/kubectl`, from scripts/fetch-tools.sh): each must succeed and print what
//! a real cluster prints. The expected lines were taken from a kube-apiserver 1.36 with
//! kube-controller-manager and kube-scheduler (`scripts/cluster.sh up`) given the same commands;
//! only names with random suffixes, ages, addresses and node names differ, and the tests leave
//! those out.
//!
//! kubectl's typed commands (`create namespace|deployment|configmap|secret|service...`, `expose`)
//! send protobuf, so this is also the protobuf path end to end.
//!
//! As root (CI), the sandbox's pods are real `faultline demo-app` processes and `kubectl logs`
//! shows their output; otherwise they are simulated and `kubectl logs` says no process ran.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn faultline(state_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("sandbox")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("faultline runs")
}

/// Stops the sandbox even when an assertion fails halfway.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = faultline(self.0, &["down"]);
    }
}

struct Kubectl {
    bin: PathBuf,
    home: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        // Never the machine's ~/.kube: explicit KUBECONFIG, HOME and cache dir.
        let out = Command::new(&self.bin)
            .env_clear()
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Runs `kubectl <args>`, which must succeed; its output.
    fn ok(&self, args: &str) -> String {
        let args: Vec<&str> = args.split_whitespace().collect();
        let (ok, out, err) = self.run(&args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    /// Runs `kubectl <args>` and checks that it prints exactly `expected`.
    fn prints(&self, args: &str, expected: &str) {
        let out = self.ok(args);
        assert_eq!(out.trim_end(), expected, "kubectl {args}");
    }
}

/// The output's lines with their runs of spaces collapsed (kubectl aligns columns with
/// tabwriter, so widths follow the longest name).
fn words(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn has_line(out: &str, line: &str) {
    assert!(
        words(out).iter().any(|l| l == line),
        "no line {line:?} in:\n{out}"
    );
}

fn has_line_starting(out: &str, prefix: &str) {
    assert!(
        words(out).iter().any(|l| l.starts_with(prefix)),
        "no line starting {prefix:?} in:\n{out}"
    );
}

#[test]
fn a_newcomers_first_kubectl_commands_work_as_on_a_cluster() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/fetch-tools.sh",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = faultline(&state, &["up", "--detach"]);
    let _down = Down(&state);
    let stdout = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        up.status.success(),
        "up failed: {stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let real_pods = stdout.contains("pods:       real");
    let k = Kubectl {
        bin,
        home: dir.path().to_path_buf(),
        kubeconfig: state.join("kubeconfig"),
    };

    // 0: the version, as the real server it answers like; kubectl 1.35 finds the pair within
    // its skew (a sandbox that said 1.33 drew "Warning: version difference between client
    // (1.35) and server (1.33) exceeds the supported minor version skew of +/-1").
    let (ok, version, warnings) = k.run(&["version"]);
    assert!(ok, "{version}{warnings}");
    assert!(
        version.contains("Server Version: v1.36.3-faultline"),
        "{version}"
    );
    assert!(!warnings.contains("version difference"), "{warnings}");

    // 1-4: kubectl's typed creates (protobuf bodies).
    k.prints("create namespace shop", "namespace/shop created");
    k.prints(
        "create deployment web --image=nginx:1.27 -n shop",
        "deployment.apps/web created",
    );
    k.prints(
        "create configmap settings --from-literal=color=blue -n shop",
        "configmap/settings created",
    );
    k.prints(
        "create secret generic creds --from-literal=password=s3cr3t -n shop",
        "secret/creds created",
    );
    // 5: kubectl run (JSON), and waiting for the pod.
    k.prints("run shell --image=busybox -n shop", "pod/shell created");
    k.prints(
        "wait --for=condition=Ready pod/shell -n shop --timeout=60s",
        "pod/shell condition met",
    );
    // 6: scale (the deployments/scale subresource), then the rollout.
    k.prints(
        "scale deployment web --replicas=3 -n shop",
        "deployment.apps/web scaled",
    );
    let rollout = k.ok("rollout status deployment web -n shop --timeout=60s");
    assert_eq!(
        rollout.lines().last(),
        Some("deployment \"web\" successfully rolled out"),
        "{rollout}"
    );
    // 7: label and annotate (strategic merge patches).
    k.prints("label pod shell tier=debug -n shop", "pod/shell labeled");
    k.prints("annotate pod shell owner=me -n shop", "pod/shell annotated");
    // 8: a restart rolls out a new ReplicaSet.
    k.prints(
        "rollout restart deployment web -n shop",
        "deployment.apps/web restarted",
    );
    let rollout = k.ok("rollout status deployment web -n shop --timeout=60s");
    assert!(
        rollout.ends_with("deployment \"web\" successfully rolled out\n"),
        "{rollout}"
    );
    k.prints(
        "rollout history deployment web -n shop",
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>",
    );

    // 9: what happened, and what is there.
    let events = k.ok("get events -n shop");
    has_line(&events, "LAST SEEN TYPE REASON OBJECT MESSAGE");
    let shell_scheduled =
        "Normal Scheduled pod/shell Successfully assigned shop/shell to sandbox-node-";
    assert!(
        words(&events).iter().any(|l| l.contains(shell_scheduled)),
        "{events}"
    );
    for reason in [
        "Normal ScalingReplicaSet deployment/web Scaled up replica set web-",
        "Normal ScalingReplicaSet deployment/web Scaled down replica set web-",
        "Normal SuccessfulCreate replicaset/web-",
        "Normal Started pod/shell Started container shell",
    ] {
        assert!(
            words(&events).iter().any(|l| l.contains(reason)),
            "no {reason:?} in:\n{events}"
        );
    }
    let pods = k.ok("get pods -n shop");
    has_line(&pods, "NAME READY STATUS RESTARTS AGE");
    assert_eq!(
        words(&pods)
            .iter()
            .filter(|l| l.starts_with("web-") && l.contains(" 1/1 Running 0 "))
            .count(),
        3,
        "{pods}"
    );
    has_line_starting(&pods, "shell 1/1 Running 0 ");
    let all = k.ok("get deployment,replicaset,configmap,secret -n shop");
    has_line_starting(&all, "deployment.apps/web 3/3 3 3 ");
    has_line(&all, "NAME DESIRED CURRENT READY AGE");
    has_line_starting(&all, "configmap/settings 1 ");
    has_line_starting(&all, "secret/creds Opaque 1 ");

    // 10: describe a pod and a Deployment.
    let pod = k.ok("describe pod shell -n shop");
    for line in [
        "Name: shell",
        "Namespace: shop",
        "Priority: 0",
        "Service Account: default",
        "Labels: run=shell",
        "tier=debug",
        "Annotations: owner: me",
        "Status: Running",
        "Image: busybox",
        "State: Running",
        "Ready: True",
        "Restart Count: 0",
        "QoS Class: BestEffort",
        "Node-Selectors: <none>",
        "Tolerations: node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
        "node.kubernetes.io/unreachable:NoExecute op=Exists for 300s",
        "Type Reason Age From Message",
    ] {
        has_line(&pod, line);
    }
    has_line_starting(&pod, "Node: sandbox-node-");
    has_line_starting(
        &pod,
        "/var/run/secrets/kubernetes.io/serviceaccount from kube-api-access-",
    );
    has_line_starting(&pod, "Normal Scheduled ");
    let deploy = k.ok("describe deployment web -n shop");
    for line in [
        "Name: web",
        "Namespace: shop",
        "Labels: app=web",
        "Annotations: deployment.kubernetes.io/revision: 2",
        "Selector: app=web",
        "Replicas: 3 desired | 3 updated | 3 total | 3 available | 0 unavailable",
        "StrategyType: RollingUpdate",
        "MinReadySeconds: 0",
        "RollingUpdateStrategy: 25% max unavailable, 25% max surge",
        "Image: nginx:1.27",
        "Available True MinimumReplicasAvailable",
        "Progressing True NewReplicaSetAvailable",
    ] {
        has_line(&deploy, line);
    }
    has_line_starting(&deploy, "NewReplicaSet: web-");
    has_line_starting(&deploy, "Normal ScalingReplicaSet ");

    // 11: logs (pods/log).
    let (ok, out, err) = k.run(&["logs", "shell", "-n", "shop"]);
    if real_pods {
        assert!(ok, "{err}");
        assert!(
            out.starts_with("demo-app shell listening on 0.0.0.0:8080\n"),
            "{out}"
        );
        let tail = k.ok("logs shell -n shop --tail=1 --timestamps");
        assert_eq!(tail.lines().count(), 1, "{tail}");
    } else {
        assert!(!ok);
        assert!(
            err.starts_with(
                "Error from server (BadRequest): container \"shell\" in pod \"shell\" is waiting to start:"
            ),
            "{err}"
        );
    }

    // 12: more typed creates, and cleaning up.
    k.prints(
        "create service clusterip db --tcp=5432:5432 -n shop",
        "service/db created",
    );
    k.prints(
        "expose deployment web --port=80 --target-port=8080 -n shop",
        "service/web exposed",
    );
    let services = k.ok("get services -n shop");
    has_line(&services, "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE");
    has_line_starting(&services, "db ClusterIP 10.96.");
    k.prints(
        "create serviceaccount robot -n shop",
        "serviceaccount/robot created",
    );
    k.prints(
        "create poddisruptionbudget web --selector=app=web --min-available=1 -n shop",
        "poddisruptionbudget.policy/web created",
    );
    k.prints(
        "delete pod shell -n shop",
        "pod \"shell\" deleted from shop namespace",
    );
    k.prints(
        "delete deployment web -n shop",
        "deployment.apps \"web\" deleted from shop namespace",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, err) = k.run(&["get", "pods", "-n", "shop"]);
        if err.trim() == "No resources found in shop namespace." {
            break;
        }
        assert!(Instant::now() < deadline, "pods left: {out}{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    k.prints("delete namespace shop", "namespace \"shop\" deleted");
}
