// unpad.cu — between the padded [batch, len] layout of the inputs/outputs and the packed layout
// the encoder runs on:
//   unpad: packed[cu_seqlens[b] + i] = padded[b, i]            for i < min(len(b), padded_len)
//   repad: padded[b, i] = i < len(b) ? packed[cu_seqlens[b] + i] : 0   for EVERY (b, i) of the
//          [max_sequences, padded_len] capacity (sequences past the batch are zero-filled too).
//
// Shapes / layout: padded: T [max_sequences, padded_len, width]; packed: T [tokens, width];
//   cu_seqlens: u32 [sequences + 1] (sequences from the BatchDesc). Pure copies (bit exact).
// Algorithm: one block of 128 threads per padded row (b, i) (grid-stride over rows), threads over
//   the row in 16-byte vectors (width % 8 == 0 and aligned pointers) else 2-byte elements.
// Launch: grid (min(max_sequences * padded_len, 2^20)), block (128). No dynamic smem.
// Cost: unpad reads and writes tokens * width * 2 B; repad writes max_sequences * padded_len *
//   width * 2 B and reads tokens * width * 2 B. No FLOPs. Expected on an H100 ≈ 85-90 % of copy
//   bandwidth at >= 64k tokens.
//   Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md): 44,672 tokens x 768 (128 x 512
//   padded): unpad 53 µs = 86 % of copy, repad 63 µs = 90 %.
#include "common.cuh"

namespace {


template <class T, int VEC, bool REPAD>
__device__ __forceinline__ void pad_copy(const PadParams& p) {
    const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
    const uint32_t sequences = batch->sequences < p.max_sequences ? batch->sequences : p.max_sequences;
    const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    const uint32_t W = p.width, nvec = W / VEC;
    typedef typename RawVec<VEC>::type V;  // uint4 (16 bytes) or uint16_t
    const uint64_t rows = (uint64_t)p.max_sequences * p.padded_len;
    for (uint64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const uint32_t b = (uint32_t)(r / p.padded_len), i = (uint32_t)(r - (uint64_t)b * p.padded_len);
        const bool valid = b < sequences && i < cu[b + 1] - cu[b];
        V* padded = reinterpret_cast<V*>(reinterpret_cast<T*>(p.padded) + r * W);
        if (!valid) {
            if (REPAD) {
                const V zero = {};
                for (uint32_t c = threadIdx.x; c < nvec; c += blockDim.x) padded[c] = zero;
            }
            continue;
        }
        V* packed = reinterpret_cast<V*>(reinterpret_cast<T*>(p.packed) + (uint64_t)(cu[b] + i) * W);
        for (uint32_t c = threadIdx.x; c < nvec; c += blockDim.x) {
            if (REPAD) {
                padded[c] = packed[c];
            } else {
                packed[c] = padded[c];
            }
        }
    }
}

template <class T, bool REPAD>
__device__ __forceinline__ void pad(const PadParams& p) {
    if (p.width % 8 == 0 && ((p.padded | p.packed) & 15) == 0) {
        pad_copy<T, 8, REPAD>(p);
    } else {
        pad_copy<T, 1, REPAD>(p);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_PAD_THREADS) unpad_bf16(const __grid_constant__ PadParams p) {
    pad<__nv_bfloat16, false>(p);
}
extern "C" __global__ void __launch_bounds__(MB_PAD_THREADS) unpad_f16(const __grid_constant__ PadParams p) {
    pad<__half, false>(p);
}
extern "C" __global__ void __launch_bounds__(MB_PAD_THREADS) repad_bf16(const __grid_constant__ PadParams p) {
    pad<__nv_bfloat16, true>(p);
}
extern "C" __global__ void __launch_bounds__(MB_PAD_THREADS) repad_f16(const __grid_constant__ PadParams p) {
    pad<__half, true>(p);
}
