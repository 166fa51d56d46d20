#!/usr/bin/env bash
# End-to-end on a real cluster: a 2-node kind cluster, the faultline image, the Helm chart, the
# demo workloads, and every runnable example run with `faultline run --wait`, its exit code and
# verdict compared with experiments/e2e/expectations.yaml. `make e2e` runs it; so does
# .github/workflows/e2e.yml. It needs a Docker engine (it cannot run where there is none).
#
# Needs: docker, kind, helm, kubectl, cargo, and yq or python3 with PyYAML.
# Environment (all optional):
#   E2E_CLUSTER        kind cluster name (default faultline-e2e); created here, always deleted
#   E2E_IMAGE          image built and loaded into kind (default faultline:dev)
#   E2E_OUT            output directory (default out/e2e): junit/, logs/, summary.md, kubeconfig
#   E2E_NODE_IMAGE     kindest/node image (default: the kind release's own)
#   E2E_ONLY           run only the examples whose path contains this string
#   E2E_RUN_TIMEOUT    seconds one `faultline run --wait` may take (default 600)
#   E2E_KEEP_CLUSTER=1 keep the cluster afterwards, to look around (delete it yourself)
#   HELM, KUBECTL      the binaries (default: .tools/bin/ when present, else PATH)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster="${E2E_CLUSTER:-faultline-e2e}"
image="${E2E_IMAGE:-faultline:dev}"
out="${E2E_OUT:-out/e2e}"
only="${E2E_ONLY:-}"
run_timeout="${E2E_RUN_TIMEOUT:-600}"
release=faultline
release_ns=faultline-system
expectations=experiments/e2e/expectations.yaml

