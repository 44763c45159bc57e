// norm.cuh — one row of LayerNorm by one block, shared by layernorm.cu, embeddings.cu and
// mlm_head.cu: the caller supplies how a row's elements are produced (a load functor), the rest
// (fp32 statistics, two block reductions, weight/bias, the store) is here. Below it, the rows of
// embeddings.cu and layernorm.cu themselves, which forward_small_sm90.cu runs as steps of its
// program (a block of any width whose threads hold the row: blockDim.x * 8 >= hidden).
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

// embeddings.cu's rows first, first + stride, ...: out[t] = LayerNorm(table[ids[t]]) (ids >= vocab
// read row 0; the host validates ids), 16-byte vectors where hidden and every pointer allow.
template <class T, int VEC>
__device__ __forceinline__ void embed_row(const EmbeddingLayerNormParams& p, uint32_t row) {
    const uint32_t H = p.hidden;
    uint32_t id = reinterpret_cast<const uint32_t*>(p.ids)[row];
    if (id >= p.vocab) id = 0;
    const T* src = reinterpret_cast<const T*>(p.table) + (size_t)id * H;
    auto load = [&](uint32_t c, float (&x)[VEC]) { load_f32<T, VEC>(src + c, x); };
    norm_row<T, VEC>(load, reinterpret_cast<const T*>(p.weight), p.bias ? reinterpret_cast<const T*>(p.bias) : nullptr,
                     reinterpret_cast<T*>(p.out) + (size_t)row * H, H, p.eps);
}

template <class T>
__device__ __forceinline__ void embed_rows(const EmbeddingLayerNormParams& p, uint32_t first, uint32_t stride) {
    const uint32_t rows = rows_in_use(p.batch, p.max_tokens);
    const bool vec = p.hidden % 8 == 0 && ((p.table | p.weight | p.bias | p.out) & 15) == 0;
    for (uint32_t row = first; row < rows; row += stride) {
        if (vec) {
            embed_row<T, 8>(p, row);
        } else {
            embed_row<T, 1>(p, row);
        }
    }
}

// layernorm.cu's rows first, first + stride, ...: with delta, residual += delta (stored, rounded
// to T: the norm sees exactly what is stored); out = LayerNorm(residual).
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
#pragma unroll
            for (int j = 0; j < VEC; j++) x[j] = to_f32<T>(from_f32<T>(x[j] + d[j]));
            store_f32<T, VEC>(residual + c, x);
        }
    };
    norm_row<T, VEC>(load, reinterpret_cast<const T*>(p.weight), p.bias ? reinterpret_cast<const T*>(p.bias) : nullptr,
                     reinterpret_cast<T*>(p.out) + (size_t)row * H, H, p.eps);
}

template <class T>
__device__ __forceinline__ void layernorm_rows(const LayerNormParams& p, uint32_t first, uint32_t stride) {
    const uint32_t rows = rows_in_use(p.batch, p.max_tokens);
    const bool vec = p.hidden % 8 == 0 && ((p.residual | p.delta | p.weight | p.bias | p.out) & 15) == 0;
    for (uint32_t row = first; row < rows; row += stride) {
        if (vec) {
            layernorm_row<T, 8>(p, row);
        } else {
            layernorm_row<T, 1>(p, row);
        }
    }
}
