#!/usr/bin/env bash
# A new machine's first build, proved here: a clean clone of HEAD builds with `cargo build --release`
# and runs the README's main command while no libclang can be loaded (and with no nvcc, so the
# crate builds CPU-only, as it does for a new user who has not run install-toolchain.sh); then the
# README's Python install (`pip install ./python` into a new venv) gives a working `import modernbert`.
#
# libclang is hidden in a private mount namespace (needs root: `unshare --mount`): each libclang that
# scripts/libclang-loads.py finds is covered by a bind mount of /dev/null until none loads. The
# build gets its own target directory, so nothing built with libclang present is reused.
#
#   scripts/fresh-clone-check.sh [WORKDIR]      (default: a temporary directory, removed at the end)
# MODERNBERT_FRESH_CLONE_REV=REV checks another commit (default HEAD), e.g. one from before the
# bindings were committed, to see the check fail.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "fresh-clone-check: needs root (a mount namespace hides libclang)" >&2; exit 1; }
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/modernbert-fresh.XXXXXX")}"
[ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
rm -rf "$work/clone"
git clone -q --no-hardlinks "$root" "$work/clone"
git -C "$work/clone" checkout -q --detach "${MODERNBERT_FRESH_CLONE_REV:-HEAD}"
echo "fresh-clone-check: clone of $(git -C "$work/clone" rev-parse --short HEAD) in $work/clone"

# The part that runs with libclang hidden. The environment is a new user's: no NVCC / CUDA_HOME /
# CARGO_TARGET_DIR / MODERNBERT_REQUIRE_KERNELS from the caller.
# The loader check is this tree's (the commit under test may predate it); it exits 1 exactly when
# no libclang loads, so a missing or broken checker cannot pass for "hidden".
inner='
set -euo pipefail
loads="python3 $LIBCLANG_LOADS"
for _ in $(seq 20); do
  lib=$($loads 2>/dev/null) || break
  mount --bind /dev/null "$(readlink -f "$lib")"
done
rc=0; $loads >/dev/null 2>&1 || rc=$?
if [ "$rc" != 1 ]; then
  echo "fresh-clone-check: could not hide libclang (loader check exit status $rc)" >&2; exit 1
fi
echo "fresh-clone-check: libclang hidden (scripts/libclang-loads.py finds none)"
t0=$(date +%s)
cargo build --release
t1=$(date +%s)
echo "fresh-clone-check: cargo build --release: $((t1 - t0)) s"
cargo run -q --release -- embed --model tests/fixtures/st_mean_normalize_prompts "ModernBERT is fast" "so is this" >out.jsonl
echo "fresh-clone-check: README main command: $(( $(date +%s) - t1 )) s"
python3 - out.jsonl <<PY
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2, f"expected 2 JSON lines, got {len(rows)}"
for r in rows:
    e = r["embedding"]
    norm = math.sqrt(sum(x * x for x in e))
    # st_mean_normalize_prompts ends in a Normalize module: unit vectors.
    assert len(e) > 0 and all(math.isfinite(x) for x in e) and abs(norm - 1) < 1e-4, (len(e), norm)
print("fresh-clone-check: 2 embeddings of dimension", len(rows[0]["embedding"]), "with unit norm")
PY
# The README install command for Python, into a new venv, then the same two texts through it: the
# release build reuses what `cargo build --release` built (same target directory).
t2=$(date +%s)
python3 -m venv venv-py
venv-py/bin/pip install -q -U "pip>=21.3"   # older pips build out of tree, away from the workspace
venv-py/bin/pip install -q ./python
echo "fresh-clone-check: pip install ./python: $(( $(date +%s) - t2 )) s"
(cd / && "$OLDPWD/venv-py/bin/python" - "$OLDPWD/out.jsonl" "$OLDPWD/tests/fixtures/st_mean_normalize_prompts") <<PY
import json, sys
import numpy as np
import modernbert
rows = np.array([json.loads(l)["embedding"] for l in open(sys.argv[1])], dtype=np.float32)
e = modernbert.Model(sys.argv[2]).encode(["ModernBERT is fast", "so is this"])
assert e.shape == rows.shape and np.abs(e - rows).max() <= 1e-6, np.abs(e - rows).max()
print("fresh-clone-check: import modernbert from the wheel: the same 2 embeddings as the CLI")
PY
'
cd "$work/clone"
LIBCLANG_LOADS="$root/scripts/libclang-loads.py" env -u NVCC -u CUDA_HOME -u CARGO_TARGET_DIR -u MODERNBERT_REQUIRE_KERNELS -u MODERNBERT_CUDA_ARCHS \
  unshare --mount --propagation private -- bash -c "$inner"
echo "fresh-clone-check: passed"
