// geglu.cu — GeGLU: out[t, j] = act(h[t, j]) * h[t, I + j]  (act on the FIRST half, transformers'
//   `input, gate = h.chunk(2)`; ModernBERT: GELU with erf).
//
// Shapes / layout: h: T [tokens, 2 I] (the Wi GEMM output); out: T [tokens, I]. fp32 math, one
//   rounding at the store.
// Algorithm: elementwise, grid-stride over 8-element vectors of out (16-byte loads of both halves,
//   one 16-byte store) when I % 8 == 0 and the pointers are aligned, else scalars.
// Launch: grid (min(ceil(max_tokens * I / 8 / 256), 2^16)), block (256). No dynamic smem.
// Cost per output element: reads 4 B, writes 2 B, ~25 FLOPs (erf). Memory-bound; expected on an
//   H100 ≈ 85-90 % of copy bandwidth at >= 64k tokens (64k x 1152: 450 MB moved, ~0.17 ms).
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): 64k x 1152 in 167 µs,
//   2719 GB/s = 91 % of copy; 64k x 2624 (large) 94 %.
#include "common.cuh"

namespace {


template <class T, int VEC>
__device__ __forceinline__ void geglu_vec(const GegluParams& p, uint32_t rows) {
    const uint32_t I = p.inter, per_row = I / VEC;
    const uint64_t n = (uint64_t)rows * per_row;
    const T* h = reinterpret_cast<const T*>(p.h);
    T* out = reinterpret_cast<T*>(p.out);
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t t = i / per_row;
        const uint32_t c = (uint32_t)(i - t * per_row) * VEC;
        float a[VEC], g[VEC], y[VEC];
        load_f32<T, VEC>(h + t * 2 * I + c, a);
        load_f32<T, VEC>(h + t * 2 * I + I + c, g);
#pragma unroll
        for (int j = 0; j < VEC; j++) y[j] = activate(a[j], p.activation) * g[j];
        store_f32<T, VEC>(out + t * I + c, y);
    }
}

template <class T>
__device__ __forceinline__ void geglu(const GegluParams& p) {
    const uint32_t rows = rows_in_use(p.batch, p.max_tokens);
    if (p.inter % 8 == 0 && ((p.h | p.out) & 15) == 0) {
        geglu_vec<T, 8>(p, rows);
    } else {
        geglu_vec<T, 1>(p, rows);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_GEGLU_THREADS) geglu_bf16(const __grid_constant__ GegluParams p) {
    geglu<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_GEGLU_THREADS) geglu_f16(const __grid_constant__ GegluParams p) {
    geglu<__half>(p);
}
