// gemm_sm90.cu — C[M,N] = A[M,K] · B[N,K]ᵀ on Hopper (sm_90a): TMA loads into a ring of stages,
// wgmma from shared memory, a warp-specialised producer, a TMA-store epilogue. The Hopper path's
// GEMMs (src/gpu/executor.rs, layer_hopper): every row pass of a layer is inside one of them.
// Four epilogues; the last three each take a row pass's work into the GEMM:
//   gemm_sm90_<dt>:          stores the tile.
//   gemm_sm90_geglu_<dt>:    act(x) * gate at half width (Wi + GeGLU in one kernel, its weight rows
//                            interleaved in 64-row blocks by ops::geglu_weight_rows): no GeGLU pass
//                            and no full-width Wi output.
//   gemm_sm90_rope_<dt>:     Wqkv + RoPE: tiles of columns < rotated (Q and K; head_dim 64, two
//                            heads per 128-column tile) rotated in f32 before the one rounding,
//                            with rope.cuh's angles (those of rope.cu): no RoPE pass.
//   gemm_sm90_residual_<dt>: C = R + tile (Wo, Wo2 adding into the residual stream; R may be C):
//                            the producer loads R's box by TMA into the C staging tile while the
//                            main loop runs, so the add costs the epilogue no global load; the
//                            LayerNorm after it then reads x alone, not x and a delta.
// And the LayerNorm between two GEMMs ("Row statistics" below): gemm_sm90_residual with
//   p.stats_out writes each row's mean and m2 per 128-column tile it stored; the Store, GeGLU and
//   RoPE epilogues with p.stats_in combine a row's K / 128 tiles and apply rstd · (acc − mean ·
//   colsum[n]) before their own work, LayerNorm's γ folded into B at load: no LayerNorm pass.
//
// Shapes: A [M, K] row-major (activations), B [N, K] row-major (a Linear weight), C [M, N] row-major;
//   bf16 or fp16 in and out, f32 accumulation. N % 128 == 0 and K % 64 == 0 (every ModernBERT GEMM:
//   N, K in {768, 1152, 2304} for base, {1024, 2624, 3072, 5248} for large), any M ≥ 1: TMA reads
//   rows past M as zeros and the store clips them.
// Geometry (params.h, MB_GEMM90_*): 384 threads = 3 warpgroups; a persistent grid of G blocks
//   (ops::gemm_sm90_geometry: one per multiprocessor, at most one per tile) over the
//   T = (N / 128) · ceil(M / 128) output tiles of 128 x 128, numbered n fastest (consecutive blocks
//   share A's rows, which L2 then serves once a band): block b computes tiles b, b + G, b + 2G, ...,
//   its stage ring and barrier phases running on from tile to tile, so the next tile's first
//   k-blocks load while this one's last compute and only the block's first fill is exposed.
//   (G = T, a block a tile, gives the same bits: the tests compare both.)
//   Warpgroup 0, the producer: setmaxnreg.dec to 40; its thread 0, per k-block (the block's i-th,
//     stage s = i % 4), waits until both consumers released the stage (`empty[s]`), arms `full[s]`
//     with the stage's 32 KiB (arrive.expect_tx) and issues two TMA loads: B's 128 x 64 box, then
//     A's (128-byte swizzle: one 64-element K row is one 128-byte swizzle row). Under programmatic
//     dependent launch the first weight box is in flight before griddepcontrol.wait, which guards
//     the activations (A, and the residual epilogue's R). R's two boxes land in the C staging tile
//     after a tile's last k-block, once both consumers' stores of the previous tile have read it
//     (`c_free`), on `residual_full`.
//   Warpgroups 1 and 2, the consumers: setmaxnreg.inc to 232; rows 64 (w - 1) .. + 63 of the tile.
//     Per k-block: wait `full[s]`; wgmma.fence; 4 × wgmma m64n128k16 (K = 64 = 4 × 16, the
//     descriptor's start +32 bytes each); commit; wait_group 1, which retires the previous k-block's
//     group, so that block's stage is released (one arrive per consumer on `empty`); the tile's
//     last stage after wait_group 0.
//   Epilogue: accumulators (rope: Q and K rotated in registers) → 16-bit → shared (64 x 128,
//     row-major; geglu: act(x) * gate, 64 x 64; residual: added to R's values already there)
//     → fence.proxy.async (the TMA store reads through the async proxy) → named barrier of the
//     warpgroup → its thread 0 stores the box and waits until the store has read shared memory
//     (then, residual, arrives on `c_free`); the warpgroup's named barrier before its next epilogue
//     keeps its threads from writing the staging tile before that.
// Registers: ptxas gives 168 per thread (the 384-thread bound: 65,536 / 384, rounded down to 8);
//   setmaxnreg then moves them: 128 × 40 + 256 × 232 = 64,512 ≤ 65,536 per SM (one block per SM).
// Shared memory: 4 × (16 + 16) KiB stages + 32 KiB C + barriers + 1 KiB alignment = MB_GEMM90_SMEM_BYTES.
// Bytes (minimum): 2·(M·K + N·K + M·N) (geglu: M·N/2 written; residual: + M·N read; stats_out:
//   + 8·M·N/128 written; stats_in: + 8·M·K/128 read, once per row from DRAM, and 4·N); FLOPs: 2·M·N·K
//   (rope: + 8 powf and 16 sincosf per consumer thread of a rotated tile: 8 frequencies x 2 rows,
//   each angle used for both heads of the tile).
#include "common.cuh"  // activate()
#include "hopper.cuh"
#include "rope.cuh"    // rope_position, rope_inv_freq, rope_rotate

