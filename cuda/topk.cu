// topk.cu — softmax_topk: per row of logits, the softmax over the whole row and the k most probable
// columns — what fill-mask returns, so only k (id, probability) pairs per mask leave the device.
//   probs[r, j] = exp(x[r, ids[r, j]] - max_r) / sum_c exp(x[r, c] - max_r)
//   ids[r, 0..k]: the columns in descending logit order, equal logits lower column first (the
//   host's rule, src/reference/heads.rs). NaN logits are never picked (and make every
//   probability of their row NaN); no candidate left → id = cols, prob NaN.
//
// Shapes / layout: logits: T [rows, cols] (T = bf16 / fp16; the decoder's output with its bias);
//   ids: u32 [rows, k]; probs: f32 [rows, k]. Max, sum and probabilities in fp32.
// Algorithm: one block of MB_TOPK_THREADS threads per row (grid-stride over rows). Pass 1: block
//   max; pass 2: block sum of exp(x - max); then k selection passes: each thread keeps the best
//   column of its strided share that comes after the previous pick in the output order, and a
//   block arg-best (warp shuffles, then the warps' bests in shared memory, read in one order by all
//   threads) gives the next pick. k passes is right for fill-mask's small k; the row stays in L1/L2
//   (a 50,368-column bf16 row is 100 KB).
// Launch: grid (min(rows, MB_MAX_GRID)), block (MB_TOPK_THREADS). Static smem only (one float or
//   (float, u32) slot per warp for each of the three reductions: 128 B at 256 threads).
// Cost per row: reads cols * 2 B from DRAM once (k + 2 passes, the later ones cached), writes 8 k B;
//   ~ (k + 2) * cols compare/exp operations: made for fill-mask's small k (a k near cols is
//   correct but k times slower than a sort). Prediction (H100/H200, not measured): one row of
//   50,368 with k = 5 ≈ 7 passes x 197 elements per thread ≈ 10-20 µs on one SM, rows in parallel
//   across SMs; below the decoder GEMM it follows (77 MB of weights ≈ 16 µs at 4.8 TB/s).
#include "common.cuh"

namespace {

constexpr int kThreads = MB_TOPK_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr uint32_t kNone = 0xffffffffu;

// (v, id) comes before (w, jd) in the output order: a real candidate before none, then the larger
// logit, then the lower column. A total order on real candidates (columns are distinct), so every
// reduction order picks the same winner.
__device__ __forceinline__ bool ahead(float v, uint32_t id, float w, uint32_t jd) {
    return id != kNone && (jd == kNone || v > w || (v == w && id < jd));
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[kWarps];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = partial[0];
#pragma unroll
    for (int i = 1; i < kWarps; i++) m = fmaxf(m, partial[i]);
    __syncthreads();
    return m;
}

// Every thread gets the block's best (v, id).
__device__ __forceinline__ void block_best(float& v, uint32_t& id) {
    __shared__ float best_v[kWarps];
    __shared__ uint32_t best_id[kWarps];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        const uint32_t jd = __shfl_xor_sync(0xffffffffu, id, o);
        if (ahead(w, jd, v, id)) {
            v = w;
            id = jd;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        best_v[threadIdx.x >> 5] = v;
        best_id[threadIdx.x >> 5] = id;
    }
    __syncthreads();
    v = best_v[0];
    id = best_id[0];
#pragma unroll
    for (int i = 1; i < kWarps; i++) {
        if (ahead(best_v[i], best_id[i], v, id)) {
            v = best_v[i];
            id = best_id[i];
        }
    }
    __syncthreads();
}

template <class T>
__device__ __forceinline__ void softmax_topk(const SoftmaxTopkParams& p) {
    uint32_t* ids = reinterpret_cast<uint32_t*>(p.ids);
    float* probs = reinterpret_cast<float*>(p.probs);
    for (uint32_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const T* x = reinterpret_cast<const T*>(p.logits) + (uint64_t)row * p.cols;
        float m = -INFINITY;
        for (uint32_t c = threadIdx.x; c < p.cols; c += kThreads) m = fmaxf(m, to_f32<T>(x[c]));
        m = block_max(m);
        float s = 0.f;  // a NaN logit makes it NaN, and with it every probability: the host refuses those
        for (uint32_t c = threadIdx.x; c < p.cols; c += kThreads) s += expf(to_f32<T>(x[c]) - m);
        s = block_sum<kThreads>(s);
        float prev_v = 0.f;
        uint32_t prev_id = kNone;  // nothing picked yet: every column is a candidate
        for (uint32_t j = 0; j < p.k; j++) {
            float v = -INFINITY;
            uint32_t id = kNone;
            if (j == 0 || prev_id != kNone) {
                for (uint32_t c = threadIdx.x; c < p.cols; c += kThreads) {
                    const float xc = to_f32<T>(x[c]);
                    const bool after_prev = prev_id == kNone || ahead(prev_v, prev_id, xc, c);
                    if (xc == xc && after_prev && ahead(xc, c, v, id)) {
                        v = xc;
                        id = c;
                    }
                }
            }
            block_best(v, id);
            if (threadIdx.x == 0) {
                ids[(uint64_t)row * p.k + j] = id == kNone ? p.cols : id;
                probs[(uint64_t)row * p.k + j] = id == kNone ? NAN : expf(v - m) / s;
            }
            prev_v = v;
            prev_id = id;
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_TOPK_THREADS) softmax_topk_bf16(const __grid_constant__ SoftmaxTopkParams p) {
    softmax_topk<__nv_bfloat16>(p);
}
extern "C" __global__ void __launch_bounds__(MB_TOPK_THREADS) softmax_topk_f16(const __grid_constant__ SoftmaxTopkParams p) {
    softmax_topk<__half>(p);
}
