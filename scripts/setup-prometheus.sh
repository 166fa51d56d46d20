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
# A machine whose init would start the packaged service gets a temporary policy-rc.d that denies
# it: the tests start (and stop) their own Prometheus on ports of their own.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    added_policy=1
fi
apt-get install -y -qq --no-install-recommends prometheus
if ((added_policy)); then rm -f "$policy"; fi
