// hopper.cuh — the sm_90a instructions behind small wrappers, for the Hopper kernels (`*_sm90.cu`,
// compiled for sm_90a only): warpgroup MMA, TMA (multicast to a cluster included), mbarrier, named
// barriers, setmaxnreg, proxy fences, thread block clusters, programmatic dependent launch.
//
//   - under nvcc: inline PTX (PTX ISA 8.x, sm_90a);
//   - under the host emulator: cuda/emu/hopper.cpp, the same semantics run on the CPU, adversarially
//     (results land only at the wait that observes them; see that file's header).
//
// Layouts (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
//   wgmma.m64nNk16, f32 accumulators: thread 32w + l of the warpgroup (g = l / 4, t = l % 4) holds,
//   for each n8 block j, d[4j + 0..1] = D[16w + g][8j + 2t .. +1] and d[4j + 2..3] = D[16w + g + 8][..]
//   (the mma.m16n8k16 C fragment per 16-row slice). A from registers: the mma.m16n8k16 A fragment
//   of rows 16w .. 16w + 15.
//   Matrix descriptors: see wgmma_desc(). K-major (the default; both GEMM operands, Q and K):
//   with a swizzle, rows are `span` bytes, 8-row groups `sbo` bytes apart, the tile starting on a
//   1024-byte boundary (128-byte swizzle); advancing K by 16 elements inside a row is +32 bytes on
//   the start address. MN-major B (the `_transb` wrappers, imm-trans-b = 1; attention's V): one
//   `span`-byte row per k holding span / 2 consecutive n, 8-k groups `sbo` apart, the next span / 2
//   n at `lbo`; advancing K by 16 is + 2 · sbo.
//   TMA boxes land row-major (dimension 0 innermost), swizzled in 16-byte chunks by address bits
//   7..9 (128-byte swizzle), the same pattern the descriptors decode.
#pragma once

#include "device.cuh"

#ifndef MODERNBERT_EMULATOR
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "hopper.cuh needs sm_90a (compile *_sm90.cu for arch sm_90a only)"
#endif
#endif

// ---- addresses and descriptors (the same on both sides) -------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
#ifdef MODERNBERT_EMULATOR
    return emu_smem_offset(p);
#else
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

// A wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address >> 4 in bits
// 0-13, leading byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, base offset 0 in
// 49-51, swizzle in 62-63 (0 none, 1 128-byte, 2 64-byte, 3 32-byte). `swizzle_span` in bytes
// (0, 32, 64, 128).
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_byte_addr, uint32_t lbo, uint32_t sbo,
                                               uint32_t swizzle_span) {
    uint64_t mode = swizzle_span == 128 ? 1 : swizzle_span == 64 ? 2 : swizzle_span == 32 ? 3 : 0;
    return (uint64_t)((smem_byte_addr & 0x3ffff) >> 4) | (uint64_t)((lbo >> 4) & 0x3fff) << 16 |
           (uint64_t)((sbo >> 4) & 0x3fff) << 32 | mode << 62;
}

#ifndef MODERNBERT_EMULATOR
#include "wgmma_ptx.cuh"

// ---- wgmma ----------------------------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of an accumulator across the asynchronous MMA.
template <int K>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[K]) {
#pragma unroll
    for (int i = 0; i < K; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// ---- proxies, barriers, registers, dependent launch -------------------------------------------------
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// After acquiring other blocks' ordinary (generic-proxy) global stores, before this thread's bulk
// copies (the async proxy) read them.
__device__ __forceinline__ void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;\n" ::: "memory"); }
__device__ __forceinline__ void named_bar_sync(int id, int nthreads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int nthreads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}

// ---- mbarrier -------------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// After this thread's mbarrier.init calls, before a TMA copy may complete on those barriers.
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}
// True once the phase with parity `parity` has completed (it may also return false spuriously).
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
    uint32_t ok;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
    return ok != 0;
}

