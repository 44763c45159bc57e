/*
 * params.h — the kernel parameter structs, the one file shared by the CUDA kernels, the host
 * emulator and Rust. Its Rust view, `#[repr(C)]` structs with layout assertions, is bindgen's output
 * committed as src/kernels/params_bindings.rs: after editing this file, refresh it with
 *     cargo run -p params-bindgen
 * (its test, `cargo test -p params-bindgen`, fails while it is stale; building the crate needs no
 * libclang, only that tool does).
 *
 * Rules, so that C, CUDA and Rust agree byte for byte:
 *   - fixed-width integers and float only; no bool, no enums as fields (uint32_t codes instead);
 *   - device pointers are uint64_t (a CUdeviceptr); 0 means "absent" where a field says so;
 *   - every struct is padded explicitly to a multiple of 8 bytes (fields named _pad*);
 *   - kernels take them by value: `extern "C" __global__ void k(const __grid_constant__ XParams p)`.
 *
 * Packed layout (see src/reference/ops.rs): all tokens of a batch are rows of one
 * [tokens, width] matrix; sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1].
 *
 * CUDA-graph rule: a graph is captured once per capacity bucket and replayed for every batch that
 * fits it, so the *actual* token and sequence counts are not kernel arguments: kernels read them
 * from a BatchDesc in device memory (written by one host-to-device copy per batch) and exit early
 * past them. `max_*` fields are capacities that only size the grid.
 */
#ifndef MODERNBERT_PARAMS_H
#define MODERNBERT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

/* Lives in device memory, one per batch. */
typedef struct BatchDesc {
    uint32_t tokens;     /* rows of the packed matrices actually in use */
    uint32_t sequences;  /* sequences in the batch */
    uint32_t max_seqlen; /* longest sequence of the batch */
    uint32_t _pad0;
} BatchDesc;

/* Activation codes: every activation config.json may name (ModernBERT uses GELU with erf). */
#define MB_ACT_GELU_ERF 0u
#define MB_ACT_GELU_TANH 1u
#define MB_ACT_RELU 2u
#define MB_ACT_SILU 3u

/* Pooling codes. */
#define MB_POOL_CLS 0u
#define MB_POOL_MEAN 1u

/* ---- Launch geometry ------------------------------------------------------------------------
 * The one home of every block size, tile size, width limit and grid cap: the kernels compile
 * against these names (__launch_bounds__, loop strides, shared arrays) and src/kernels/ops.rs
 * launches with the same names (exported through the committed bindings like the structs), so a
 * kernel and its launcher cannot disagree. Plain int literals: `int` in C, `u32` in Rust. */

/* Grid-stride row kernels (LayerNorm, embeddings, MLM head, RoPE, gather, top-k, ColBERT) never
 * launch more blocks than this; each block loops over the rows past it. */
#define MB_MAX_GRID 1048576 /* 2^20 */
/* The element-wise kernel (geglu) stops at fewer blocks: each thread then loops over
 * several vectors, which costs nothing in a memory-bound loop and keeps the grid small. */
#define MB_ELEMENTWISE_MAX_GRID 65536 /* 2^16 */
/* Elements of one 16-byte vector of bf16/fp16: the vector path of a row whose width (and
 * pointers) allow it; the others take the scalar path. */
#define MB_VEC 8
/* Dynamic shared memory a launch may use without the per-function opt-in. */
#define MB_DEFAULT_MAX_DYNAMIC_SMEM 49152 /* 48 KiB */

/* norm.cuh (layernorm.cu, embeddings.cu, head_act_norm of mlm_head.cu): each thread holds
 * MB_NORM_PER_THREAD elements of the row in registers, a block has at most MB_NORM_MAX_THREADS
 * threads, so a row is at most MB_MAX_NORM_WIDTH wide. The block has
 * round_up(ceil(hidden / MB_NORM_PER_THREAD), 32) threads (ops::norm_threads). */
#define MB_NORM_PER_THREAD 8
#define MB_NORM_MAX_THREADS 1024
#define MB_MAX_NORM_WIDTH (MB_NORM_PER_THREAD * MB_NORM_MAX_THREADS)

