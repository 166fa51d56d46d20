#!/usr/bin/env bash
# Installs Prometheus from Debian for the PromQL probe tests (tests/probes_prometheus.rs).
# Idempotent: when the package is already there it does no apt work at all.
set -euo pipefail

if dpkg -s prometheus >/dev/null 2>&1; then
    exit 0
fi
echo "setup-prometheus: installing prometheus"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: otherwise apt also pulls prometheus-node-exporter. No service is
# started (policy-rc.d denies it, PID 1 is not systemd); the tests start their own server.
apt-get install -y -qq --no-install-recommends prometheus
