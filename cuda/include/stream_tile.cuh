// stream_tile.cuh — one 16-column tile of the small-batch GEMM, out = epilogue(norm(x) · wᵀ), in
// the pieces its two users order differently: gemm_stream_sm90.cu (a launch per GEMM, a block per
// tile) and forward_small_sm90.cu (the persistent forward, a block taking tiles of every GEMM
// step in turn, the next tile's weights in flight under the current one). The shapes, layouts,
// epilogues and the reason for each choice are gemm_stream_sm90.cu's header; here only the parts.
//
// Shared memory, as both users lay it out: a tile's weight rows w_s [16][pitch] and x's rows
// x_s [m16 · 16][pitch] (pitch = 2k + MB_STREAM_ROW_PAD bytes), the warps' partial tiles
// part [WARPS][m16 · 16][16] f32, and each row's (mean, rstd) in row_stats [m16 · 16].
#pragma once
#include "common.cuh"  // activate, to_f32, from_f32, warp_sum, mma_m16n8k16_*
#include "rope.cuh"    // rope_position, rope_inv_freq, rope_rotate

namespace stream_tile {

constexpr int BN = MB_STREAM_BN, KCHUNK = MB_STREAM_KCHUNK, WARPS = MB_STREAM_WARPS, MAX_M16 = MB_STREAM_MAX_M / 16;
constexpr int ROPE_D = MB_GEMM90_ROPE_HEAD_DIM;  // the head_dim of the RoPE epilogue (the Hopper path's)
constexpr int GEGLU_BLOCK = MB_GEMM90_BN;        // Wi's rows: 128-row blocks of 64 + 64 (geglu_weight_rows)
static_assert(BN == 16 && KCHUNK == 32, "a block's columns are two n8 tiles (8 pairs); a chunk is 4 lanes x 8 k");
static_assert(ROPE_D % (2 * 8) == 0 && GEGLU_BLOCK % (2 * 8) == 0, "pairs come 8 at a time");

__device__ __forceinline__ uint32_t pitch_of(uint32_t k) { return 2 * k + MB_STREAM_ROW_PAD; }

template <typename T>
constexpr bool is_fp16 = false;
template <>
constexpr bool is_fp16<__half> = true;

template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if constexpr (is_fp16<T>) {
        mma_m16n8k16_f16(d, a, b, d);
    } else {
        mma_m16n8k16_bf16(d, a, b, d);
    }
}

// The weight row (= product column) of tile `tile`'s column c < 16: with rope and geglu, c and
// c + 8 are a pair (rotate-half partners; gate and up), else the tile's 16 consecutive rows.
__device__ __forceinline__ uint32_t weight_row(const GemmStreamParams& p, uint32_t tile, uint32_t c) {
    const uint32_t half = c / 8, i = c % 8;
    if (p.epilogue == MB_STREAM_ROPE && tile * BN < p.rotated) {
        constexpr uint32_t PER_HEAD = ROPE_D / 16;  // tiles per head: 8 pairs each
        return (tile / PER_HEAD) * ROPE_D + (tile % PER_HEAD) * 8 + half * (ROPE_D / 2) + i;
    }
    if (p.epilogue == MB_STREAM_GEGLU) {
        constexpr uint32_t PER_BLOCK = GEGLU_BLOCK / 16;
        return (tile / PER_BLOCK) * GEGLU_BLOCK + (tile % PER_BLOCK) * 8 + half * (GEGLU_BLOCK / 2) + i;
    }
    return tile * BN + c;
}

// Rows m16 · 16 > rows of x_s zeroed (their products are computed, never stored), by all threads.
__device__ __forceinline__ void zero_rows(unsigned char* x_s, uint32_t k, uint32_t rows, uint32_t m16) {
    const uint32_t pitch = pitch_of(k), vecs = k / 8;
    for (uint32_t i = rows * vecs + threadIdx.x; i < m16 * 16 * vecs; i += MB_STREAM_THREADS) {
        const uint32_t r = i / vecs, v = i % vecs;
        *reinterpret_cast<uint4*>(x_s + r * pitch + 16 * v) = make_uint4(0, 0, 0, 0);
    }
}

