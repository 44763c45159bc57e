// rope.cu — rotate-half RoPE on the Q and K parts of the packed QKV GEMM output, in place.
//     for j < d/2, a = pos * inv_freq[j], inv_freq[j] = 1 / theta^(2j / d) (fp32, as transformers):
//     x'[j] = x[j] cos a - x[j + d/2] sin a ;  x'[j + d/2] = x[j + d/2] cos a + x[j] sin a
//
// Shapes / layout: qkv: T [tokens, 3, heads, head_dim] (Q heads, then K, then V; V untouched);
//   cu_seqlens: u32 [sequences + 1]. A token's position is its index inside its own sequence, found
//   by binary search of cu_seqlens (sequences from the BatchDesc). Angles, sin/cos and the rotation
//   in fp32 (accurate sincosf: positions reach 8192 rad), one rounding at the store.
// Algorithm: one block of 128 threads per token (grid-stride). The block first fills a shared table
//   of cos/sin for the token's d/2 angles (inv_freq once per block), then every (Q or K, head,
//   group of VEC = 8 consecutive j < d/2) work item rotates with it: one 16-byte load from each
//   half, 16 rotations, two 16-byte stores (VEC = 1 when head_dim % 16 != 0 or qkv is unaligned).
//   The table makes the angle work d/2 sincosf per token instead of heads * d (24x fewer at
//   ModernBERT's 12 heads): the first version computed them per head and was compute-bound
//   (0.99 ms for 262,144 base tokens on an H100, 1.6 TB/s, SM 88 % busy; profiles/results.md).
// Launch: grid (min(max_tokens, 2^20)), block (128). Static smem 3 * kMaxHalf * 4 B = 1.5 KiB;
//   head_dim <= 2 * kMaxHalf = 256 (the host launcher refuses larger).
// Cost per token: reads and writes 2 * heads * head_dim * 2 B (Q and K); d/2 sincosf. Memory-bound:
//   262,144 base tokens move 1.61 GB, 0.54 ms at the H100's measured 3.0 TB/s copy rate.
#include "rope.cuh"  // rope_position, rope_inv_freq, rope_rotate

namespace {

// Largest head_dim / 2 the shared angle table holds.
constexpr uint32_t kMaxHalf = MB_ROPE_MAX_HEAD_DIM / 2;

template <class T, int VEC>
__device__ __forceinline__ void rope_token(const RopeParams& p, uint32_t t, const float* cos_a, const float* sin_a) {
    const uint32_t d = p.head_dim, half = d / 2, groups = half / VEC;
    T* row = reinterpret_cast<T*>(p.qkv) + (size_t)t * 3 * p.heads * d;
    const uint32_t items = 2 * p.heads * groups;  // Q and K heads
    for (uint32_t w = threadIdx.x; w < items; w += blockDim.x) {
        const uint32_t head = w / groups, j0 = (w - head * groups) * VEC;
        T* x = row + (size_t)head * d;  // heads 0..H-1 are Q, H..2H-1 are K
        float a[VEC], b[VEC];
        load_f32<T, VEC>(x + j0, a);
        load_f32<T, VEC>(x + half + j0, b);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            rope_rotate(a[k], b[k], cos_a[j0 + k], sin_a[j0 + k]);
        }
        store_f32<T, VEC>(x + j0, a);
        store_f32<T, VEC>(x + half + j0, b);
    }
}

template <class T>
__device__ __forceinline__ void rope(const RopeParams& p) {
    __shared__ float inv_freq[kMaxHalf], cos_a[kMaxHalf], sin_a[kMaxHalf];
    const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
    const uint32_t rows = batch->tokens < p.max_tokens ? batch->tokens : p.max_tokens;
    const uint32_t sequences = batch->sequences;
    const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    const uint32_t half = p.head_dim / 2;
    const bool vec = p.head_dim % 16 == 0 && (p.qkv & 15) == 0;
    for (uint32_t j = threadIdx.x; j < half; j += blockDim.x) {
        inv_freq[j] = rope_inv_freq(p.theta, j, p.head_dim);
    }
    for (uint32_t t = blockIdx.x; t < rows; t += gridDim.x) {
        const uint32_t pos = rope_position(cu, sequences, t);
        __syncthreads();  // inv_freq written; the previous token's rotations done with the table
        for (uint32_t j = threadIdx.x; j < half; j += blockDim.x) {
            sincosf((float)pos * inv_freq[j], &sin_a[j], &cos_a[j]);
        }
        __syncthreads();
        if (vec) {
            rope_token<T, 8>(p, t, cos_a, sin_a);
        } else {
            rope_token<T, 1>(p, t, cos_a, sin_a);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_ROPE_THREADS) rope_bf16(const __grid_constant__ RopeParams p) {
    rope<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_ROPE_THREADS) rope_f16(const __grid_constant__ RopeParams p) {
    rope<__half>(p);
}