/* rope.cu: one block per token; its shared angle table holds MB_ROPE_MAX_HEAD_DIM / 2 angles. */
#define MB_ROPE_THREADS 128
#define MB_ROPE_MAX_HEAD_DIM 256

/* attention.cu: 4 warps of 16 query rows per block, 64-key K/V tiles, head_dim 64 only; static
 * shared memory = the Q tile + two (K, V) tile pairs (double buffering), 2-byte elements. */
#define MB_ATTENTION_HEAD_DIM 64
#define MB_ATTENTION_BLOCK_M 64
#define MB_ATTENTION_BLOCK_N 64
#define MB_ATTENTION_THREADS 128
#define MB_ATTENTION_TILE_BYTES (MB_ATTENTION_BLOCK_N * MB_ATTENTION_HEAD_DIM * 2)
#define MB_ATTENTION_SMEM_BYTES (5 * MB_ATTENTION_TILE_BYTES)

/* geglu.cu: grid-stride over vectors of the output. */
#define MB_GEGLU_THREADS 256

/* pooling.cu: one block per sequence; its dynamic shared memory is ops::pool_smem_bytes. */
#define MB_POOL_THREADS 256

/* colbert.cu: one warp per row. */
#define MB_COLBERT_THREADS 128
#define MB_COLBERT_ROWS_PER_BLOCK (MB_COLBERT_THREADS / 32)

/* gather.cu: one block per gathered row. */
#define MB_GATHER_THREADS 128

/* topk.cu: one block per row of logits; its reductions keep one slot per warp. */
#define MB_TOPK_THREADS 256

/* embeddings.cu: out[t] = LayerNorm(table[ids[t]]) */
typedef struct EmbeddingLayerNormParams {
    uint64_t ids;    /* const uint32_t [tokens] */
    uint64_t table;  /* const T [vocab, hidden] */
    uint64_t weight; /* const T [hidden] */
    uint64_t bias;   /* const T [hidden], or 0 (norm_bias = false) */
    uint64_t out;    /* T [tokens, hidden] */
    uint64_t batch;  /* const BatchDesc* */
    uint32_t max_tokens;
    uint32_t hidden;
    uint32_t vocab;  /* ids >= vocab are clamped to 0 (the host validates ids before) */
    float eps;
} EmbeddingLayerNormParams;

/* layernorm.cu: if delta != 0 { residual += delta } ; out = LayerNorm(residual) */
typedef struct LayerNormParams {
    uint64_t residual; /* T [tokens, hidden]; updated in place when delta != 0 */
    uint64_t delta;    /* const T [tokens, hidden], or 0 for a plain LayerNorm */
    uint64_t weight;   /* const T [hidden] */
    uint64_t bias;     /* const T [hidden], or 0 */
    uint64_t out;      /* T [tokens, hidden] */
    uint64_t batch;    /* const BatchDesc* */
    uint32_t max_tokens;
    uint32_t hidden;
    float eps;
    uint32_t _pad0;
} LayerNormParams;

/* rope.cu: rotate-half RoPE on the Q and K parts of qkv, in place. Positions restart at 0 for each
 * sequence (derived from cu_seqlens); angles pos * inv_freq in fp32, inv_freq = theta^(-2k/d). */
typedef struct RopeParams {
    uint64_t qkv;        /* T [tokens, 3, heads, head_dim]; V is not touched */
    uint64_t cu_seqlens; /* const uint32_t [sequences + 1] */
    uint64_t batch;      /* const BatchDesc* */
    uint32_t max_tokens;
    uint32_t heads;
    uint32_t head_dim;
    float theta;
} RopeParams;

/* attention.cu: varlen bidirectional attention, head_dim 64, online softmax (FA2 style). */
typedef struct AttentionParams {
    uint64_t qkv;        /* const T [tokens, 3, heads, 64], RoPE already applied */
    uint64_t out;        /* T [tokens, heads * 64] (heads merged head-major) */
    uint64_t cu_seqlens; /* const uint32_t [sequences + 1] */
    uint64_t key_lens;   /* const uint32_t [sequences]: leading tokens that are keys; 0 = all */
    uint64_t batch;      /* const BatchDesc* */
    uint32_t max_sequences;
    uint32_t max_seqlen; /* capacity: sizes the grid's query-tile dimension */
    uint32_t heads;
    uint32_t head_dim;   /* must be 64 */
    int32_t window_radius; /* < 0: global; else key j visible to query i iff |i - j| <= radius */
    float softmax_scale;   /* 1 / sqrt(head_dim) */
} AttentionParams;