// With p.norm, each row's mean and 1 / sqrt(var + eps): a warp a row, two passes over x_s.
template <typename T>
__device__ __forceinline__ void row_stats_of(const GemmStreamParams& p, const unsigned char* x_s, uint32_t rows,
                                             float2* row_stats) {
    if (!p.norm) return;
    const uint32_t k = p.k, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (uint32_t r = warp; r < rows; r += WARPS) {
        const T* xr = reinterpret_cast<const T*>(x_s + r * pitch_of(k));
        float s = 0.f;
        for (uint32_t i = lane; i < k; i += 32) s += to_f32(xr[i]);
        const float mean = warp_sum(s) / (float)k;
        float m2 = 0.f;
        for (uint32_t i = lane; i < k; i += 32) {
            const float d = to_f32(xr[i]) - mean;
            m2 += d * d;
        }
        m2 = warp_sum(m2);
        if (lane == 0) row_stats[r] = make_float2(mean, rsqrtf(m2 / (float)k + p.eps));
    }
}

// This warp's accumulators of G tiles at once (their weight rows at w_s[0 .. G − 1]): its K
// chunks (warp, warp + 8, ...), every m16 tile of rows, both n8 tiles of columns (C fragment:
// rows g, g + 8, columns 8 nt + 2t, + 1). x's fragments are loaded once a chunk for all G tiles:
// a chunk's shared-memory reads are G + m16 KiB a warp for G tiles, against G · (1 + m16) one
// tile at a time, and the reads, not the MMAs, bound this loop. Each tile's own accumulation is
// the same sequence of MMAs as alone (bit for bit).
template <typename T, int G>
__device__ __forceinline__ void accumulate(uint32_t k, uint32_t m16, const unsigned char* const (&w_s)[G],
                                           const unsigned char* x_s, float (*acc)[MAX_M16][2][4]) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, pitch = pitch_of(k);
#pragma unroll
    for (int j = 0; j < G; j++) {
#pragma unroll
        for (int mt = 0; mt < MAX_M16; mt++) {
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) acc[j][mt][nt][e] = 0.f;
            }
        }
    }
    for (uint32_t chunk = warp; chunk < k / KCHUNK; chunk += WARPS) {
        const uint32_t col = chunk * KCHUNK * 2 + 16 * t;  // byte offset of lane t's 8 k
        uint4 wv[G][2];
#pragma unroll
        for (int j = 0; j < G; j++) {
#pragma unroll
            for (int nt = 0; nt < 2; nt++) wv[j][nt] = *reinterpret_cast<const uint4*>(w_s[j] + (8 * nt + g) * pitch + col);
        }
#pragma unroll
        for (int mt = 0; mt < MAX_M16; mt++) {
            if (mt >= (int)m16) break;
            const uint4 lo = *reinterpret_cast<const uint4*>(x_s + (16 * mt + g) * pitch + col);
            const uint4 hi = *reinterpret_cast<const uint4*>(x_s + (16 * mt + g + 8) * pitch + col);
            // Fragment k (2t, 2t + 1) and (2t + 8, 2t + 9) of mma h are this lane's k 8t + 4h ..
            // 8t + 4h + 3: words 2h and 2h + 1 of each 16-byte load. The chunk's k are permuted the
            // same way for both operands, which a dot product does not see.
            const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y}, a1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
            for (int j = 0; j < G; j++) {
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const uint32_t b0[2] = {wv[j][nt].x, wv[j][nt].y}, b1[2] = {wv[j][nt].z, wv[j][nt].w};
                    mma<T>(acc[j][mt][nt], a0, b0);
                    mma<T>(acc[j][mt][nt], a1, b1);
                }
            }
        }
    }
}