extern __shared__ __align__(16) unsigned char smem[];

namespace {

constexpr int BM = MB_GEMM90_BM, BN = MB_GEMM90_BN, BK = MB_GEMM90_BK, STAGES = MB_GEMM90_STAGES;
constexpr uint32_t A_BYTES = MB_GEMM90_A_TILE_BYTES, B_BYTES = MB_GEMM90_B_TILE_BYTES;
constexpr uint32_t SWIZZLE_ROW = BK * 2;        // bytes per swizzled row: the 128-byte swizzle span
constexpr uint32_t GROUP_STRIDE = 8 * SWIZZLE_ROW;  // SBO: 8-row groups of the 128-byte swizzle atom
static_assert(SWIZZLE_ROW == 128, "a K-block must be one 128-byte swizzle row (the tensor maps' swizzle)");

template <bool FP16>
__device__ __forceinline__ void mma_k16(float (&acc)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
    if constexpr (FP16) {
        wgmma_ss_m64n128k16_f16(acc, da, db, scale_d);
    } else {
        wgmma_ss_m64n128k16_bf16(acc, da, db, scale_d);
    }
}

// What the consumers do with their 64 x 128 accumulator tile.
enum class Epilogue {
    Store,     // C = the tile, [M, N]
    Geglu,     // C = act(tile[:, :64]) * tile[:, 64:], [M, N / 2]: B's rows ordered so that each 128-row
               // block holds 64 rows of Wi's first half and the matching 64 of its second half
    Rope,      // C = the tile, its columns < rotated rotated per head by the row's position
    Residual,  // C = R + the tile, [M, N]
};

constexpr int ROPE_D = MB_GEMM90_ROPE_HEAD_DIM;
static_assert(BN % ROPE_D == 0 && ROPE_D % 16 == 0,
              "a tile holds whole heads, and x[j], x[j + d/2] sit in n8 blocks j8, j8 + d/16 of one thread");

// The residual epilogue's R: its two 64-row boxes (one per consumer) into the C staging tile,
// which nothing touches before the epilogue, completing `bar`.
__device__ __forceinline__ void load_residual(const GemmSm90Params& p, unsigned char* c_tiles, uint64_t* bar, int n0, int m0) {
    mbar_arrive_expect_tx(bar, MB_GEMM90_C_TILE_BYTES);
    tma_load_2d(c_tiles, &p.r, n0, m0, bar);
    tma_load_2d(c_tiles + 64 * BN * 2, &p.r, n0, m0 + 64, bar);
}

// Row statistics: LayerNorm without a pass of its own. The GEMM that writes the residual stream
// (gemm_sm90_residual) records, per row and per 128-column tile it stored, the mean of the tile's
// rounded values and the sum of their squared deviations from that mean (MbRowStats); the GEMM
// that reads the stream next combines a row's K / BN tiles, in tile order, into the row's mean
// and 1 / sqrt(var + eps) (Chan et al.: tiles of equal count combine exactly). With LayerNorm's
// gamma folded into its B at load (B[n, k] = W[n, k] · gamma[k], rounded) and colsum[n] = sum_k
// B[n, k] in f32, LayerNorm(a) · Bᵀ = rstd · (a · Bᵀ − mean · colsum): its epilogue applies that
// per row, before RoPE or GeGLU. Cancellation: the subtraction loses f32 bits in proportion to
// |mean| / std, but a 16-bit residual stream already carries an error of |x| · 2⁻⁹ (bf16) per
// element, ~2¹⁴ / sqrt(K) times more than what the f32 accumulation adds (optimisation-log.md,
// "LayerNorm inside the GEMMs"), so a large mean costs the fused path no more than the pass.

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Row `row`'s mean and rstd from its `parts` tiles of MB_GEMM90_BN values, in a fixed order.
__device__ __forceinline__ float2 row_mean_rstd(const MbRowStats* stats, uint32_t row, int parts, float eps) {
    const MbRowStats* s = stats + (size_t)row * parts;
    float mean = 0.f;
    for (int i = 0; i < parts; i++) mean += s[i].mean;
    mean /= (float)parts;
    float m2 = 0.f;
    for (int i = 0; i < parts; i++) {
        const float d = s[i].mean - mean;
        m2 += s[i].m2 + (float)BN * d * d;
    }
    return make_float2(mean, rsqrtf(m2 / (float)(parts * BN) + eps));
}

// acc = rstd · (acc − mean · colsum) for this thread's rows (the fragment of the epilogue below).
__device__ __forceinline__ void normalize_rows(const GemmSm90Params& p, float (&acc)[BN / 2], uint32_t row0, uint32_t row1, int n0, int t) {
    // The statistics are the previous kernel's output; as in the RoPE epilogue, this wait keeps
    // the reads from depending on the producer's having waited first.
    pdl_wait();
    const MbRowStats* stats = reinterpret_cast<const MbRowStats*>(p.stats_in);
    const int parts = p.k / BN;
    // Rows past M (a partial tile; the store clips them) stay as they are.
    const float2 s0 = row0 < p.m ? row_mean_rstd(stats, row0, parts, p.eps) : make_float2(0.f, 1.f);
    const float2 s1 = row1 < p.m ? row_mean_rstd(stats, row1, parts, p.eps) : make_float2(0.f, 1.f);
    const float* colsum = reinterpret_cast<const float*>(p.colsum) + n0;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const float cs = colsum[8 * j + 2 * t + e];
            acc[4 * j + e] = fmaf(-s0.x, cs, acc[4 * j + e]) * s0.y;
            acc[4 * j + 2 + e] = fmaf(-s1.x, cs, acc[4 * j + 2 + e]) * s1.y;
        }
    }
}

