// selftest_sm90.cu — instruments for the sm_90a instructions of hopper.cuh, not product kernels
// (as selftest.cu is for mma.sync and ldmatrix). kernels-tests/tests/hopper_selftest.rs runs them:
// on the emulator against an independent host model of the PTX ISA's layouts; on a Hopper GPU
// additionally against the emulator, bit for bit, so the emulator's reading of the ISA is checked
// by the hardware on every GPU contact.
//
//   selftest_wgmma: one warpgroup (128 threads). `in` = a 64 KiB shared-memory image (16-bit
//     values) followed by the initial accumulators [128 threads][N/2] f32; the image is stored
//     into shared memory with generic stores, fenced to the async proxy, and one wgmma m64nNk16
//     reads it through `desc_a` / `desc_b` (start addresses relative to the image; mode bit 1: A
//     from registers instead, loaded from the image by the register-fragment layout at row pitch
//     32 bytes; bit 2: scale-d = 0, the initial accumulators ignored; bit 3: B MN-major, the
//     `_transb` wrappers, imm-trans-b = 1); `out` = the accumulators after wait_group 0, [128][N/2].
//   selftest_tma_load: thread 0 loads the box of `map` at `coords` (`bytes` bytes) into shared
//     memory and waits on an mbarrier; the block copies the raw shared bytes to `out`.
//   selftest_tma_store: the block stores `bytes` bytes of `in` into shared memory, fences, and
//     thread 0 stores the box of `map` at `coords` from it.
//   selftest_pdl_copy: a primary of programmatic dependent launch: triggers its dependents first,
//     then copies `n` u32 from `in` to `out`.
//   selftest_cluster_multicast: a grid in clusters of `n` blocks (the launch's cluster dimension):
//     every block initialises an mbarrier, then the cluster barrier (mode 1, a misuse: none); rank
//     r copies 256-byte slices r, r + n, ... of `in` (`bytes` bytes) into the shared memory of all
//     n blocks (multicast); each block waits for all `bytes` on its own barrier and writes its copy
//     to out[block · (bytes + 16)], its %cluster_ctarank after it (a u32, then 12 bytes untouched).
//   selftest_sm90_misuse (emulator only): mode selects one protocol error the emulator must report
//     or expose (see the test).
// The register-A path has its fence after the fragment's loads: PTX requires one between any
// register write and the wgmma that reads the register (a rule the emulator cannot see).
#include "hopper.cuh"

extern __shared__ __align__(16) unsigned char smem[];

namespace {

__device__ __forceinline__ unsigned char* aligned_smem() {
    return smem + ((1024u - (smem_addr(smem) & 1023u)) & 1023u);
}

// Relative descriptor → absolute: the image starts at `base`.
__device__ __forceinline__ uint64_t rebase(uint64_t desc, uint32_t base) {
    return desc + ((base >> 4) & 0x3fff);
}

// One wgmma m64nNk16 of the form `mode` asks for (its type, A's source, B's major mode).
#define MB_SELFTEST_WGMMA_N(FORM, A, NN)                                                       \
    do {                                                                                       \
        if (fp16 && trans_b) wgmma_##FORM##_m64n##NN##k16_f16_transb(d, A, db, scale_d);       \
        if (fp16 && !trans_b) wgmma_##FORM##_m64n##NN##k16_f16(d, A, db, scale_d);             \
        if (!fp16 && trans_b) wgmma_##FORM##_m64n##NN##k16_bf16_transb(d, A, db, scale_d);     \
        if (!fp16 && !trans_b) wgmma_##FORM##_m64n##NN##k16_bf16(d, A, db, scale_d);           \
    } while (0)
#define MB_SELFTEST_WGMMA(FORM, A)                                     \
    do {                                                               \
        if constexpr (N == 64) MB_SELFTEST_WGMMA_N(FORM, A, 64);       \
        if constexpr (N == 128) MB_SELFTEST_WGMMA_N(FORM, A, 128);     \
        if constexpr (N == 256) MB_SELFTEST_WGMMA_N(FORM, A, 256);     \
    } while (0)

template <int N>
__device__ void wgmma_once(const SelftestSm90Params& p, uint32_t base) {
    const int tid = threadIdx.x;
    const float* c_in = reinterpret_cast<const float*>(p.in + MB_SELFTEST90_IMAGE_BYTES);
    float d[N / 2];
    for (int i = 0; i < N / 2; i++) d[i] = c_in[tid * (N / 2) + i];
    const uint64_t db = rebase(p.desc_b, base);
    const bool fp16 = p.mode & 1, a_regs = p.mode & 2, trans_b = p.mode & 8;
    const int scale_d = (p.mode & 4) ? 0 : 1;  // 0: D = A·B, the accumulators' input ignored
    if (a_regs) {
        // Rows 16w + g (+8), k 2t (+8): the A fragment, from rows of 32 bytes at the image's start.
        const unsigned char* img = aligned_smem();
        const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
        uint32_t a[4];
        const int rows[4] = {16 * w + g, 16 * w + g + 8, 16 * w + g, 16 * w + g + 8};
        const int cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int i = 0; i < 4; i++) a[i] = *reinterpret_cast<const uint32_t*>(img + rows[i] * 32 + cols[i] * 2);
        // The fence orders every register write before it (A's fragment and the accumulators)
        // ahead of the wgmma that reads them.
        wgmma_fence();
        wgmma_fence_operands(d);
        MB_SELFTEST_WGMMA(rs, a);
    } else {
        const uint64_t da = rebase(p.desc_a, base);
        wgmma_fence();
        wgmma_fence_operands(d);
        MB_SELFTEST_WGMMA(ss, da);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(d);
    float* out = reinterpret_cast<float*>(p.out);
    for (int i = 0; i < N / 2; i++) out[tid * (N / 2) + i] = d[i];
}

}  // namespace

