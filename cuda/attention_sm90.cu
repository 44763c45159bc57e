// attention_sm90.cu — varlen bidirectional attention, head_dim 64, on Hopper (sm_90a), FlashAttention-3
// style: TMA loads by a producer warpgroup, wgmma by two consumer warpgroups, the softmax of one key
// tile overlapping the P·V of the one before.
//
// The contract is attention.cu's (same AttentionParams, same results up to rounding order):
//   qkv  T [tokens, 3, heads, 64]   (RoPE already applied), read through p.qkv, a tensor map over it
//                                   as a [rows, 3 · heads · 64] matrix (box 64 x 64, 128-byte swizzle)
//   out  T [tokens, heads * 64]
//   sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]; its first n_keys = min(key_lens[b], len)
//   tokens are keys; global (window_radius < 0) or |i - j| <= r; a query with no visible key gives 0.
//
// Geometry (params.h, MB_ATT90_*): grid (ceil(max_seqlen / 128), heads, max_sequences), 384 threads.
//   Block = 128 query rows of one (sequence, head); key tiles of BN = 128 keys (global) or 64
//   (window: a block's 128 rows need 128 + 2r keys, so 64-key tiles waste less outside the window).
//   The block visits the key range [klo, khi) of its rows in tiles from klo (global: [0, n_keys)).
//   Warpgroup 0, the producer (setmaxnreg 40): thread 0 loads Q (two 64-row boxes, one per
//     consumer) on `q_full`, then per tile t (stage s = t % 2): waits `k_empty[s]`, loads K's BN
//     rows on `k_full[s]`; waits `v_empty[s]`, loads V's on `v_full[s]`. The last tile of a block
//     may run past the keys (rows of the next sequence, or past the batch: stale or poisoned rows
//     whose NaN would survive P = 0 in P·V): it is loaded on `v_zero`, waited for by the whole
//     producer warp, its rows from khi on zeroed by generic stores, fenced to the async proxy, and
//     only then is `v_full[s]` arrived on. K's rows there need nothing: their scores are masked
//     to -inf by assignment.
//   Warpgroups 1 and 2, the consumers (setmaxnreg 232): rows q0 + 64c .. + 63. Per tile t:
//     wait k_full; S_t = Q K_tᵀ (4 × wgmma m64nBNk16, both from shared memory); then, in the same
//     fence window, O += P_{t-1} V_{t-1} (BN/16 × wgmma m64n64k16, P from registers, V MN-major:
//     imm-trans-b); wait_group 1 retires S_t (release K), mask, online softmax of S_t in f32 while
//     P_{t-1} V_{t-1} runs; wait_group 0 (release V_{t-1}); O *= alpha; P_t packed to 16 bits
//     (the S accumulator fragment is the A fragment of the k16 steps: no shuffle). A tile outside
//     a consumer's rows' window is waited for and released, never computed (the two consumers of a
//     local block need 3 of its 4 tiles each). After the last tile: O += P V, O / l, staged through
//     the consumer's Q rows in shared memory, 16-byte stores of the rows inside the sequence.
//     The two consumers take turns to issue (ping-pong, named barriers): consumer 0's round of
//     wgmmas, then consumer 1's, so one's softmax runs under the other's MMAs; a block whose
//     consumers compute different numbers of tiles (its edges) issues without turns.
//   Barrier phases: every consumer waits on every full barrier in order, so no wait is ever two
//   phases ahead of its barrier (a parity wait cannot tell phase p + 2 from p).
// Softmax (as attention.cu): base 2 with scale · log2(e) folded in, row max and sum over a quad;
//   a row with every key so far masked keeps m = -inf and shifts by 0 (p = 0, never NaN).
// Registers: consumer S BN/2 + O 32 + P BN/8 (u32) f32; ptxas must fit the 384-thread bound
//   (168) with 0 spills; setmaxnreg then gives 128 × 40 + 256 × 232 = 64,512 ≤ 65,536.
// Shared memory: Q 16 KiB + 2 stages × (K + V) × BN · 128 B + barriers + alignment
//   = MB_ATT90_SMEM_BYTES(BN): 83,200 B (BN 128), 50,432 B (BN 64); one block per SM (registers).
// Work per sequence of length L and head (global): 4 · L · n_keys · 64 FLOPs (QKᵀ and PV); bytes:
//   Q and O once (L · 128 B each), K and V once per 128-row block (mostly from L2). Local (r = 64):
//   each consumer computes 3 tiles of 64 keys = 192 keys a row for 129 useful (1.49×).
// Measured: not yet (no Hopper GPU has run it); the cost model's assumption and the prediction
//   are in profiles/optimisation-log.md.
#include "common.cuh"
#include "hopper.cuh"
#include "softmax.cuh"  // online_softmax_rows