// The residual epilogue's statistics of the tile it stored (this thread's values of rows r0, r1
// are in `c_tile`, written by this thread): two passes over the rounded values, a quad's four
// threads holding a row's 128 columns.
template <typename T>
__device__ __forceinline__ void write_row_stats(const GemmSm90Params& p, const unsigned char* c_tile, int r0, int r1, uint32_t row0, uint32_t row1, int t, int tile) {
    auto stored = [&](int r, int j, int e) {
        return to_f32<T>(reinterpret_cast<const T*>(c_tile + (r * BN + 8 * j + 2 * t) * 2)[e]);
    };
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            sum0 += stored(r0, j, e);
            sum1 += stored(r1, j, e);
        }
    }
    const float mean0 = quad_sum(sum0) / (float)BN, mean1 = quad_sum(sum1) / (float)BN;
    float m20 = 0.f, m21 = 0.f;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const float d0 = stored(r0, j, e) - mean0, d1 = stored(r1, j, e) - mean1;
            m20 = fmaf(d0, d0, m20);
            m21 = fmaf(d1, d1, m21);
        }
    }
    m20 = quad_sum(m20);
    m21 = quad_sum(m21);
    if (t == 0) {
        MbRowStats* stats = reinterpret_cast<MbRowStats*>(p.stats_out);
        const int parts = p.n / BN;
        if (row0 < p.m) stats[(size_t)row0 * parts + tile] = MbRowStats{mean0, m20};
        if (row1 < p.m) stats[(size_t)row1 * parts + tile] = MbRowStats{mean1, m21};
    }
}

