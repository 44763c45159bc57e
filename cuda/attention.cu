/*
 * attention.cu — varlen bidirectional multi-head attention, head_dim 64, FlashAttention-2 style.
 *
 * Shapes and layout (packed varlen, see params.h / src/reference/ops.rs `attention`):
 *   qkv  T [tokens, 3, heads, 64]   (Q, K, V; head-major inside each; RoPE already applied)
 *   out  T [tokens, heads * 64]     (heads merged, head-major)
 *   sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]; all of its tokens are queries, only the first
 *   n_keys(b) = min(key_lens[b], len) are keys (p.key_lens == 0, no array: every token is a key).
 *   Global layer (window_radius < 0): query i sees keys 0 .. n_keys-1.
 *   Local layer (window_radius = r >= 0): query i sees keys j < n_keys with |i - j| <= r (inclusive,
 *   ModernBERT: r = 64, at most 129 keys). A query with no visible key outputs 0 (as the reference).
 *   T = bf16 (attention_bf16) or fp16 (attention_f16); fp32 scores, statistics and accumulators.
 *
 * Algorithm (FlashAttention-2 forward, no materialised score matrix):
 *   one block = 64 query rows x one head x one sequence; 4 warps, each owns 16 query rows.
 *   Q tile -> shared (cp.async) -> registers (ldmatrix.x4, 16 regs/thread, kept for the whole loop).
 *   For each 64-key K/V tile of the block's key range (double-buffered in shared memory with cp.async:
 *   the load of tile t+1 is issued before tile t is computed):
 *     S = Q K^T        mma.m16n8k16 (A = Q fragments, B = K via ldmatrix.x4 non-trans), fp32;
 *     mask             only on tiles that are not wholly visible to the warp's 16 rows: keys >= n_keys
 *                      or outside |i-j| <= r get -inf;
 *     online softmax   row max over the quad (shfl_xor 1, 2), p = exp2(s * scale*log2e - m*scale*log2e),
 *                      rescale of l and O by exp2(m_old - m_new); a row whose keys so far are all masked
 *                      keeps m = -inf and uses 0 as its shift, so it never produces NaN (p = 0, alpha = 0);
 *     O += P V         P packed to bf16/fp16 in registers (the C fragment of S is the A fragment of PV),
 *                      V via ldmatrix.x4.trans.
 *   Finally O /= l (l == 0 -> 0), staged through shared memory, written with 16-byte stores.
 *   Skipping: the block visits only the key range [max(0, q0 - r), min(n_keys, q_last + r + 1)) in tiles
 *   of 64 keys starting at its lower end (tiles wholly outside the window are never loaded); inside a tile
 *   each warp skips (not masks) every 16-key chunk outside its own rows' window, so a local layer does
 *   16 + 2r = 144 keys of MMA work per query row for r = 64 (1.12x the 129-key ideal) while a block loads
 *   192 keys of K/V for its 64 rows.
 *
 * Launch geometry (CUDA-graph friendly: capacities size the grid, the real counts come from BatchDesc):
 *   grid  = (ceil(max_seqlen / 64), heads, max_sequences), block = 128 threads, no dynamic shared memory.
 *   Blocks past BatchDesc.sequences or past their sequence's length exit at once. A sequence longer than
 *   max_seqlen is the host's error (its tail rows would not be computed).
 *   head_dim must be 64: the host launcher rejects anything else with an error; the kernel itself
 *   returns without writing if p.head_dim != 64.
 *   Programmatic dependent launch (sm_90+, the Hopper path's small batches): the kernel may be
 *   launched as the dependent of the GEMM that writes qkv (griddepcontrol.wait before its first
 *   read of qkv) and triggers its own dependent (the Wo GEMM) at once; below sm_90 both are empty
 *   and the launcher refuses a dependent launch.
 * Shared memory: 40 KiB static = Q 8 KiB + 2 x (K 8 KiB + V 8 KiB); rows of 128 bytes with the 16-byte
 *   chunk index XOR-swizzled by (row & 7), so cp.async writes and ldmatrix reads are bank-conflict free.
 *   Rows past the sequence / key range are zero-filled (never read from global memory).
 * Registers: O 32 + S/P 32 + Q 16 fp32/b32 per thread. __launch_bounds__(MB_ATTENTION_THREADS, 3): at most 170 registers,
 *   3 blocks (12 warps, 120 KiB smem) per SM; ptxas (nvcc 13.0): 146-148 registers, 0 spills on sm_80..90.
 *   (With plain __launch_bounds__(128) ptxas chose 128 registers + 8 bytes of spills on sm_80.)
 *
 * Work per sequence of length L, per head (global): FLOPs = 4 * L * n_keys * 64 (QK^T and PV, 2 FLOP per
 *   MAC); bytes = L*64*2 (Q) + ceil(L/64) * n_keys * 64*2*2 (K, V re-read per query block, mostly from
 *   L2) + L*64*2 (O). L = 8192: 17.2 GFLOP per head, arithmetic intensity far above the ridge point:
 *   compute bound. Local (r = 64): FLOPs = 4 * L * 144 * 64 issued (4 * L * 129 * 64 useful), K/V bytes
 *   3 * L * 64 * 2 * 2 (3 tiles per query block): latency/bandwidth bound.
 * Targets (issue 3): global L = 8192 >= 50% of the card's measured dense bf16 tensor rate; a local layer
 *   within 1.3x of the time 129 keys per query would take at that rate.
 *   Estimate before measuring: mma.sync FA2-style kernels reach roughly a third of the H100 SXM dense
 *   bf16 peak at head_dim 64 (published FlashAttention-2 forward figures), and this simpler one
 *   (64-row blocks, one-group cp.async double buffering) probably 200-300 TFLOP/s.
 * Measured (H100 80GB HBM3, 2026-11-25, `microbench`, L2 flushed; profiles/results.md), useful FLOPs:
 *   global 8 x 8192, 12 heads: 8.86 ms = 186 TFLOP/s = 20% of the 934 TFLOP/s cuBLASLt GEMM rate of
 *   the same run (target 50%: MISSED); global 128 x 512: 168 TFLOP/s; local r = 64: 80 TFLOP/s of
 *   129-key work, i.e. 2.1-2.3x the time of the 129-key ideal at the global kernel's own rate (target
 *   1.3x: MISSED). ncu: 147 registers, 3 blocks = 12 warps per SM (18% achieved occupancy), tensor
 *   pipe 21-26% active. Below the estimate; the likely next steps are 128-query blocks with 8 warps
 *   and an sm_90a wgmma/TMA path.
 */
#include "attention_block.cuh"  // attention_detail::attention_block: one 64-query block

namespace {

struct BlockSync {
    __device__ __forceinline__ void operator()() const { __syncthreads(); }
};

// A programmatic dependent launch of this kernel (the small-batch path) overlaps the GEMM that
// writes qkv; the next launch (Wo) may become resident at once: its own wait holds its reads.
template <typename T>
__device__ __forceinline__ void attention_kernel(const AttentionParams& p) {
    __shared__ __align__(128) unsigned char attn_smem[MB_ATTENTION_SMEM_BYTES];
    pdl_launch_dependents();
    attention_detail::attention_block<T, true>(p, blockIdx.z, blockIdx.y, blockIdx.x, attn_smem, threadIdx.x, BlockSync{});
}

}  // namespace

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_ATTENTION_THREADS, 3) attention_bf16(const __grid_constant__ AttentionParams p) {
    attention_kernel<__nv_bfloat16>(p);
}

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_ATTENTION_THREADS, 3) attention_f16(const __grid_constant__ AttentionParams p) {
    attention_kernel<__half>(p);
}