extern __shared__ __align__(16) unsigned char smem[];

namespace {

constexpr int D = MB_ATT90_HEAD_DIM, BM = MB_ATT90_BM, STAGES = MB_ATT90_STAGES, BOX = MB_ATT90_BOX_ROWS;
constexpr uint32_t ROW_BYTES = D * 2;             // one 128-byte swizzle row per token
constexpr uint32_t GROUP_BYTES = 8 * ROW_BYTES;   // 8-row groups of the swizzle atom (SBO)
constexpr uint32_t Q_BYTES = 64 * ROW_BYTES;      // one consumer's Q rows
constexpr int TURN = 3;  // named barriers TURN + c: consumer c's turn to issue (1, 2: the output staging)
static_assert(ROW_BYTES == 128, "a head's row must be one 128-byte swizzle row (the tensor map's swizzle)");
static_assert(BM == 128 && MB_ATT90_CONSUMERS == 2, "two consumer warpgroups of 64 rows");

// S (+)= Q Kᵀ over one k16 slice of the head dimension.
template <bool FP16, int BN>
__device__ __forceinline__ void mma_qk(float (&s)[BN / 2], uint64_t dq, uint64_t dk, int scale_d) {
    if constexpr (FP16 && BN == 128) wgmma_ss_m64n128k16_f16(s, dq, dk, scale_d);
    if constexpr (!FP16 && BN == 128) wgmma_ss_m64n128k16_bf16(s, dq, dk, scale_d);
    if constexpr (FP16 && BN == 64) wgmma_ss_m64n64k16_f16(s, dq, dk, scale_d);
    if constexpr (!FP16 && BN == 64) wgmma_ss_m64n64k16_bf16(s, dq, dk, scale_d);
}

// O += P V over one k16 slice of the keys: P from registers, V [keys, 64] MN-major.
template <bool FP16>
__device__ __forceinline__ void mma_pv(float (&o)[D / 2], const uint32_t (&p)[4], uint64_t dv) {
    if constexpr (FP16) {
        wgmma_rs_m64n64k16_f16_transb(o, p, dv, 1);
    } else {
        wgmma_rs_m64n64k16_bf16_transb(o, p, dv, 1);
    }
}

struct Barriers {
    uint64_t q_full, v_zero;
    uint64_t k_full[STAGES], k_empty[STAGES], v_full[STAGES], v_empty[STAGES];
};
static_assert(sizeof(Barriers) <= 256, "the barriers fit the 256 bytes MB_ATT90_SMEM_BYTES gives them");

template <bool FP16, int BN>
__device__ __forceinline__ void attention_sm90(const AttentionSm90Params& prm) {
    constexpr int NB = BN / 8;  // n8 blocks of S
    constexpr uint32_t TILE_BYTES = BN * ROW_BYTES;
    const AttentionParams& p = prm.attn;
    const BatchDesc* const desc = reinterpret_cast<const BatchDesc*>(p.batch);
    const int b = blockIdx.z, h = blockIdx.y, heads = (int)p.heads;
    // Block-uniform exits, before any barrier: past the batch, or past this sequence's rows.
    if (p.head_dim != D || b >= (int)p.max_sequences || b >= (int)desc->sequences || h >= heads) return;
    const uint32_t* const cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    const int start = (int)cu[b], len = (int)cu[b + 1] - start;
    const int q0 = blockIdx.x * BM;
    if (q0 >= len) return;
    int n_keys = len;
    if (p.key_lens != 0) n_keys = min((int)reinterpret_cast<const uint32_t*>(p.key_lens)[b], len);
    const bool local = p.window_radius >= 0 && p.window_radius < len;  // r >= len is global
    const int r = local ? p.window_radius : 0;
    const int q_end = min(q0 + BM, len);
    const int klo = local ? max(0, q0 - r) : 0;
    const int khi = local ? min(n_keys, q_end + r) : n_keys;
    const int n_tiles = khi > klo ? (khi - klo + BN - 1) / BN : 0;

    // Tiles start on a 1024-byte boundary: the 128-byte swizzle repeats every 8 rows.
    unsigned char* const base = smem + ((1024u - (smem_addr(smem) & 1023u)) & 1023u);
    unsigned char* const q_tiles = base;
    unsigned char* const k_tiles = q_tiles + BM * ROW_BYTES;
    unsigned char* const v_tiles = k_tiles + STAGES * TILE_BYTES;
    Barriers* const bar = reinterpret_cast<Barriers*>(v_tiles + STAGES * TILE_BYTES);

    if (threadIdx.x == 0) {
        mbar_init(&bar->q_full, 1);
        mbar_init(&bar->v_zero, 1);
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&bar->k_full[s], 1);
            mbar_init(&bar->v_full[s], 1);
            mbar_init(&bar->k_empty[s], MB_ATT90_CONSUMERS);
            mbar_init(&bar->v_empty[s], MB_ATT90_CONSUMERS);
        }
        mbar_init_fence();  // the initialised barriers visible to the TMA unit
    }
    __syncthreads();

    const int warpgroup = threadIdx.x / 128, lane_in_wg = threadIdx.x % 128;
    const int q_col = h * D, k_col = (heads + h) * D, v_col = (2 * heads + h) * D;  // columns of qkv's row

    if (warpgroup == 0) {
        setmaxnreg_dec<MB_ATT90_PRODUCER_REGS>();
        if (lane_in_wg >= 32 || n_tiles == 0) return;  // one warp produces
        const int lane = lane_in_wg;
        if (lane == 0) {
            mbar_arrive_expect_tx(&bar->q_full, BM * ROW_BYTES);
            for (int c = 0; c < MB_ATT90_CONSUMERS; c++)
                tma_load_2d(q_tiles + c * Q_BYTES, &prm.qkv, q_col, start + q0 + 64 * c, &bar->q_full);
        }
        for (int t = 0; t < n_tiles; t++) {
            const int s = t % STAGES;
            const uint32_t refill = ((t / STAGES) - 1) & 1;  // the phase of the stage's previous use
            const int row = start + klo + t * BN;
            unsigned char* const k_dst = k_tiles + s * TILE_BYTES;
            unsigned char* const v_dst = v_tiles + s * TILE_BYTES;
            if (lane == 0) {
                if (t >= STAGES) mbar_wait(&bar->k_empty[s], refill);
                mbar_arrive_expect_tx(&bar->k_full[s], TILE_BYTES);
                for (int i = 0; i < BN / BOX; i++)
                    tma_load_2d(k_dst + i * BOX * ROW_BYTES, &prm.qkv, k_col, row + i * BOX, &bar->k_full[s]);
                if (t >= STAGES) mbar_wait(&bar->v_empty[s], refill);
            }
            const int valid = khi - (klo + t * BN);  // V rows of this tile that are keys
            if (valid >= BN) {
                if (lane == 0) {
                    mbar_arrive_expect_tx(&bar->v_full[s], TILE_BYTES);
                    for (int i = 0; i < BN / BOX; i++)
                        tma_load_2d(v_dst + i * BOX * ROW_BYTES, &prm.qkv, v_col, row + i * BOX, &bar->v_full[s]);
                }
            } else {
                // Only the last tile is partial, so v_zero's one phase is 0.
                __syncwarp();  // lane 0 has waited for v_empty: the stage is free
                if (lane == 0) {
                    mbar_arrive_expect_tx(&bar->v_zero, TILE_BYTES);
                    for (int i = 0; i < BN / BOX; i++)
                        tma_load_2d(v_dst + i * BOX * ROW_BYTES, &prm.qkv, v_col, row + i * BOX, &bar->v_zero);
                }
                mbar_wait(&bar->v_zero, 0);
                for (int i = valid * (int)(ROW_BYTES / 16) + lane; i < BN * (int)(ROW_BYTES / 16); i += 32)
                    reinterpret_cast<uint4*>(v_dst)[i] = make_uint4(0u, 0u, 0u, 0u);
                fence_proxy_async();  // the zeros visible to the wgmma that reads V
                __syncwarp();
                if (lane == 0) mbar_arrive(&bar->v_full[s]);
            }
        }
        return;
    }

    setmaxnreg_inc<MB_ATT90_CONSUMER_REGS>();
    const int c = warpgroup - 1;
    const int w = lane_in_wg / 32, g = (lane_in_wg % 32) / 4, t4 = lane_in_wg % 4;
    // Consumer cc's rows (relative to the sequence) see keys [lo, hi), so it computes the tiles
    // [first, last], an interval (the others it waits for and releases); none: first > last.
    auto tiles_of = [&](int cc, int& first, int& last) {
        const int row0 = q0 + 64 * cc, row_last = min(row0 + 63, len - 1);
        int lo = klo, hi = khi;
        if (local) {
            lo = max(0, row0 - r);
            hi = min(n_keys, row_last + r + 1);
        }
        if (row0 >= len) hi = lo;  // no row of the sequence
        first = hi > lo ? (lo - klo) / BN : n_tiles;
        last = hi > lo ? (hi - 1 - klo) / BN : n_tiles - 1;
    };
    int t_first, t_last, other_first, other_last;
    tiles_of(c, t_first, t_last);
    tiles_of(1 - c, other_first, other_last);
    const int w0 = q0 + 64 * c, w_last = min(w0 + 63, len - 1);
    const int i0 = w0 + 16 * w + g, i1 = i0 + 8;  // the two rows this thread holds
    // Ping-pong: the consumers take turns to issue their wgmmas (named barriers TURN + c), so one's
    // softmax runs while the other's MMAs do (FlashAttention-3's inter-warpgroup overlap). A turn
    // is a round of issues — the first S, each S_t with P_{t-1} V_{t-1}, the last P·V — and both
    // must take as many; where their tile counts differ (a block's edge), each issues freely.
    const int rounds = t_last - t_first + 2;
    const bool pingpong = t_first <= t_last && rounds == other_last - other_first + 2;
    auto my_turn = [&]() {
        if (pingpong) named_bar_sync(TURN + c, 256);
    };
    int round = 0;
    auto your_turn = [&]() {  // consumer 1's last turn has no successor to hand over to
        if (pingpong && !(c == 1 && ++round == rounds)) named_bar_arrive(TURN + 1 - c, 256);
    };

    const float kNegInf = -INFINITY;
    const float sl2 = p.softmax_scale * 1.4426950408889634f;  // scale · log2(e)
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
    float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
    float sacc[BN / 2];  // S of the current tile, then its P in f32
