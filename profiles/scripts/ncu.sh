#!/usr/bin/env bash
# Nsight Compute profile of `modernbert bench` (or the microbenchmarks), at the card's normal
# (boost) clocks: `--clock-control none`. By default ncu locks the GPU to its base clock, which
# understates every kernel against what the paper and users measure (they run at boost clocks) and
# against our own end-to-end numbers; with `none` the per-kernel times add up to what the bench sees.
#
# Usage: profiles/scripts/ncu.sh OUT_NAME [-- bench args]
#   profiles/scripts/ncu.sh base-short-fixed -- --shape base --set short-fixed --sequences 512 --passes 1
# Writes profiles/out/OUT_NAME.ncu-rep, OUT_NAME.csv (raw page, one row per kernel launch and metric)
# and prints the per-kernel table (profiles/scripts/kernel_table.py).
# Env: BIN (default target/release/modernbert), NCU (default ncu), LAUNCHES (kernel launches to
# profile after skipping the warm-up, default 200 = one base forward: embeddings, 8 launches in layer 0
# and 9 in each later layer (4 GEMMs + 5 kernels), final norm, pooling), SKIP (launches skipped,
# default 200 = the warm-up batch's forward), SET (ncu section set, default "full"; "basic" is several times faster).
set -euo pipefail
cd "$(dirname "$0")/../.."
name="${1:?usage: ncu.sh OUT_NAME [-- bench args]}"; shift
[ "${1:-}" = "--" ] && shift
BIN="${BIN:-target/release/modernbert}"
NCU="${NCU:-ncu}"
mkdir -p profiles/out
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--shape base --set short-fixed --sequences 512 --passes 1)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  echo "ncu: $($NCU --version | tail -1)"
  echo "command: $BIN bench --device cuda ${args[*]}"
} | tee "profiles/out/$name.meta.txt"
# The table's metrics are named explicitly so that a lighter section set (SET=basic: a few replay
# passes per kernel instead of ~40 for "full") still yields every column.
metrics=gpu__time_duration.sum,dram__bytes.sum.per_second,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__block_size
"$NCU" --clock-control none --set "${SET:-full}" --metrics "$metrics" \
  --launch-skip "${SKIP:-200}" --launch-count "${LAUNCHES:-200}" \
  --export "profiles/out/$name" --force-overwrite \
  "$BIN" bench --device cuda "${args[@]}"
"$NCU" --import "profiles/out/$name.ncu-rep" --csv --page raw \
  --metrics "$metrics" \
  > "profiles/out/$name.csv"
python3 profiles/scripts/kernel_table.py "profiles/out/$name.csv"