/* geglu.cu: out[t, j] = act(h[t, j]) * h[t, I + j] */
typedef struct GegluParams {
    uint64_t h;     /* const T [tokens, 2 * inter] */
    uint64_t out;   /* T [tokens, inter] */
    uint64_t batch; /* const BatchDesc* */
    uint32_t max_tokens;
    uint32_t inter;
    uint32_t activation; /* MB_ACT_* */
    uint32_t _pad0;
} GegluParams;

/* pooling.cu: one vector per sequence: CLS row or mean over the first key_lens[b] rows, optional
 * L2 normalisation, first out_dim of hidden dims kept (Matryoshka; normalised after truncation). */
typedef struct PoolParams {
    uint64_t hidden;     /* const T [tokens, hidden_dim] */
    uint64_t out;        /* float [sequences, out_dim] */
    uint64_t cu_seqlens; /* const uint32_t [sequences + 1] */
    uint64_t key_lens;   /* const uint32_t [sequences], or 0 = whole sequence */
    uint64_t batch;      /* const BatchDesc* */
    uint32_t max_sequences;
    uint32_t hidden_dim;
    uint32_t out_dim;
    uint32_t pooling;    /* MB_POOL_* */
    uint32_t normalize;  /* 0 or 1 */
    uint32_t _pad0;
} PoolParams;

/* mlm_head.cu: the prediction head after its dense GEMM: out = LayerNorm(act(x + dense_bias)). */
typedef struct HeadActNormParams {
    uint64_t x;          /* const T [tokens, hidden]: head.dense output */
    uint64_t dense_bias; /* const T [hidden], or 0 (classifier_bias = false) */
    uint64_t weight;     /* const T [hidden]: head.norm */
    uint64_t bias;       /* const T [hidden], or 0 */
    uint64_t out;        /* T [tokens, hidden] */
    uint64_t batch;      /* const BatchDesc* or 0 = use max_tokens rows */
    uint32_t max_tokens;
    uint32_t hidden;
    uint32_t activation; /* MB_ACT_* */
    float eps;
} HeadActNormParams;

/* colbert.cu: out[t] = x[t] / max(||x[t]||_2, 1e-12), fp32 out. */
typedef struct RowNormalizeParams {
    uint64_t x;     /* const T [rows, dim] */
    uint64_t out;   /* float [rows, dim] */
    uint64_t batch; /* const BatchDesc* (rows = tokens) or 0 = use max_rows */
    uint32_t max_rows;
    uint32_t dim;
} RowNormalizeParams;

/* gather.cu: out[r] = x[rows[r]] for r < n_rows — the masked positions picked for the MLM head. */
typedef struct GatherRowsParams {
    uint64_t x;    /* const T [tokens, width] */
    uint64_t rows; /* const uint32_t [n_rows]: row indices into x (each < the rows of x) */
    uint64_t out;  /* T [n_rows, width] */
    uint32_t n_rows;
    uint32_t width;
} GatherRowsParams;

/* topk.cu: per row of logits, softmax over the whole row and the k most probable columns, in
 * descending order (equal logits: lower column first); no candidate (all NaN) gives id = cols. */
typedef struct SoftmaxTopkParams {
    uint64_t logits; /* const T [rows, cols] */
    uint64_t ids;    /* uint32_t [rows, k] */
    uint64_t probs;  /* float [rows, k] */
    uint32_t rows;
    uint32_t cols;
    uint32_t k;      /* 1..=cols */
    uint32_t _pad0;
} SoftmaxTopkParams;

/* selftest.cu: runs the device primitives (mma, ldmatrix, shuffles, cp.async, packing) on given
 * inputs for the GPU self-test (kernels-tests/tests/gpu_selftest.rs); one warp (or block) per test. */
