// emu.h — the host emulator's view of CUDA C++: just enough of the language and runtime for the
// kernels in cuda/*.cu to compile with g++ (-DMODERNBERT_EMULATOR) and run on the CPU.
//
// Execution model (emu.cpp): a launch runs its blocks on a few host threads; one block runs start to
// finish on one host thread, its CUDA threads as fibers (own 64 KiB stacks, reused), one at a time.
// Scheduling is warp by warp: warp 0's lanes run (lane 0 first), each up to its next warp collective,
// where the lanes meet, until every lane of the warp waits (at __syncthreads, a warp or warpgroup
// collective, a named barrier, or a failed mbarrier poll) or has exited; then warp 1, and so on;
// then the barrier opens. A failed poll is retried in the next round if anything happened in this
// one; a round in which nothing happened is a deadlock, reported with the mbarriers' states. With
// MODERNBERT_EMU_REVERSE=1 or the launch flag, warps and lanes go last to first. Deterministic and
// maximally skewed, so a missing __syncthreads (or __syncwarp) gives a wrong result every time in
// at least one of the two orders. The sm_90a instructions (cuda/include/hopper.cuh) are
// hopper.cpp's: warpgroup collectives of 128 threads, asynchronous results that land only at the
// wait that observes them. A launch of a kernel declared MB_PDL_PRIMARY is held by the Rust side
// until the next operation, so that a programmatic dependent launched next runs before it.
// Blocks run one after another on a few host threads (reversed: last block first), except in a
// co-scheduled launch (a persistent kernel whose blocks wait on each other through global memory,
// grid_wait_geq / grid_signal): there every block has its host thread, they take turns, and a
// block passes the turn when its threads only poll — and, in the reversed order, at once after a
// grid_signal (the others see the flag before the signalling block's threads go on, so a flag
// raised before the writes it stands for shows them undone; in the forward order a block that
// skips a wait runs ahead); a full round of turns without progress is a deadlock, reported. A cluster launch (flags bits 8-15: blocks per cluster along x) runs its
// clusters as the plain launch runs blocks, and each cluster's blocks as a co-scheduled group:
// the cluster barrier and copies multicast into a peer's shared memory (hopper.cpp) work across
// them; a peer is reachable only while it runs.
//
// Shared memory: `__shared__` is `thread_local` (block-scope thread_local implies static), so a
// static __shared__ variable is per host thread, hence per block because a block owns its host
// thread until it finishes. Dynamic shared memory must be declared
//     extern __shared__ __align__(16) unsigned char smem[];
// at file scope, outside any namespace (the name `smem` is the one symbol emu.cpp defines; the
// element type may differ; a declaration inside an anonymous namespace would not link). It is filled
// with 0xFF (NaN in every float format) before each block. Static shared memory keeps the previous
// block's contents (not poisoned): a known limit of this emulator.
#pragma once
#ifndef MODERNBERT_EMULATOR
#error "emu.h is for the host emulator build only"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "params.h"

// ---- language ---------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __grid_constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local
#define __constant__ const

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

// The current CUDA thread's coordinates, set by the scheduler on every switch.
extern __thread uint3 emu_threadIdx;
extern __thread uint3 emu_blockIdx;
extern __thread dim3 emu_blockDim;
extern __thread dim3 emu_gridDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim
#define warpSize 32

