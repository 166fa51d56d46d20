#!/usr/bin/env bash
# `make demo`: a short game day on this machine. Starts the sandbox (API server, controller, and
# as root real pods plus the node agent), deploys the demo workloads, runs a pod kill that passes
# and a latency fault that the hypothesis catches, shows the live progress, writes report.html,
# and removes everything it made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh >/dev/null
cargo build --quiet
bin=target/debug/faultline
state=.faultline/demo
export KUBECONFIG="$PWD/$state/kubeconfig"
mkdir -p "$state"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
    say "tearing down"
    "$bin" sandbox --state-dir "$state" down || true
}
trap cleanup EXIT

root=false
if [ "$(id -u)" = 0 ]; then root=true; fi

say "starting the sandbox"
if $root; then
    echo "running as root: pods are real processes (faultline demo-app) in their own network"
    echo "namespaces, and the node agent applies real network faults"
else
    echo "not root: pods are simulated and network faults are refused, so the latency part is"
    echo "skipped below (run 'sudo make demo' for the whole game)"
fi
"$bin" sandbox --state-dir "$state" up --detach --apply experiments/workloads/

say "waiting for the demo workloads"
for _ in $(seq 1 120); do
    ready=$(.tools/bin/kubectl get pods -n default --no-headers 2>/dev/null | awk '$2 == "1/1" && $3 == "Running"' | wc -l)
    if [ "$ready" -ge 9 ]; then break; fi
    sleep 1
done
.tools/bin/kubectl get deployments,pods -n default -o wide

status=0
say "1/2 pod kill under an HTTP hypothesis (expected: Passed, exit 0)"
"$bin" run -f experiments/pod-kill-http.yaml --wait --report "$state/pod-kill.html" || status=$?
echo "exit code $status"
report="$state/pod-kill.html"

if $root; then
    say "2/2 400ms latency between api and the database, hypothesis: api answers within 300ms (expected: Aborted, exit 2)"
    latency=0
    "$bin" run -f experiments/e2e/latency-aborts.yaml --wait --report report.html || latency=$?
    echo "exit code $latency"
    report=report.html
    [ "$latency" = 2 ] || status=1
else
    say "2/2 skipped: the latency fault needs root (a real network namespace and the node agent)"
    cp "$state/pod-kill.html" report.html
    report=report.html
fi

say "report"
echo "open $PWD/$report"
"$bin" status -A || true
exit "$status"
