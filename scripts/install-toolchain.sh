#!/usr/bin/env bash
# Install what the tests need beyond Rust and Python, idempotently (a second run installs nothing):
#   - from Debian (apt-get, as root or through sudo): libclang (only tools/params-bindgen loads it,
#     to check the committed Rust view of cuda/include/params.h), valgrind and pkg-config (the C ABI
#     check), a C compiler;
#   - from PyPI: the pinned CUDA 13.0 compiler (nvcc, plus cuobjdump + nvdisasm 13.2 for reading
#     SASS) into .toolchain/cuda at the repo root. Why 13.0: the GPU machines run driver 580, which
#     JIT-loads PTX only up to ISA 9.0.
# Every tool is checked by running or loading it, never by a file name: libclang by loading it and
# finding its C API (scripts/libclang-loads.py), the others by `--version`. After installing, each is
# checked again, and the script fails naming the one that still does not work.
# Prints `export NVCC=...` on stdout; everything else goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.toolchain/cuda"
BIN="$DEST/nvidia/cu13/bin"
NVCC="$BIN/nvcc"
log() { echo "install-toolchain: $*" >&2; }

runs() { "$@" >/dev/null 2>&1; }
libclang_loads() { python3 "$ROOT/scripts/libclang-loads.py" >/dev/null 2>&1; }

# ---- Debian packages: a tool that does not run gets its package ----
packages=()
libclang_loads || packages+=(libclang-dev)
runs valgrind --version || packages+=(valgrind)
runs pkg-config --version || packages+=(pkg-config)
runs cc --version || packages+=(gcc)
runs c++ --version || packages+=(g++)
if [ "${#packages[@]}" -gt 0 ]; then
    log "installing ${packages[*]} (apt-get)"
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    command -v apt-get >/dev/null || { log "no apt-get: install ${packages[*]} by hand"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine's package lists may be missing or old: update first, then install.
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >&2
fi
libclang_loads || { log "libclang still does not load after installing libclang-dev"; exit 1; }
for tool in valgrind pkg-config cc c++; do
    runs "$tool" --version || { log "$tool still does not run"; exit 1; }
done
log "libclang: $(python3 "$ROOT/scripts/libclang-loads.py")"

# ---- the pinned CUDA compiler from PyPI ----
want="13.0.88"
cuda_ok() {
    "$NVCC" --version 2>/dev/null | grep -q "V${want}" && runs "$BIN/cuobjdump" --version && runs "$BIN/nvdisasm" --version
}
if ! cuda_ok; then
    log "installing nvcc $want from PyPI into $DEST"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --target "$DEST" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86 >&2
fi
cuda_ok || { log "nvcc $want, cuobjdump or nvdisasm does not run after installing"; exit 1; }
"$NVCC" --version | tail -n 2 >&2
# nvcc must be called by its real path (its nvcc.profile resolves paths from its own directory).
echo "export NVCC=$NVCC"
