#!/usr/bin/env bash
# Runs every test against the sandbox (the embedded API server), and the suites that prove the
# product against a real control plane as well (scripts/cluster.sh: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd), at the same time.
#
#   FAULTLINE_TEST_CLUSTER=sandbox scripts/run-tests.sh   only the sandbox run
#   FAULTLINE_TEST_CLUSTER=real    scripts/run-tests.sh   only the real-cluster suites
#
# One suite against one cluster, by hand:
#   scripts/cluster.sh up && FAULTLINE_TEST_CLUSTER=real cargo test --test controller_lifecycle
#
# Uses cargo-nextest for the sandbox run when present (faster, clearer failures), cargo test
# otherwise. Doctests run first (nextest does not run them).
set -euo pipefail
cd "$(dirname "$0")/.."

# The suites a real control plane referees: everything that talks to an API server about
# faultline's own objects (CRDs, the controllers, the CLI, the end-to-end expectations). The
# apiserver_* suites test the embedded server itself and stay sandbox-only.
real_suites=(
    cluster_admits
    cluster_blast_radius
    controller_lifecycle
    controller_crashes
    controller_probes
    controller_kubernetes_probe
    controller_gameday
    controller_schedule
    controller_leader
    controller_containment
    run_cli
    e2e_expectations
    differential
    controller_departures
    controller_older_chart
    controller_probe_permissions
    controller_revert_truth
    controller_applied_receipts
    metadata_reads
    controller_abort_receipts
    controller_packet_counts
    controller_many_targets
    controller_revert_signal
    object_size
    namespace_deletion
    crd_deletion
    sandbox_restart
    api_server_outage
    duration_limits
)

which="${FAULTLINE_TEST_CLUSTER:-both}"
unset FAULTLINE_TEST_CLUSTER

# Build once, before anything runs, so that the two runs do not build side by side.
cargo test --no-run --quiet

real_pid=""
real_log=".faultline/test-real-cluster.log"
if [[ "$which" == "both" || "$which" == "real" ]]; then
    # A cluster that already runs (a developer's) is used and left running; one started here
    # goes when the tests end.
    if ! scripts/cluster.sh status | grep -q "kube-apiserver: running"; then
        trap 'scripts/cluster.sh down' EXIT
    fi
    scripts/cluster.sh up
    mkdir -p .faultline
    suites=()
    for suite in "${real_suites[@]}"; do suites+=(--test "$suite"); done
    (
        started=$SECONDS
        set +e
        FAULTLINE_TEST_CLUSTER=real cargo test --no-fail-fast "${suites[@]}"
        status=$?
        echo "real control plane: ${#real_suites[@]} suites in $((SECONDS - started)) s, exit $status"
        exit $status
    ) >"$real_log" 2>&1 &
    real_pid=$!
    echo "running ${#real_suites[@]} suites against the real control plane in the background (log: $real_log)"
fi

status=0
if [[ "$which" == "both" || "$which" == "sandbox" ]]; then
    started=$SECONDS
    if cargo nextest --version >/dev/null 2>&1; then
        cargo test --doc --quiet || status=$?
        cargo nextest run --no-fail-fast || status=$?
    else
        cargo test --no-fail-fast || status=$?
    fi
    echo "sandbox: every suite in $((SECONDS - started)) s, exit $status"
fi

if [[ -n "$real_pid" ]]; then
    real_status=0
    wait "$real_pid" || real_status=$?
    echo "==================== the real control plane ===================="
    cat "$real_log"
    ((real_status == 0)) || status=$real_status
fi
exit "$status"