extern "C" __global__ void __launch_bounds__(MB_SELFTEST90_THREADS, 1) selftest_wgmma(const __grid_constant__ SelftestSm90Params p) {
    unsigned char* img = aligned_smem();
    const uint4* src = reinterpret_cast<const uint4*>(p.in);
    for (int i = threadIdx.x; i < MB_SELFTEST90_IMAGE_BYTES / 16; i += blockDim.x)
        reinterpret_cast<uint4*>(img)[i] = src[i];
    fence_proxy_async();  // generic stores → visible to wgmma (the async proxy)
    __syncthreads();
    const uint32_t base = smem_addr(img);
    if (p.n == 64) wgmma_once<64>(p, base);
    if (p.n == 128) wgmma_once<128>(p, base);
    if (p.n == 256) wgmma_once<256>(p, base);
}

extern "C" __global__ void __launch_bounds__(MB_SELFTEST90_THREADS, 1) selftest_tma_load(const __grid_constant__ SelftestSm90Params p) {
    unsigned char* box = aligned_smem();
    __shared__ __align__(8) uint64_t bar;
    if (threadIdx.x == 0) {
        mbar_init(&bar, 1);
        mbar_init_fence();
        mbar_arrive_expect_tx(&bar, p.bytes);
        const int* c = p.coords;
        switch (p.n) {  // the rank
            case 2: tma_load_2d(box, &p.map, c[0], c[1], &bar); break;
            case 3: tma_load_3d(box, &p.map, c[0], c[1], c[2], &bar); break;
            default: tma_load_5d(box, &p.map, c[0], c[1], c[2], c[3], c[4], &bar); break;
        }
        mbar_wait(&bar, 0);
    }
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < p.bytes / 16; i += blockDim.x)
        reinterpret_cast<uint4*>(p.out)[i] = reinterpret_cast<const uint4*>(box)[i];
}

extern "C" __global__ void __launch_bounds__(MB_SELFTEST90_THREADS, 1) selftest_tma_store(const __grid_constant__ SelftestSm90Params p) {
    unsigned char* box = aligned_smem();
    for (uint32_t i = threadIdx.x; i < p.bytes / 16; i += blockDim.x)
        reinterpret_cast<uint4*>(box)[i] = reinterpret_cast<const uint4*>(p.in)[i];
    fence_proxy_async();
    __syncthreads();
    if (threadIdx.x == 0) {
        tma_store_2d(&p.map, p.coords[0], p.coords[1], box);
        bulk_commit();
        bulk_wait<0>();
    }
}

extern "C" __global__ void MB_PDL_PRIMARY selftest_pdl_copy(const __grid_constant__ SelftestSm90Params p) {
    pdl_launch_dependents();
    const uint32_t* in = reinterpret_cast<const uint32_t*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) out[i] = in[i];
}

