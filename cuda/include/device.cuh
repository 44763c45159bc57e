// device.cuh — the one header every kernel includes: the bf16/fp16 types, and the tensor-core and
// async-copy primitives behind small wrappers.
//
//   - under nvcc: the CUDA headers and inline PTX (sm_80+);
//   - under the host emulator (g++ -DMODERNBERT_EMULATOR, see cuda/emu/emu.h): exact twins of the
//     same primitives, implementing the PTX ISA's documented fragment layouts as 32-lane rendezvous,
//     so a wrong fragment index gives a wrong answer on the CPU too.
//
// Signatures are a contract with cuda/attention.cu and cuda/selftest.cu: keep them stable.
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane >> 2 (groupID) and t = lane & 3 (threadID_in_group); each uint32_t holds two 16-bit
// elements, the lower column (or k) index in the low 16 bits:
//   A (16x16, row-major, "row"): a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//                                a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, k x n, "col"):      b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   C, D (16x8, f32):            c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// ldmatrix (m8n8, .b16): matrix j's row r address comes from lane 8j + r; lane l receives in r[j]
//   the elements M_j[l>>2][2(l&3) .. 2(l&3)+1]  (.trans: M_j[2(l&3)][l>>2] and M_j[2(l&3)+1][l>>2]).
//   So ldmatrix_x4 of a 16x16 row-major bf16 tile with lane l pointing at row (l & 15), column
//   8 * (l >> 4) yields exactly the A fragment above.
#pragma once

#include <stdint.h>

#ifdef MODERNBERT_EMULATOR
#include "../emu/emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include "params.h"

// Marks a kernel that calls pdl_launch_dependents(): a primary of programmatic dependent launch.
// Empty for nvcc; build.rs reads it, and the emulator holds such a kernel's launch until it knows
// whether the next launch is its dependent (src/kernels/emu.rs).
#define MB_PDL_PRIMARY

#ifndef MODERNBERT_EMULATOR

// D = A * B + C for one warp, bf16 inputs, f32 accumulate (mma.sync.aligned.m16n8k16.row.col).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
}

// Same with fp16 inputs.
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices from shared memory; lane i supplies the address of row (i % 8) of matrix i / 8
// (16-byte aligned rows).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(smem_row)));
}

// As ldmatrix_x4, each 8x8 matrix transposed on the way (gives B fragments from a row-major [k][n] tile).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(smem_row)));
}

// Two 8x8 b16 matrices; lanes 0-15 supply row addresses (the others' are ignored but must be valid).
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_u32(smem_row)));
}

// As ldmatrix_x2, transposed.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_u32(smem_row)));
}

// 16 bytes global -> shared, asynchronously (cp.async.cg: bypasses L1). Both addresses 16-byte aligned.
// The data is visible only after cp_async_commit() + cp_async_wait_all() (+ __syncthreads for other threads).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem_dst)), "l"(gmem_src)
                 : "memory");
}

// Close the current group of cp.async operations (cp.async.commit_group).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Wait until every committed group of this thread has landed (cp.async.wait_group 0).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Two floats -> bf16x2, round to nearest even; lo in the low 16 bits.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// Two floats -> f16x2, round to nearest even; lo in the low 16 bits.
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// Blocks of a co-scheduled grid (Device::launch_coscheduled_raw) waiting on each other: spin until
// `*flag >= value` (acquire: what the signalling block wrote before is visible after), and raise a
// flag (release). In a launch that is not co-scheduled, a block waiting for another is a deadlock.
// ">=" modulo 2^32 (the difference as a signed number), so flags that count steps over every
// launch may wrap, as long as no two are 2^31 apart.
__device__ __forceinline__ void grid_wait_geq(const uint32_t* flag, uint32_t value) {
    for (;;) {
        uint32_t v;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(flag) : "memory");
        if ((int32_t)(v - value) >= 0) return;
        __nanosleep(64);
    }
}
__device__ __forceinline__ void grid_signal(uint32_t* flag, uint32_t value) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(flag), "r"(value) : "memory");
}
// A grid barrier's wait (grid_wait_all_geq, below), its three instructions: a relaxed load of a
// flag, the pause after a poll that found one low, and the fence that makes the polls an acquire.
__device__ __forceinline__ uint32_t grid_poll(const uint32_t* flag) {
    uint32_t v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(flag) : "memory");
    return v;
}
__device__ __forceinline__ void grid_pause() { __nanosleep(64); }
__device__ __forceinline__ void grid_acquire_fence() { asm volatile("fence.acq_rel.gpu;\n" ::: "memory"); }
// A ticket from a counter shared by the grid: returns the count before, and leaves it one higher,
// or 0 after `limit` (atom.inc: tickets 0 .. limit, then again from 0). acq_rel at gpu scope: the
// block's writes before it (a __syncthreads, then one thread) are visible to whoever takes a later
// ticket, and what earlier holders wrote is visible to this one.
__device__ __forceinline__ uint32_t grid_count(uint32_t* counter, uint32_t limit) {
    uint32_t old;
    asm volatile("atom.acq_rel.gpu.global.inc.u32 %0, [%1], %2;\n" : "=r"(old) : "l"(counter), "r"(limit) : "memory");
    return old;
}