typedef struct SelftestParams {
    uint64_t in;  /* const uint32_t [...]: inputs, laid out per kernel (see selftest.cu) */
    uint64_t out; /* uint32_t [...]: outputs */
    uint32_t n;   /* element count where a kernel needs one */
    uint32_t mode;
} SelftestParams;

/* ---- sm_90a: tensor maps and the warp-specialised wgmma GEMM (cuda/gemm_sm90.cu) ---- */

/* A tensor map as a kernel parameter: on the GPU the CUtensorMap cuTensorMapEncodeTiled writes, in
   the emulator that emulator's own encoding (cuda/emu/hopper.cpp). Opaque, 128 bytes, 128-aligned. */
typedef struct MbTensorMap {
    __attribute__((aligned(128))) uint64_t opaque[16];
} MbTensorMap;

/* What a tiled tensor map describes (host side; src/kernels/tensor_map.rs checks it and hands it to
   the device's encoder). Dimension 0 is the innermost (contiguous) one. */
#define MB_TMAP_BF16 0u
#define MB_TMAP_F16 1u
#define MB_TMAP_F32 2u
#define MB_SWIZZLE_NONE 0u /* else the swizzle span in bytes: 32, 64 or 128 */
typedef struct MbTensorMapDesc {
    uint64_t global_address; /* 16-byte aligned */
    uint64_t dims[5];        /* elements per dimension */
    uint64_t strides[5];     /* bytes between consecutive indices; strides[0] is the element size */
    uint32_t box[5];         /* elements per dimension of the box one copy moves, 1..256 */
    uint32_t rank;           /* 1..5 */
    uint32_t dtype;          /* MB_TMAP_* */
    uint32_t swizzle;        /* MB_SWIZZLE_NONE, 32, 64, 128 */
    uint32_t oob_nan;        /* out-of-bounds elements of a load read as NaN (else 0) */
    uint32_t pad;
} MbTensorMapDesc;

/* gemm_sm90: C[M,N] = A[M,K] . B[N,K]^T, bf16/fp16 in, f32 accumulate, persistent over its 128 x 128
   output tiles (a block per multiprocessor, ops::gemm_sm90_geometry). One producer warpgroup
   (one thread issues the TMA loads) and MB_GEMM90_CONSUMERS consumer warpgroups of 64 rows each. */
#define MB_GEMM90_BM 128
#define MB_GEMM90_BN 128
#define MB_GEMM90_BK 64 /* 64 x 2 bytes = one 128-byte swizzle row */
#define MB_GEMM90_STAGES 4
#define MB_GEMM90_CONSUMERS 2
#define MB_GEMM90_THREADS (128 * (1 + MB_GEMM90_CONSUMERS))
#define MB_GEMM90_A_TILE_BYTES (MB_GEMM90_BM * MB_GEMM90_BK * 2)
#define MB_GEMM90_B_TILE_BYTES (MB_GEMM90_BN * MB_GEMM90_BK * 2)
#define MB_GEMM90_C_TILE_BYTES (MB_GEMM90_BM * MB_GEMM90_BN * 2)
/* stages of A and B, the C staging tile, the barriers, and 1024 bytes to align the first tile */
#define MB_GEMM90_SMEM_BYTES \
    (MB_GEMM90_STAGES * (MB_GEMM90_A_TILE_BYTES + MB_GEMM90_B_TILE_BYTES) + MB_GEMM90_C_TILE_BYTES + 256 + 1024)
#define MB_GEMM90_PRODUCER_REGS 40
#define MB_GEMM90_CONSUMER_REGS 232
/* gemm_sm90_rope: the head_dim its epilogue rotates (ModernBERT base and large); a compile-time
   constant so that each rotate-half pair's two accumulators are registers of one thread. */
#define MB_GEMM90_ROPE_HEAD_DIM 64
/* One row's statistics over one BN-column tile: the mean of its MB_GEMM90_BN values and the sum
   of their squared deviations from it. Tiles of equal count combine exactly (Chan et al.), so
   a row's variance never comes from a difference of two large sums. */
