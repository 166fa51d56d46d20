#!/usr/bin/env bash
# Runs every test. Uses cargo-nextest when present (faster, clearer failures), cargo test
# otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast
    # nextest does not run doctests.
    cargo test --doc
else
    cargo test --no-fail-fast
fi