// ---- TMA ------------------------------------------------------------------------------------------
// Box of `map` at coordinates c (dimension 0 first) into shared memory; completes `bar`'s
// transaction count by the box's bytes (out-of-bounds elements included, filled).
__device__ __forceinline__ void tma_load_2d(void* smem_dst, const MbTensorMap* map, int c0, int c1, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(smem_addr(smem_dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
        : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* smem_dst, const MbTensorMap* map, int c0, int c1, int c2,
                                            uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
        "%4}], [%5];\n" ::"r"(smem_addr(smem_dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
        : "memory");
}
__device__ __forceinline__ void tma_load_5d(void* smem_dst, const MbTensorMap* map, int c0, int c1, int c2, int c3,
                                            int c4, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
        "%4, %5, %6}], [%7];\n" ::"r"(smem_addr(smem_dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smem_addr(bar))
        : "memory");
}
// Shared memory → the box of `map` at c (out-of-bounds elements are not written). Reads shared
// memory through the async proxy: a fence_proxy_async() must follow the generic stores it reads.
__device__ __forceinline__ void tma_store_2d(const MbTensorMap* map, int c0, int c1, const void* smem_src) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(map),
                 "r"(c0), "r"(c1), "r"(smem_addr(smem_src))
                 : "memory");
}
// `bytes` (a multiple of 16) global → shared, completing `bar`'s transaction count.
__device__ __forceinline__ void bulk_load(void* smem_dst, const void* gmem_src, uint32_t bytes, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
            smem_addr(smem_dst)),
        "l"(gmem_src), "r"(bytes), "r"(smem_addr(bar))
        : "memory");
}
// The same bytes to the same offset in the shared memory of each block of the cluster named by
// `cta_mask` (bit r: rank r), completing the mbarrier at `bar`'s offset in each (sm_90a).
__device__ __forceinline__ void bulk_load_multicast(void* smem_dst, const void* gmem_src, uint32_t bytes,
                                                    uint64_t* bar, uint16_t cta_mask) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, "
        "[%3], %4;\n" ::"r"(smem_addr(smem_dst)),
        "l"(gmem_src), "r"(bytes), "r"(smem_addr(bar)), "h"(cta_mask)
        : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// At most N committed store groups still reading shared memory (.read) / still writing global memory.
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}


// ---- thread block clusters ---------------------------------------------------------------------------
__device__ __forceinline__ uint32_t cluster_ctarank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
// Blocks in this block's cluster (1 outside a cluster launch).
__device__ __forceinline__ uint32_t cluster_nctarank() {
    uint32_t n;
    asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
    return n;
}
// Every thread of every block of the cluster arrives, then waits (acquire); .aligned: all threads
// of a warp execute the same one. The arrive is relaxed: it orders no memory access (a release
// arrive costs a MEMBAR.GPU); what must be seen across it says so with its own fence, as the
// mbarrier inits do with mbar_init_fence().
__device__ __forceinline__ void cluster_arrive_relaxed() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
// The same barrier's arrive with release semantics: this thread's earlier shared-memory accesses
// (its reads of a buffer, say) are ordered before whatever a peer does after its wait (copy into
// that buffer again).
__device__ __forceinline__ void cluster_arrive_release() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}

#else  // MODERNBERT_EMULATOR: the twins, cuda/emu/hopper.cpp

__device__ __forceinline__ void wgmma_fence() { emu_wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit() { emu_wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { emu_wgmma_wait(N); }
template <int K>
__device__ __forceinline__ void wgmma_fence_operands(float (&)[K]) {}

#define MB_EMU_WGMMA_FORMS(N, SUFFIX, TRANS_B)                                                              \
    __device__ __forceinline__ void wgmma_ss_m64n##N##k16_bf16##SUFFIX(float (&d)[N / 2], uint64_t da,        \
                                                                       uint64_t db, int scale_d) {           \
        emu_wgmma(0, N, da, nullptr, db, d, scale_d, TRANS_B);                                               \
    }                                                                                                        \
    __device__ __forceinline__ void wgmma_ss_m64n##N##k16_f16##SUFFIX(float (&d)[N / 2], uint64_t da,         \
                                                                      uint64_t db, int scale_d) {            \
        emu_wgmma(1, N, da, nullptr, db, d, scale_d, TRANS_B);                                               \
    }                                                                                                        \
    __device__ __forceinline__ void wgmma_rs_m64n##N##k16_bf16##SUFFIX(float (&d)[N / 2],                    \
                                                                       const uint32_t (&a)[4], uint64_t db,  \
                                                                       int scale_d) {                        \
        emu_wgmma(0, N, 0, a, db, d, scale_d, TRANS_B);                                                      \
    }                                                                                                        \
    __device__ __forceinline__ void wgmma_rs_m64n##N##k16_f16##SUFFIX(float (&d)[N / 2],                     \
                                                                      const uint32_t (&a)[4], uint64_t db,   \
                                                                      int scale_d) {                         \
        emu_wgmma(1, N, 0, a, db, d, scale_d, TRANS_B);                                                      \
    }
