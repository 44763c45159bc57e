#!/usr/bin/env bash
# The GPU checks, run from a prebuilt bundle (scripts/gpu-bundle.sh) on a machine with an NVIDIA
# GPU and driver: no Rust toolchain needed. Two parts, each a list of steps with its own time limit,
# run in priority order; a step that would overrun the part's budget is skipped and says so.
#
#   correctness: the kernel tests and the device parity tests on GPU 0 (MODERNBERT_TEST_DEVICE=cuda),
#                the C ABI / CLI / bench tests (their auto device is the GPU there), then
#                compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on a small forward
#                and memcheck on the kernel tests.
#   speed:       `modernbert bench` (base: 4 sets + latency; large: short-fixed), transformers on the
#                same sets (scripts/bench_transformers.py), the kernel microbenchmarks, and an Nsight
#                Compute profile of one base forward (profiles/scripts/ncu.sh).
#   first:       on a Hopper GPU that has never run the sm_90a code, what decides the next steps,
#                most valuable first (about 5 minutes): the sm_90a self-test (the emulator's wgmma,
#                TMA and clusters against the hardware), the hand-off microbenchmark (the
#                small-batch design), the Hopper kernels' tests on the GPU, their microbenchmarks
#                beside the portable kernels', base short-fixed and batch-1 latency on both paths,
#                and the Hopper path's parity with the reference. Then `correctness` and `speed`.
#
# Usage: bash scripts/gpu-check.sh first|correctness|speed|all OUT_DIR
# Env:   GPU_CHECK_BUDGET (seconds for the part, default 540), GPU_CHECK_ONLY (regex of step names
#        to run, default all), PYTHON (default python3: needs torch
#        and transformers for the base-shaped parity test and the side-by-side benchmark).
# Output: OUT_DIR/summary.txt (one line per step), OUT_DIR/logs.tar.gz (every step's log and the
#        JSON lines), and the summary plus the headline numbers on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:?usage: gpu-check.sh first|correctness|speed|all OUT_DIR}"
out="${2:?usage: gpu-check.sh first|correctness|speed|all OUT_DIR}"
budget="${GPU_CHECK_BUDGET:-540}"
export PYTHON="${PYTHON:-python3}"
start=$(date +%s)
logs="$out/logs"
mkdir -p "$logs"

# --- the bundle: executables, and the build's absolute path linked to this tree --------------
bundle=.gpu-bundle
if [ ! -d "$bundle/bin" ]; then
  tar -C "$bundle" -xJf "$bundle/bin.tar.xz" || { echo "no bundle: run scripts/gpu-bundle.sh first"; exit 2; }
