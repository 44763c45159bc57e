// common.cuh — helpers shared by the kernels: element conversions, 16-byte vectors, warp and
// block reductions, the Hopper kernels' 16-bit element type. Included after device.cuh (it
// includes it).
#pragma once

#include "device.cuh"

// ---- element type <-> float ----------------------------------------------------------------------
template <class T>
__device__ __forceinline__ float to_f32(T x);
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// The element type of a kernel instantiated on `bool FP16` (the Hopper kernels): Elem<FP16>::T,
// and two floats rounded to it, packed low element first (an mma / wgmma A fragment register).
template <bool FP16>
struct Elem {
    using T = __nv_bfloat16;
};
template <>
struct Elem<true> {
    using T = __half;
};
template <bool FP16>
__device__ __forceinline__ uint32_t pack16x2(float lo, float hi) {
    return FP16 ? pack_f16x2(lo, hi) : pack_bf16x2(lo, hi);
}

// ---- 16-byte vectors ---------------------------------------------------------------------------------
// VEC elements of T moved as one access: VEC = 8 (16 bytes, LDG.E.128 / STG.E.128) when the row
// length is a multiple of 8 and the base is 16-byte aligned, else VEC = 1.
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
    T v[VEC];
};

template <class T, int VEC>
__device__ __forceinline__ void load_f32(const T* __restrict__ p, float (&out)[VEC]) {
    Packed<T, VEC> r;
    if constexpr (VEC == 8) {
        *reinterpret_cast<uint4*>(&r) = *reinterpret_cast<const uint4*>(p);
    } else {
        r = *reinterpret_cast<const Packed<T, VEC>*>(p);
    }
#pragma unroll
    for (int i = 0; i < VEC; i++) out[i] = to_f32<T>(r.v[i]);
}

template <class T, int VEC>
__device__ __forceinline__ void store_f32(T* __restrict__ p, const float (&in)[VEC]) {
    Packed<T, VEC> r;
#pragma unroll
    for (int i = 0; i < VEC; i++) r.v[i] = from_f32<T>(in[i]);
    if constexpr (VEC == 8) {
        *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&r);
    } else {
        *reinterpret_cast<Packed<T, VEC>*>(p) = r;
    }
}

// Raw 16-bit storage moved VEC elements at a time (pure copies): uint4 for 8, uint16_t for 1.
template <int VEC>
struct RawVec {
    typedef uint16_t type;
};
template <>
struct RawVec<8> {
    typedef uint4 type;
};

// 4 floats as one 16-byte access (fp32 outputs).
__device__ __forceinline__ void store_f32x4(float* __restrict__ p, float a, float b, float c, float d) {
    *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}

// ---- reductions -------------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x == NT threads, NT a multiple of 32); every thread gets the total,
// summed in the same order by all (deterministic). Two __syncthreads: the partials are complete
// before anyone reads them, and read by everyone before the next call overwrites them.
template <int NT>
__device__ __forceinline__ float block_sum(float v) {
    static_assert(NT % 32 == 0 && NT <= 1024, "block size must be a multiple of 32");
    __shared__ float partial[NT / 32];
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NT / 32; i++) s += partial[i];
    __syncthreads();
    return s;
}

// As block_sum for a block of any multiple of 32 threads (blockDim.x <= 1024).
__device__ __forceinline__ float block_sum_dyn(float v) {
    __shared__ float partial_dyn[32];
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) partial_dyn[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.f;
    const int nw = (int)(blockDim.x >> 5);
    for (int i = 0; i < nw; i++) s += partial_dyn[i];
    __syncthreads();
    return s;
}

// The activations of MB_ACT_*: the exact GELU, 0.5 x (1 + erf(x / sqrt 2)), its tanh
// approximation, ReLU and SiLU (x / (1 + e^-x)), as the f32 reference computes them.
__device__ __forceinline__ float gelu_erf_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanh_f(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.f + tanhf(c * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float activate(float x, uint32_t act) {
    switch (act) {
        case MB_ACT_GELU_TANH: return gelu_tanh_f(x);
        case MB_ACT_RELU: return fmaxf(x, 0.f);
        case MB_ACT_SILU: return x / (1.f + expf(-x));
        default: return gelu_erf_f(x);
    }
}

// Rows in use: the BatchDesc's token count when given, else the capacity.
__device__ __forceinline__ uint32_t rows_in_use(uint64_t batch, uint32_t max_rows) {
    if (batch == 0) return max_rows;
    uint32_t t = reinterpret_cast<const BatchDesc*>(batch)->tokens;
    return t < max_rows ? t : max_rows;
}