typedef struct MbRowStats {
    float mean;
    float m2;
} MbRowStats;
typedef struct GemmSm90Params {
    MbTensorMap a; /* [M, K], box BK x BM, 128-byte swizzle */
    MbTensorMap b; /* [N, K], box BK x BN, 128-byte swizzle */
    MbTensorMap c; /* [M, N], box BN x 64 (one consumer's rows), no swizzle; geglu: [M, N/2], box BN/2 x 64 */
    MbTensorMap r; /* gemm_sm90_residual: the residual [M, N] (may be c itself), c's box; else unused */
    uint64_t cu_seqlens; /* gemm_sm90_rope: const uint32_t [sequences + 1] */
    uint64_t batch;      /* gemm_sm90_rope: const BatchDesc* (its sequence count) */
    /* The LayerNorm between two GEMMs, without a pass of its own (gemm_sm90.cu, "Row statistics"):
       gemm_sm90_residual writes each row's partial statistics of the tile it stored; the next GEMM
       normalises its A rows with them in its epilogue, LayerNorm's gamma folded into its B. */
    uint64_t stats_out; /* gemm_sm90_residual: MbRowStats [M, N / BN], or 0 for none */
    uint64_t stats_in;  /* the other epilogues: const MbRowStats [M, K / BN] of A's rows, or 0: A as it is */
    uint64_t colsum;    /* with stats_in: const float [N], sum over k of B[n, k] (the stored values) */
    uint32_t m, n, k;
    uint32_t act;       /* gemm_sm90_geglu: MB_ACT_* of the activated half */
    float theta;        /* gemm_sm90_rope: the layer's RoPE theta */
    uint32_t rotated;   /* gemm_sm90_rope: columns [0, rotated) are rotated (Q and K), a multiple of BN */
    float eps;          /* with stats_in: the LayerNorm's epsilon */
    uint32_t pad[15];   /* to the 128-byte alignment: no implicit padding in a parameter struct */
} GemmSm90Params;

/* attention_sm90.cu: attention.cu's varlen attention (same AttentionParams, head_dim 64) on sm_90a,
   FlashAttention-3 style: one producer warpgroup (one thread issues the TMA loads; its warp zeroes
   the V rows past the keys of a partial last tile) and MB_ATT90_CONSUMERS consumer warpgroups of
   64 query rows; S = Q K^T by wgmma from shared memory, O += P V by wgmma with P in registers and
   V MN-major; K and V tiles in MB_ATT90_STAGES stages, each with its own full / empty barriers.
   Key tiles: MB_ATT90_BN_GLOBAL keys (global layers), MB_ATT90_BN_LOCAL (a window: fewer keys
   outside it). */
#define MB_ATT90_HEAD_DIM 64
#define MB_ATT90_CONSUMERS 2
#define MB_ATT90_BM (64 * MB_ATT90_CONSUMERS) /* query rows a block */
#define MB_ATT90_THREADS (128 * (1 + MB_ATT90_CONSUMERS))
#define MB_ATT90_BN_GLOBAL 128
#define MB_ATT90_BN_LOCAL 64
#define MB_ATT90_STAGES 2
#define MB_ATT90_BOX_ROWS 64 /* rows of the tensor map's box (64 x 64 elements, 8 KiB, 128-byte swizzle) */
#define MB_ATT90_PRODUCER_REGS 40
#define MB_ATT90_CONSUMER_REGS 232
/* Q (BM rows of 128 bytes), MB_ATT90_STAGES K and V tiles of bn rows, the barriers (256 bytes),
   and 1024 bytes to align the first tile on the 128-byte swizzle's repeat */
#define MB_ATT90_SMEM_BYTES(bn) (MB_ATT90_BM * 128 + 2 * MB_ATT90_STAGES * (bn) * 128 + 256 + 1024)
typedef struct AttentionSm90Params {
    MbTensorMap qkv;  /* qkv as a [rows, 3 * heads * 64] matrix: box 64 x MB_ATT90_BOX_ROWS, 128-byte swizzle */
    AttentionParams attn; /* the pointers, capacities and window, as attention.cu takes them */
    uint32_t pad[16]; /* to the 128-byte alignment */
} AttentionSm90Params;
/* handoff_sm90.cu: the time of one dependency step between two phases of a forward, each way the
   small-batch design could take (a launch per step, with or without programmatic dependent launch;
   one co-scheduled launch with a grid barrier between steps). A microbenchmark, not the forward. */
