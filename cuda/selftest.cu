// selftest.cu — the device primitives of device.cuh on given inputs, for the self-test
// (kernels-tests/tests/gpu_selftest.rs): on the emulator against a scalar reference (which proves the
// emulated fragment layouts), on a GPU against the emulator bit for bit.
//
// All kernels: SelftestParams p; p.in / p.out are uint32_t arrays laid out as stated per kernel.
// Launch: one warp (32 threads) unless stated; grid (1, 1, 1).
#include "common.cuh"

// D = A * B + C through the documented fragment layouts read straight from global memory.
// in: A bf16/f16 [16][16] row-major (128 u32), then B [16 (k)][8 (n)] row-major (64 u32), then
//     C f32 [16][8] (128 u32). out: D f32 [16][8].
template <bool F16>
__device__ __forceinline__ void selftest_mma(const SelftestParams& p) {
    const uint16_t* A = reinterpret_cast<const uint16_t*>(p.in);
    const uint16_t* B = A + 256;
    const float* C = reinterpret_cast<const float*>(p.in) + 192;
    float* D = reinterpret_cast<float*>(p.out);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    auto pk = [](uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); };
    uint32_t a[4] = {pk(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]), pk(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                     pk(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                     pk(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
    uint32_t b[2] = {pk(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]), pk(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    float d[4];
    if (F16) {
        mma_m16n8k16_f16(d, a, b, c);
    } else {
        mma_m16n8k16_bf16(d, a, b, c);
    }
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

extern "C" __global__ void selftest_mma_bf16(const __grid_constant__ SelftestParams p) { selftest_mma<false>(p); }
extern "C" __global__ void selftest_mma_f16(const __grid_constant__ SelftestParams p) { selftest_mma<true>(p); }

// ldmatrix variants. in: a 16 x 24 u16 tile (row stride 24 elements = 48 bytes; 192 u32) copied to
// shared memory. Lane l supplies the address of row (l & 15), column 8 * (l >> 4).
// p.mode: 0 x4, 1 x4.trans, 2 x2, 3 x2.trans. out: [32 lanes][4] u32 (x2: registers 2, 3 are 0).
extern "C" __global__ void selftest_ldmatrix(const __grid_constant__ SelftestParams p) {
    __shared__ __align__(16) uint16_t tile[16 * 24];
    const uint32_t* in = reinterpret_cast<const uint32_t*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    const int lane = threadIdx.x & 31;
    for (int i = lane; i < 16 * 24 / 2; i += 32) reinterpret_cast<uint32_t*>(tile)[i] = in[i];
    __syncwarp();
    const uint16_t* row = tile + (lane & 15) * 24 + 8 * (lane >> 4);
    uint32_t r[4] = {0, 0, 0, 0};
    switch (p.mode) {
        case 0: ldmatrix_x4(r, row); break;
        case 1: ldmatrix_x4_trans(r, row); break;
        case 2: ldmatrix_x2(r, row); break;
        default: ldmatrix_x2_trans(r, row); break;
    }
    for (int j = 0; j < 4; j++) out[lane * 4 + j] = r[j];
}

// The attention pattern: A [16][16] and B [16 (k)][8 (n)] row-major bf16 tiles staged in shared
// memory by cp.async, A fragments by ldmatrix_x4, B fragments by ldmatrix_x2_trans, then mma.
// in: A (128 u32), B (64 u32). out: D f32 [16][8] = A * B.
extern "C" __global__ void selftest_ldmatrix_mma(const __grid_constant__ SelftestParams p) {
    __shared__ __align__(16) uint16_t sa[16 * 16];
    __shared__ __align__(16) uint16_t sb[16 * 8];
    const uint16_t* A = reinterpret_cast<const uint16_t*>(p.in);
    const uint16_t* B = A + 256;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    cp_async_16(sa + lane * 8, A + lane * 8);  // 32 x 16 B = the whole A tile
    if (lane < 16) cp_async_16(sb + lane * 8, B + lane * 8);
    cp_async_commit();
    cp_async_wait_all();
    __syncwarp();
    uint32_t a[4], b[2];
    ldmatrix_x4(a, sa + (lane & 15) * 16 + 8 * (lane >> 4));
    ldmatrix_x2_trans(b, sb + (lane & 15) * 8);
    const float c[4] = {0.f, 0.f, 0.f, 0.f};
    float d[4];
    mma_m16n8k16_bf16(d, a, b, c);
    float* D = reinterpret_cast<float*>(p.out);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Shuffles and votes; block of 64 threads (two warps). in: u32 [64]. out: [64][16] u32:
//   0-4: __shfl_xor_sync by 1, 2, 4, 8, 16;  5: __shfl_sync(src = (lane * 7 + 3) & 31);
//   6: __shfl_down_sync by 3;  7: __shfl_up_sync by 5;  8: __shfl_xor_sync by 4, width 8;
//   9: __shfl_sync(src = lane + 1, width 16);  10: __shfl_down_sync by 2, width 8;
//   11: __ballot_sync(v & 1);  12: __any_sync(v == 7);  13: __all_sync(v != 0);  14: float warp_sum;
//   15: the thread's own value.
extern "C" __global__ void selftest_shuffle(const __grid_constant__ SelftestParams p) {
    const uint32_t* in = reinterpret_cast<const uint32_t*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out) + threadIdx.x * 16;
    const uint32_t v = in[threadIdx.x];
    const int lane = threadIdx.x & 31;
    const unsigned full = 0xffffffffu;
    for (int i = 0; i < 5; i++) out[i] = __shfl_xor_sync(full, v, 1 << i);
    out[5] = __shfl_sync(full, v, (lane * 7 + 3) & 31);
    out[6] = __shfl_down_sync(full, v, 3);
    out[7] = __shfl_up_sync(full, v, 5);
    out[8] = __shfl_xor_sync(full, v, 4, 8);
    out[9] = __shfl_sync(full, v, lane + 1, 16);
    out[10] = __shfl_down_sync(full, v, 2, 8);
    out[11] = __ballot_sync(full, v & 1);
    out[12] = (uint32_t)__any_sync(full, v == 7);
    out[13] = (uint32_t)__all_sync(full, v != 0);
    out[14] = __float_as_uint(warp_sum((float)(v & 0xffff) * 0.25f));
    out[15] = v;
}

// pack_bf16x2 / pack_f16x2 and the scalar conversions. in: f32 [2 n]. out: [n][4] u32:
//   pack_bf16x2(lo, hi), pack_f16x2(lo, hi), bits of __float2bfloat16_rn(lo) | float back << 16 ... see
//   below; one thread per pair, block (128), grid (ceil(n / 128)).
extern "C" __global__ void selftest_convert(const __grid_constant__ SelftestParams p) {
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    const float* in = reinterpret_cast<const float*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out) + i * 4;
    const float lo = in[2 * i], hi = in[2 * i + 1];
    out[0] = pack_bf16x2(lo, hi);
    out[1] = pack_f16x2(lo, hi);
    out[2] = __float_as_uint(to_f32(from_f32<__nv_bfloat16>(lo)));  // round trip through bf16
    out[3] = __float_as_uint(to_f32(from_f32<__half>(lo)));         // round trip through fp16
}

// Exchange through dynamic shared memory between the two warps of a 64-thread block: thread t writes
// in[t], then reads slot (t + 32) % 64. p.mode = 1: with __syncthreads between; 0: without (a
// deliberate race, which the emulator must expose in both thread orders). Dynamic smem 256 bytes.
// in: u32 [64]; out: u32 [64].
extern __shared__ __align__(16) unsigned char smem[];

extern "C" __global__ void selftest_barrier(const __grid_constant__ SelftestParams p) {
    uint32_t* s = reinterpret_cast<uint32_t*>(smem);
    const uint32_t t = threadIdx.x;
    s[t] = reinterpret_cast<const uint32_t*>(p.in)[t];
    if (p.mode == 1) __syncthreads();
    reinterpret_cast<uint32_t*>(p.out)[t] = s[(t + 32) % 64];
}

// A chain through a co-scheduled grid: block b waits until block b - 1 raised its flag, then
// writes out[b] = out[b - 1] + b + 1 and raises its own; out[b] = (b + 1)(b + 2) / 2. in = the
// gridDim.x + 1 flags (zeroed); mode 1: block 0 first waits for flag gridDim.x, which nobody
// raises (a deadlock the emulator must report). Mode 2: no chain; each block takes a ticket from
// the counter flags[gridDim.x] (grid_count, limit p.n) into out[b]. Mode 3: a grid barrier, the
// persistent forward's (grid_wait_all_geq): each block writes out[b] = b + 1 and raises flags[b] to
// p.n; its 32 lanes wait for every block's flag >= p.n (lane l: flags l, l + 32, ...); then lane 0
// writes out[G + b] = the sum of out[0 .. G) (out is 2G long): G (G + 1) / 2 when the barrier holds.
extern "C" __global__ void selftest_grid_chain(const __grid_constant__ SelftestParams p) {
    uint32_t* flags = reinterpret_cast<uint32_t*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    const unsigned b = blockIdx.x, G = gridDim.x;
    if (p.mode == 3) {
        if (threadIdx.x == 0) {
            out[b] = b + 1;
            grid_signal(&flags[b], p.n);
        }
        grid_wait_all_geq(flags, threadIdx.x, 32, G, p.n);
        __syncwarp();
        if (threadIdx.x == 0) {
            uint32_t sum = 0;
            for (unsigned j = 0; j < G; j++) sum += out[j];
            out[G + b] = sum;
        }
        return;
    }
    if (threadIdx.x != 0) return;
    if (p.mode == 2) {
        out[b] = grid_count(&flags[gridDim.x], p.n);
        return;
    }
    if (p.mode == 1 && b == 0) grid_wait_geq(&flags[gridDim.x], 1);
    uint32_t prev = 0;
    if (b > 0) {
        grid_wait_geq(&flags[b - 1], 1);
        prev = out[b - 1];
    }
    out[b] = prev + b + 1;
    grid_signal(&flags[b], 1);
}