#pragma unroll
    for (int i = 0; i < BN / 2; i++) sacc[i] = 0.f;  // defined before the first wgmma reads them
    uint32_t pf[BN / 16][4];  // P of the last computed tile as k16 A fragments, for its P·V

    const uint32_t q_rows = smem_addr(q_tiles + c * Q_BYTES);
    auto stage = [](int t) { return t % STAGES; };
    auto phase = [](int t) { return (uint32_t)(t / STAGES) & 1; };
    // A tile this consumer does not compute: waited for (no barrier wait may run two phases ahead
    // of its barrier) and released.
    auto pass = [&](int t) {
        mbar_wait(&bar->k_full[stage(t)], phase(t));
        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t)]);
        mbar_wait(&bar->v_full[stage(t)], phase(t));
        if (lane_in_wg == 0) mbar_arrive(&bar->v_empty[stage(t)]);
    };
    auto issue_s = [&](int t) {
        const uint32_t k_rows = smem_addr(k_tiles + stage(t) * TILE_BYTES);
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint64_t dq = wgmma_desc(q_rows + kk * 32, 16, GROUP_BYTES, ROW_BYTES);
            const uint64_t dk = wgmma_desc(k_rows + kk * 32, 16, GROUP_BYTES, ROW_BYTES);
            mma_qk<FP16, BN>(sacc, dq, dk, kk != 0);
        }
        wgmma_commit();
    };
    auto issue_pv = [&](int t) {
        const uint32_t v_rows = smem_addr(v_tiles + stage(t) * TILE_BYTES);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            mma_pv<FP16>(o, pf[kk], wgmma_desc(v_rows + kk * 2 * GROUP_BYTES, 0, GROUP_BYTES, ROW_BYTES));
        wgmma_commit();
    };
    // Mask S_t where needed, then the online softmax (f32, base 2; rows reduced over the quad):
    // sacc becomes P_t, m and l move on; returns each row's rescale of what came before.
    auto softmax = [&](int t, float (&alpha)[2]) {
        const int kv0 = klo + t * BN;
        const bool full = kv0 + BN <= n_keys && (!local || (kv0 >= w_last - r && kv0 + BN - 1 <= w0 + r));
        if (!full) {
#pragma unroll
            for (int j = 0; j < NB; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = kv0 + 8 * j + 2 * t4 + (e & 1);
                    const int i = e < 2 ? i0 : i1;
                    const bool ok = key < n_keys && (!local || (key - i <= r && i - key <= r));
                    if (!ok) sacc[4 * j + e] = kNegInf;  // assigned: K's rows there may be NaN
                }
            }
        }
        float mx[2] = {m[0], m[1]}, shift[2];
