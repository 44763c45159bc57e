#!/usr/bin/env bash
# Build everything the GPU checks run (scripts/gpu-check.sh) into one archive, for a GPU machine
# that has the NVIDIA driver but no Rust toolchain: the release test executables of the workspace,
# the `modernbert`, `microbench` and `handoff` binaries, stripped and packed into `.gpu-bundle/bin.tar.xz`
# (about 20 MB; the kernels' fatbins repeat in every executable and compress away).
#
# The test executables find fixtures through the absolute path they were built in
# (CARGO_MANIFEST_DIR); `.gpu-bundle/build-root` records it, and gpu-check.sh links it to the copy
# of the tree on the GPU machine when the two differ.
#
# Usage: bash scripts/gpu-bundle.sh      (then copy the tree with .gpu-bundle/ to the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."

export NVCC="${NVCC:-$PWD/.toolchain/cuda/nvidia/cu13/bin/nvcc}"
export MODERNBERT_REQUIRE_KERNELS=1
out=.gpu-bundle
rm -rf "$out" && mkdir -p "$out/bin"

# The Python extension (python/) is built by maturin, never by cargo test (scripts/test.sh).
cargo test --release --workspace --exclude modernbert-python --all-targets --no-run --message-format=json > "$out/cargo.json"
cargo build --release --workspace --exclude modernbert-python --bins

# One executable per test target; the library's unit tests are named `lib` (the binary target
# `modernbert` keeps its name).
python3 - "$out" <<'EOF'
import json, shutil, subprocess, sys
out = sys.argv[1]
for line in open(f"{out}/cargo.json"):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    if t["kind"] == ["bin"] or t["kind"] == ["example"]:
        continue
    name = "lib" if "lib" in t["kind"] else t["name"]
    subprocess.run(["strip", "-o", f"{out}/bin/{name}", m["executable"]], check=True)
EOF
strip -o "$out/bin/modernbert" target/release/modernbert
strip -o "$out/bin/microbench" target/release/microbench
strip -o "$out/bin/handoff" target/release/handoff
rm "$out/cargo.json"

pwd > "$out/build-root"
git rev-parse HEAD > "$out/commit"
git diff --quiet || echo "(dirty)" >> "$out/commit"
tar -C "$out" -cf - bin | xz -T0 -9 > "$out/bin.tar.xz"
rm -r "$out/bin"
ls -la "$out"
