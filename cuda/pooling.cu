// pooling.cu — one vector per sequence from the packed hidden states:
//   CLS: row cu_seqlens[b]; MEAN: mean of the first n = min(key_lens[b], len(b)) rows (all rows when
//   key_lens = 0; n = 0 gives zeros); only the first out_dim columns (Matryoshka truncation), then
//   optionally L2-normalised (x / max(||x||, 1e-12), after the truncation).
//
// Shapes / layout: hidden: T [tokens, hidden_dim]; out: f32 [max_sequences, out_dim] (rows past
//   BatchDesc.sequences untouched); cu_seqlens: u32 [sequences + 1]; key_lens: u32 [sequences] or 0.
//   Sums and the norm in fp32.
// Algorithm: one block of MB_POOL_THREADS threads per sequence. The out_dim columns are split into vectors of
//   VEC = 8 (16-byte loads; hidden_dim % 8 == 0, out_dim % 8 == 0, aligned) or 1; G = 256 / vectors
//   groups of threads take every G-th row (so short rows still use the whole block), their partial
//   sums meet in dynamic shared memory [G][out_dim] f32, then the block sums the groups, scales,
//   reduces the norm, and writes.
// Launch: grid (max_sequences), block (MB_POOL_THREADS = 256), dynamic smem =
//   ops::pool_smem_bytes(out_dim) (src/kernels/ops.rs, the formula's one home: the [G][out_dim] f32
//   partial sums for the larger G of the two VECs, since the host does not know which path runs). Memory-bound, one SM per sequence: a batch of >= 132 sequences fills an
//   H100; a single 8192-token sequence reads 12 MB on one SM (~0.1 ms) — acceptable once per forward.
// Cost: reads n * out_dim * 2 B per sequence, writes out_dim * 4 B; ~1 FLOP per element read.
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): mean over
//   128 x 512 tokens x 768 in 130 µs, 775 GB/s = 26 % of copy — one SM per sequence reads at ~6 GB/s
//   per SM, as designed; 0.1 % of a base forward, so a split over several blocks waits for a need.
#include "common.cuh"

// Dynamic shared memory, declared at file scope (for the emulator it must not sit in a namespace).
extern __shared__ __align__(16) unsigned char smem[];

namespace {


template <class T, int VEC>
__device__ __forceinline__ void pool_seq(const PoolParams& p, uint32_t b) {
    float* part = reinterpret_cast<float*>(smem);  // [groups][out_dim]
    const uint32_t D = p.out_dim, nvec = (D + VEC - 1) / VEC;
    const uint32_t groups = nvec >= MB_POOL_THREADS ? 1 : MB_POOL_THREADS / nvec;
    const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    const uint32_t start = cu[b], len = cu[b + 1] - cu[b];
    uint32_t first = 0, n = 0;
    if (p.pooling == MB_POOL_CLS) {
        n = len > 0 ? 1 : 0;
    } else {
        n = len;
        if (p.key_lens) {
            const uint32_t k = reinterpret_cast<const uint32_t*>(p.key_lens)[b];
            n = k < len ? k : len;
        }
    }
    const T* hidden = reinterpret_cast<const T*>(p.hidden);
    for (uint32_t w = threadIdx.x; w < nvec * groups; w += MB_POOL_THREADS) {
        const uint32_t v = w % nvec, g = w / nvec;
        float acc[VEC];
#pragma unroll
        for (int j = 0; j < VEC; j++) acc[j] = 0.f;
        for (uint32_t r = first + g; r < n; r += groups) {
            float x[VEC];
            load_f32<T, VEC>(hidden + (size_t)(start + r) * p.hidden_dim + v * VEC, x);
#pragma unroll
            for (int j = 0; j < VEC; j++) acc[j] += x[j];
        }
#pragma unroll
        for (int j = 0; j < VEC; j++) part[g * D + v * VEC + j] = acc[j];
    }
    __syncthreads();
    const float scale = p.pooling == MB_POOL_CLS ? 1.f : (n > 0 ? 1.f / (float)n : 0.f);
    float sq = 0.f;
    for (uint32_t c = threadIdx.x; c < D; c += MB_POOL_THREADS) {
        float s = 0.f;
        for (uint32_t g = 0; g < groups; g++) s += part[g * D + c];
        s *= scale;
        part[c] = s;  // only this thread reads and writes column c from here on (group 0's slot)
        sq += s * s;
    }
    float inv = 1.f;
    if (p.normalize) inv = 1.f / fmaxf(sqrtf(block_sum<MB_POOL_THREADS>(sq)), 1e-12f);
    float* out = reinterpret_cast<float*>(p.out) + (size_t)b * D;
    for (uint32_t c = threadIdx.x; c < D; c += MB_POOL_THREADS) out[c] = part[c] * inv;
}

template <class T>
__device__ __forceinline__ void pool(const PoolParams& p) {
    const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
    const uint32_t sequences = batch->sequences < p.max_sequences ? batch->sequences : p.max_sequences;
    const uint32_t b = blockIdx.x;
    if (b >= sequences) return;  // whole blocks exit: no barrier is skipped by part of a block
    if (p.hidden_dim % 8 == 0 && p.out_dim % 8 == 0 && (p.hidden & 15) == 0) {
        pool_seq<T, 8>(p, b);
    } else {
        pool_seq<T, 1>(p, b);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_POOL_THREADS) pool_bf16(const __grid_constant__ PoolParams p) {
    pool<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_POOL_THREADS) pool_f16(const __grid_constant__ PoolParams p) {
    pool<__half>(p);
}