step_no=0
step() { step_no=$((step_no + 1)); printf '\n==> [%d] %s\n' "$step_no" "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

tool() { # tool NAME: .tools/bin/NAME when present, else NAME from PATH
    if [[ -x ".tools/bin/$1" ]]; then echo ".tools/bin/$1"; else command -v "$1" || true; fi
}
helm="${HELM:-$(tool helm)}"
kubectl="${KUBECTL:-$(tool kubectl)}"
for need in docker kind cargo timeout; do
    command -v "$need" >/dev/null || die "'$need' is required (see the header of $0)"
done
[[ -n "$helm" ]] || die "helm is required: make setup, or install it"
[[ -n "$kubectl" ]] || die "kubectl is required: make setup, or install it"
docker info >/dev/null 2>&1 || die "the Docker engine is not running or not reachable"

# Prints "file<TAB>run<TAB>exitCode<TAB>verdict<TAB>reason" per entry of the expectations, with
# "-" for a field the entry does not have (bash's read would merge two adjacent tabs).
read_expectations() {
    local rows
    # The same expression works with mikefarah's yq v4 (GitHub's runners) and the jq-based yq.
    if command -v yq >/dev/null &&
        rows="$(yq -r '.examples[] | [.file, .run, (.exitCode // "-"), (.verdict // "-"), (.reason // "-")] | @tsv' "$expectations" 2>/dev/null)" &&
        [[ -n "$rows" ]]; then
        printf '%s\n' "$rows"
    elif python3 -c 'import yaml' 2>/dev/null; then
        python3 - "$expectations" <<'PY'
import sys, yaml
for e in yaml.safe_load(open(sys.argv[1]))["examples"]:
    row = [e["file"], str(e["run"]).lower(), str(e.get("exitCode", "-")), e.get("verdict", "-"),
           " ".join(e.get("reason", "-").split())]
    print("\t".join(row))
PY
    else
        die "reading $expectations needs yq or python3 with PyYAML"
    fi
}

mkdir -p "$out/junit" "$out/logs"
out="$(cd "$out" && pwd)"
rm -f "$out"/junit/*.xml
export KUBECONFIG="$out/kubeconfig"

# Whatever happens, the cluster goes; on failure, first what is needed to see why.
collect_diagnostics() {
    local dir="$out/logs"
    "$kubectl" get nodes -o wide >"$dir/nodes.txt" 2>&1 || true
    "$kubectl" get pods -A -o wide >"$dir/pods.txt" 2>&1 || true
    "$kubectl" get chaosexperiments,faultinjections -A -o yaml >"$dir/faultline-objects.yaml" 2>&1 || true
    "$kubectl" get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
    "$kubectl" -n "$release_ns" describe pods >"$dir/faultline-pods.txt" 2>&1 || true
    "$kubectl" -n "$release_ns" logs -l app.kubernetes.io/component=controller --all-containers --prefix --tail=-1 >"$dir/controller.log" 2>&1 || true
    "$kubectl" -n "$release_ns" logs -l app.kubernetes.io/component=agent --all-containers --prefix --tail=-1 >"$dir/agent.log" 2>&1 || true
    kind export logs "$dir/kind" --name "$cluster" >/dev/null 2>&1 || true
}
cleanup() {
    local rc=$?
    if ((rc != 0)); then
        echo "e2e failed (exit $rc): diagnostics in $out/logs/" >&2
        collect_diagnostics
    fi
    if [[ "${E2E_KEEP_CLUSTER:-0}" == 1 ]]; then
        echo "keeping kind cluster $cluster (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $cluster"
    else
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}

step "build the faultline binary (the host side: faultline run)"
cargo build --locked --bin faultline
bin="${CARGO_TARGET_DIR:-target}/debug/faultline"
"$bin" run --help >/dev/null 2>&1 || die "$bin has no 'run' command yet"

step "build the image $image"
docker build -t "$image" .

step "create kind cluster $cluster (a control-plane and a worker)"
kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
trap cleanup EXIT
kind_args=(--name "$cluster" --kubeconfig "$KUBECONFIG" --wait 180s --config -)
[[ -n "${E2E_NODE_IMAGE:-}" ]] && kind_args+=(--image "$E2E_NODE_IMAGE")
kind create cluster "${kind_args[@]}" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
EOF

step "load $image into the nodes"
kind load docker-image "$image" --name "$cluster"

step "install the chart (image $image, pullPolicy Never)"
"$helm" install "$release" charts/faultline \
    --namespace "$release_ns" --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
    --wait --timeout 5m
"$kubectl" -n "$release_ns" rollout status deployment/faultline-controller --timeout=3m
"$kubectl" -n "$release_ns" rollout status daemonset/faultline-agent --timeout=3m

step "a controller holds the lease; every node's agent reports its capabilities"
holder=""
for _ in $(seq 60); do
    holder="$("$kubectl" -n "$release_ns" get lease faultline-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
    [[ -n "$holder" ]] && break
    sleep 2
done
[[ -n "$holder" ]] || die "no controller took the lease faultline-controller"
echo "leader: $holder"
for node in $("$kubectl" get nodes -o name); do
    caps=""
    for _ in $(seq 60); do
        caps="$("$kubectl" get "$node" -o jsonpath='{.metadata.annotations.faultline\.dev/capabilities}')"
        [[ -n "$caps" ]] && break
        sleep 2
    done
    [[ -n "$caps" ]] || die "$node has no faultline.dev/capabilities annotation: is the agent running there?"
    echo "$node: $caps"
done

step "apply the demo workloads (experiments/workloads/)"
"$kubectl" apply -f experiments/workloads/
wait_workloads() {
    local deploy
    for deploy in $("$kubectl" -n default get deployments -o name); do
        "$kubectl" -n default rollout status "$deploy" --timeout=3m
    done
}
wait_workloads

# No FaultInjection may outlive its experiment: after a run, none is left (the agents hold a
# finalizer on each until its rules are gone from the kernel).
no_faults_left() {
    local left=""
    for _ in $(seq 60); do
        left="$("$kubectl" get faultinjections -A -o name)"
        [[ -z "$left" ]] && return 0
        sleep 1
    done
    echo "left behind: $left" >&2
    return 1
}

step "run the examples (expectations: $expectations)"
summary="$out/summary.md"
{
    echo "| example | expected | got | result |"
    echo "| --- | --- | --- | --- |"
} >"$summary"
failures=0
ran=0
while IFS=$'\t' read -r file run want_code want_verdict reason; do
    if [[ "$run" != true ]]; then
        echo "--- skip $file: $reason"
        echo "| $file | not run | | $reason |" >>"$summary"
        continue
    fi
    if [[ -n "$only" && "$file" != *"$only"* ]]; then
        continue
    fi
    ran=$((ran + 1))
    name="$(basename "$file" .yaml)"
    echo "--- run $file (expect exit $want_code, verdict $want_verdict)"
    set +e
    timeout "$run_timeout" "$bin" run -f "$file" --wait --junit "$out/junit/$name.xml" 2>&1 | tee "$out/logs/run-$name.log"
    code=${PIPESTATUS[0]}
    set -e
    verdict="$("$kubectl" get -f "$file" -o jsonpath='{.status.verdict}' 2>/dev/null || true)"
    result=ok
    if [[ "$code" != "$want_code" || "$verdict" != "$want_verdict" ]]; then
        result="MISMATCH"
    fi
    if ! no_faults_left; then
        result="$result, FaultInjections left behind"
    fi
    if [[ "$result" != ok ]]; then
        failures=$((failures + 1))
        "$kubectl" get -f "$file" -o yaml >"$out/logs/$name.yaml" 2>&1 || true
    fi
    echo "    exit $code, verdict ${verdict:-<none>}: $result"
    echo "| $file | $want_code $want_verdict | $code ${verdict:-none} | $result |" >>"$summary"
    "$kubectl" delete -f "$file" --wait=true --timeout=2m --ignore-not-found
    wait_workloads
done < <(read_expectations)

cat "$summary"
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    { echo "### faultline e2e on kind"; cat "$summary"; } >>"$GITHUB_STEP_SUMMARY"
fi
((ran > 0)) || die "no example ran (E2E_ONLY=$only matched nothing?)"
((failures == 0)) || die "$failures of $ran examples did not end as expected"
echo "e2e: all $ran examples ended as expected"
