// handoff_sm90.cu — the cost of handing one step's result to the next across the whole GPU: the
// number a small-batch forward's design turns on (a persistent kernel's steps, or a graph of
// kernels overlapped by programmatic dependent launch). Not part of the forward: measured by
// kernels-tests/src/bin/handoff.rs, checked by kernels-tests/tests/handoff_sm90.rs.
// Every step s: block b reads every block's value of step s − 1 (its lanes G / 32 each) and writes
// their maximum + 1 into out[s, b], so no block may start a step before all blocks finished the
// previous one, as a GEMM's tiles wait for all the tiles of the step before; after S steps every
// value is S (an unwritten value, 0xffffffff, would show).
//   handoff_step:       one launch per step. Launched as a dependent (PDL), it is resident while
//                       the previous step runs (which lets it launch at once) and griddepcontrol.wait
//                       holds its read until that step has finished; launched plainly, the stream
//                       orders the steps.
//   handoff_persistent: one co-scheduled launch for all S steps; between steps each block raises
//                       its flag to the step it finished and waits for every block's (a grid barrier
//                       in global memory, release / acquire), its 32 lanes watching G / 32 flags each,
//                       loaded together (grid_wait_all_geq, the persistent forward's barrier).
// Geometry: G blocks (one per SM on a GPU) of MB_HANDOFF_THREADS threads, thread 0 computing.
// Bytes: 4·(G + 1) per block and step (+ 4·G flag loads, persistent); FLOPs: none. What it
// measures is time per step.
#include "common.cuh"  // grid_wait_all_geq, grid_signal, pdl_wait, pdl_launch_dependents

// The largest of the G values of the previous step, every lane of the warp returning it.
__device__ __forceinline__ uint32_t previous_max(const uint32_t* prev, uint32_t g) {
    uint32_t m = 0;
    for (uint32_t j = threadIdx.x; j < g; j += MB_HANDOFF_THREADS) m = max(m, prev[j]);
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    return m;
}

extern "C" __global__ void MB_PDL_PRIMARY __launch_bounds__(MB_HANDOFF_THREADS) handoff_step(const __grid_constant__ HandoffParams p) {
    pdl_launch_dependents();  // the next step may launch now: its own wait holds its reads
    pdl_wait();               // the previous step has finished and its writes are visible
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    const uint32_t g = gridDim.x;
    const uint32_t prev = p.step == 0 ? 0 : previous_max(out + (size_t)(p.step - 1) * g, g);
    if (threadIdx.x == 0) out[(size_t)p.step * g + blockIdx.x] = prev + 1;
}

extern "C" __global__ void __launch_bounds__(MB_HANDOFF_THREADS) handoff_persistent(const __grid_constant__ HandoffParams p) {
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    uint32_t* flags = reinterpret_cast<uint32_t*>(p.flags);
    const uint32_t g = gridDim.x, b = blockIdx.x, lane = threadIdx.x;
    for (uint32_t s = 0; s < p.steps; s++) {
        uint32_t prev = 0;
        if (s > 0) {
            // The grid barrier: every block has finished step s − 1. Each lane acquires the flags
            // of the blocks whose values it then reads.
            grid_wait_all_geq(flags, lane, MB_HANDOFF_THREADS, g, s);
            prev = previous_max(out + (size_t)(s - 1) * g, g);
        }
        if (lane == 0) {
            out[(size_t)s * g + b] = prev + 1;
            grid_signal(&flags[b], s + 1);  // release: out[s, b] is visible to whoever sees s + 1
        }
        __syncwarp();
    }
}
