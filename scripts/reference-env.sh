#!/usr/bin/env bash
# Create (idempotently) the Python reference venv .venv-ref at the repo root, used by
# scripts/make_fixtures.py, make_fullsize.py, make_tokenizer_parity.py and bench_cpu_torch.py, and
# by the Python package's tests (scripts/python-check.sh: pytest, Ray Data) and the server's
# (scripts/serve-check.sh: the openai client).
# Pinned to the versions that produced the committed fixtures. pylate is installed with --no-deps
# (its metadata pins older torch/transformers; it works with these) only for the ColBERT cross-check.
# Usage: bash scripts/reference-env.sh      then: .venv-ref/bin/python scripts/make_fixtures.py
set -euo pipefail
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-ref"
PY="$VENV/bin/python"
CHECK='import torch, transformers, safetensors, tokenizers, numpy, sentence_transformers, pylate, ray, pytest, pytest_timeout, openai
from importlib.metadata import version
assert (torch.__version__.split("+")[0], transformers.__version__, sentence_transformers.__version__) == ("2.15.0", "5.24.0", "5.3.0")
assert (ray.__version__, pytest.__version__, version("pytest-timeout")) == ("2.60.0", "9.2.0", "2.4.0")
assert openai.__version__ == "2.54.0"'
if [ -x "$PY" ] && "$PY" -c "$CHECK" >/dev/null 2>&1; then
  echo "reference-env: $VENV already has the pinned packages, nothing to do"
  exit 0
fi
if [ ! -x "$PY" ]; then
  # Debian's own python3 creates venvs only with python3-venv installed: a venv that fails to
  # create gets that package, once.
  if ! python3 -m venv "$VENV" && command -v apt-get >/dev/null; then
    rm -rf "$VENV"
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  fi
fi
"$PY" -m pip install -q --disable-pip-version-check \
  torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 tokenizers==0.23.3 numpy==2.4.6 \
  sentence-transformers==5.3.0 datasets==5.2.0 ujson==6.1.0 \
  "ray[data]==2.60.0" pytest==9.2.0 pytest-timeout==2.4.0 openai==2.54.0
"$PY" -m pip install -q --disable-pip-version-check --no-deps pylate==1.6.0
"$PY" -c "$CHECK"
echo "reference-env: installed pinned torch/transformers/sentence-transformers/pylate/ray/pytest into $VENV"
