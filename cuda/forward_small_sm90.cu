// forward_small_sm90.cu — the small-batch forward in one launch (issue 14): at a batch of one text
// a layer is 5 dependent steps over 10 MB of weights, and a launch per step costs more than the
// step's weights take to stream (profiles/optimisation-log.md). Here the embeddings, the steps of
// all layers and the final norm run in one co-scheduled grid, a grid barrier in global memory
// between consecutive steps, and each block's weights for its next GEMM tile stream in while it
// computes, waits at a barrier or runs attention: what a step costs beyond its weights is the
// barrier, x's read and the math.
//
// Program (ForwardSmallParams.steps, built by src/kernels/forward_small.rs from the same parameter
// structs the per-launch path launches): the embeddings (embeddings.cu's rows), per layer
//   Wqkv (stream GEMM, norm + RoPE) → attention → Wo (residual) → Wi (norm + GeGLU) → Wo2 (residual),
// then the final norm (layernorm.cu's rows).
// Units of a step: a GEMM's 16-column tiles (n / 16; dealt to the blocks in a snake, unit_of); a norm step's rows
// (row r on block r mod G, its 256 threads holding the row: hidden ≤ 2048); an attention step's
// 64-query blocks (sequences × ⌈max_seqlen / 64⌉ capacities a head), run inside the Wqkv step
// before it, with no grid barrier: each Wqkv tile is one head's q, k or v (tile t of head
// t / 4 mod heads at head_dim 64), and after writing a tile its block takes a ticket from the
// head's counter (grid_count: release of the tile, acquire of the others'); the block taking a
// head's last ticket (12 tiles a head) runs that head's attention once its own tiles are done,
// the halves of the block (warps 0-3, 4-7, each under its own named barrier) taking its units in
// turn. The counters return to 0 after each layer.
// The arithmetic of a unit is that of its per-launch kernel, shared code: stream_tile.cuh (the
// GEMM tile of gemm_stream_sm90.cu), attention_block.cuh (attention.cu's block), so the program's
// output equals the per-launch path's bit for bit.
//
// A block's loop over steps s = 0 .. count − 1:
//   1. s > 0, not attention: the grid barrier — warp 0's lanes acquire every block's flag ≥ base + s (base: this
//      block's flag at entry, which every block left equal at the end of the previous launch;
//      modulo 2^32, and the flags start 64 steps before they wrap: MB_FSMALL_FLAGS_START), a
//      lane's flags loaded together (grid_wait_all_geq: one round trip to L2 a round, not one a
//      flag), then the whole block syncs. All of step s − 1's writes are visible (each block
//      released them).
//   2. GEMM: x's rows in use pass through shared memory in chunks of P.m rows (one chunk up to
//      P.m tokens: base 48; MB_FSMALL_MAX_ROWS in all). Per chunk: bulk copies on x's mbarrier,
//      rank r of a cluster of C copying the chunk's rows r, r + C, ... into all C blocks
//      (multicast), issued by warp 0 after a proxy fence (x is other blocks' ordinary stores in
//      this launch; bulk copies read through the async proxy) — rows to the next 16 zeroed, the
//      row statistics; then per pair of tiles of the block's group (both in their slots):
//      (first chunk) wait for their slots' weights (mbarrier, the slot's phase), the warps'
//      partial products of both at once (x's fragments read once for the two), then per tile:
//      its partials to shared memory, a sync, (last chunk, first tile) both slots refilled with
//      the block's tiles two on — which may be a later step's, since weights are no step's
//      output — the epilogue of the chunk's rows, a sync and (last chunk, Wqkv) the head's
//      ticket. A group is all the block's tiles of the step when there is one
//      chunk; with several, the MB_FSMALL_SLOTS tiles whose weights are in the slots together,
//      and every block runs the busiest block's count of groups (a cluster's blocks copy x for
//      each other). Between two chunks of a step a cluster barrier: no peer copies the next
//      chunk into a block still reading the last. Then (Wqkv) the attention of the heads whose
//      last ticket the block took.
//      ATTENTION: nothing (done in the step before; no barrier before it either). EMBED, NORM:
//      the block's rows, one at a time.
//   3. A sync, then thread 0 raises the block's flag to base + s + 1 (release, gpu scope).
// Weight slots: thread 0 issues one bulk copy per weight row (16 rows of 2k bytes, at the step's
// pitch 2k + 64, in a slot sized for the widest k) on the slot's mbarrier; the block's i-th tile
// of the whole program uses slot i mod 2, phase (i / 2) mod 2.
// Geometry: G = min(multiprocessors, the widest step's units) co-scheduled blocks (one per SM) of
//   256 threads, in clusters of C = 4, 2 or 1 (the widest that divides G and every GEMM step's
//   count of blocks with a tile, with G / C clusters resident at once: src/kernels/
//   forward_small.rs); shared memory MB_FSMALL_SMEM_BYTES(P.m, the widest K) (params.h): base
//   in chunks of 32 rows 164 KiB, of 48 rows (its widest) 209.5 KiB.
// Bytes (minimum, per launch): every weight once (DRAM); per GEMM step, x once per cluster with a
//   tile and group (L2); per attention step, its K/V tiles per query block; the outputs; a ticket
//   per Wqkv tile. FLOPs: the steps'.
#include "attention_block.cuh"  // attention_detail::attention_block
#include "hopper.cuh"           // mbar_*, bulk_load(_multicast), cluster_*, fence_proxy_async_global, named_bar_sync
#include "norm.cuh"             // embed_rows, layernorm_rows: the embeddings and the final norm
#include "stream_tile.cuh"      // the stream GEMM tile's pieces

