// internal.h — the emulator runtime's own state, shared by its two halves: emu.cpp (fibers, the
// per-block scheduler, warp collectives, cp.async, launches) and hopper.cpp (the sm_90a instructions:
// warpgroup MMA, TMA, mbarrier, named barriers, setmaxnreg, proxy fences, programmatic dependent
// launch). Kernels never include this; they see emu.h.
#pragma once
// The standard headers first: emu.h defines CUDA keywords (__noinline__ ...) they would trip on.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"
#include "registry.h"
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

// RUN: runnable. BAR: at __syncthreads. WARP: at a warp collective. WGRP: at a warpgroup collective
// (wgmma, setmaxnreg). NBAR: at a named barrier (bar.sync id, n). SPIN: yielded from a polling wait
// (mbarrier.try_wait) that found nothing; runnable again next round. DONE: exited.
enum State : uint8_t { RUN, BAR, WARP, WGRP, NBAR, SPIN, DONE };

struct Pending {  // one cp.async of 16 bytes, issued and not yet waited for
    void* dst;
    unsigned char data[16];
};

struct BulkStore;  // hopper.cpp: a TMA / bulk store whose global write is still pending

struct Thr {
#if defined(__x86_64__)
    void* sp;
#else
    ucontext_t uc;
#endif
    State st;
    uint3 idx;  // threadIdx, set at each switch to this thread (computed once per block)
    std::vector<Pending> cp;
    // cp.async.bulk groups of this thread (hopper.cpp): stores of the open group, then committed ones.
    std::vector<BulkStore*> bulk_open;
    std::vector<std::vector<BulkStore*>> bulk_groups;
    int64_t cluster_wait_for;  // barrier.cluster: the phase this thread arrived in, -1 if none
    // fence.proxy.async.global: the block's grid acquires (`Block::acquires`) this thread had
    // fenced at its last one; a bulk copy from global after a later acquire is refused.
    uint64_t proxy_fenced_acquires;
};

enum Op : int { OP_NONE, OP_SYNCWARP, OP_SHFL, OP_VOTE, OP_MMA, OP_LDMATRIX };

struct WarpIn {
    union {
        struct {
            uint64_t v;
            int kind, arg, width;
        } shfl;
        struct {
            int pred, kind;
        } vote;
        struct {
            int fp16;
            uint32_t a[4], b[2];
            float c[4];
        } mma;
        struct {
            int count, trans;
            const void* addr;
        } ldm;
    };
};

struct Warp {
    Op op;
    uint32_t mask;
    int arrived;  // lanes waiting at the pending collective
    int live;     // lanes of the warp that have not exited
    WarpIn in[32];
    uint32_t out[32][4];
    uint64_t out64[32];
};

// ---- warpgroups (hopper.cpp) ----
enum WgOp : int { WG_NONE, WG_MMA, WG_FENCE, WG_COMMIT, WG_WAIT, WG_SETMAXNREG };

struct WgIn {  // what one thread deposits at a warpgroup collective
    uint64_t desc_a, desc_b;
    float* d;              // the thread's accumulator registers
    const uint32_t* a;     // A from registers (4 per thread), or null for A from shared memory
    int n, fp16, scale_d, arg;
    int trans_b;           // imm-trans-b: B is MN-major in shared memory (else K-major)
};

struct WgmmaOp {  // one issued wgmma.mma_async: the result it will deliver and what it read
    uint64_t group;                 // commit-group sequence number (UINT64_MAX: not committed yet)
    int n;
    uint64_t desc_a, desc_b;
    int trans_b;                    // B MN-major (imm-trans-b = 1)
    std::vector<float> result;      // [128 threads][n/2], delivered at the wait
    std::vector<float*> dst;        // each thread's accumulator registers
    std::vector<uint16_t> a_seen, b_seen;  // operands as read at issue (checked again at the wait)
    std::vector<const uint32_t*> a_regs;   // A from registers: where (checked at the wait)
};

struct WGroup {
    WgOp op;
    int arrived;
    WgIn in[128];
    bool fenced;                    // a wgmma.fence since the accumulators were last delivered
    uint64_t next_group;            // sequence number the next commit gives
    std::vector<WgmmaOp> inflight;  // issue order
};

// ---- mbarrier (hopper.cpp) ----
struct Chunk {  // 16 bytes bound for shared memory when the barrier's phase is observed
    uint32_t off;  // byte offset in dynamic shared memory
    unsigned char data[16];
};

struct Mbar {
    void* addr;
    uint32_t count;     // arrivals per phase (init)
    int64_t pending;    // arrivals still missing in the current phase
    int64_t tx;         // transaction bytes still expected in the current phase
    uint64_t phase;     // phases completed so far
    bool init_fenced;   // a fence.mbarrier_init since its init (TMA may complete on it only then)
    std::vector<Chunk> inflight;  // TMA bytes counted against the current phase
    std::vector<Chunk> landed;    // bytes of completed phases nobody has waited for yet
};

