// attention_block.cuh — one 64-query block of attention.cu's FlashAttention-2 forward (head_dim
// 64, bf16 / fp16, f32 softmax and accumulators), for any 128 threads a caller gives it: attention.cu
// runs one per thread block; the persistent small-batch forward (forward_small_sm90.cu) runs two at
// once in a block of 256. The algorithm, layouts and costs are attention.cu's header.
#pragma once
#include "params.h"
#include "device.cuh"
#include "softmax.cuh"  // online_softmax_rows

namespace attention_detail {

// The fragment layout below is written for exactly this geometry (4 warps x 16 rows, 128-byte tile
// rows of 64 two-byte elements, 4 cp.async chunks per thread per tile).
static_assert(MB_ATTENTION_HEAD_DIM == 64 && MB_ATTENTION_BLOCK_M == 64 && MB_ATTENTION_BLOCK_N == 64 &&
                  MB_ATTENTION_THREADS == 128,
              "attention.cu's fragment layout is written for 64 x 64 tiles and 4 warps");

template <typename T>
struct Prec;
template <>
struct Prec<__nv_bfloat16> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
        mma_m16n8k16_bf16(d, a, b, d);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
};
template <>
struct Prec<__half> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
        mma_m16n8k16_f16(d, a, b, d);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_f16x2(lo, hi); }
};

