// mlm_head.cu — head_act_norm, the masked-LM head's prediction-head piece between its two GEMMs
// (cuBLASLt runs head.dense, and the decoder with its bias in the epilogue; the executor's fill-mask
// path, src/gpu/executor.rs, then runs topk.cu on the logits):
//   out = LayerNorm(act(x + dense_bias)) * weight (+ bias)   (act: MB_ACT_*)
//
// Shapes / layout: x, out: T [rows, hidden] (the gathered masked rows); dense_bias, weight, bias:
//   T [hidden]. T = bf16 / fp16; the activation and statistics in fp32; act(x + dense_bias) is
//   rounded to T before the norm, as the unfused PyTorch head materialises it in T.
// Algorithm: one block of norm_threads(hidden) threads per row (hidden <= MB_MAX_NORM_WIDTH,
//   registers), norm.cuh.
// Launch: grid (min(max_tokens, MB_MAX_GRID)), block (norm_threads(hidden)). No dynamic smem.
// Cost: reads/writes hidden * 2 B per row, ~30 FLOPs per element (erf). Memory-bound.
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md):
//   4096 x 768 in 13.8 µs (30 % of copy: too few rows to fill the card). Fill-mask runs it on
//   <= 128 rows per launch: predicted (not measured) to be a few µs of launch latency.
#include "norm.cuh"

namespace {


template <class T, int VEC>
__device__ __forceinline__ void head_row(const HeadActNormParams& p, uint32_t row) {
    const uint32_t H = p.hidden;
    const T* x = reinterpret_cast<const T*>(p.x) + (size_t)row * H;
    const T* dense_bias = p.dense_bias ? reinterpret_cast<const T*>(p.dense_bias) : nullptr;
    auto load = [&](uint32_t c, float (&v)[VEC]) {
        load_f32<T, VEC>(x + c, v);
        float b[VEC];
        if (dense_bias) {
            load_f32<T, VEC>(dense_bias + c, b);
        } else {
#pragma unroll
            for (int j = 0; j < VEC; j++) b[j] = 0.f;
        }
#pragma unroll
        for (int j = 0; j < VEC; j++) v[j] = to_f32<T>(from_f32<T>(activate(to_f32<T>(from_f32<T>(v[j] + b[j])), p.activation)));
    };
    norm_row<T, VEC>(load, reinterpret_cast<const T*>(p.weight),
                               p.bias ? reinterpret_cast<const T*>(p.bias) : nullptr,
                               reinterpret_cast<T*>(p.out) + (size_t)row * H, H, p.eps);
}

template <class T>
__device__ __forceinline__ void head_act_norm(const HeadActNormParams& p) {
    const uint32_t rows = rows_in_use(p.batch, p.max_tokens);
    const bool vec = p.hidden % 8 == 0 && ((p.x | p.dense_bias | p.weight | p.bias | p.out) & 15) == 0;
    for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
        if (vec) {
            head_row<T, 8>(p, row);
        } else {
            head_row<T, 1>(p, row);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) head_act_norm_bf16(const __grid_constant__ HeadActNormParams p) {
    head_act_norm<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) head_act_norm_f16(const __grid_constant__ HeadActNormParams p) {
    head_act_norm<__half>(p);
}