extern __shared__ __align__(1024) unsigned char smem[];

namespace {

using namespace stream_tile;

// A barrier of the 128 threads of one half of the block (named barriers 1 and 2).
struct HalfSync {
    int id;
    __device__ __forceinline__ void operator()() const { named_bar_sync(id, MB_ATTENTION_THREADS); }
};

// A GEMM step's units: its 16-column tiles, each of them twice — the first and second half of
// the rows — where the grid has a block for every (tile, half) and no attention follows (a head's
// ticket counts whole tiles): MB_FSMALL_SLICES, and src/kernels/forward_small.rs's gemm_slices.
// Unit q is tile q mod tiles of half q / tiles.
__device__ __forceinline__ uint32_t slices_of(const ForwardSmallStep* steps, uint32_t count, uint32_t s, uint32_t G) {
    const bool then_attention = s + 1 < count && steps[s + 1].kind == MB_FSMALL_ATTENTION;
    return MB_FSMALL_SLICES(steps[s].gemm.n / BN, G, then_attention);
}

// The block's j-th unit of a GEMM step. A step's units are dealt to the blocks in a snake — 0 ..
// G − 1, then G − 1 .. 0, ... — so where a step has more units than blocks (base: Wqkv's and Wi's
// 144 tiles on 132 blocks) the blocks with a second are the last ones, which the steps with fewer
// (Wo's and Wo2's 96 units) leave idle: those blocks' slots are free for the next step's weights
// a whole step earlier. (Dealt round robin, the first 12 blocks had both: their next pair's
// second tile was issued only once their Wo unit was done.)
__device__ __forceinline__ uint32_t unit_of(uint32_t j, uint32_t G) {
    return j * G + (j % 2 ? G - 1 - blockIdx.x : blockIdx.x);
}

// How many of a step's `units` the block has: a unit in every whole round of G, and one in the
// last round if its place in that round's direction comes before the round's end.
__device__ __forceinline__ uint32_t units_of_block(uint32_t units, uint32_t G) {
    const uint32_t rounds = units / G;
    return rounds + (unit_of(rounds, G) < units ? 1 : 0);
}

// The block's next GEMM unit at or after (step, its j-th unit) of the program, or step == count.
struct Cursor {
    uint32_t step, j;
};

__device__ __forceinline__ Cursor next_unit(const ForwardSmallStep* steps, uint32_t count, uint32_t G, Cursor c) {
    for (; c.step < count; c.step++, c.j = 0) {
        if (steps[c.step].kind == MB_FSMALL_GEMM &&
            unit_of(c.j, G) < steps[c.step].gemm.n / BN * slices_of(steps, count, c.step, G)) {
            return c;
        }
    }
    return c;
}

// The attention of the heads in `mine` (bit h: head h) — every 64-query block of each, the two
// halves of the block taking them in turn, each under its own named barrier. Not inlined: inside
// the step loop, beside the GEMM's live state, it pushed the kernel to 255 registers and spills
// (ptxas); as a call, 209 and none.
template <typename T>
__device__ __noinline__ void attend(const AttentionParams& p, uint32_t mine, unsigned char* region, uint32_t tid) {
    // The batch's units only (its sequences, the longest's query blocks), not the capacity's:
    // at the bound's capacity (128 tokens, as many sequences) the rest would be hundreds of empty
    // units a head, each a call and a sync.
    const BatchDesc* desc = reinterpret_cast<const BatchDesc*>(p.batch);
    const uint32_t sequences = min(desc->sequences, p.max_sequences), longest = min(desc->max_seqlen, p.max_seqlen);
    const uint32_t qblocks = (longest + MB_ATTENTION_BLOCK_M - 1) / MB_ATTENTION_BLOCK_M;
    const uint32_t units = sequences * qblocks, half = tid / MB_ATTENTION_THREADS;
    const HalfSync sync{1 + (int)half};
    uint32_t i = 0;  // the block's units so far: unit i is half i mod 2's
    for (uint32_t h = 0; h < p.heads; h++) {
        if (!(mine >> h & 1)) continue;
        for (uint32_t u = 0; u < units; u++, i++) {
            if (i % 2 != half) continue;
            const uint32_t qb = u % qblocks, b = u / qblocks;
            attention_detail::attention_block<T, false>(p, b, h, qb, region + half * MB_ATTENTION_SMEM_BYTES,
                                                        tid % MB_ATTENTION_THREADS, sync);
            sync();  // the half's warps are done with its shared memory before the next unit's loads
        }
    }
}

// Thread 0: the tile's 16 weight rows, all of its step's K, into `slot` (at that K's pitch, as
// stream_tile.cuh reads them) on the slot's mbarrier.
__device__ __forceinline__ void issue_weights(const GemmStreamParams& p, uint32_t tile, unsigned char* slot, uint64_t* bar) {
    const unsigned char* w = reinterpret_cast<const unsigned char*>(p.w);
    mbar_arrive_expect_tx(bar, BN * 2 * p.k);
    for (uint32_t c = 0; c < BN; c++) {
        bulk_load(slot + c * pitch_of(p.k), w + (size_t)weight_row(p, tile, c) * p.k * 2, 2 * p.k, bar);
    }
}

template <typename T>
__device__ void forward_small(const ForwardSmallParams& P) {
    const ForwardSmallStep* steps = reinterpret_cast<const ForwardSmallStep*>(P.steps);
    uint32_t* flags = reinterpret_cast<uint32_t*>(P.flags);
    uint32_t* head_counts = reinterpret_cast<uint32_t*>(P.head_counts);
    const uint32_t tid = threadIdx.x, G = gridDim.x, blk = blockIdx.x;
    const uint32_t slot_bytes = BN * MB_FSMALL_PITCH(P.k);  // a slot holds the widest step's tile
    uint64_t* slot_bar = reinterpret_cast<uint64_t*>(smem);  // [MB_FSMALL_SLOTS]
    uint64_t* x_ready = slot_bar + MB_FSMALL_X_BARRIER;      // x's bytes, all of the cluster's copies
    unsigned char* slots = smem + MB_FSMALL_SLOTS_OFFSET;     // [MB_FSMALL_SLOTS][slot_bytes]
    unsigned char* region = smem + MB_FSMALL_REGION_OFFSET(P.k);
    // The flags are P.blocks long: another grid would read past them, or leave some unraised. The
    // x copies trust P.cluster to be the launch's cluster (else they reach blocks that do not
    // exist, or leave rows uncopied). Both refused before any barrier.
    if (G != P.blocks || cluster_nctarank() != P.cluster) __trap();
    const uint32_t base = flags[blk];  // this block's own flag, left by the previous launch
    const uint32_t cluster = P.cluster, rank = cluster_ctarank();

    if (tid == 0) {
        for (int i = 0; i < MB_FSMALL_SLOTS; i++) mbar_init(&slot_bar[i], 1);
        mbar_init(x_ready, 1);
        mbar_init_fence();
    }
    // Every block of the cluster has initialised x_ready before any block copies into it. (The
    // executor's programs start with the embeddings, whose grid barrier orders this as well; a
    // program starting with a GEMM needs it.)
    cluster_arrive_relaxed();
    cluster_wait();
    // The first MB_FSMALL_SLOTS units' weights, before anything else.
    Cursor issue = next_unit(steps, P.count, G, {0, 0});  // thread 0's: the next unit to load
    if (tid == 0) {
        for (int i = 0; i < MB_FSMALL_SLOTS && issue.step < P.count; i++) {
            issue_weights(steps[issue.step].gemm, unit_of(issue.j, G) % (steps[issue.step].gemm.n / BN),
                          slots + i * slot_bytes, &slot_bar[i]);
            issue = next_unit(steps, P.count, G, {issue.step, issue.j + 1});
        }
    }
    uint32_t consumed = 0;  // the block's units computed so far: unit i is in slot i mod 2
    uint32_t x_loads = 0;   // the chunks of x the block has loaded so far: x_ready's phase
    __shared__ uint32_t heads_mine;  // thread 0's `mine` of a Wqkv step, for every thread

    for (uint32_t s = 0; s < P.count; s++) {
        const ForwardSmallStep& step = steps[s];
        // An attention step ran inside the Wqkv step before it: no barrier.
        if (s > 0 && step.kind != MB_FSMALL_ATTENTION) {  // 1. every block has finished step s − 1
            if (tid < 32) grid_wait_all_geq(flags, tid, 32, G, base + s);  // lane l: flags l, l + 32, ...
            __syncthreads();
        }
        if (step.kind == MB_FSMALL_GEMM) {
            const GemmStreamParams& p = step.gemm;
            // Wqkv: its tiles' tickets decide who runs the next step's attention, head by head.
            const bool then_attention = s + 1 < P.count && steps[s + 1].kind == MB_FSMALL_ATTENTION;
            uint32_t mine = 0;  // thread 0's: bit h, this block took head h's last ticket
            const uint32_t tiles = p.n / BN, slices = slices_of(steps, P.count, s, G), units = tiles * slices;
            if (blk < units) {
                // 2. The block's rows — all rows in use, or with two slices its unit's half of them
                //    (rounded to 16; with two slices a block has one unit) — pass through shared
                //    memory a chunk of P.m rows at a time; each chunk meets every unit of the
                //    block's current group.
                const uint32_t k = p.k, pitch = pitch_of(k), chunk = P.m, in_use = rows_in_use(p.batch, p.m);
                const uint32_t half_rows = (in_use + 31) / 32 * 16;
                const uint32_t lo = slices == 1 ? 0 : min(in_use, blk / tiles * half_rows);
                const uint32_t rows = slices == 1 ? in_use : min(in_use - lo, half_rows);
                const uint32_t chunks = rows > chunk ? (rows + chunk - 1) / chunk : 1;
                // One chunk: one group, all the block's units, through the slots in turn (x read once).
                // Several: a group is the units in the slots at once, so each chunk is read once per
                // group; every block runs as many groups as the busiest, so that a
                // cluster's blocks copy x's chunks for each other the same number of times.
                const uint32_t busiest = (units + G - 1) / G, own = units_of_block(units, G);  // units: the busiest block's, this block's
                const uint32_t per_group = chunks == 1 ? busiest : MB_FSMALL_SLOTS;
                const uint32_t groups = (busiest + per_group - 1) / per_group;
                unsigned char* x_s = region;                                            // [chunk][pitch]
                float* part = reinterpret_cast<float*>(x_s + chunk * pitch);            // [WARPS][chunk][16]
                float2* row_stats = reinterpret_cast<float2*>(part + WARPS * chunk * BN);  // [chunk]
                const unsigned char* x = reinterpret_cast<const unsigned char*>(p.x);
                for (uint32_t g = 0; g < groups; g++) {
                    const uint32_t j0 = g * per_group;  // the group's first unit: the block's j0-th
                    for (uint32_t c = 0; c < chunks; c++) {
                        const uint32_t row0 = lo + c * chunk, n = min(chunk, rows - c * chunk), m16 = (n + 15) / 16;
                        const bool last_chunk = c + 1 == chunks;
                        // A peer copies the next chunk into this block only once every block of the
                        // cluster is done reading the last (release: the reads; acquire: the copies).
                        // The step's first chunk needs none: the grid barrier said so.
                        if (g > 0 || c > 0) {
                            cluster_arrive_release();
                            cluster_wait();
                        }
                        // x's chunk: rank r copies its rows r, r + C, ... into all C blocks of its
                        // cluster (multicast), so L2 serves x once per cluster. Warp 0 issues them: its
                        // lanes acquired the flags, and fence the proxies (x is other blocks' ordinary
                        // stores; a bulk copy reads through the async proxy). Every block of the
                        // cluster has a unit here, of the same row slice (P.cluster divides
                        // min(units, G) and, with two slices, the tiles), so each expects all of
                        // the chunk's rows, once a chunk.
                        if (tid < 32) {
                            __syncwarp();
                            fence_proxy_async_global();
                            if (tid == 0) mbar_arrive_expect_tx(x_ready, n * 2 * k);
                            for (uint32_t r = rank + cluster * tid; r < n; r += cluster * 32) {
                                const unsigned char* src = x + (size_t)(row0 + r) * k * 2;
                                if (cluster > 1) {
                                    bulk_load_multicast(x_s + r * pitch, src, 2 * k, x_ready, (uint16_t)((1u << cluster) - 1));
                                } else {
                                    bulk_load(x_s + r * pitch, src, 2 * k, x_ready);
                                }
                            }
                        }
                        zero_rows(x_s, k, n, m16);
                        while (!mbar_try_wait(x_ready, x_loads % 2)) {
                        }
                        x_loads++;
                        __syncthreads();
                        row_stats_of<T>(p, x_s, n, row_stats);
                        // The group's units two at a time, both in their slots: x's fragments are
                        // read once for the pair (accumulate), then each unit's partial tiles are
                        // summed and its epilogue run in turn.
                        const uint32_t end = min(j0 + per_group, own);
                        for (uint32_t j = j0; j < end; j += MB_FSMALL_SLOTS) {
                            const uint32_t pair = min(end - j, (uint32_t)MB_FSMALL_SLOTS), i = consumed + (j - j0);
                            if (c == 0) {  // the tiles' weights stay in their slots through the chunks
                                for (uint32_t u = 0; u < pair; u++) {
                                    const uint32_t at = (i + u) % MB_FSMALL_SLOTS;
                                    while (!mbar_try_wait(&slot_bar[at], ((i + u) / MB_FSMALL_SLOTS) % 2)) {
                                    }
                                }
                            }
                            float acc[MB_FSMALL_SLOTS][MAX_M16][2][4];
                            const unsigned char* const w[2] = {slots + (i % MB_FSMALL_SLOTS) * slot_bytes,
                                                               slots + ((i + 1) % MB_FSMALL_SLOTS) * slot_bytes};
                            if (pair == 2) {
                                accumulate<T, 2>(k, m16, w, x_s, acc);
                            } else {
                                const unsigned char* const w1[1] = {w[0]};
                                accumulate<T, 1>(k, m16, w1, x_s, acc);
                            }
#pragma unroll
                            for (uint32_t u = 0; u < MB_FSMALL_SLOTS; u++) {
                                if (u >= pair) break;
                                store_partial(m16, acc[u], part);
                                __syncthreads();  // part written; every warp is done with the slots
                                if (u == 0 && last_chunk && tid == 0) {
                                    // Each slot refilled with the block's tile two on (the ring's order).
                                    for (uint32_t v = 0; v < pair && issue.step < P.count; v++) {
                                        const uint32_t at = (i + v) % MB_FSMALL_SLOTS;
                                        issue_weights(steps[issue.step].gemm, unit_of(issue.j, G) % (steps[issue.step].gemm.n / BN),
                                                      slots + at * slot_bytes, &slot_bar[at]);
                                        issue = next_unit(steps, P.count, G, {issue.step, issue.j + 1});
                                    }
                                }
                                const uint32_t tile = unit_of(j + u, G) % tiles;
                                epilogue<T>(p, tile, row0, n, m16, part, row_stats);
                                __syncthreads();  // part is the next tile's
                                if (last_chunk && then_attention && tid == 0) {
                                    // The tile's q, k or v columns are one head's (tiles t of a
                                    // head_dim: head t / (head_dim / 16) mod heads). Its last tile's
                                    // ticket (the block's stores released by it, the others'
                                    // acquired) makes the head this block's.
                                    const AttentionParams& a = steps[s + 1].attention;
                                    const uint32_t per_head = 3 * (a.head_dim / BN), h = tile / (a.head_dim / BN) % a.heads;
                                    if (grid_count(&head_counts[h], per_head - 1) == per_head - 1) mine |= 1u << h;
                                }
                            }
                        }
                    }
                    consumed += j0 < own ? min(per_group, own - j0) : 0;
                }
            }
            if (then_attention) {
                if (tid == 0) heads_mine = mine;
                __syncthreads();  // heads_mine, and the region is free of x and the partial tiles
                attend<T>(steps[s + 1].attention, heads_mine, region, tid);
            }
        } else if (step.kind == MB_FSMALL_EMBED) {
            embed_rows<T>(step.embed, blk, G);  // all 256 threads a row (norm.cuh)
        } else if (step.kind == MB_FSMALL_NORM) {
            layernorm_rows<T>(step.norm, blk, G);
        }
        // ATTENTION: done inside the step before. 3. This block's share of step s is written (both
        // halves' attention blocks; a GEMM's last tile: its sync already) and the region is free:
        // raise its flag.
        __syncthreads();
        if (tid == 0) grid_signal(&flags[blk], base + s + 1);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_FSMALL_THREADS, 1) forward_small_sm90_bf16(const __grid_constant__ ForwardSmallParams p) {
    forward_small<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_FSMALL_THREADS, 1) forward_small_sm90_f16(const __grid_constant__ ForwardSmallParams p) {
    forward_small<__half>(p);
}
