// norm.cuh — one row of LayerNorm by one block, shared by layernorm.cu, embeddings.cu and
// mlm_head.cu: the caller supplies how a row's elements are produced (a load functor), the rest
// (fp32 statistics, two block reductions, weight/bias, the store) is here.
//
// Geometry (llm.c style): each thread holds MB_NORM_PER_THREAD = 8 elements of the row in registers —
// one 16-byte vector (VEC = 8) or 8 scalars (VEC = 1) — so the block has norm_threads(hidden) =
// round_up(ceil(hidden / 8), 32) threads (hidden <= 8192; src/kernels/ops.rs computes the same).
// ~40 registers: full occupancy, many rows in flight per SM.
#pragma once

#include "common.cuh"


// load(c, x): fill x[0..VEC) with the row's elements c .. c + VEC - 1 (fp32).
// out[c] = (x - mean) * rsqrt(var + eps) * weight[c] (+ bias[c]), biased variance, two passes.
template <class T, int VEC, class Load>
__device__ __forceinline__ void norm_row(Load load, const T* __restrict__ weight, const T* __restrict__ bias,
                                         T* __restrict__ out, uint32_t H, float eps) {
    constexpr int NV = MB_NORM_PER_THREAD / VEC;
    const uint32_t nt = blockDim.x;
    float x[NV][VEC];  // element (threadIdx.x + i * nt) * VEC + j of the row
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const uint32_t c = (threadIdx.x + i * nt) * VEC;
        if (c < H) {
            load(c, x[i]);
#pragma unroll
            for (int j = 0; j < VEC; j++) sum += x[i][j];
        }
    }
    const float mean = block_sum_dyn(sum) / (float)H;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const uint32_t c = (threadIdx.x + i * nt) * VEC;
        if (c < H) {
#pragma unroll
            for (int j = 0; j < VEC; j++) {
                const float d = x[i][j] - mean;
                sq += d * d;
            }
        }
    }
    const float rstd = rsqrtf(block_sum_dyn(sq) / (float)H + eps);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const uint32_t c = (threadIdx.x + i * nt) * VEC;
        if (c < H) {
            float w[VEC], b[VEC], y[VEC];
            load_f32<T, VEC>(weight + c, w);
            if (bias) {
                load_f32<T, VEC>(bias + c, b);
            } else {
#pragma unroll
                for (int j = 0; j < VEC; j++) b[j] = 0.f;
            }
#pragma unroll
            for (int j = 0; j < VEC; j++) y[j] = (x[i][j] - mean) * rstd * w[j] + b[j];
            store_f32<T, VEC>(out + c, y);
        }
    }
}
