#!/usr/bin/env bash
# Install the pinned CUDA 13.0 toolchain (nvcc, plus cuobjdump + nvdisasm 13.2 for reading SASS, from PyPI) into .toolchain/cuda at the
# repo root, and libclang (for bindgen) if it is missing. Idempotent: a second run does nothing.
# Why 13.0: the GPU machines run driver 580, which JIT-loads PTX only up to ISA 9.0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.toolchain/cuda"
NVCC="$DEST/nvidia/cu13/bin/nvcc"

if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libclang; then
    if command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y libclang-dev || { apt-get update && apt-get install -y libclang-dev; }
    else
        echo "install-toolchain: libclang missing and no apt-get; install libclang for bindgen" >&2
    fi
fi

want="13.0.88"
if [ -x "$NVCC" ] && "$NVCC" --version | grep -q "V${want}" \
    && [ -x "$DEST/nvidia/cu13/bin/cuobjdump" ] && [ -x "$DEST/nvidia/cu13/bin/nvdisasm" ]; then
    :
else
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --target "$DEST" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86
fi
"$NVCC" --version | tail -n 2 >&2
# nvcc must be called by its real path (its nvcc.profile resolves paths from its own directory).
echo "export NVCC=$NVCC"
