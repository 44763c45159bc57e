// embeddings.cu — token embedding gather fused with the embedding LayerNorm:
//     out[t] = LayerNorm(table[ids[t]]) * weight (+ bias)
//
// Shapes / layout: ids: u32 [tokens] (packed batch); table: T [vocab, hidden] row-major; weight,
//   bias: T [hidden]; out: T [tokens, hidden]. Ids >= vocab read row 0 (the host validates ids).
//   fp32 statistics.
// Algorithm: one block per token (grid-stride), norm_threads(hidden) = round_up(hidden / 8, 32)
//   threads holding the gathered row in registers (hidden <= 8192), the shared norm_row of
//   norm.cuh; 16-byte vectors when hidden % 8 == 0 and the pointers are 16-byte aligned.
// Launch: grid (min(max_tokens, 2^20), 1, 1), block (norm_threads(hidden), 1, 1), no dynamic smem.
// Cost per token: reads 4 B + hidden * 2 B (random rows of the table), writes hidden * 2 B; ~8 FLOPs
//   per element. Memory-bound; expected on an H100 ≈ 75-85 % of copy bandwidth at >= 64k tokens
//   (the gather is row-granular, 1.5 KiB per row at hidden 768).
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): 65,536 tokens x 768 in
//   111 µs, 1810 GB/s = 60 % of copy: below the estimate (one row per block and a dependent
//   id -> row load chain; not yet investigated: this kernel runs once per forward, 0.1 % of it).
#include "norm.cuh"  // embed_rows

namespace {

template <class T>
__device__ __forceinline__ void embeddings(const EmbeddingLayerNormParams& p) {
    embed_rows<T>(p, blockIdx.x, gridDim.x);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS)
    embeddings_bf16(const __grid_constant__ EmbeddingLayerNormParams p) {
    embeddings<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MB_NORM_MAX_THREADS)
    embeddings_f16(const __grid_constant__ EmbeddingLayerNormParams p) {
    embeddings<__half>(p);
}