#define MB_HANDOFF_THREADS 32 /* one warp a block: its lanes watch the other blocks' flags */
/* grid_wait_all_geq (device.cuh): the flags one thread loads at once, a round trip to L2 a round;
   a warp watching 32 x 8 = 256 blocks' flags waits one round trip after the last is raised. */
#define MB_GRID_WAIT_BATCH 8
typedef struct HandoffParams {
    uint64_t out;   /* uint32_t [steps, blocks]: step s, block b = the maximum of step s - 1's values, + 1 */
    uint64_t flags; /* handoff_persistent: uint32_t [blocks] (zeroed): the last step each block finished */
    uint32_t step;  /* handoff_step: this launch's step */
    uint32_t steps; /* handoff_persistent: the steps of its one launch */
} HandoffParams;

/* gemm_stream_sm90.cu: the small-batch GEMM, out = epilogue(norm(x) · wᵀ) for m ≤ MB_STREAM_MAX_M
   rows: every block streams MB_STREAM_BN weight rows over the whole K into shared memory (before
   griddepcontrol.wait: weights are no kernel's output) and needs all of x, which its cluster of up
   to MB_STREAM_CLUSTER blocks reads from L2 once (multicast); its 8 warps split K in
   MB_STREAM_KCHUNK-wide chunks and their partial tiles are summed in a fixed order. The same
   products and epilogues as gemm_sm90 (the Hopper path's weights: γ folded, Wi's rows in
   ops::geglu_weight_rows' order), the LayerNorm's row statistics taken from x itself. */
#define MB_STREAM_THREADS 256
#define MB_STREAM_WARPS (MB_STREAM_THREADS / 32)
#define MB_STREAM_BN 16     /* output columns a block: two n8 mma tiles (rope, geglu: 8 pairs) */
#define MB_STREAM_KCHUNK 32 /* k per warp step: 4 lanes x 8 elements, one 16-byte load each */
#define MB_STREAM_MAX_M 64  /* rows: four m16 accumulator tiles per warp */
/* blocks per cluster sharing x's copies: every ModernBERT width (n / BN: base 144, 48; large 192,
   64, 328) is a multiple of 4, and 4 blocks of one SM each fit in any GPC */
#define MB_STREAM_CLUSTER 4
/* bytes after each shared row: rows are 64 mod 128 bytes apart, so the 16-byte loads of a
   quarter-warp (two rows, 64 bytes each) fall in distinct banks (K is a multiple of 64) */
#define MB_STREAM_ROW_PAD 64
#define MB_STREAM_MAX_SMEM 232448 /* sm_90's opt-in dynamic shared memory per block, 227 KiB */
/* mr = m rounded up to 16: the weight rows and x's mr rows at pitch 2k + pad, the warps' partial
   tiles (f32), each row's mean and 1 / std, x's mbarrier */
#define MB_STREAM_SMEM_BYTES(mr, k)                                           \
    ((MB_STREAM_BN + (mr)) * (2 * (k) + MB_STREAM_ROW_PAD) +                  \
     MB_STREAM_WARPS * (mr) * MB_STREAM_BN * 4 + (mr) * 8 + 8)
#define MB_STREAM_STORE 0u    /* out = the product, [m, n] */
#define MB_STREAM_GEGLU 1u    /* out = act(first half) * second half, [m, n / 2] */
#define MB_STREAM_ROPE 2u     /* out = the product, columns < rotated rotated per head of 64 */
#define MB_STREAM_RESIDUAL 3u /* out = r + the product, [m, n]; r may be out */
typedef struct GemmStreamParams {
    uint64_t x;          /* const T [m, k] */
    uint64_t w;          /* const T [n, k] */
    uint64_t out;        /* T [m, n], geglu [m, n / 2] */
    uint64_t r;          /* residual: const T [m, n], or out itself */
    uint64_t colsum;     /* norm: const float [n], sum over k of w[n, k] */
    uint64_t cu_seqlens; /* rope: const uint32_t [sequences + 1] */
    uint64_t batch;      /* const BatchDesc*: rows in use = its tokens (rope: its sequences too); 0 = m */
    uint32_t m, n, k;    /* m: the capacity rows, <= MB_STREAM_MAX_M (a forward_small step: MB_FSMALL_MAX_ROWS);
                            n % BN == 0; k % 64 == 0 */
    uint32_t epilogue;   /* MB_STREAM_* */
    uint32_t norm;       /* 1: LayerNorm of x's rows first (γ folded into w): rstd · (acc − mean · colsum) */
    float eps;
    uint32_t act;        /* geglu: MB_ACT_* */
    float theta;         /* rope */
    uint32_t rotated;    /* rope: columns [0, rotated) rotated, a multiple of 64 */
    uint32_t cluster;    /* blocks per cluster (the launch's cluster dimension): 1 .. MB_STREAM_CLUSTER, dividing n / BN */
} GemmStreamParams;

