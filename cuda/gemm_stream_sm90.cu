// gemm_stream_sm90.cu — the small-batch GEMM: out = epilogue(norm(x) · wᵀ) for at most
// MB_STREAM_MAX_M rows, written for weight streaming, not for a tile's arithmetic. At a batch of
// one text (32 tokens) a ModernBERT GEMM moves 1.2–3.5 MB of weights and ~0.1 MFLOP per weight
// row: its time is the weights' bytes and the hand-off around it, so every block streams its own
// slice of w with 16-byte copies, the next kernel's slice can be in flight before the previous
// kernel has finished (programmatic dependent launch), and the row passes are inside (the small-
// batch forward, issue 14).
//
// Shapes: x [m, k] row-major (activations, m ≤ 64 the rows of this launch's capacity, the rows in
//   use read from the BatchDesc), w [n, k] row-major (a Linear weight, the Hopper path's: γ
//   folded, Wi's rows in ops::geglu_weight_rows' order), out [m, n] (geglu [m, n / 2]); bf16 or
//   fp16, f32 accumulation. k % 64 == 0, n % 16 == 0 (rope: n % 64, geglu: n % 128).
// Epilogues (MB_STREAM_*), the same products as gemm_sm90's:
//   store:    out = acc.
//   geglu:    out = act(acc[gate]) · acc[up]; a block's 16 columns are 8 of a 128-row block's
//             first 64 weight rows and the matching 8 of its last 64 (geglu_weight_rows).
//   rope:     out = acc, columns < rotated rotated by the row's position (rope.cuh's angles):
//             a block's 16 columns are head dimensions d0 .. d0 + 7 and their partners d0 + 32 ..
//             of one head, so each rotate-half pair is summed by one thread.
//   residual: out = r + acc (r may be out: each element is read, then written, by one thread).
//   norm (store, geglu, rope): acc = rstd · (acc − mean · colsum[n]) — LayerNorm(x) · wᵀ with γ
//             folded into w — where mean and rstd are this block's own two-pass statistics of x's
//             rows in shared memory: no statistics buffer, no pass.
// Geometry (params.h, MB_STREAM_*): grid n / 16 blocks of 256 threads (8 warps), in clusters of
//   p.cluster (C ≤ MB_STREAM_CLUSTER, dividing n / 16) consecutive blocks, which all need the same x.
//   1. Before griddepcontrol.wait: the block's 16 weight rows, all of K, into shared memory
//      (cp.async, 16 bytes a thread and copy); an mbarrier for x initialised, then a cluster
//      barrier, so that no block copies into a peer whose barrier is not ready.
//   2. After it: x's rows in use, each row one bulk copy issued by one block of the cluster (rank r
//      copies rows r, r + C, ...) and multicast into all C blocks' shared memory, so L2 serves x
//      once per cluster, not once per block (at 32 rows x is 2x the block's weights); the rows up
//      to the next 16 zeroed. Each block waits on its own barrier for all of x's bytes, so every
//      copy into a block has landed before it goes on (no peer copies into it after that, so no
//      cluster barrier is needed before exit). Then with norm each row's mean and
//      1 / sqrt(var + eps), a warp a row, two passes over shared memory.
//   3. Warp w takes K's 32-wide chunks w, w + 8, ...: per chunk, lane (g, t) loads 8 consecutive k
//      of weight rows g and 8 + g and of x rows g, g + 8 of each m16 tile (one 16-byte load each)
//      and issues 2 × 2 × m16 mma.m16n8k16. The chunk's k are permuted the same way for both
//      operands (lane t's 8t .. 8t + 7 are fragment k 2t, 2t + 1, 2t + 8, 2t + 9 of the first
//      mma and the same of the second), which a dot product does not see.
//   4. The 8 warps' partial tiles [m16, 16] to shared memory; each thread then sums its pairs'
//      (columns c, c + 8 of a row) over the warps in warp order — deterministic — and runs the
//      epilogue.
// Shared memory: MB_STREAM_SMEM_BYTES(m16, k): at base's widest (k = 1152, m = 64) 217.5 KiB.
// Bytes (minimum): 2·n·k (weights, DRAM) + 2·m·k per cluster (x, from L2: (n / 16C) · 2·m·k in all) +
//   2·m·n written (geglu m·n; residual + 2·m·n read) + 4·n (colsum); FLOPs: 2·m·n·k.
#include "common.cuh"  // activate, rows_in_use, to_f32, from_f32, pdl_wait, pdl_launch_dependents
#include "hopper.cuh"  // mbarrier, bulk_load(_multicast), cluster_arrive_relaxed / _wait / _(n)ctarank
#include "rope.cuh"    // rope_position, rope_inv_freq, rope_rotate

extern __shared__ __align__(16) unsigned char smem[];