#pragma unroll
        for (int j = 0; j < NB; j++) {
            mx[0] = fmaxf(mx[0], fmaxf(sacc[4 * j], sacc[4 * j + 1]));
            mx[1] = fmaxf(mx[1], fmaxf(sacc[4 * j + 2], sacc[4 * j + 3]));
        }
        online_softmax_rows(mx, m, l, sl2, shift, alpha);
#pragma unroll
        for (int j = 0; j < NB; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) sacc[4 * j + e] = exp2f(fmaf(sacc[4 * j + e], sl2, -shift[e >> 1]));
            l[0] += sacc[4 * j] + sacc[4 * j + 1];
            l[1] += sacc[4 * j + 2] + sacc[4 * j + 3];
        }
    };
    // O *= alpha, and P_t packed to 16 bits: the accumulators of keys 16kk .. 16kk + 15 are n8
    // blocks 2kk, 2kk + 1, i.e. the A fragment of the k16 step.
    auto rescale_and_pack = [&](const float (&alpha)[2]) {
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
            o[4 * j] *= alpha[0];
            o[4 * j + 1] *= alpha[0];
            o[4 * j + 2] *= alpha[1];
            o[4 * j + 3] *= alpha[1];
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const float* lo = &sacc[8 * kk];
            const float* hi = &sacc[8 * kk + 4];
            pf[kk][0] = pack16x2<FP16>(lo[0], lo[1]);
            pf[kk][1] = pack16x2<FP16>(lo[2], lo[3]);
            pf[kk][2] = pack16x2<FP16>(hi[0], hi[1]);
            pf[kk][3] = pack16x2<FP16>(hi[2], hi[3]);
        }
    };

    if (n_tiles > 0) mbar_wait(&bar->q_full, 0);
    if (pingpong && c == 1) named_bar_arrive(TURN + 0, 256);  // consumer 0 goes first
    for (int t = 0; t < t_first; t++) pass(t);
    if (t_first <= t_last) {
        // The first tile: S alone.
        float alpha[2];
        mbar_wait(&bar->k_full[stage(t_first)], phase(t_first));
        my_turn();
        wgmma_fence();
        wgmma_fence_operands(sacc);
        issue_s(t_first);
        your_turn();
        wgmma_wait<0>();
        wgmma_fence_operands(sacc);
        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t_first)]);
        softmax(t_first, alpha);
        rescale_and_pack(alpha);
        // Then S_t and P_{t-1} V_{t-1} issued back to back in one fence window (both waits
        // first), every wgmma on every path of the warpgroup: a wgmma under a branch ptxas cannot
        // prove warp-uniform makes it serialize them all (tests/static_checks.rs). S_t retires
        // first (groups retire in order) and its softmax runs under P_{t-1} V_{t-1}.
        for (int t = t_first + 1; t <= t_last; t++) {
            mbar_wait(&bar->v_full[stage(t - 1)], phase(t - 1));
            mbar_wait(&bar->k_full[stage(t)], phase(t));
            my_turn();
            wgmma_fence();
            wgmma_fence_operands(sacc);
            wgmma_fence_operands(o);
            issue_s(t);
            issue_pv(t - 1);
            your_turn();
            wgmma_wait<1>();
            wgmma_fence_operands(sacc);
            if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t)]);
            softmax(t, alpha);
            wgmma_wait<0>();  // P_{t-1} V_{t-1} done: O may be rescaled, pf overwritten
            wgmma_fence_operands(o);
            if (lane_in_wg == 0) mbar_arrive(&bar->v_empty[stage(t - 1)]);
            rescale_and_pack(alpha);
        }
        mbar_wait(&bar->v_full[stage(t_last)], phase(t_last));
        my_turn();
        wgmma_fence();
        wgmma_fence_operands(o);
        issue_pv(t_last);
        your_turn();
        wgmma_wait<0>();
        wgmma_fence_operands(o);
        if (lane_in_wg == 0) mbar_arrive(&bar->v_empty[stage(t_last)]);
    }
    // After the last P·V: the producer may need this stage back for the tiles passed here.
    for (int t = max(t_first, t_last + 1); t < n_tiles; t++) pass(t);

    // O / l, staged over this consumer's Q rows (every wgmma that read them has retired).
    float inv[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
        inv[rr] = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
    }
    unsigned char* const stage_o = q_tiles + c * Q_BYTES;
    const int r0 = 16 * w + g;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
        const int col = 8 * j + 2 * t4;
        *reinterpret_cast<uint32_t*>(stage_o + swz128(r0, col)) = pack16x2<FP16>(o[4 * j] * inv[0], o[4 * j + 1] * inv[0]);
        *reinterpret_cast<uint32_t*>(stage_o + swz128(r0 + 8, col)) =
            pack16x2<FP16>(o[4 * j + 2] * inv[1], o[4 * j + 3] * inv[1]);
    }
    named_bar_sync(1 + c, 128);
    using T = typename Elem<FP16>::T;
    T* const out = reinterpret_cast<T*>(p.out) + (size_t)(start + w0) * heads * D + (size_t)h * D;
    const int rows = min(64, len - w0);
