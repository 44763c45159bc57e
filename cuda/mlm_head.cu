// mlm_head.cu — the pieces of the masked-LM head around its two GEMMs (which cuBLASLt runs):
//   head_act_norm: out = LayerNorm(act(x + dense_bias)) * weight (+ bias)   (act: MB_ACT_*)
//   bias_add:      logits[r, c] (fp32) = x[r, c] + bias[c]                  (the decoder bias)
//
// Shapes / layout: head_act_norm: x, out: T [tokens, hidden]; dense_bias, weight, bias: T [hidden].
//   bias_add: x: T [rows, cols] (cols = vocab), bias: T [cols], logits: f32 [rows, cols].
//   T = bf16 / fp16; the activation and statistics in fp32; act(x + dense_bias) is rounded to T
//   before the norm, as the unfused PyTorch head materialises it in T.
// Algorithm: head_act_norm: one block of norm_threads(hidden) threads per row (hidden <= 8192,
//   registers), norm.cuh.
//   bias_add: grid-stride over 8-element vectors (16-byte loads, two 16-byte fp32 stores) when cols
//   % 8 == 0 and the pointers are aligned, else scalars.
// Launch: head_act_norm: grid (min(max_tokens, 2^20)), block (norm_threads(hidden)). bias_add: grid
//   (min(ceil(max_rows * cols / 8 / 256), 2^16)), block (256). No dynamic smem.
// Cost: head_act_norm: reads/writes hidden * 2 B per row, ~30 FLOPs per element (erf). bias_add:
//   reads 2 B, writes 4 B per element. Memory-bound; expected on an H100 ≈ 80-90 % of copy bandwidth
//   (bias_add over 64 tokens x 50k vocab: ~20 MB, ~8 µs).
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): bias_add 4096 x 50,368
//   in 430 µs = 96 % of copy; head_act_norm 4096 x 768 in 13.8 µs (30 %: too few rows to fill the card).
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

template <class T, int VEC>
__device__ __forceinline__ void bias_add_vec(const BiasAddParams& p, uint32_t rows) {
    const uint64_t per_row = p.cols / VEC, n = (uint64_t)rows * per_row;
    const T* x = reinterpret_cast<const T*>(p.x);
    const T* bias = p.bias ? reinterpret_cast<const T*>(p.bias) : nullptr;
    float* out = reinterpret_cast<float*>(p.out);
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint32_t c = (uint32_t)(i % per_row) * VEC;
        float v[VEC], b[VEC];
        load_f32<T, VEC>(x + i * VEC, v);
        if (bias) {
            load_f32<T, VEC>(bias + c, b);
        } else {
#pragma unroll
            for (int j = 0; j < VEC; j++) b[j] = 0.f;
        }
        if constexpr (VEC == 8) {
            store_f32x4(out + i * VEC, v[0] + b[0], v[1] + b[1], v[2] + b[2], v[3] + b[3]);
            store_f32x4(out + i * VEC + 4, v[4] + b[4], v[5] + b[5], v[6] + b[6], v[7] + b[7]);
        } else {
#pragma unroll
            for (int j = 0; j < VEC; j++) out[i * VEC + j] = v[j] + b[j];
        }
    }
}

template <class T>
__device__ __forceinline__ void bias_add(const BiasAddParams& p) {
    const uint32_t rows = rows_in_use(p.batch, p.max_rows);
    if (p.cols % 8 == 0 && ((p.x | p.bias | p.out) & 15) == 0) {
        bias_add_vec<T, 8>(p, rows);
    } else {
        bias_add_vec<T, 1>(p, rows);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) head_act_norm_bf16(const __grid_constant__ HeadActNormParams p) {
    head_act_norm<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS) head_act_norm_f16(const __grid_constant__ HeadActNormParams p) {
    head_act_norm<__half>(p);
}
extern "C" __global__ void __launch_bounds__(MB_BIAS_ADD_THREADS) bias_add_bf16(const __grid_constant__ BiasAddParams p) {
    bias_add<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_BIAS_ADD_THREADS) bias_add_f16(const __grid_constant__ BiasAddParams p) {
    bias_add<__half>(p);
}