namespace {

constexpr int BN = MB_STREAM_BN, KCHUNK = MB_STREAM_KCHUNK, WARPS = MB_STREAM_WARPS, MAX_M16 = MB_STREAM_MAX_M / 16;
constexpr int ROPE_D = MB_GEMM90_ROPE_HEAD_DIM;  // the head_dim of the RoPE epilogue (the Hopper path's)
constexpr int GEGLU_BLOCK = MB_GEMM90_BN;        // Wi's rows: 128-row blocks of 64 + 64 (geglu_weight_rows)
static_assert(BN == 16 && KCHUNK == 32, "a block's columns are two n8 tiles (8 pairs); a chunk is 4 lanes x 8 k");
static_assert(ROPE_D % (2 * 8) == 0 && GEGLU_BLOCK % (2 * 8) == 0, "pairs come 8 at a time");

template <typename T>
struct Pack;
template <>
struct Pack<__nv_bfloat16> {
    static constexpr bool FP16 = false;
};
template <>
struct Pack<__half> {
    static constexpr bool FP16 = true;
};

template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if constexpr (Pack<T>::FP16) {
        mma_m16n8k16_f16(d, a, b, d);
    } else {
        mma_m16n8k16_bf16(d, a, b, d);
    }
}

// The weight row (= product column) of the block's column c < 16: with rope and geglu, c and
// c + 8 are a pair (rotate-half partners; gate and up), else the block's 16 consecutive rows.
__device__ __forceinline__ uint32_t weight_row(const GemmStreamParams& p, uint32_t tile, uint32_t c) {
    const uint32_t half = c / 8, i = c % 8;
    if (p.epilogue == MB_STREAM_ROPE && tile * BN < p.rotated) {
        constexpr uint32_t PER_HEAD = ROPE_D / 16;  // blocks per head: 8 pairs each
        return (tile / PER_HEAD) * ROPE_D + (tile % PER_HEAD) * 8 + half * (ROPE_D / 2) + i;
    }
    if (p.epilogue == MB_STREAM_GEGLU) {
        constexpr uint32_t PER_BLOCK = GEGLU_BLOCK / 16;
        return (tile / PER_BLOCK) * GEGLU_BLOCK + (tile % PER_BLOCK) * 8 + half * (GEGLU_BLOCK / 2) + i;
    }
    return tile * BN + c;
}

