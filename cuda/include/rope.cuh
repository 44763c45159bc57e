// rope.cuh — the rotate-half RoPE arithmetic shared by rope.cu (the standalone pass) and
// gemm_sm90.cu (the Wqkv GEMM's RoPE epilogue), so both rotate with the same angles, bit for bit:
//   inv_freq[j] = 1 / theta^(2j / d) in fp32 (as transformers), a = pos * inv_freq[j],
//   x'[j] = x[j] cos a - x[j + d/2] sin a ;  x'[j + d/2] = x[j + d/2] cos a + x[j] sin a.
#pragma once
#include "common.cuh"

// Position of token t: t - cu_seqlens[b] for the b with cu_seqlens[b] <= t < cu_seqlens[b + 1].
// Tokens past the batch get t - cu_seqlens[sequences - 1]: harmless values for padding rows.
__device__ __forceinline__ uint32_t rope_position(const uint32_t* __restrict__ cu, uint32_t sequences, uint32_t t) {
    uint32_t lo = 0, hi = sequences;  // invariant: cu[lo] <= t, answer in [lo, hi)
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (cu[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return t - cu[lo];
}

__device__ __forceinline__ float rope_inv_freq(float theta, uint32_t j, uint32_t head_dim) {
    return 1.f / powf(theta, (float)(2 * j) / (float)head_dim);
}

// One rotate-half pair in place: (x0, x1) = (x[j], x[j + d/2]).
__device__ __forceinline__ void rope_rotate(float& x0, float& x1, float c, float s) {
    const float a = x0, b = x1;
    x0 = a * c - b * s;
    x1 = b * c + a * s;
}
