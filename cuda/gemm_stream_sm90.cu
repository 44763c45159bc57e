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
#include "common.cuh"       // rows_in_use, pdl_wait, pdl_launch_dependents
#include "hopper.cuh"       // mbarrier, bulk_load(_multicast), cluster_arrive_relaxed / _wait / _(n)ctarank
#include "stream_tile.cuh"  // the tile's pieces: weight_row, row_stats_of, partial_product, epilogue

extern __shared__ __align__(16) unsigned char smem[];

namespace {

using namespace stream_tile;

template <typename T>
__device__ void gemm_stream(const GemmStreamParams& p) {
    // The next kernel may become resident now: its own griddepcontrol.wait holds its reads.
    pdl_launch_dependents();
    const uint32_t tid = threadIdx.x;
    const uint32_t tile = blockIdx.x, k = p.k, pitch = pitch_of(k), vecs = k / 8;
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
    zero_rows(x_s, k, rows, m16);
    cp_async_wait_all();
    while (!mbar_try_wait(x_ready, 0)) {
    }
    __syncthreads();
    row_stats_of<T>(p, x_s, rows, row_stats);

    // 3. This warp's K chunks into its partial tile; 4. their sum in warp order, and the epilogue.
    partial_product<T>(k, m16, w_s, x_s, part);
    __syncthreads();
    epilogue<T>(p, tile, 0, rows, m16, part, row_stats);
}

}  // namespace

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_STREAM_THREADS, 1) gemm_stream_sm90_bf16(const __grid_constant__ GemmStreamParams p) {
    gemm_stream<__nv_bfloat16>(p);
}
extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_STREAM_THREADS, 1) gemm_stream_sm90_f16(const __grid_constant__ GemmStreamParams p) {
    gemm_stream<__half>(p);
}
