#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need, idempotently, then runs
# every test of the workspace, the heavy ones included, and a bounded fuzzing pass.
#   - scripts/install-toolchain.sh: libclang (for the params.h bindings check), valgrind,
#     pkg-config, a C compiler, and the pinned nvcc 13.0 from PyPI, so the CUDA kernels are compiled
#     for every default arch and statically checked; each tool checked by running or loading it;
#   - scripts/reference-env.sh: Python + transformers, for the full-size parity test;
#   - cargo test --workspace: the crate, the kernel tests (kernels-tests) and the staleness check of
#     the committed params.h bindings (tools/params-bindgen);
#   - scripts/python-check.sh: the Python package (python/) built into .venv-ref, its pytest suite
#     (parity with sentence-transformers, threads, pickling, bad inputs, a local Ray cluster);
#   - scripts/serve-check.sh: `modernbert serve` on loopback, driven by the openai client and
#     plain HTTP (TEI's routes, the bad-request matrix, a concurrent load, shutdown);
#   - scripts/c-abi-check.sh: the C example built from the header + library, run on the cpu and
#     emulated devices and under valgrind, and the committed header checked for staleness;
#   - scripts/fresh-clone-check.sh: a clean clone builds and runs the README's main command with
#     libclang hidden (MODERNBERT_FRESH_CLONE_CHECK=0 skips it);
#   - scripts/fuzz.sh: the checkpoint/config loader fuzz targets for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "== test.sh [$(( $(date +%s) - start ))s] $*"; }

step "install-toolchain"
toolchain_env=$(bash scripts/install-toolchain.sh)   # a plain assignment: set -e sees a failure
eval "$toolchain_env"                                 # export NVCC=...
# The reference venv (mostly downloading and unpacking wheels) is made while the test build runs:
# the build needs no Python, the tests do.
step "reference-env, in the background"
ref_log=$(mktemp "${TMPDIR:-/tmp}/reference-env.XXXXXX")
bash scripts/reference-env.sh >"$ref_log" 2>&1 &
ref_pid=$!
trap '[ -z "$ref_pid" ] || kill "$ref_pid" 2>/dev/null || true' EXIT   # a failed build stops it too
export MODERNBERT_REQUIRE_KERNELS=1

step "cargo test --workspace: the build"
# The Python extension (python/) is a workspace member with no Rust tests; built here as an
# extension module (no libpython link), in the same feature resolution, so that
# scripts/python-check.sh's build of it reuses every artifact of this one.
export PYO3_BUILD_EXTENSION_MODULE=1
cargo test --workspace --all-targets --no-run
step "reference-env: waiting for it"
ref_rc=0; wait "$ref_pid" || ref_rc=$?
ref_pid=
cat "$ref_log"; rm -f "$ref_log"
[ "$ref_rc" = 0 ] || { echo "scripts/reference-env.sh failed (exit status $ref_rc)" >&2; exit 1; }
step "cargo test --workspace: the tests"
cargo test --workspace --all-targets -- --include-ignored
# The GPU-machine scripts cannot run here; at least they must parse.
for s in scripts/gpu-bundle.sh scripts/gpu-check.sh profiles/scripts/*.sh; do bash -n "$s"; done
step "python-check"
bash scripts/python-check.sh
step "serve-check"
bash scripts/serve-check.sh
step "c-abi-check"
bash scripts/c-abi-check.sh
if [ "${MODERNBERT_FRESH_CLONE_CHECK:-1}" != 0 ]; then
  step "fresh-clone-check"
  bash scripts/fresh-clone-check.sh
fi
if [ -f scripts/fuzz.sh ]; then
  step "fuzz"
  bash scripts/fuzz.sh "${MODERNBERT_FUZZ_SECONDS:-20}"
fi
step "all passed"