// Programmatic dependent launch (griddepcontrol, sm_90+). pdl_wait: the previous launch has
// finished and its writes are visible (returns at once in a launch that is not a dependent);
// pdl_launch_dependents: the next launch, if it is this one's dependent, may start. Below sm_90 both
// are empty: there the launchers refuse a dependent launch (ops.rs), so no launch relies on them.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
#else
__device__ __forceinline__ void pdl_wait() {}
__device__ __forceinline__ void pdl_launch_dependents() {}
#endif

#else  // MODERNBERT_EMULATOR: twins of the above, see cuda/emu/emu.cpp for the layouts' code.

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
    emu_mma_m16n8k16(0, d, a, b, c);
}
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
    emu_mma_m16n8k16(1, d, a, b, c);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
    emu_ldmatrix(4, 0, r, smem_row);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
    emu_ldmatrix(4, 1, r, smem_row);
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* smem_row) {
    emu_ldmatrix(2, 0, r, smem_row);
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* smem_row) {
    emu_ldmatrix(2, 1, r, smem_row);
}
// The emulated copy happens at cp_async_wait_all (source read at issue), so a read before the wait
// sees the old shared memory, as it may on the GPU.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) { emu_cp_async_16(smem_dst, gmem_src); }
__device__ __forceinline__ void cp_async_commit() {}
__device__ __forceinline__ void cp_async_wait_all() { emu_cp_async_wait_all(); }
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)emu_f2bf_rn(lo) | ((uint32_t)emu_f2bf_rn(hi) << 16);
}
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
    return (uint32_t)emu_f2h_rn(lo) | ((uint32_t)emu_f2h_rn(hi) << 16);
}

__device__ __forceinline__ void grid_wait_geq(const uint32_t* flag, uint32_t value) { emu_grid_wait_geq(flag, value); }
__device__ __forceinline__ void grid_signal(uint32_t* flag, uint32_t value) { emu_grid_signal(flag, value); }
__device__ __forceinline__ uint32_t grid_poll(const uint32_t* flag) { return emu_grid_poll(flag); }
__device__ __forceinline__ void grid_pause() { emu_grid_pause(); }
__device__ __forceinline__ void grid_acquire_fence() { emu_grid_acquire_fence(); }
__device__ __forceinline__ uint32_t grid_count(uint32_t* counter, uint32_t limit) { return emu_grid_count(counter, limit); }
__device__ __forceinline__ void pdl_wait() { emu_griddep_wait(); }
__device__ __forceinline__ void pdl_launch_dependents() {}  // the emulator starts dependents at once

#endif  // MODERNBERT_EMULATOR

// A grid barrier's wait, one thread's share: spin until every flag flags[j], j = first, first +
// stride, ... below count, is >= value (modulo 2^32, as grid_wait_geq), then acquire them all.
// Why not grid_wait_geq flag after flag: an acquire load's successors wait for it, so a thread
// watching 5 flags paid a round trip to L2 per flag, and after the last flag was raised still
// one per flag after it in its list. Here a round's loads are relaxed and in flight together (up
// to MB_GRID_WAIT_BATCH of them: one round trip a round), a flag seen raised is not loaded again
// (flags only rise until the barrier passes), and one fence after the round that saw the last
// makes every poll an acquire (PTX's acquire pattern: a strong read, then fence.acq_rel).
__device__ __forceinline__ void grid_wait_all_geq(const uint32_t* flags, uint32_t first, uint32_t stride,
                                                  uint32_t count, uint32_t value) {
    for (uint32_t j0 = first; j0 < count; j0 += MB_GRID_WAIT_BATCH * stride) {
        uint32_t waiting = 0;  // bit i: flag j0 + i·stride, not yet seen raised
#pragma unroll
        for (uint32_t i = 0; i < MB_GRID_WAIT_BATCH; i++) waiting |= (j0 + i * stride < count ? 1u : 0u) << i;
        for (;;) {
            uint32_t v[MB_GRID_WAIT_BATCH];
#pragma unroll
            for (uint32_t i = 0; i < MB_GRID_WAIT_BATCH; i++) v[i] = waiting >> i & 1 ? grid_poll(&flags[j0 + i * stride]) : value;
#pragma unroll
            for (uint32_t i = 0; i < MB_GRID_WAIT_BATCH; i++) waiting &= ~((int32_t)(v[i] - value) >= 0 ? 1u << i : 0u);
            if (waiting == 0) break;
            grid_pause();
        }
    }
    grid_acquire_fence();
}

// Byte offset of 16-bit element (row, col) in a tile of 128-byte rows (64 elements) whose 16-byte
// chunks are XOR-swizzled by (row & 7): the 8 rows of a group hit distinct banks for ldmatrix,
// fragment stores and whole-row 16-byte copies (attention.cu's tiles, attention_sm90.cu's output).
__device__ __forceinline__ int swz128(int row, int col) {
    return row * 128 + ((((col >> 3) ^ (row & 7))) << 4) + ((col & 7) << 1);
}