// What the consumers do with their accumulators of one output tile (n_tile, the rows from m0):
// the epilogue, the tile staged in `c_tiles` (this consumer's half) and stored by TMA. `tile_iter`
// counts the block's tiles (the residual's barrier phases).
template <bool FP16, Epilogue EPI>
__device__ __forceinline__ void epilogue(const GemmSm90Params& p, float (&acc)[BN / 2], unsigned char* c_tiles,
                                         uint64_t* residual_full, uint64_t* c_free, int consumer, int lane_in_wg,
                                         int n_tile, int m0, uint32_t tile_iter) {
    // Epilogue: the m64n128 accumulator fragment (hopper.cuh) → row-major 16-bit tile. Thread
    // (w, g, t) holds, per n8 block j, columns 8j + 2t, 8j + 2t + 1 of rows 16w + g and 16w + g + 8.
    unsigned char* c_tile = c_tiles + consumer * (64 * BN * 2);
    const int n0 = n_tile * BN;
    const int w = lane_in_wg / 32, g = (lane_in_wg % 32) / 4, t = lane_in_wg % 4;
    const int r0 = 16 * w + g, r1 = r0 + 8;
    const uint32_t row0 = m0 + consumer * 64 + r0, row1 = row0 + 8;  // rows of A and C
    if constexpr (EPI != Epilogue::Residual) {
        if (p.stats_in != 0) normalize_rows(p, acc, row0, row1, n0, t);
    }
    if constexpr (EPI == Epilogue::Rope) {
        if (n0 < (int)p.rotated) {
            // The rows' positions. The producer's griddepcontrol.wait preceded every full[] this
            // thread waited on; this one keeps the reads below from depending on that order.
            pdl_wait();
            const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
            const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
            const uint32_t tokens = batch->tokens, sequences = batch->sequences;
            // Rows past the batch (padding up to M) are left at position 0: unrotated.
            auto position = [&](uint32_t row) { return row < tokens ? (float)rope_position(cu, sequences, row) : 0.f; };
            const float pos0 = position(row0);
            const float pos1 = position(row1);
            // This thread's columns of a head's first half are 8j + 2t + e, j < HALF_BLOCKS; each
            // angle rotates that column's pair (n8 blocks j, j + HALF_BLOCKS) in both heads.
            constexpr int HALF_BLOCKS = ROPE_D / 16, HEAD_BLOCKS = ROPE_D / 8;
#pragma unroll
            for (int j = 0; j < HALF_BLOCKS; j++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float f = rope_inv_freq(p.theta, 8 * j + 2 * t + e, ROPE_D);
                    float s0, c0, s1, c1;
                    sincosf(pos0 * f, &s0, &c0);
                    sincosf(pos1 * f, &s1, &c1);
#pragma unroll
                    for (int head = 0; head < BN / ROPE_D; head++) {
                        const int lo = head * HEAD_BLOCKS + j, hi = lo + HALF_BLOCKS;
                        rope_rotate(acc[4 * lo + e], acc[4 * hi + e], c0, s0);
                        rope_rotate(acc[4 * lo + 2 + e], acc[4 * hi + 2 + e], c1, s1);
                    }
                }
            }
        }
    }
    if constexpr (EPI == Epilogue::Residual) {
        // R's boxes were issued with the tile's last k-block; add in f32, one rounding.
        mbar_wait(residual_full, tile_iter & 1);
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            const int col = 8 * j + 2 * t;
            using T = typename Elem<FP16>::T;
            unsigned char* lo = c_tile + (r0 * BN + col) * 2;
            unsigned char* hi = c_tile + (r1 * BN + col) * 2;
            const T* x0 = reinterpret_cast<const T*>(lo);
            const T* x1 = reinterpret_cast<const T*>(hi);
            const uint32_t sum0 = pack16x2<FP16>(to_f32<T>(x0[0]) + acc[4 * j], to_f32<T>(x0[1]) + acc[4 * j + 1]);
            const uint32_t sum1 = pack16x2<FP16>(to_f32<T>(x1[0]) + acc[4 * j + 2], to_f32<T>(x1[1]) + acc[4 * j + 3]);
            *reinterpret_cast<uint32_t*>(lo) = sum0;
            *reinterpret_cast<uint32_t*>(hi) = sum1;
        }
        if (p.stats_out != 0) write_row_stats<typename Elem<FP16>::T>(p, c_tile, r0, r1, row0, row1, t, n_tile);
    } else if constexpr (EPI != Epilogue::Geglu) {
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            const int col = 8 * j + 2 * t;
            *reinterpret_cast<uint32_t*>(c_tile + (r0 * BN + col) * 2) = pack16x2<FP16>(acc[4 * j], acc[4 * j + 1]);
            *reinterpret_cast<uint32_t*>(c_tile + (r1 * BN + col) * 2) = pack16x2<FP16>(acc[4 * j + 2], acc[4 * j + 3]);
        }
    } else {
        // Column c of the activated half and column c of the gate sit in n8 blocks j and j + 8 of
        // the same thread: act(x) * gate in f32, one rounding, a 64 x 64 tile.
        constexpr int HALF = BN / 2;
#pragma unroll
        for (int j = 0; j < HALF / 8; j++) {
            const int col = 8 * j + 2 * t;
            const float* x = &acc[4 * j];
            const float* gate = &acc[4 * (j + HALF / 8)];
            const uint32_t lo = pack16x2<FP16>(activate(x[0], p.act) * gate[0], activate(x[1], p.act) * gate[1]);
            const uint32_t hi = pack16x2<FP16>(activate(x[2], p.act) * gate[2], activate(x[3], p.act) * gate[3]);
            *reinterpret_cast<uint32_t*>(c_tile + (r0 * HALF + col) * 2) = lo;
            *reinterpret_cast<uint32_t*>(c_tile + (r1 * HALF + col) * 2) = hi;
        }
    }
    fence_proxy_async();
    named_bar_sync(1 + consumer, 128);
    if (lane_in_wg == 0) {
        const int c0 = EPI == Epilogue::Geglu ? n0 / 2 : n0;
        tma_store_2d(&p.c, c0, m0 + consumer * 64, c_tile);
        bulk_commit();
        bulk_wait_read<0>();  // c_tile read: this consumer may write it again (next tile)
        if (EPI == Epilogue::Residual) mbar_arrive(c_free);  // and the producer load R into it
    }
}