extern "C" {
void emu_syncthreads(void);
void emu_syncwarp(uint32_t mask);
// Generic warp exchange: every lane of `mask` deposits 8 bytes and a source lane; each receives the
// 8 bytes of its source lane (kind: 0 idx, 1 up, 2 down, 3 xor).
uint64_t emu_shfl(uint32_t mask, uint64_t v, int kind, int arg, int width);
uint32_t emu_vote(uint32_t mask, int pred, int kind);  // 0 ballot, 1 any, 2 all
void emu_mma_m16n8k16(int fp16, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void emu_ldmatrix(int count, int trans, uint32_t* r, const void* smem_row);
void emu_cp_async_16(void* smem_dst, const void* gmem_src);
void emu_cp_async_wait_all(void);
[[noreturn]] void emu_trap(const char* why);
void emu_grid_wait_geq(const uint32_t* flag, uint32_t value);
void emu_grid_signal(uint32_t* flag, uint32_t value);
uint32_t emu_grid_poll(const uint32_t* flag);
void emu_grid_pause(void);
void emu_grid_acquire_fence(void);
uint32_t emu_grid_count(uint32_t* counter, uint32_t limit);
void emu_fence_proxy_async_global(void);

// ---- sm_90a (hopper.cpp; the wrappers and their PTX are cuda/include/hopper.cuh) ----
uint32_t emu_smem_offset(const void* p);  // byte offset in dynamic shared memory (traps outside it)
void emu_wgmma_fence(void);
void emu_wgmma_commit(void);
void emu_wgmma_wait(int n);
// d[n/2] += A * B for this thread's slice; A from `desc_a` (shared) or `a_regs` (4 registers).
void emu_wgmma(int fp16, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b, float* d, int scale_d,
               int trans_b);
void emu_fence_proxy_async(void);
void emu_mbar_init(uint64_t* bar, uint32_t count);
void emu_mbar_arrive(uint64_t* bar);
void emu_mbar_init_fence(void);
void emu_mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes);
void emu_mbar_expect_tx(uint64_t* bar, uint32_t bytes);
int emu_mbar_try_wait_parity(uint64_t* bar, uint32_t parity);
void emu_tma_load(void* smem_dst, const void* tensor_map, const int32_t* coords, int rank, uint64_t* bar);
void emu_tma_store(const void* tensor_map, const int32_t* coords, int rank, const void* smem_src);
void emu_bulk_load(void* smem_dst, const void* gmem_src, uint32_t bytes, uint64_t* bar);
void emu_bulk_commit(void);
void emu_bulk_wait(int n, int read_only);
void emu_named_bar(int id, int nthreads, int wait);
void emu_setmaxnreg(int inc, int regs);
void emu_griddep_wait(void);
// Thread block clusters (hopper.cpp): %cluster_ctarank, %cluster_nctarank, barrier.cluster.arrive
// / wait (memory order is not modelled: relaxed and release arrives are the same here), and
// cp.async.bulk's .multicast::cluster form.
uint32_t emu_cluster_ctarank(void);
uint32_t emu_cluster_nctarank(void);
void emu_cluster_arrive(void);
void emu_cluster_wait(void);
void emu_bulk_load_multicast(void* smem_dst, const void* gmem_src, uint32_t bytes, uint64_t* bar, uint16_t cta_mask);

// The emulator's tensor map (the 128 bytes a CUtensorMap occupies; see hopper.cpp).
int emu_tensor_map_encode(void* map128, const MbTensorMapDesc* desc);

// One launch for emu_launch_desc (src/kernels/emu.rs mirrors this struct).
struct EmuLaunchDesc {
    const char* name;
    uint32_t grid[3], block[3];
    // flags: bit 0 reverse thread (and block) order; bit 1 co-scheduled grid; bits 8-15 blocks per
    // cluster along x (0 or 1: no cluster launch).
    uint32_t smem_bytes, flags;
    const void* params;
    size_t params_size;
    // With programmatic dependent launch: the launch before this one in stream order, which this
    // one may overlap until griddepcontrol.wait; null otherwise.
    const EmuLaunchDesc* primary;
};
int emu_launch_desc(const EmuLaunchDesc* d, char* err, size_t errlen);
}

static inline void __syncthreads() { emu_syncthreads(); }
static inline void __syncwarp(uint32_t mask = 0xffffffffu) { emu_syncwarp(mask); }
[[noreturn]] static inline void __trap() { emu_trap("__trap()"); }