// Stage a 64 x 64 tile whose row 0 is `src` (row stride `stride` elements) into swizzled shared memory:
// rows < rows_valid by cp.async, the others zero-filled. Every thread copies 4 of the 512 16-byte chunks.
template <typename T>
__device__ __forceinline__ void load_tile(unsigned char* dst, const T* src, size_t stride, int rows_valid,
                                          int tid) {
#pragma unroll
    for (int k = 0; k < (MB_ATTENTION_BLOCK_N * MB_ATTENTION_HEAD_DIM * 2 / 16) / MB_ATTENTION_THREADS; ++k) {
        const int idx = tid + k * MB_ATTENTION_THREADS;
        const int row = idx >> 3;
        const int ch = idx & 7;
        unsigned char* d = dst + swz128(row, 8 * ch);
        if (row < rows_valid) {
            cp_async_16(d, src + (size_t)row * stride + ch * 8);
        } else {
            *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

// The block of query rows qb · 64 .. of head h of sequence b, computed by the 128 threads tid =
// 0 .. 127 of the caller's choosing in MB_ATTENTION_SMEM_BYTES of shared memory at `smem` (128-byte
// aligned). `sync()` is a barrier of exactly those threads (__syncthreads in attention.cu's own
// blocks; a named barrier where a block runs two of these at once). DEPENDENT: the launch is a
// programmatic dependent of the one that wrote qkv, so griddepcontrol.wait comes before the first
// read of qkv; until then only the host's uploads (BatchDesc, cu_seqlens, key_lens) are read.
template <typename T, bool DEPENDENT, typename Sync>
__device__ __forceinline__ void attention_block(const AttentionParams& p, int b, int h, int qb, unsigned char* smem,
                                                int tid, Sync sync) {
    unsigned char* const sQ = smem;
    unsigned char* const sKV = smem + MB_ATTENTION_TILE_BYTES;  // buffer i: K at sKV + 2*i*tile, V right after it
    const BatchDesc* const desc = reinterpret_cast<const BatchDesc*>(p.batch);
    const int heads = (int)p.heads;
    if (p.head_dim != MB_ATTENTION_HEAD_DIM || b >= (int)p.max_sequences || b >= (int)desc->sequences || h >= heads) {
        return;
    }
    const uint32_t* const cu = reinterpret_cast<const uint32_t*>(p.cu_seqlens);
    const int start = (int)cu[b];
    const int len = (int)cu[b + 1] - start;
    const int q0 = qb * MB_ATTENTION_BLOCK_M;
    if (q0 >= len) return;  // block-uniform, before any barrier

    int n_keys = len;
    if (p.key_lens != 0) {
        const int kl = (int)reinterpret_cast<const uint32_t*>(p.key_lens)[b];
        n_keys = kl < len ? kl : len;
    }
    // A radius >= len is the same as global (and keeps the index arithmetic below in range).
    const bool local = p.window_radius >= 0 && p.window_radius < len;
    const int r = local ? p.window_radius : 0;
    const int q_end = min(q0 + MB_ATTENTION_BLOCK_M, len);
    int klo = 0, khi = n_keys;
    if (local) {
        klo = max(0, q0 - r);
        khi = min(n_keys, q_end + r);
    }
    const int n_tiles = khi > klo ? (khi - klo + MB_ATTENTION_BLOCK_N - 1) / MB_ATTENTION_BLOCK_N : 0;

    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int g = lane >> 2;  // fragment row group
    const int t4 = lane & 3;  // thread in group
    const int w0 = q0 + warp * 16;
    const int w_last = min(w0 + 15, len - 1);
    // This warp's key range (chunks outside it are skipped); empty when the warp has no real row.
    int wlo = klo, whi = khi;
    if (local) {
        wlo = max(0, w0 - r);
        whi = min(n_keys, w_last + r + 1);
    }
    if (w0 >= len) whi = wlo;

    const size_t stride = (size_t)3 * heads * MB_ATTENTION_HEAD_DIM;
    const T* const qkv = reinterpret_cast<const T*>(p.qkv);
    const T* const q_src = qkv + (size_t)(start + q0) * stride + (size_t)h * MB_ATTENTION_HEAD_DIM;
    const T* const k_src = q_src + (size_t)heads * MB_ATTENTION_HEAD_DIM - (size_t)q0 * stride;  // row 0 of the sequence
    const T* const v_src = k_src + (size_t)heads * MB_ATTENTION_HEAD_DIM;

    if (DEPENDENT) pdl_wait();  // qkv is the previous launch's output
    load_tile(sQ, q_src, stride, q_end - q0, tid);
    if (n_tiles > 0) {
        load_tile(sKV, k_src + (size_t)klo * stride, stride, khi - klo, tid);
        load_tile(sKV + MB_ATTENTION_TILE_BYTES, v_src + (size_t)klo * stride, stride, khi - klo, tid);
    }
    cp_async_commit();
    cp_async_wait_all();
    sync();

    uint32_t qf[4][4];  // A fragments of the warp's 16 rows, 4 k-steps of 16 dims
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
        ldmatrix_x4(qf[ks], sQ + swz128(warp * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8));
    }

    const float kNegInf = -INFINITY;
    const float sl2 = p.softmax_scale * 1.4426950408889634f;  // scale * log2(e)
    const int i0 = w0 + g;                                   // the two rows this thread holds
    const int i1 = i0 + 8;
    float o[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.f;
    float m[2] = {kNegInf, kNegInf};
    float l[2] = {0.f, 0.f};

    for (int t = 0; t < n_tiles; ++t) {
        if (t > 0) {
            cp_async_wait_all();  // tile t has landed
            sync();      // ... for every thread, and every warp is done with tile t-1's buffer
        }
        if (t + 1 < n_tiles) {  // prefetch tile t+1 into the buffer tile t-1 used
            const int nxt = klo + (t + 1) * MB_ATTENTION_BLOCK_N;
            unsigned char* const buf = sKV + ((t + 1) & 1) * 2 * MB_ATTENTION_TILE_BYTES;
            load_tile(buf, k_src + (size_t)nxt * stride, stride, khi - nxt, tid);
            load_tile(buf + MB_ATTENTION_TILE_BYTES, v_src + (size_t)nxt * stride, stride, khi - nxt, tid);
            cp_async_commit();
        }
        const int kv0 = klo + t * MB_ATTENTION_BLOCK_N;
        if (kv0 >= whi || kv0 + MB_ATTENTION_BLOCK_N <= wlo) continue;  // warp-uniform: nothing for this warp here
        const unsigned char* const sK = sKV + (t & 1) * 2 * MB_ATTENTION_TILE_BYTES;
        const unsigned char* const sV = sK + MB_ATTENTION_TILE_BYTES;

        // S = Q K^T for the active 16-key chunks; the others are -inf (and skipped again in PV).
        float s[8][4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int c0 = kv0 + c * 16;
#pragma unroll
            for (int e = 0; e < 4; ++e) s[2 * c][e] = s[2 * c + 1][e] = 0.f;
            if (c0 < whi && c0 + 16 > wlo) {
#pragma unroll
                for (int ks = 0; ks < 4; ++ks) {
                    uint32_t kf[4];
                    ldmatrix_x4(kf, sK + swz128(c * 16 + (lane & 7) + ((lane >> 4) << 3),
                                             ks * 16 + ((lane >> 3) & 1) * 8));
                    const uint32_t b0[2] = {kf[0], kf[1]};
                    const uint32_t b1[2] = {kf[2], kf[3]};
                    Prec<T>::mma(s[2 * c], qf[ks], b0);
                    Prec<T>::mma(s[2 * c + 1], qf[ks], b1);
                }
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) s[2 * c][e] = s[2 * c + 1][e] = kNegInf;
            }
        }

        // Element mask, only where some key of the tile is invisible to some row of the warp.
        const bool full = kv0 + MB_ATTENTION_BLOCK_N <= n_keys &&
                          (!local || (kv0 >= w_last - r && kv0 + MB_ATTENTION_BLOCK_N - 1 <= w0 + r));
        if (!full) {
#pragma unroll
            for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = kv0 + nb * 8 + 2 * t4 + (e & 1);
                    const int i = e < 2 ? i0 : i1;
                    const bool ok = j < n_keys && (!local || (j - i <= r && i - j <= r));
                    if (!ok) s[nb][e] = kNegInf;
                }
            }
        }

        // Online softmax (fp32, base 2). Rows are reduced over the 4 threads of a quad.
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
            mx[0] = fmaxf(mx[0], fmaxf(s[nb][0], s[nb][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[nb][2], s[nb][3]));
        }
        float shift[2], alpha[2];
        online_softmax_rows(mx, m, l, sl2, shift, alpha);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
            s[nb][0] = exp2f(fmaf(s[nb][0], sl2, -shift[0]));
            s[nb][1] = exp2f(fmaf(s[nb][1], sl2, -shift[0]));
            s[nb][2] = exp2f(fmaf(s[nb][2], sl2, -shift[1]));
            s[nb][3] = exp2f(fmaf(s[nb][3], sl2, -shift[1]));
            l[0] += s[nb][0] + s[nb][1];
            l[1] += s[nb][2] + s[nb][3];
            o[nb][0] *= alpha[0];
            o[nb][1] *= alpha[0];
            o[nb][2] *= alpha[1];
            o[nb][3] *= alpha[1];
        }

        // O += P V: the S accumulators of chunk c are the A fragment of the k-step over its 16 keys.
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int c0 = kv0 + c * 16;
            if (c0 < whi && c0 + 16 > wlo) {
                const uint32_t pa[4] = {
                    Prec<T>::pack(s[2 * c][0], s[2 * c][1]), Prec<T>::pack(s[2 * c][2], s[2 * c][3]),
                    Prec<T>::pack(s[2 * c + 1][0], s[2 * c + 1][1]),
                    Prec<T>::pack(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
                for (int dp = 0; dp < 4; ++dp) {
                    uint32_t vf[4];
                    ldmatrix_x4_trans(vf, sV + swz128(c * 16 + (lane & 15), dp * 16 + (lane >> 4) * 8));
                    const uint32_t b0[2] = {vf[0], vf[1]};
                    const uint32_t b1[2] = {vf[2], vf[3]};
                    Prec<T>::mma(o[2 * dp], pa, b0);
                    Prec<T>::mma(o[2 * dp + 1], pa, b1);
                }
            }
        }
    }

    // 1/l, then stage the warp's 16 x 64 output in shared memory (over Q) for 16-byte global stores.
    float inv[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
        inv[rr] = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
    }
    // Each warp only ever read its own 16 rows of sQ, so it may overwrite them without a block barrier.
    const int row0 = warp * 16;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
        *reinterpret_cast<uint32_t*>(sQ + swz128(row0 + g, nb * 8 + 2 * t4)) =
            Prec<T>::pack(o[nb][0] * inv[0], o[nb][1] * inv[0]);
        *reinterpret_cast<uint32_t*>(sQ + swz128(row0 + g + 8, nb * 8 + 2 * t4)) =
            Prec<T>::pack(o[nb][2] * inv[1], o[nb][3] * inv[1]);
    }
    __syncwarp();
    T* const out = reinterpret_cast<T*>(p.out) + (size_t)(start + q0) * heads * MB_ATTENTION_HEAD_DIM + (size_t)h * MB_ATTENTION_HEAD_DIM;
#pragma unroll
    for (int k = 0; k < 4; ++k) {  // 16 rows x 8 chunks of 16 bytes, 4 per lane
        const int idx = lane + k * 32;
        const int row = row0 + (idx >> 3);
        const int ch = idx & 7;
        if (row < q_end - q0) {
            *reinterpret_cast<uint4*>(out + (size_t)row * heads * MB_ATTENTION_HEAD_DIM + ch * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz128(row, 8 * ch));
        }
    }
}

}  // namespace attention_detail
