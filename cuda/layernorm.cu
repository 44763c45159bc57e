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
#include "norm.cuh"

namespace {


template <class T, int VEC>
__device__ __forceinline__ void layernorm_row(const LayerNormParams& p, uint32_t row) {
    const uint32_t H = p.hidden;
    T* residual = reinterpret_cast<T*>(p.residual) + (size_t)row * H;
    const T* delta = p.delta ? reinterpret_cast<const T*>(p.delta) + (size_t)row * H : nullptr;
    auto load = [&](uint32_t c, float (&x)[VEC]) {
        load_f32<T, VEC>(residual + c, x);
        if (delta) {
            float d[VEC];
            load_f32<T, VEC>(delta + c, d);
            // The residual stream keeps the rounded sum; the norm sees exactly what is stored.
#pragma unroll
            for (int j = 0; j < VEC; j++) x[j] = to_f32<T>(from_f32<T>(x[j] + d[j]));
            store_f32<T, VEC>(residual + c, x);
        }
    };
    norm_row<T, VEC>(load, reinterpret_cast<const T*>(p.weight),
                               p.bias ? reinterpret_cast<const T*>(p.bias) : nullptr,
                               reinterpret_cast<T*>(p.out) + (size_t)row * H, H, p.eps);
}

template <class T>
__device__ __forceinline__ void layernorm(const LayerNormParams& p) {
    const uint32_t rows = rows_in_use(p.batch, p.max_tokens);
    const bool vec = p.hidden % 8 == 0 && ((p.residual | p.delta | p.weight | p.bias | p.out) & 15) == 0;
    for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
        if (vec) {
            layernorm_row<T, 8>(p, row);
        } else {
            layernorm_row<T, 1>(p, row);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) layernorm_bf16(const __grid_constant__ LayerNormParams p) {
    layernorm<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) layernorm_f16(const __grid_constant__ LayerNormParams p) {
    layernorm<__half>(p);
}
