#!/usr/bin/env bash
# Nsight Systems timeline of `modernbert bench` with the engine's NVTX ranges
# (MODERNBERT_NVTX=1: modernbert.forward > layer.global / layer.local > qkv, rope, attention,
# attn_out, mlp_norm, mlp_in, geglu, mlp_out, ...), CUDA API and kernel traces.
#
# Usage: profiles/scripts/nsys.sh OUT_NAME [-- bench args]
#   profiles/scripts/nsys.sh base-latency -- --shape base --latency --runs 200
# Writes profiles/out/OUT_NAME.nsys-rep and prints the NVTX-range and kernel summaries
# (nsys stats: nvtx_sum, cuda_gpu_kern_sum, cuda_api_sum).
set -euo pipefail
cd "$(dirname "$0")/../.."
name="${1:?usage: nsys.sh OUT_NAME [-- bench args]}"; shift
[ "${1:-}" = "--" ] && shift
BIN="${BIN:-target/release/modernbert}"
NSYS="${NSYS:-nsys}"
mkdir -p profiles/out
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--shape base --set short-fixed --sequences 2048 --passes 2)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  echo "nsys: $($NSYS --version)"
  echo "command: MODERNBERT_NVTX=1 $BIN bench --device cuda ${args[*]}"
} | tee "profiles/out/$name.meta.txt"
MODERNBERT_NVTX=1 "$NSYS" profile --trace cuda,nvtx,osrt --cuda-graph-trace node \
  --output "profiles/out/$name" --force-overwrite true \
  "$BIN" bench --device cuda "${args[@]}"
"$NSYS" stats --report nvtx_sum,cuda_gpu_kern_sum,cuda_api_sum --format table "profiles/out/$name.nsys-rep"