/* forward_small_sm90.cu: the small-batch forward in one co-scheduled launch — a program of steps
   (the embeddings, the stream GEMMs and attention of every layer, the final norm, in order), each
   block taking its share of a step's units (a GEMM's 16-column tiles, attention's 64-query
   blocks, a norm's rows), then a grid barrier (each block's flag raised to the steps it
   finished, every block waiting for all flags; attention has none, see MB_FSMALL_ATTENTION). A
   block's next GEMM tile's weights are in flight while it computes, and across the barriers, in a
   ring of MB_FSMALL_SLOTS slots. The grid may be in clusters of up to MB_FSMALL_CLUSTER blocks
   (a cooperative launch with a cluster dimension): a GEMM step's x is then read from L2 once per
   cluster and multicast to its blocks, not once per block. */
#define MB_FSMALL_THREADS MB_STREAM_THREADS /* 8 warps: a GEMM tile's, or two attention blocks of 4 */
#define MB_FSMALL_SLOTS 2                   /* weight tiles in flight: the one computed and the next */
#define MB_FSMALL_MAX_BLOCKS 1024           /* the flags' room in the arena: more blocks than any GPU has SMs */
#define MB_FSMALL_FLAGS_START 0xffffffc0u   /* the flags' value when the program is placed: 64 steps before
                                               they wrap, so the first launches cross the wrap (grid_wait_all_geq
                                               compares modulo 2^32) on every run and test, not after weeks */
#define MB_FSMALL_MAX_HEADS 32              /* attention heads a program takes (a bit each in a block's mask) */
#define MB_FSMALL_MAX_ROWS 256              /* a GEMM step's capacity rows: x's rows in use pass through shared
                                               memory in chunks of ForwardSmallParams.m rows */
/* A GEMM step's row slices: 2 (each tile's rows in use split in halves, rounded to 16, on two
   blocks: a block has at most one unit) where a grid of `blocks` has a block for every
   (tile, half) and no attention step follows (a head's ticket counts whole tiles); else 1 */
#define MB_FSMALL_SLICES(tiles, blocks, then_attention) (!(then_attention) && 2 * (tiles) <= (blocks) ? 2u : 1u)
#define MB_FSMALL_CLUSTER 4                 /* the widest cluster tried (x's L2 reads / 4); 2, then 1, if it cannot be */
#define MB_FSMALL_GEMM 0u                   /* step kinds */
#define MB_FSMALL_ATTENTION 1u /* after a Wqkv GEMM step, run inside it: head h by the block that took
                                  its last tile's ticket, with no grid barrier between */
