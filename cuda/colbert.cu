// colbert.cu — ColBERT per-token normalisation: out[t] = x[t] / max(||x[t]||_2, 1e-12), fp32 out.
//
// Shapes / layout: x: T [rows, dim] (the ColBERT projection's output, packed tokens); out: f32
//   [rows, dim]. Sum of squares in fp32.
// Algorithm: one warp per row (4 rows per 128-thread block, grid-stride). Pass 1: 16-byte loads
//   (8 elements; dim % 8 == 0 and aligned pointers, else scalars), sum of squares, warp butterfly.
//   Pass 2: the row again (an L1/L2 hit: dim * 2 bytes, 256 B at dim 128) scaled, two 16-byte fp32
//   stores per vector. No shared memory, few registers, any dim.
// Launch: grid (min(ceil(max_rows / 4), 2^20)), block (128). No dynamic smem.
// Cost per row: reads dim * 2 B from DRAM (the second read is cached), writes dim * 4 B, 3 FLOPs per
//   element. Memory-bound; expected on an H100 ≈ 80-90 % of copy bandwidth for >= 64k tokens.
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): 65,536 rows x 128 in 22.1 µs,
//   2280 GB/s = 76 % of the 3.0 TB/s copy rate measured in the same run.
#include "common.cuh"

namespace {


template <class T, int VEC>
__device__ __forceinline__ void normalize_row(const RowNormalizeParams& p, uint32_t row, int lane) {
    const uint32_t D = p.dim;
    const T* x = reinterpret_cast<const T*>(p.x) + (size_t)row * D;
    float* out = reinterpret_cast<float*>(p.out) + (size_t)row * D;
    float sq = 0.f;
    for (uint32_t c = lane * VEC; c < D; c += 32 * VEC) {
        float v[VEC];
        load_f32<T, VEC>(x + c, v);
#pragma unroll
        for (int j = 0; j < VEC; j++) sq += v[j] * v[j];
    }
    const float inv = 1.f / fmaxf(sqrtf(warp_sum(sq)), 1e-12f);
    for (uint32_t c = lane * VEC; c < D; c += 32 * VEC) {
        float v[VEC];
        load_f32<T, VEC>(x + c, v);
        if constexpr (VEC == 8) {
            store_f32x4(out + c, v[0] * inv, v[1] * inv, v[2] * inv, v[3] * inv);
            store_f32x4(out + c + 4, v[4] * inv, v[5] * inv, v[6] * inv, v[7] * inv);
        } else {
#pragma unroll
            for (int j = 0; j < VEC; j++) out[c + j] = v[j] * inv;
        }
    }
}

template <class T>
__device__ __forceinline__ void row_normalize(const RowNormalizeParams& p) {
    const uint32_t rows = rows_in_use(p.batch, p.max_rows);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool vec = p.dim % 8 == 0 && ((p.x | p.out) & 15) == 0;
    // Whole warps take a row or exit together (the shuffles need all 32 lanes).
    for (uint32_t row = blockIdx.x * MB_COLBERT_ROWS_PER_BLOCK + warp; row < rows; row += gridDim.x * MB_COLBERT_ROWS_PER_BLOCK) {
        if (vec) {
            normalize_row<T, 8>(p, row, lane);
        } else {
            normalize_row<T, 1>(p, row, lane);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_COLBERT_THREADS) colbert_normalize_bf16(const __grid_constant__ RowNormalizeParams p) {
    row_normalize<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_COLBERT_THREADS) colbert_normalize_f16(const __grid_constant__ RowNormalizeParams p) {
    row_normalize<__half>(p);
}
