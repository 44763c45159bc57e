// gather.cu — gather_rows: out[r] = x[rows[r]] for r < n_rows (pure copies, bit exact). The MLM
// head runs on the masked positions only; this picks them out of the packed hidden states so the
// head's two GEMMs see [masks, hidden] instead of [tokens, hidden].
//
// Shapes / layout: x: T [tokens, width]; rows: u32 [n_rows] (host-checked < tokens); out: T
//   [n_rows, width]. T = bf16 / fp16 (moved as raw 16-bit values).
// Algorithm: one block of MB_GATHER_THREADS threads per output row (grid-stride over rows), the row
//   in 16-byte vectors (width % 8 == 0 and aligned pointers) else 2-byte elements.
// Launch: grid (min(n_rows, 2^20)), block (MB_GATHER_THREADS). No dynamic smem.
// Cost: reads and writes n_rows * width * 2 B (+ 4 B per row index). No FLOPs. Tiny next to the
//   decoder GEMM it feeds (a 768-wide row is 1.5 KB; the decoder reads 77 MB of weights per launch).
#include "common.cuh"

namespace {

template <class T, int VEC>
__device__ __forceinline__ void gather_copy(const GatherRowsParams& p) {
    typedef typename RawVec<VEC>::type V;  // uint4 (16 bytes) or uint16_t
    const uint32_t* rows = reinterpret_cast<const uint32_t*>(p.rows);
    const uint32_t nvec = p.width / VEC;
    for (uint32_t r = blockIdx.x; r < p.n_rows; r += gridDim.x) {
        const V* src = reinterpret_cast<const V*>(reinterpret_cast<const T*>(p.x) + (uint64_t)rows[r] * p.width);
        V* dst = reinterpret_cast<V*>(reinterpret_cast<T*>(p.out) + (uint64_t)r * p.width);
        for (uint32_t c = threadIdx.x; c < nvec; c += blockDim.x) dst[c] = src[c];
    }
}

template <class T>
__device__ __forceinline__ void gather_rows(const GatherRowsParams& p) {
    if (p.width % 8 == 0 && ((p.x | p.out) & 15) == 0) {
        gather_copy<T, 8>(p);
    } else {
        gather_copy<T, 1>(p);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_GATHER_THREADS) gather_rows_bf16(const __grid_constant__ GatherRowsParams p) {
    gather_rows<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_GATHER_THREADS) gather_rows_f16(const __grid_constant__ GatherRowsParams p) {
    gather_rows<__half>(p);
}