template <class T>
static inline T emu_shfl_t(uint32_t mask, T v, int kind, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    u = emu_shfl(mask, u, kind, arg, width);
    T r;
    std::memcpy(&r, &u, sizeof(T));
    return r;
}
template <class T>
static inline T __shfl_sync(uint32_t mask, T v, int src, int width = 32) { return emu_shfl_t(mask, v, 0, src, width); }
template <class T>
static inline T __shfl_up_sync(uint32_t mask, T v, unsigned d, int width = 32) { return emu_shfl_t(mask, v, 1, (int)d, width); }
template <class T>
static inline T __shfl_down_sync(uint32_t mask, T v, unsigned d, int width = 32) { return emu_shfl_t(mask, v, 2, (int)d, width); }
template <class T>
static inline T __shfl_xor_sync(uint32_t mask, T v, int m, int width = 32) { return emu_shfl_t(mask, v, 3, m, width); }
static inline uint32_t __ballot_sync(uint32_t mask, int p) { return emu_vote(mask, p, 0); }
static inline int __any_sync(uint32_t mask, int p) { return (int)emu_vote(mask, p, 1); }
static inline int __all_sync(uint32_t mask, int p) { return (int)emu_vote(mask, p, 2); }
static inline unsigned __activemask() { return 0xffffffffu; }

// ---- vector types -------------------------------------------------------------------------------
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
template <class T>
static inline T __ldg(const T* p) { return *p; }

// ---- math ---------------------------------------------------------------------------------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// glibc declares __expf & co. itself: macros, so the CUDA fast-math names mean the libm functions.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
static inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
static inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

// ---- bf16 / fp16 ----------------------------------------------------------------------------------
// Conversions round to nearest even, as cvt.rn does; NaN becomes the canonical 0x7FFF.
static inline uint16_t emu_f2bf_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float emu_bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t emu_f2h_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fff;
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to infinity
    if (ax < 0x38800000u) {                                       // below 2^-14: subnormal or zero
        uint32_t e = ax >> 23;
        uint32_t shift = 126 - e;  // value = m * 2^(e-150); units of 2^-24
        if (e == 0 || shift > 24) return (uint16_t)sign;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((ax >> 23) - 112) << 10 | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}
static inline float emu_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
        u = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        u = sign;
    } else {
        float f = std::ldexp((float)m, -24);
        return sign ? -f : f;
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct __align__(2) __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    explicit __nv_bfloat16(float f) : __x(emu_f2bf_rn(f)) {}
    operator float() const { return emu_bf2f(__x); }
};
struct __align__(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
struct __align__(2) __half {
    uint16_t __x;
    __half() = default;
    explicit __half(float f) : __x(emu_f2h_rn(f)) {}
    operator float() const { return emu_h2f(__x); }
};
struct __align__(4) __half2 {
    __half x, y;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
typedef __half half;
typedef __half2 half2;

static inline __nv_bfloat16 __float2bfloat16(float f) { __nv_bfloat16 r; r.__x = emu_f2bf_rn(f); return r; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return emu_bf2f(h.__x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {emu_bf2f(h.x.__x), emu_bf2f(h.y.__x)}; }
static inline float __low2float(__nv_bfloat162 h) { return emu_bf2f(h.x.__x); }
static inline float __high2float(__nv_bfloat162 h) { return emu_bf2f(h.y.__x); }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { __nv_bfloat16 r; r.__x = x; return r; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }

static inline __half __float2half(float f) { __half r; r.__x = emu_f2h_rn(f); return r; }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __half2float(__half h) { return emu_h2f(h.__x); }
static inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
static inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
static inline float2 __half22float2(__half2 h) { return {emu_h2f(h.x.__x), emu_h2f(h.y.__x)}; }
static inline float __low2float(__half2 h) { return emu_h2f(h.x.__x); }
static inline float __high2float(__half2 h) { return emu_h2f(h.y.__x); }
static inline __half __ushort_as_half(unsigned short x) { __half r; r.__x = x; return r; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
