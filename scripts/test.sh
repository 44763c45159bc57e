#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need, idempotently, then runs
# every test of the workspace, the heavy ones included, and a bounded fuzzing pass.
#   - scripts/install-toolchain.sh: libclang (bindgen) and the pinned nvcc 13.0 from PyPI, so the
#     CUDA kernels are compiled for every default arch and statically checked;
#   - scripts/reference-env.sh: Python + transformers, for the full-size parity test;
#   - scripts/c-abi-check.sh: the C example built from the header + library, run on the cpu and
#     emulated devices and under valgrind, and the committed header checked for staleness;
#   - scripts/fuzz.sh: the checkpoint/config loader fuzz targets for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-toolchain.sh
bash scripts/reference-env.sh
export NVCC="${NVCC:-$PWD/.toolchain/cuda/nvidia/cu13/bin/nvcc}"
export MODERNBERT_REQUIRE_KERNELS=1

cargo test --workspace --all-targets -- --include-ignored
# The GPU-machine scripts cannot run here; at least they must parse.
for s in scripts/gpu-bundle.sh scripts/gpu-check.sh profiles/scripts/*.sh; do bash -n "$s"; done
bash scripts/c-abi-check.sh
if [ -f scripts/fuzz.sh ]; then
  bash scripts/fuzz.sh "${MODERNBERT_FUZZ_SECONDS:-20}"
fi
