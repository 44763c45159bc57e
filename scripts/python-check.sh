#!/usr/bin/env bash
# The Python package's tests (python/tests, pytest): the extension is built into the reference venv
# .venv-ref (scripts/reference-env.sh: sentence-transformers, Ray Data, pytest, maturin) by
# `maturin develop`, in the dev profile so that it reuses what `cargo test` built in target/debug
# (the release build a user's `pip install ./python` makes is exercised by
# scripts/fresh-clone-check.sh). Then every test, the Ray test on a local 2-actor cluster included,
# bounded in time.
#   scripts/python-check.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/.venv-ref"
start=$(date +%s)
VIRTUAL_ENV="$VENV" "$VENV/bin/python" -m maturin develop --quiet --manifest-path python/Cargo.toml
echo "python-check: extension built into $VENV in $(( $(date +%s) - start )) s"
RAY_USAGE_STATS_ENABLED=0 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 900 \
  python/tests "$@"
