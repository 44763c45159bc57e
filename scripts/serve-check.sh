#!/usr/bin/env bash
# The HTTP server's tests (tests/serve, pytest) in the reference venv .venv-ref (openai client,
# NumPy; scripts/reference-env.sh): `modernbert serve` started on loopback on free ports and
# driven by the openai package and plain HTTP, the bad-request matrix, a 64-client load, overload,
# disconnects and graceful shutdown, bounded in time. The binary is the workspace's dev build
# (the same units as scripts/test.sh's `cargo test`, so nothing is rebuilt after it).
#   scripts/serve-check.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYO3_BUILD_EXTENSION_MODULE=1 cargo build --quiet --workspace --all-targets
export MODERNBERT_BIN="$PWD/target/debug/modernbert"
.venv-ref/bin/python -m pytest -q -p no:cacheprovider --timeout 600 tests/serve "$@"
