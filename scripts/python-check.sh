#!/usr/bin/env bash
# The Python package's tests (python/tests, pytest) in the reference venv .venv-ref
# (scripts/reference-env.sh: sentence-transformers, Ray Data, pytest). The extension is the
# workspace's own dev build of python/ (`cargo build --workspace --all-targets`, the same units as
# scripts/test.sh's `cargo test`, so only the extension itself is compiled and linked), put beside
# the package sources as maturin's editable install does; the release build a user's
# `pip install ./python` makes is exercised by scripts/fresh-clone-check.sh. Then every test, the
# Ray test on a local 2-actor cluster included, bounded in time.
#   scripts/python-check.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/.venv-ref"
start=$(date +%s)
PYO3_BUILD_EXTENSION_MODULE=1 cargo build --quiet --workspace --all-targets
cp target/debug/lib_native.so python/modernbert/_native.abi3.so
echo "python-check: extension built in $(( $(date +%s) - start )) s"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
RAY_USAGE_STATS_ENABLED=0 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 900 \
  python/tests "$@"
