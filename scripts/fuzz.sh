#!/usr/bin/env bash
# Fuzz the checkpoint/config loader for a bounded time: every cargo-fuzz target in fuzz/ for
# SECONDS_PER_TARGET seconds (default 30), each starting from its committed seed corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Targets (fuzz/fuzz_targets/): config_json (ModelConfig::from_json_str), safetensors_store
# (TensorStore::open_files + every accessor), checkpoint_dir (config.json + model.safetensors through
# Checkpoint::backbone / heads). A target may only return errors: any panic, failed assertion,
# sanitizer report, timeout or OOM is a crash, and the script exits non-zero.
#
# Toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer, ...); on a stable toolchain we set
# RUSTC_BOOTSTRAP=1 so rustc accepts them. cargo-fuzz is installed (`cargo install --locked`) if it
# is missing. The committed corpus is copied to a scratch dir, so runs never modify fuzz/corpus;
# crash reproducers land in fuzz/artifacts/<target>/ (git-ignored via fuzz/.gitignore). Replay one
# with `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>` (or `cargo fuzz run <target> <file>`).
#
# Environment: FUZZ_TARGETS="a b" to run a subset; FUZZ_SANITIZER (default address; "none" is
# faster). A crash stops that target and the script goes on with the next, then exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-30}"
CARGO_FUZZ_VERSION="0.13.2"
SANITIZER="${FUZZ_SANITIZER:-address}"
cd "$ROOT/fuzz"

# Stable toolchain + the nightly-only flags cargo-fuzz passes to rustc.
export RUSTC_BOOTSTRAP=1
# The fuzz targets need no CUDA kernels: none are built, even where nvcc is installed.
export MODERNBERT_CUDA_ARCHS=none
unset MODERNBERT_REQUIRE_KERNELS

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not found; running: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "fuzz.sh: $(cargo fuzz --version), $(rustc --version), sanitizer=$SANITIZER, ${SECS}s per target"

TARGETS="${FUZZ_TARGETS:-$(cargo fuzz list)}"
FLAGS=(--sanitizer "$SANITIZER")

# Build once, then run the binaries directly: `cargo fuzz run` would rebuild between targets
# whenever src/ changed meanwhile, and every target must test the same build.
echo "fuzz.sh: building: cargo fuzz build ${FLAGS[*]}"
cargo fuzz build "${FLAGS[@]}"
BIN="$ROOT/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/modernbert-fuzz.XXXXXX")"
# The targets write each input to a file (the store mmaps it): keep those in RAM when we can
# (on an overlay /tmp a write costs milliseconds: 20x fewer executions per second).
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    FILES="$(mktemp -d /dev/shm/modernbert-fuzz.XXXXXX)"
else
    FILES="$SCRATCH/files"
    mkdir -p "$FILES"
fi
trap 'rm -rf "$SCRATCH" "$FILES"' EXIT
export MODERNBERT_FUZZ_TMP="$FILES"

failed=()
for t in $TARGETS; do
    corpus="$SCRATCH/corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    [ -d "corpus/$t" ] && cp -R "corpus/$t/." "$corpus/"
    args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
          -artifact_prefix="$ROOT/fuzz/artifacts/$t/")
    [ -f "dicts/$t.dict" ] && args+=(-dict="dicts/$t.dict")
    echo "fuzz.sh: === $t: $(ls "$corpus" | wc -l) seeds, ${SECS}s ==="
    start=$(date +%s)
    if "$BIN/$t" "${args[@]}" "$corpus"; then
        echo "fuzz.sh: $t: ok ($(( $(date +%s) - start ))s, corpus now $(ls "$corpus" | wc -l) inputs)"
    else
        echo "fuzz.sh: $t: CRASH; reproducer in fuzz/artifacts/$t/ (replay: fuzz/target/<host>/release/$t <file>)" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all targets passed"
