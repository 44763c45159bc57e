// layernorm.cu — LayerNorm with an optional fused residual add:
//     if delta != 0 { residual += delta }   (stored back, rounded to T)
//     out = (x - mean) / sqrt(var + eps) * weight (+ bias)     over each row of `hidden` elements
//
// Shapes / layout: residual, delta, out: T [tokens, hidden] row-major (packed tokens); weight, bias:
//   T [hidden]. T = bf16 or fp16; statistics in fp32 (two passes over registers: mean, then the
//   centred variance — no E[x²] - E[x]² cancellation).
// Algorithm: one block per row (grid-stride over rows) of norm_threads(hidden) = round_up(hidden /
//   8, 32) threads, each holding 8 elements of the row in registers (norm.cuh; hidden <= 8192,
//   checked by the host, src/kernels/ops.rs): one 16-byte vector when hidden % 8 == 0 and every
//   pointer is 16-byte aligned, else 8 scalars. Two block reductions (warp shuffles + one __shared__
//   partial per warp).
// Launch: grid (min(max_tokens, 2^20), 1, 1), block (norm_threads(hidden), 1, 1), no dynamic smem;
//   rows past BatchDesc.tokens exit at once.
// Cost per row: reads (2 or 3) * hidden * 2 B (+ weight/bias, L2-resident), writes (1 or 2) * hidden
//   * 2 B; ~8 FLOPs per element. Memory-bound: expected on an H100 (3.35 TB/s HBM3, ~3.0 TB/s
//   achievable copy) ≈ 80-90 % of copy bandwidth at >= 64k tokens.
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): 64k x 768 with the
//   residual add (403 MB) in 151 µs, 2666 GB/s = 89 % of copy; 64k x 1024: 89 %.
#include "norm.cuh"  // layernorm_rows

namespace {

template <class T>
__device__ __forceinline__ void layernorm(const LayerNormParams& p) {
    layernorm_rows<T>(p, blockIdx.x, gridDim.x);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) layernorm_bf16(const __grid_constant__ LayerNormParams p) {
    layernorm<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) layernorm_f16(const __grid_constant__ LayerNormParams p) {
    layernorm<__half>(p);
}