#define MB_FSMALL_EMBED 2u /* embeddings.cu's rows: the program's first step */
#define MB_FSMALL_NORM 3u  /* layernorm.cu's rows: its last (the final norm) */
typedef struct ForwardSmallStep {
    GemmStreamParams gemm;          /* kind GEMM: m the launch's capacity rows (<= MB_FSMALL_MAX_ROWS), cluster 1 */
    AttentionParams attention;      /* kind ATTENTION */
    EmbeddingLayerNormParams embed; /* kind EMBED: hidden <= MB_FSMALL_THREADS * MB_NORM_PER_THREAD */
    LayerNormParams norm;           /* kind NORM: the same bound */
    uint32_t kind;                  /* MB_FSMALL_* */
    uint32_t reserved;
} ForwardSmallStep;
typedef struct ForwardSmallParams {
    uint64_t steps; /* const ForwardSmallStep [count] */
    uint64_t flags; /* uint32_t [gridDim.x], MB_FSMALL_FLAGS_START once, + the steps each block
                       has finished over all launches (mod 2^32) */
    uint32_t count; /* steps */
    uint32_t m;     /* x's rows in shared memory at once, a chunk (a multiple of 16, <= MB_STREAM_MAX_M): a
                       GEMM step's rows in use pass through in chunks of m */
    uint32_t k;      /* the widest GEMM step's K: the shared rows' pitch */
    uint32_t blocks; /* the grid (flags' length), checked against gridDim.x */
    uint32_t cluster; /* blocks per cluster (the launch's cluster dimension), dividing blocks and every
                         GEMM step's count of blocks with a unit, min(n / MB_STREAM_BN · slices, blocks),
                         and with two slices its tiles */
    uint32_t reserved;
    uint64_t head_counts; /* uint32_t [MB_FSMALL_MAX_HEADS], zeroed once: each head's Wqkv tiles done in
                             the current layer (grid_count: back to 0 after the head's last) */
} ForwardSmallParams;
/* Shared memory (bytes from the start): the mbarriers, 128 bytes (the slots', then x's:
   MB_FSMALL_X_BARRIER); the weight slots, each [MB_STREAM_BN][pitch]; then one region used by turns: a chunk of a GEMM step's x [mr][pitch], the warps'
   partial tiles and the rows' statistics (stream_tile.cuh), or an attention step's two blocks. */
#define MB_FSMALL_PITCH(k) (2 * (k) + MB_STREAM_ROW_PAD)
#define MB_FSMALL_SLOTS_OFFSET 128
#define MB_FSMALL_X_BARRIER MB_FSMALL_SLOTS /* x's mbarrier: the one after the slots' */
#define MB_FSMALL_REGION_OFFSET(k) (MB_FSMALL_SLOTS_OFFSET + MB_FSMALL_SLOTS * MB_STREAM_BN * MB_FSMALL_PITCH(k))
#define MB_FSMALL_GEMM_REGION(mr, k) ((mr) * MB_FSMALL_PITCH(k) + MB_STREAM_WARPS * (mr) * MB_STREAM_BN * 4 + (mr) * 8)
#define MB_FSMALL_ATTENTION_REGION (2 * MB_ATTENTION_SMEM_BYTES)
#define MB_FSMALL_SMEM_BYTES(mr, k)                                                                   \
    (MB_FSMALL_REGION_OFFSET(k) + (MB_FSMALL_GEMM_REGION(mr, k) > MB_FSMALL_ATTENTION_REGION        \
                                       ? MB_FSMALL_GEMM_REGION(mr, k)                              \
                                       : MB_FSMALL_ATTENTION_REGION))

/* selftest_sm90.cu: the sm_90a instruments (wgmma and TMA against the emulator, PDL, misuse). */
#define MB_SELFTEST90_THREADS 128        /* one warpgroup */
#define MB_SELFTEST90_IMAGE_BYTES 65536 /* the shared-memory image wgmma reads */
#define MB_SELFTEST90_SMEM_BYTES (MB_SELFTEST90_IMAGE_BYTES + 2048)
typedef struct SelftestSm90Params {
    MbTensorMap map;   /* selftest_tma_*: the map under test */
    uint64_t in;       /* inputs (per kernel, see selftest_sm90.cu) */
    uint64_t out;      /* outputs */
    uint64_t desc_a;   /* selftest_wgmma: descriptors with start addresses relative to the image */
    uint64_t desc_b;
    int32_t coords[5]; /* selftest_tma_*: the box's coordinates */
    uint32_t n;        /* wgmma N (64, 128, 256); element count for selftest_pdl_copy */
    uint32_t mode;     /* wgmma: bit 0 fp16, bit 1 A from registers, bit 2 scale-d 0, bit 3 B MN-major; misuse: which misuse */
    uint32_t bytes;    /* selftest_tma_*: the box's bytes */
    uint32_t pad[16];  /* to the 128-byte alignment */
} SelftestSm90Params;

#endif /* MODERNBERT_PARAMS_H */