#pragma unroll
    for (int k = 0; k < 64 * (int)(ROW_BYTES / 16) / 128; k++) {  // 64 rows x 8 chunks, 4 a thread
        const int idx = lane_in_wg + 128 * k;
        const int row = idx >> 3, ch = idx & 7;
        if (row < rows) {
            *reinterpret_cast<uint4*>(out + (size_t)row * heads * D + ch * 8) =
                *reinterpret_cast<const uint4*>(stage_o + swz128(row, 8 * ch));
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_ATT90_THREADS, 1) attention_sm90_bf16(const __grid_constant__ AttentionSm90Params p) {
    attention_sm90<false, MB_ATT90_BN_GLOBAL>(p);
}
extern "C" __global__ void __launch_bounds__(MB_ATT90_THREADS, 1) attention_sm90_f16(const __grid_constant__ AttentionSm90Params p) {
    attention_sm90<true, MB_ATT90_BN_GLOBAL>(p);
}
extern "C" __global__ void __launch_bounds__(MB_ATT90_THREADS, 1) attention_sm90_local_bf16(const __grid_constant__ AttentionSm90Params p) {
    attention_sm90<false, MB_ATT90_BN_LOCAL>(p);
}
extern "C" __global__ void __launch_bounds__(MB_ATT90_THREADS, 1) attention_sm90_local_f16(const __grid_constant__ AttentionSm90Params p) {
    attention_sm90<true, MB_ATT90_BN_LOCAL>(p);
}
