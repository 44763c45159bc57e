#!/usr/bin/env bash
# Mutations of the small-batch GEMM: each breaks cuda/gemm_stream_sm90.cu in one way (the wait
# before the activations, the chunk's k permutation, a warp's chunks, the warps' sum, the pairs'
# weight rows for RoPE and GeGLU, RoPE's frequency and position, the row norm's statistics and
# mean, the rows in use, the residual's operand), and a kernel test on the emulator must fail; the
# source is restored after each. Not part of test.sh (a rebuild per mutation, about a minute each);
# run it after changing the kernel.
#   bash scripts/stream-mutations.sh            # all; exits 1 if any mutation survives
set -uo pipefail
cd "$(dirname "$0")/.."
src=cuda/gemm_stream_sm90.cu
backup=$(mktemp)
cp "$src" "$backup"
trap 'cp "$backup" "$src"; rm -f "$backup"' EXIT
survivors=0
mutate() {  # name, old text, new text (old must occur exactly once)
  local name=$1 old=$2 new=$3
  cp "$backup" "$src"
  python3 - "$src" "$old" "$new" <<'PY' || { echo "mutation '$name': pattern not found"; exit 2; }
import sys
path, old, new = sys.argv[1:]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(1)
open(path, "w").write(s.replace(old, new))
PY
  if (cd kernels-tests && cargo test -q --test gemm_stream_sm90 >/tmp/mutation.log 2>&1); then
    echo "SURVIVED  $name"
    survivors=$((survivors + 1))
  else
    echo "killed    $name: $(grep -m1 -oE 'FAIL [^:]*: [^;]{0,160}|panicked at [^ ]*|deadlock[^;]{0,80}' /tmp/mutation.log | head -1)"
  fi
}
mutate "activations read before griddepcontrol.wait" \
  "    // 2. The activations: the previous kernel's output.
    pdl_wait();" "    // 2. The activations: the previous kernel's output (no wait)."
mutate "k permutation: the second mma's x words swapped" \
  "a1[4] = {lo.z, hi.z, lo.w, hi.w}" "a1[4] = {lo.w, hi.w, lo.z, hi.z}"
mutate "k permutation: the weight's words of the second mma taken from the first" \
  "b1[2] = {wv[nt].z, wv[nt].w}" "b1[2] = {wv[nt].x, wv[nt].y}"
mutate "a warp skips its last chunk" \
  "chunk < k / KCHUNK; chunk += WARPS" "chunk + WARPS < k / KCHUNK; chunk += WARPS"
mutate "the warps' sum leaves out the last warp" \
  "for (int wi = 0; wi < WARPS; wi++) {" "for (int wi = 0; wi < WARPS - 1; wi++) {"
mutate "RoPE: each dimension paired with d + 8, not d + 32" \
  "half * (ROPE_D / 2) + i" "half * 8 + i"
mutate "GeGLU: the gate taken from the next 8 rows, not the block's second half" \
  "half * (GEGLU_BLOCK / 2) + i" "half * 8 + i"
mutate "RoPE: the frequency of the tile's first pair for all" \
  "const uint32_t j = (tile % (ROPE_D / 16)) * 8 + c;" "const uint32_t j = (tile % (ROPE_D / 16)) * 8;"
mutate "RoPE: positions not restarting per sequence" \
  "const float pos = (float)rope_position(cu, batch->sequences, r);" "const float pos = (float)r;"
mutate "row norm: a one-pass variance (E[x²] − mean²)" \
  "                const float d = to_f32(xr[i]) - mean;
                m2 += d * d;
            }
            m2 = warp_sum(m2);" "                const float d = to_f32(xr[i]);
                m2 += d * d;
            }
            m2 = warp_sum(m2) - (float)k * mean * mean;"
mutate "row norm: the mean not subtracted" \
  "v[h] = fmaf(-s.x, colsum[col[h]], v[h]) * s.y;" "v[h] = v[h] * s.y;"
mutate "rows in use: the capacity, not the batch's tokens" \
  "const uint32_t rows = rows_in_use(p.batch, p.m);" "const uint32_t rows = p.m;"
mutate "residual: added to the wrong column of r" \
  "to_f32(r_in[(size_t)r * p.n + col[h]])" "to_f32(r_in[(size_t)r * p.n + col[0]])"
cp "$backup" "$src"
echo "$survivors mutation(s) survived"
[ "$survivors" -eq 0 ]