// One tile's accumulators (accumulate's) to this warp's slice of `part`. The caller
// synchronises before anything reads `part`.
__device__ __forceinline__ void store_partial(uint32_t m16, const float (&acc)[MAX_M16][2][4], float* part) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float* mine = part + warp * m16 * 16 * BN;
#pragma unroll
    for (int mt = 0; mt < MAX_M16; mt++) {
        if (mt >= (int)m16) break;
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const uint32_t r = 16 * mt + g + 8 * (e / 2), c = 8 * nt + 2 * t + e % 2;
                mine[r * BN + c] = acc[mt][nt][e];
            }
        }
    }
}

// This warp's partial tile of the one tile at w_s, written to its slice of `part`. The caller
// synchronises before anything reads `part` or overwrites w_s.
template <typename T>
__device__ __forceinline__ void partial_product(uint32_t k, uint32_t m16, const unsigned char* w_s,
                                                const unsigned char* x_s, float* part) {
    float acc[1][MAX_M16][2][4];
    const unsigned char* const w[1] = {w_s};
    accumulate<T, 1>(k, m16, w, x_s, acc);
    store_partial(m16, acc[0], part);
}

// The warps' partial tiles summed in warp order (the same sum on every run), then the epilogue,
// for the rows in use of x_s — rows row0 .. row0 + rows − 1 of x and out (a chunk of them in the
// persistent forward; row0 = 0 in gemm_stream_sm90.cu) — each thread one (row, pair) at a time.
template <typename T>
__device__ __forceinline__ void epilogue(const GemmStreamParams& p, uint32_t tile, uint32_t row0, uint32_t rows,
                                         uint32_t m16, const float* part, const float2* row_stats) {
    const T* r_in = reinterpret_cast<const T*>(p.r);
    T* out = reinterpret_cast<T*>(p.out);
    const float* colsum = reinterpret_cast<const float*>(p.colsum);
    const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    for (uint32_t i = threadIdx.x; i < rows * (BN / 2); i += MB_STREAM_THREADS) {
        const uint32_t r = i / (BN / 2), c = i % (BN / 2), row = row0 + r;
        float v[2] = {0.f, 0.f};
        for (int wi = 0; wi < WARPS; wi++) {
            const float* tile_w = part + wi * m16 * 16 * BN + r * BN;
            v[0] += tile_w[c];
            v[1] += tile_w[c + BN / 2];
        }
        const uint32_t col[2] = {weight_row(p, tile, c), weight_row(p, tile, c + BN / 2)};
        if (p.norm && p.epilogue != MB_STREAM_RESIDUAL) {
            const float2 s = row_stats[r];
            for (int h = 0; h < 2; h++) v[h] = fmaf(-s.x, colsum[col[h]], v[h]) * s.y;
        }
        T* orow = out + (size_t)row * p.n;
        switch (p.epilogue) {
            case MB_STREAM_GEGLU:
                out[(size_t)row * (p.n / 2) + tile * (BN / 2) + c] = from_f32<T>(activate(v[0], p.act) * v[1]);
                break;
            case MB_STREAM_ROPE:
                if (tile * BN < p.rotated) {
                    const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
                    const float pos = (float)rope_position(cu, batch->sequences, row);
                    const uint32_t j = (tile % (ROPE_D / 16)) * 8 + c;  // the pair's frequency index
                    float sn, cs;
                    sincosf(pos * rope_inv_freq(p.theta, j, ROPE_D), &sn, &cs);
                    rope_rotate(v[0], v[1], cs, sn);
                }
                orow[col[0]] = from_f32<T>(v[0]);
                orow[col[1]] = from_f32<T>(v[1]);
                break;
            case MB_STREAM_RESIDUAL:
                for (int h = 0; h < 2; h++) orow[col[h]] = from_f32<T>(to_f32(r_in[(size_t)row * p.n + col[h]]) + v[h]);
                break;
            default:
                orow[col[0]] = from_f32<T>(v[0]);
                orow[col[1]] = from_f32<T>(v[1]);
        }
    }
}

}  // namespace stream_tile
