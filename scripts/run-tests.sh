#!/usr/bin/env bash
# Runs every test. Uses cargo-nextest when present (faster, clearer failures), cargo test
# otherwise. Doctests run first (nextest does not run them) so that the run closes on the
# summary of the full suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    cargo test --doc --quiet
    cargo nextest run --no-fail-fast
else
    cargo test --no-fail-fast
fi