fi
B="$PWD/$bundle/bin"
root="$(cat "$bundle/build-root")"
if [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then
  mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"
fi
mkdir -p target/release && cp "$B/modernbert" target/release/modernbert

# --- libraries: cuBLASLt (from the CUDA toolkit or a pip wheel), NVTX ------------------------
for lib in libcublasLt.so.13 libnvToolsExt.so.1; do
  found=$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt "$($PYTHON -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)" \
            -name "$lib*" 2>/dev/null | head -1)
  [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64"
# ncu and compute-sanitizer, where the toolkit did not put them on the PATH.
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/nsight-compute/*/; do
  [ -d "$d" ] && export PATH="$PATH:${d%/}"
done

# --- step runner ----------------------------------------------------------------------------
summary="$out/summary.txt"
only="${GPU_CHECK_ONLY:-.}"  # a regex: run only the steps whose names match it
step() { # step NAME LIMIT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  [[ "$name" =~ $only ]] || return 0
  local now=$(( $(date +%s) - start ))
  if (( now + limit > budget )); then
    printf '%-28s skipped (budget: %ss used of %ss, step needs up to %ss)\n' "$name" "$now" "$budget" "$limit" | tee -a "$summary"
    return
  fi
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  local verdict=ok; (( rc == 124 || rc == 137 )) && verdict="TIMEOUT" || { (( rc != 0 )) && verdict="FAIL rc=$rc"; }
  printf '%-28s %-12s %4ss\n' "$name" "$verdict" "$(( $(date +%s) - t0 ))" | tee -a "$summary"
}

provenance() {
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(cat $bundle/commit | tr '\n' ' ')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  nvidia-smi -q -d CLOCK | sed -n '1,40p'
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  command -v ncu && ncu --version | tail -1
  command -v compute-sanitizer && compute-sanitizer --version | tail -1
  $PYTHON -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  $PYTHON -c 'import flash_attn; print("flash_attn", flash_attn.__version__)' 2>&1 | tail -1
}

# hopper_selftest compares wgmma (B in either major mode), TMA and cluster multicast on the GPU
# with the emulator bit for bit; it, gemm_sm90, gemm_stream_sm90, handoff_sm90 and attention_sm90
# say SKIPPED (and check nothing) on a GPU that is not compute capability 9.0.
kernel_tests="gpu_selftest hopper_selftest gemm_sm90 gemm_stream_sm90 handoff_sm90 attention attention_sm90 layernorm embeddings rope geglu gather topk pooling mlm_head colbert"

first() {
  local bench=(target/release/modernbert bench --device cuda --shape base)
  step kernels-hopper_selftest 60 env MODERNBERT_TEST_DEVICE=cuda "$B/hopper_selftest" --include-ignored
  step handoff 30 "$B/handoff" --device cuda --json "$logs/handoff.jsonl"
  for t in gemm_sm90 attention_sm90 gemm_stream_sm90; do
    step "kernels-$t" 60 env MODERNBERT_TEST_DEVICE=cuda "$B/$t" --include-ignored
  done
  for op in gemm_sm90 gemm_sm90_one_per_tile attention attention_sm90; do
    step "micro-$op" 45 "$B/microbench" --device cuda --model-only --op "$op" --json "$logs/micro-$op.jsonl"
  done
  for path in portable hopper; do
    step "bench-base-short-fixed-$path" 60 sh -c "${bench[*]} --gpu-path $path --set short-fixed > $logs/first-sf-$path.jsonl"
    step "latency-b1-32-$path" 45 sh -c "${bench[*]} --gpu-path $path --latency --batches 1 --lengths 32 > $logs/first-latency-$path.jsonl"
  done
  # The persistent forward (the Hopper path's default up to 128 tokens) against a launch per step
  # (the stream GEMMs up to 64 tokens, the large-batch path past them): where they cross decides
  # path::PERSISTENT_TOKENS, chosen by the cost model until this measures it.
  local lengths=32,64,96,128,192,256
  step latency-b1-hopper-persistent 60 sh -c "${bench[*]} --gpu-path hopper --latency --batches 1 --lengths $lengths > $logs/first-latency-hopper-lengths.jsonl"
  step latency-b1-hopper-per-launch 60 sh -c "${bench[*]} --gpu-path hopper --no-persistent --latency --batches 1 --lengths $lengths > $logs/first-latency-hopper-per-launch.jsonl"
  step persistent_forward 60 env MODERNBERT_TEST_DEVICE=cuda "$B/persistent_forward" --nocapture
  step persistent_base_shape 60 env MODERNBERT_TEST_DEVICE=cuda "$B/persistent_base_shape" --nocapture
  step device_parity-hopper 90 env MODERNBERT_TEST_DEVICE=cuda MODERNBERT_REF_PYTHON="$PYTHON" \
    "$B/device_parity" hopper small_batch --include-ignored --nocapture
}

correctness() {
  for t in $kernel_tests; do
    # attention_sass_uses_tensor_cores reads the build's ptxas report, which stays on the build machine.
    step "kernels-$t" 90 env MODERNBERT_TEST_DEVICE=cuda "$B/$t" --include-ignored --skip attention_sass_uses_tensor_cores
  done
  step device_parity 90 env MODERNBERT_TEST_DEVICE=cuda MODERNBERT_REF_PYTHON="$PYTHON" "$B/device_parity" --include-ignored --nocapture
  step device_heads 90 env MODERNBERT_TEST_DEVICE=cuda "$B/device_heads" --include-ignored --nocapture
  step lib-unit-tests 60 "$B/lib" --include-ignored
  step c_abi 60 "$B/c_abi" --include-ignored
  step cli 60 "$B/cli" --include-ignored
  step bench-tests 60 "$B/bench" --include-ignored
  # A small forward that still has global and local layers, varlen sequences and graphs off/on.
  local small=(target/release/modernbert bench --device cuda --shape base --layers 3 --set short-variable --sequences 4 --passes 1)
  for tool in memcheck racecheck initcheck synccheck; do
    step "sanitizer-$tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 1 "${small[@]}"
  done
  # The Hopper path (gemm_sm90 with its epilogues), which `auto` does not take on a GPU yet.
  step sanitizer-hopper-path 90 compute-sanitizer --tool memcheck --error-exitcode 1 "${small[@]}" --gpu-path hopper
  step sanitizer-latency 90 compute-sanitizer --tool memcheck --error-exitcode 1 \
    target/release/modernbert bench --device cuda --shape base --layers 3 --latency --runs 3
  # The small-batch path (gemm_stream_sm90 in clusters, attention as a dependent) at one text.
  for tool in memcheck racecheck; do
    step "sanitizer-latency-hopper-$tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      target/release/modernbert bench --device cuda --shape base --layers 3 --latency --runs 3 --gpu-path hopper \
      --batches 1 --lengths 32
  done
  for t in hopper_selftest gemm_sm90 gemm_stream_sm90 handoff_sm90 attention attention_sm90 layernorm embeddings rope geglu gather topk pooling mlm_head colbert; do
    step "memcheck-$t" 90 env MODERNBERT_TEST_DEVICE=cuda compute-sanitizer --tool memcheck --error-exitcode 1 "$B/$t"
  done
  # attention_sm90's shared memory: TMA stages, the producer warp's zeroed V tail, the output
  # staged over Q — on the varlen, window, key_lens and stale-row cases.
  step racecheck-attention_sm90 90 env MODERNBERT_TEST_DEVICE=cuda compute-sanitizer --tool racecheck --error-exitcode 1 \
    "$B/attention_sm90" attention_sm90_varlen
}

speed() {
  local bench=(target/release/modernbert bench --device cuda)
  # The short sets at the paper's protocol (8192 sequences, 10 passes); the long sets on a prefix
  # (256 / 512 sequences, 2 passes) so that each stays near 10 s.
  step bench-base-short-fixed 90 sh -c "${bench[*]} --shape base --set short-fixed > $logs/bench-base-sf.jsonl"
  # The same set on the Hopper path: it replaces the portable one under `auto` only if faster.
  step bench-base-short-fixed-hopper 90 sh -c "${bench[*]} --gpu-path hopper --shape base --set short-fixed > $logs/hopper-base-sf.jsonl"
  step bench-base-short-variable 60 sh -c "${bench[*]} --shape base --set short-variable > $logs/bench-base-sv.jsonl"
  step bench-base-long-fixed 60 sh -c "${bench[*]} --shape base --set long-fixed --sequences 256 --passes 2 > $logs/bench-base-lf.jsonl"
  step bench-base-long-variable 60 sh -c "${bench[*]} --shape base --set long-variable --sequences 512 --passes 2 > $logs/bench-base-lv.jsonl"
  step bench-base-latency 90 sh -c "${bench[*]} --shape base --latency > $logs/latency-base.jsonl"
  step bench-large-short-fixed 90 sh -c "${bench[*]} --shape large --set short-fixed --passes 3 > $logs/bench-large-sf.jsonl"
  cat "$logs"/bench-base-*.jsonl > "$logs/ours-base.jsonl" 2>/dev/null
  step hf-base-short 120 $PYTHON scripts/bench_transformers.py --shape base --set short-fixed,short-variable \
    --sequences 2048 --passes 2 --ours "$logs/ours-base.jsonl"
  step hf-base-long 90 $PYTHON scripts/bench_transformers.py --shape base --set long-fixed,long-variable \
    --sequences 32 --passes 1 --ours "$logs/ours-base.jsonl"
  step hf-large-short 90 $PYTHON scripts/bench_transformers.py --shape large --set short-fixed \
    --sequences 1024 --passes 2 --ours "$logs/bench-large-sf.jsonl"
  step microbench 120 "$B/microbench" --device cuda --json "$logs/micro.jsonl"
  # One dependency step between grids, three ways (the small-batch forward's design decision).
  step handoff 30 "$B/handoff" --device cuda --json "$logs/handoff.jsonl"
  # One base forward at 512 x 512 tokens (the launches after the warm-up batch), and one batch-1
  # 32-token forward (launches after the two warm-up forwards; the table aggregates by kernel).
  step ncu-base-short-fixed 150 env BIN=target/release/modernbert SET=basic \
    bash profiles/scripts/ncu.sh base-short-fixed -- --shape base --set short-fixed --sequences 512 --passes 1
  step ncu-base-latency-b1-32 120 env BIN=target/release/modernbert SET=basic SKIP=400 LAUNCHES=200 \
    bash profiles/scripts/ncu.sh base-latency-b1-32 -- --shape base --latency --batches 1 --lengths 32 --runs 5 --compare-graphs false
  cp profiles/out/base-*.csv profiles/out/base-*.meta.txt "$logs/" 2>/dev/null
}

provenance > "$logs/provenance.txt" 2>&1
head -5 "$logs/provenance.txt"
case "$part" in
  first) first ;;
  correctness) correctness ;;
  speed) speed ;;
  all) correctness; speed ;;
  *) echo "unknown part $part"; exit 2 ;;
esac

tar -C "$out" -czf "$out/logs.tar.gz" logs
echo "=== summary ($part, $(( $(date +%s) - start ))s) ==="
cat "$summary"
# Headline lines, so a caller that keeps only the end of the output still has them.
grep -h -E 'test result|panicked|FAILED|ERROR SUMMARY|error' "$logs"/*.log 2>/dev/null | sort | uniq -c | sort -rn | head -30
for f in "$logs"/*.jsonl; do [ -f "$f" ] && { echo "--- $(basename "$f")"; cut -c1-600 "$f" | head -12; }; done