extern "C" __global__ void __launch_bounds__(MB_SELFTEST90_THREADS, 1) selftest_cluster_multicast(const __grid_constant__ SelftestSm90Params p) {
    uint64_t* bar = reinterpret_cast<uint64_t*>(aligned_smem());
    unsigned char* copy = aligned_smem() + 128;
    const uint32_t size = p.n, rank = cluster_ctarank(), tid = threadIdx.x;
    if (tid == 0) {
        mbar_init(bar, 1);
        mbar_init_fence();
    }
    if (p.mode != 1) {
        cluster_arrive_relaxed();
        cluster_wait();
    }
    if (tid == 0) mbar_arrive_expect_tx(bar, p.bytes);
    const unsigned char* in = reinterpret_cast<const unsigned char*>(p.in);
    for (uint32_t s = rank + size * tid; 256 * s < p.bytes; s += size * blockDim.x)
        bulk_load_multicast(copy + 256 * s, in + 256 * s, 256, bar, (uint16_t)((1u << size) - 1));
    mbar_wait(bar, 0);
    unsigned char* out = reinterpret_cast<unsigned char*>(p.out) + (size_t)blockIdx.x * (p.bytes + 16);
    for (uint32_t i = tid; i < p.bytes / 16; i += blockDim.x)
        reinterpret_cast<uint4*>(out)[i] = reinterpret_cast<const uint4*>(copy)[i];
    if (tid == 0) *reinterpret_cast<uint32_t*>(out + p.bytes) = rank;
}

// Each mode is one mistake; the emulator must fail the launch (modes 0-4, 7) or expose the mistake
// as NaN in `out` (modes 5, 6). 128 threads.
extern "C" __global__ void __launch_bounds__(MB_SELFTEST90_THREADS, 1) selftest_sm90_misuse(const __grid_constant__ SelftestSm90Params p) {
    unsigned char* img = aligned_smem();
    __shared__ __align__(8) uint64_t bar;
    float* out = reinterpret_cast<float*>(p.out);
    for (int i = threadIdx.x; i < 2048 / 16; i += blockDim.x) reinterpret_cast<uint4*>(img)[i] = uint4{0, 0, 0, 0};
    fence_proxy_async();
    __syncthreads();
    const uint64_t desc = wgmma_desc(smem_addr(img), 128, 256, 0);
    float d[32];
    for (int i = 0; i < 32; i++) d[i] = 1.0f;
    switch (p.mode) {
        case 0:  // wgmma with no wgmma.fence before it
            wgmma_ss_m64n64k16_bf16(d, desc, desc, 1);
            wgmma_commit();
            wgmma_wait<0>();
            break;
        case 1:  // a register count that is not a multiple of 8 (ptxas refuses it outright)
#ifdef MODERNBERT_EMULATOR
            setmaxnreg_dec<30>();
#endif
            break;
        case 2:  // waiting for a phase nobody completes
            if (threadIdx.x == 0) {
                mbar_init(&bar, 2);
                mbar_arrive(&bar);
                mbar_wait(&bar, 0);
            }
            break;
        case 3:  // a TMA store never waited for
            if (threadIdx.x == 0) tma_store_2d(&p.map, 0, 0, img);
            break;
        case 4:  // a wgmma never retired
            wgmma_fence();
            wgmma_ss_m64n64k16_bf16(d, desc, desc, 1);
            wgmma_commit();
            break;
        case 5:  // the accumulators read between the issue and the wait
            wgmma_fence();
            wgmma_ss_m64n64k16_bf16(d, desc, desc, 1);
            wgmma_commit();
            out[threadIdx.x] = d[0];
            wgmma_wait<0>();
            break;
        case 6:  // a TMA destination read before the mbarrier wait
            if (threadIdx.x == 0) {
                mbar_init(&bar, 1);
                mbar_init_fence();
                mbar_arrive_expect_tx(&bar, p.bytes);
                tma_load_2d(img, &p.map, 0, 0, &bar);
                out[0] = __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(img));
                mbar_wait(&bar, 0);
            }
            break;
        case 7:  // a TMA copy on a barrier whose init was never fenced
            if (threadIdx.x == 0) {
                mbar_init(&bar, 1);
                mbar_arrive_expect_tx(&bar, p.bytes);
                tma_load_2d(img, &p.map, 0, 0, &bar);
                mbar_wait(&bar, 0);
            }
            break;
    }
}