struct NamedBar {
    int arrived;   // threads arrived in this round
    int expected;  // thread count of this round (0: idle)
    std::vector<int> waiting;  // threads blocked in bar.sync of this round
};


// Blocks that take turns on their host threads (a co-scheduled grid, or the blocks of one cluster):
// only the one holding the turn runs; a block passes the turn when its threads can make no progress
// (they poll memory another block of the group must write).
struct Turns {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<uint64_t> rotation;  // blocks still running, in turn order
    uint64_t turn = 0;               // the block whose turn it is
    size_t idle_turns = 0;           // consecutive turns in which no block made progress
};

struct Block;

// A thread block cluster (a launch's `cluster` consecutive blocks along x; every other launch's
// block is a cluster of one, as on sm_90): its blocks run as one co-scheduled group, and each
// block's shared memory is reachable from the others (multicast copies into it).
struct Cluster {
    Turns turns;
    uint32_t size = 1;
    Block* members[16] = {};  // by rank: the block while it runs, null before it starts and after it exits
    // barrier.cluster: arrivals in the current phase (every thread of every block arrives once).
    uint64_t arrived = 0;
    uint64_t phase = 0;  // phases completed
};

struct Launch {
    const EmuKernel* k;
    const void* params;
    dim3 grid, block;
    uint32_t smem_bytes;
    bool reverse;
    std::atomic<uint64_t> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex err_mu;
    std::string err;
    // Programmatic dependent launch: the primary this launch may overlap, run when the first
    // thread reaches griddepcontrol.wait (or after the whole grid, if none does).
    const ::EmuLaunchDesc* primary = nullptr;
    std::mutex primary_mu;
    bool primary_done = false;
    std::string primary_err;
    // Co-scheduled launch (all blocks resident at once, as a persistent kernel needs): one host
    // thread per block, taking turns.
    bool coscheduled = false;
    Turns turns;
    // Blocks per cluster along x (1: no cluster launch).
    uint32_t cluster = 1;
    void fail(const std::string& e) {
        std::lock_guard<std::mutex> g(err_mu);
        if (!failed.exchange(true)) err = e;
    }
};

struct Block {
    Launch* L;
    int n;
    Thr* thr;
    Warp* warps;
    WGroup* wgroups;  // n / 128 of them (none when n is not a multiple of 128)
    int cur;
#if defined(__x86_64__)
    void* sched_sp;
#else
    ucontext_t sched_uc;
#endif
    std::string err;
    uint64_t progress;  // events that may unblock a spinning thread (see run_block)
    uint64_t index;     // linear block index
    uint64_t progress_at_turn_end;  // co-scheduled: `progress` when the block last passed the turn
    Turns* turns;       // the group it takes turns with (co-scheduled grid, cluster), or null
    bool released;      // a thread stored a flag with release (grid_signal): pass the turn at once
    // Grid acquires that succeeded in this block (grid_wait_geq): each may import other blocks'
    // generic-proxy stores, which its threads' bulk copies (the async proxy) may read only after
    // a fence.proxy.async.global of their own.
    uint64_t acquires;
    Cluster* cluster;   // its cluster (`own_cluster` outside a cluster launch)
    uint32_t rank;      // %cluster_ctarank
    Cluster own_cluster;
    unsigned char* smem_base;   // its host thread's dynamic shared memory ...
    unsigned char* async_base;  // ... and the async proxy's view of it (multicast writes both)
    std::vector<Mbar> mbars;
    // Per 16 bytes of dynamic shared memory: a bulk copy's data bound there has not yet been
    // observed (its phase not waited for). A second copy into such bytes races the first — on a
    // GPU it may land first, or while the block still reads them — and is refused.
    std::vector<uint8_t> copy_due;
    NamedBar nbars[16];
};

extern thread_local Block* g_blk;
extern thread_local unsigned char async_view[];  // the async proxy's view of dynamic shared memory
extern const size_t kMaxDynSmem;

void yield_to_scheduler();

// hopper.cpp's hooks into the scheduler.
void hopper_block_start(Block* b);
// After thread t yielded with state WGRP or DONE: completes its warpgroup's collective when every
// live thread has arrived. False (b->err set) on misuse.
bool hopper_try_complete_wgroup(Block* b, int t);
// The mbarriers' states, for a deadlock report ("" when there are none).
std::string hopper_describe(Block* b);
// When the block's threads have all exited: what the block left in flight is an error.
bool hopper_block_end(Block* b);
// Runs a launch to completion on new host threads (the primary of a dependent launch).
int run_launch_desc(const ::EmuLaunchDesc* d, bool use_calling_thread, std::string* err);

}  // namespace emu