// _transb: imm-trans-b = 1, B MN-major (wgmma_ptx.cuh).
#define MB_EMU_WGMMA(N)            \
    MB_EMU_WGMMA_FORMS(N, , 0)     \
    MB_EMU_WGMMA_FORMS(N, _transb, 1)
MB_EMU_WGMMA(64)
MB_EMU_WGMMA(128)
MB_EMU_WGMMA(256)
#undef MB_EMU_WGMMA
#undef MB_EMU_WGMMA_FORMS

__device__ __forceinline__ void fence_proxy_async() { emu_fence_proxy_async(); }
__device__ __forceinline__ void fence_proxy_async_global() { emu_fence_proxy_async_global(); }
__device__ __forceinline__ void named_bar_sync(int id, int nthreads) { emu_named_bar(id, nthreads, 1); }
__device__ __forceinline__ void named_bar_arrive(int id, int nthreads) { emu_named_bar(id, nthreads, 0); }
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() { emu_setmaxnreg(1, R); }
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() { emu_setmaxnreg(0, R); }

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) { emu_mbar_init(bar, count); }
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) { emu_mbar_arrive(bar); }
__device__ __forceinline__ void mbar_init_fence() { emu_mbar_init_fence(); }
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) { emu_mbar_arrive_expect_tx(bar, bytes); }
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) { emu_mbar_expect_tx(bar, bytes); }
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) { return emu_mbar_try_wait_parity(bar, parity) != 0; }

__device__ __forceinline__ void tma_load_2d(void* dst, const MbTensorMap* map, int c0, int c1, uint64_t* bar) {
    const int32_t c[2] = {c0, c1};
    emu_tma_load(dst, map, c, 2, bar);
}
__device__ __forceinline__ void tma_load_3d(void* dst, const MbTensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
    const int32_t c[3] = {c0, c1, c2};
    emu_tma_load(dst, map, c, 3, bar);
}
__device__ __forceinline__ void tma_load_5d(void* dst, const MbTensorMap* map, int c0, int c1, int c2, int c3, int c4,
                                            uint64_t* bar) {
    const int32_t c[5] = {c0, c1, c2, c3, c4};
    emu_tma_load(dst, map, c, 5, bar);
}
__device__ __forceinline__ void tma_store_2d(const MbTensorMap* map, int c0, int c1, const void* src) {
    const int32_t c[2] = {c0, c1};
    emu_tma_store(map, c, 2, src);
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    emu_bulk_load(dst, src, bytes, bar);
}
__device__ __forceinline__ void bulk_load_multicast(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                                    uint16_t cta_mask) {
    emu_bulk_load_multicast(dst, src, bytes, bar, cta_mask);
}
__device__ __forceinline__ uint32_t cluster_ctarank() { return emu_cluster_ctarank(); }
__device__ __forceinline__ uint32_t cluster_nctarank() { return emu_cluster_nctarank(); }
__device__ __forceinline__ void cluster_arrive_relaxed() { emu_cluster_arrive(); }
__device__ __forceinline__ void cluster_arrive_release() { emu_cluster_arrive(); }
__device__ __forceinline__ void cluster_wait() { emu_cluster_wait(); }
__device__ __forceinline__ void bulk_commit() { emu_bulk_commit(); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() { emu_bulk_wait(N, 1); }
template <int N>
__device__ __forceinline__ void bulk_wait() { emu_bulk_wait(N, 0); }

#endif  // MODERNBERT_EMULATOR

// Spin until the phase with parity `parity` of `bar` completes.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}