template <bool FP16, Epilogue EPI>
__device__ __forceinline__ void gemm_sm90(const GemmSm90Params& p) {
    // Tiles start on a 1024-byte boundary: the 128-byte swizzle repeats every 8 rows of 128 bytes.
    unsigned char* base = smem + ((1024u - (smem_addr(smem) & 1023u)) & 1023u);
    unsigned char* a_tiles = base;
    unsigned char* b_tiles = base + STAGES * A_BYTES;
    unsigned char* c_tiles = b_tiles + STAGES * B_BYTES;
    uint64_t* full = reinterpret_cast<uint64_t*>(c_tiles + MB_GEMM90_C_TILE_BYTES);
    uint64_t* empty = full + STAGES;
    uint64_t* residual_full = empty + STAGES;  // Residual: R's two 64-row boxes are in c_tiles
    uint64_t* c_free = residual_full + 1;      // Residual: both consumers' stores have read c_tiles

    const int warpgroup = threadIdx.x / 128, lane_in_wg = threadIdx.x % 128;
    const int kblocks = p.k / BK;
    // Persistent: block b computes output tiles b, b + gridDim.x, ... (tile = m_tile · n_tiles +
    // n_tile: consecutive blocks share A's rows, read from L2 once a band).
    const int n_tiles = p.n / BN, tiles = n_tiles * (int)((p.m + BM - 1) / BM);

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], MB_GEMM90_CONSUMERS);
        }
        mbar_init(residual_full, 1);
        mbar_init(c_free, MB_GEMM90_CONSUMERS);
        mbar_init_fence();  // the initialised barriers visible to the TMA unit
    }
    __syncthreads();

    if (warpgroup == 0) {
        setmaxnreg_dec<MB_GEMM90_PRODUCER_REGS>();
        if (lane_in_wg == 0) {
            uint32_t it = 0, tile_iter = 0;  // k-blocks and tiles loaded so far, over all tiles
            for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, tile_iter++) {
                const int n0 = (tile % n_tiles) * BN, m0 = (tile / n_tiles) * BM;
                for (int kb = 0; kb < kblocks; kb++, it++) {
                    const int s = it % STAGES;
                    if (it >= STAGES) mbar_wait(&empty[s], ((it / STAGES) - 1) & 1);
                    mbar_arrive_expect_tx(&full[s], A_BYTES + B_BYTES);
                    tma_load_2d(b_tiles + s * B_BYTES, &p.b, kb * BK, n0, &full[s]);
                    if (it == 0) pdl_wait();  // A and R are the previous kernels' outputs
                    tma_load_2d(a_tiles + s * A_BYTES, &p.a, kb * BK, m0, &full[s]);
                }
                // R into c_tiles once the previous tile's stores have read them (issued after the
                // tile's k-blocks, so waiting for them never holds up the next tile's loads).
                if (EPI == Epilogue::Residual) {
                    if (tile_iter > 0) mbar_wait(c_free, (tile_iter - 1) & 1);
                    load_residual(p, c_tiles, residual_full, n0, m0);
                }
            }
        }
        return;
    }

    setmaxnreg_inc<MB_GEMM90_CONSUMER_REGS>();
    const int consumer = warpgroup - 1;
    uint32_t it = 0, tile_iter = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, tile_iter++) {
        float acc[BN / 2];
#pragma unroll
        for (int i = 0; i < BN / 2; i++) acc[i] = 0.f;
        for (int kb = 0; kb < kblocks; kb++, it++) {
            const int s = it % STAGES;
            mbar_wait(&full[s], (it / STAGES) & 1);
            const uint32_t a_rows = smem_addr(a_tiles + s * A_BYTES) + consumer * 64 * SWIZZLE_ROW;
            const uint32_t b_rows = smem_addr(b_tiles + s * B_BYTES);
            wgmma_fence();
            wgmma_fence_operands(acc);
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                const uint64_t da = wgmma_desc(a_rows + kk * 32, 16, GROUP_STRIDE, SWIZZLE_ROW);
                const uint64_t db = wgmma_desc(b_rows + kk * 32, 16, GROUP_STRIDE, SWIZZLE_ROW);
                mma_k16<FP16>(acc, da, db, (kb | kk) != 0);
            }
            wgmma_commit();
            wgmma_fence_operands(acc);
            wgmma_wait<1>();  // the previous k-block's MMAs are done: its stage may be refilled
            if (kb > 0 && lane_in_wg == 0) mbar_arrive(&empty[(it - 1) % STAGES]);
        }
        wgmma_wait<0>();
        wgmma_fence_operands(acc);
        if (lane_in_wg == 0) mbar_arrive(&empty[(it - 1) % STAGES]);  // the tile's last stage
        if (tile + (int)gridDim.x >= tiles) pdl_launch_dependents();  // this block's last tile
        // Every thread of this consumer past the previous tile's store (its thread 0 waited for
        // the store's reads of c_tile) before any writes c_tile again.
        named_bar_sync(1 + consumer, 128);
        epilogue<FP16, EPI>(p, acc, c_tiles, residual_full, c_free, consumer, lane_in_wg, tile % n_tiles,
                            (tile / n_tiles) * BM, tile_iter);
    }
}

}  // namespace

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_bf16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<false, Epilogue::Store>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_f16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<true, Epilogue::Store>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_geglu_bf16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<false, Epilogue::Geglu>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_geglu_f16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<true, Epilogue::Geglu>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_rope_bf16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<false, Epilogue::Rope>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_rope_f16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<true, Epilogue::Rope>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_residual_bf16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<false, Epilogue::Residual>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_GEMM90_THREADS, 1) gemm_sm90_residual_f16(const __grid_constant__ GemmSm90Params p) {
    gemm_sm90<true, Epilogue::Residual>(p);
}