template <typename T>
__device__ void gemm_stream(const GemmStreamParams& p) {
    // The next kernel may become resident now: its own griddepcontrol.wait holds its reads.
    pdl_launch_dependents();
    const uint32_t tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const uint32_t tile = blockIdx.x, k = p.k, pitch = 2 * k + MB_STREAM_ROW_PAD, vecs = k / 8;
    const uint32_t m16 = (p.m + 15) / 16;
    unsigned char* w_s = smem;                                   // [16][pitch]
    unsigned char* x_s = w_s + BN * pitch;                       // [m16 · 16][pitch]
    float* part = reinterpret_cast<float*>(x_s + m16 * 16 * pitch);  // [WARPS][m16 · 16][16]
    float2* row_stats = reinterpret_cast<float2*>(part + WARPS * m16 * 16 * BN);  // [m16 · 16] (mean, rstd)

    uint64_t* x_ready = reinterpret_cast<uint64_t*>(row_stats + m16 * 16);  // x's bytes, all C blocks' copies
    // The copies below trust p.cluster to be the launch's cluster: a mismatch would send them to
    // blocks that do not exist (or leave rows uncopied). Refused here, before any barrier.
    if (cluster_nctarank() != p.cluster) __trap();
    if (tid == 0) {
        mbar_init(x_ready, 1);
        mbar_init_fence();
    }

    // 1. The weights: no earlier kernel writes them, so they stream in before the wait.
    const unsigned char* w = reinterpret_cast<const unsigned char*>(p.w);
    for (uint32_t i = tid; i < BN * vecs; i += MB_STREAM_THREADS) {
        const uint32_t c = i / vecs, v = i % vecs;
        cp_async_16(w_s + c * pitch + 16 * v, w + ((size_t)weight_row(p, tile, c) * k + 8 * v) * 2);
    }
    cp_async_commit();
    // Every block of the cluster has initialised its barrier before any block copies into it.
    cluster_arrive_relaxed();
    cluster_wait();

    // 2. The activations: the previous kernel's output, each row read from L2 once per cluster —
    //    rank r copies rows r, r + C, ... into all C blocks (multicast) — not once per block.
    pdl_wait();
    const uint32_t rows = rows_in_use(p.batch, p.m), cluster = p.cluster, rank = cluster_ctarank();
    const unsigned char* x = reinterpret_cast<const unsigned char*>(p.x);
    if (tid == 0) mbar_arrive_expect_tx(x_ready, rows * 2 * k);
    for (uint32_t r = rank + cluster * tid; r < rows; r += cluster * MB_STREAM_THREADS) {
        if (cluster > 1) {
            bulk_load_multicast(x_s + r * pitch, x + (size_t)r * k * 2, 2 * k, x_ready, (uint16_t)((1u << cluster) - 1));
        } else {
            bulk_load(x_s + r * pitch, x + (size_t)r * k * 2, 2 * k, x_ready);
        }
    }
    for (uint32_t i = rows * vecs + tid; i < m16 * 16 * vecs; i += MB_STREAM_THREADS) {
        const uint32_t r = i / vecs, v = i % vecs;
        *reinterpret_cast<uint4*>(x_s + r * pitch + 16 * v) = make_uint4(0, 0, 0, 0);
    }
    cp_async_wait_all();
    while (!mbar_try_wait(x_ready, 0)) {
    }
    __syncthreads();
    if (p.norm) {
        for (uint32_t r = warp; r < rows; r += WARPS) {
            const T* xr = reinterpret_cast<const T*>(x_s + r * pitch);
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

    // 3. This warp's K chunks, every m16 tile of rows, both n8 tiles of columns.
    float acc[MAX_M16][2][4] = {};
    for (uint32_t chunk = warp; chunk < k / KCHUNK; chunk += WARPS) {
        const uint32_t col = chunk * KCHUNK * 2 + 16 * t;  // byte offset of lane t's 8 k
        uint4 wv[2];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) wv[nt] = *reinterpret_cast<const uint4*>(w_s + (8 * nt + g) * pitch + col);
#pragma unroll
        for (int mt = 0; mt < MAX_M16; mt++) {
            if (mt >= (int)m16) break;
            const uint4 lo = *reinterpret_cast<const uint4*>(x_s + (16 * mt + g) * pitch + col);
            const uint4 hi = *reinterpret_cast<const uint4*>(x_s + (16 * mt + g + 8) * pitch + col);
            // Fragment k (2t, 2t + 1) and (2t + 8, 2t + 9) of mma h are this lane's k 8t + 4h ..
            // 8t + 4h + 3: words 2h and 2h + 1 of each 16-byte load.
            const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y}, a1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                const uint32_t b0[2] = {wv[nt].x, wv[nt].y}, b1[2] = {wv[nt].z, wv[nt].w};
                mma<T>(acc[mt][nt], a0, b0);
                mma<T>(acc[mt][nt], a1, b1);
            }
        }
    }

    // 4. The partial tiles (C fragment: rows g, g + 8, columns 8 nt + 2t, + 1), then the sum.
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
    __syncthreads();

    const T* r_in = reinterpret_cast<const T*>(p.r);
    T* out = reinterpret_cast<T*>(p.out);
    const float* colsum = reinterpret_cast<const float*>(p.colsum);
    const uint32_t* cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    for (uint32_t i = tid; i < rows * (BN / 2); i += MB_STREAM_THREADS) {
        const uint32_t r = i / (BN / 2), c = i % (BN / 2);
        float v[2] = {0.f, 0.f};
        for (int wi = 0; wi < WARPS; wi++) {  // warp order: the same sum on every run
            const float* tile_w = part + wi * m16 * 16 * BN + r * BN;
            v[0] += tile_w[c];
            v[1] += tile_w[c + BN / 2];
        }
        const uint32_t col[2] = {weight_row(p, tile, c), weight_row(p, tile, c + BN / 2)};
        if (p.norm && p.epilogue != MB_STREAM_RESIDUAL) {
            const float2 s = row_stats[r];
            for (int h = 0; h < 2; h++) v[h] = fmaf(-s.x, colsum[col[h]], v[h]) * s.y;
        }
        T* orow = out + (size_t)r * p.n;
        switch (p.epilogue) {
            case MB_STREAM_GEGLU:
                out[(size_t)r * (p.n / 2) + tile * (BN / 2) + c] = from_f32<T>(activate(v[0], p.act) * v[1]);
                break;
            case MB_STREAM_ROPE:
                if (tile * BN < p.rotated) {
                    const BatchDesc* batch = reinterpret_cast<const BatchDesc*>(p.batch);
                    const float pos = (float)rope_position(cu, batch->sequences, r);
                    const uint32_t j = (tile % (ROPE_D / 16)) * 8 + c;  // the pair's frequency index
                    float sn, cs;
                    sincosf(pos * rope_inv_freq(p.theta, j, ROPE_D), &sn, &cs);
                    rope_rotate(v[0], v[1], cs, sn);
                }
                orow[col[0]] = from_f32<T>(v[0]);
                orow[col[1]] = from_f32<T>(v[1]);
                break;
            case MB_STREAM_RESIDUAL:
                for (int h = 0; h < 2; h++) orow[col[h]] = from_f32<T>(to_f32(r_in[(size_t)r * p.n + col[h]]) + v[h]);
                break;
            default:
                orow[col[0]] = from_f32<T>(v[0]);
                orow[col[1]] = from_f32<T>(v[1]);
        }
    }
}

}  // namespace

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_STREAM_THREADS, 1) gemm_stream_sm90_bf16(const __grid_constant__ GemmStreamParams p) {
    gemm_stream<__nv_bfloat16>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_STREAM_THREADS, 1) gemm_stream_sm90_f16(const __grid_constant__ GemmStreamParams p) {
    gemm_stream<__half>(p);
}
