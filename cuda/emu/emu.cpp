// emu.cpp — the host emulator's runtime: fibers, the per-block scheduler, warp collectives (shuffles,
// votes, mma.m16n8k16, ldmatrix) as 32-lane rendezvous, cp.async, and the launch entry point called
// from Rust (src/kernels/emu.rs). See emu.h for the execution model; the sm_90a instructions are
// hopper.cpp's, the state both share internal.h's.
//
// A warp collective: each lane of the warp deposits its inputs and yields; when every live lane of
// the warp has arrived (same operation, same mask), the scheduler computes every lane's result at
// once (so memory read by ldmatrix is read at one instant, as on the GPU), then the lanes resume one
// by one and pick up their outputs. Mismatched collectives, masks naming exited lanes, a barrier
// that some threads can never reach: reported as errors of the launch, never hangs.
#include "internal.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

__thread uint3 emu_threadIdx;
__thread uint3 emu_blockIdx;
__thread dim3 emu_blockDim;
__thread dim3 emu_gridDim;

// Dynamic shared memory (`extern __shared__ ... smem[]`), one per host thread = per running block.
// 1024-byte aligned, as the GPU's is, so a 128-byte swizzle atom at offset 0 is aligned.
#define EMU_MAX_DYN_SMEM (227 * 1024)
thread_local __attribute__((aligned(1024))) unsigned char smem[EMU_MAX_DYN_SMEM];

namespace emu {
const size_t kMaxDynSmem = EMU_MAX_DYN_SMEM;
thread_local __attribute__((aligned(1024))) unsigned char async_view[EMU_MAX_DYN_SMEM];
thread_local Block* g_blk = nullptr;
}  // namespace emu

using namespace emu;

namespace {

const size_t kStackSize = 64 * 1024;
const int kMaxThreads = 1024;
const uint64_t kMaxCoscheduledBlocks = 1024;

// ---- context switch ------------------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.globl emu_ctx_switch
.hidden emu_ctx_switch
.type emu_ctx_switch,@function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_ctx_switch,.-emu_ctx_switch
)");
#define EMU_FAST_SWITCH 1
#else
#include <ucontext.h>
#endif

struct Stacks {
    std::vector<char*> stacks;
};

std::mutex g_stacks_mu;
std::vector<Stacks*> g_free_stacks;

Stacks* acquire_stacks() {
    std::lock_guard<std::mutex> g(g_stacks_mu);
    if (g_free_stacks.empty()) return new Stacks();
    Stacks* s = g_free_stacks.back();
    g_free_stacks.pop_back();
    return s;
}
void release_stacks(Stacks* s) {
    std::lock_guard<std::mutex> g(g_stacks_mu);
    g_free_stacks.push_back(s);
}
// The fiber stacks `blocks` blocks of `threads` threads would take from the pool now (the last
// sets in it, as acquire_stacks hands them out; a launch running beside may take them first).
uint64_t pooled_stacks(uint64_t blocks, uint64_t threads) {
    std::lock_guard<std::mutex> g(g_stacks_mu);
    uint64_t n = 0;
    for (uint64_t i = 0; i < blocks && i < g_free_stacks.size(); i++)
        n += std::min<uint64_t>(g_free_stacks[g_free_stacks.size() - 1 - i]->stacks.size(), threads);
    return n;
}

void init_coords(Block* b, int t) {
    unsigned bx = b->L->block.x, by = b->L->block.y;
    b->thr[t].idx.x = t % bx;
    b->thr[t].idx.y = (t / bx) % by;
    b->thr[t].idx.z = t / (bx * by);
}

}  // namespace

// Switch from the running fiber back to the scheduler.
void emu::yield_to_scheduler() {
    Block* b = g_blk;
#ifdef EMU_FAST_SWITCH
    emu_ctx_switch(&b->thr[b->cur].sp, b->sched_sp);
#else
    swapcontext(&b->thr[b->cur].uc, &b->sched_uc);
#endif
}

namespace {

void fiber_main() {
    Block* b = g_blk;
    b->L->k->run(b->L->params);
    b = g_blk;
    b->thr[b->cur].st = DONE;
    b->thr[b->cur].cp.clear();
    b->warps[b->cur / 32].live--;
#ifdef EMU_FAST_SWITCH
    void* dummy;
    emu_ctx_switch(&dummy, b->sched_sp);
#else
    setcontext(&b->sched_uc);
#endif
    __builtin_unreachable();
}

#ifdef EMU_FAST_SWITCH
void* init_stack(char* base) {
    uintptr_t top = ((uintptr_t)base + kStackSize) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)(top - 72);
    uint32_t ctl[2] = {0x1f80u, 0x037fu};  // default MXCSR, x87 control word
    std::memcpy(sp, ctl, 8);
    for (int i = 1; i <= 6; i++) sp[i] = 0;  // r15 r14 r13 r12 rbx rbp
    sp[7] = (uint64_t)(uintptr_t)&fiber_main;
    sp[8] = 0;
    return sp;
}
#endif

// Memory mappings this process may still make: vm.max_map_count less the lines of
// /proc/self/maps (an upper bound where /proc cannot be read).
uint64_t free_mappings() {
    uint64_t limit = UINT64_MAX, used = 0;
    if (FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
        unsigned long long v = 0;
        if (std::fscanf(f, "%llu", &v) == 1) limit = v;
        std::fclose(f);
    }
    if (FILE* f = std::fopen("/proc/self/maps", "r")) {
        // On the heap: a launch may be made from a fiber, whose stack is 64 KiB.
        std::vector<char> buf(1 << 16);
        for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f)) > 0;)
            used += std::count(buf.data(), buf.data() + n, '\n');
        std::fclose(f);
    }
    return limit > used ? limit - used : 0;
}

char* new_stack() {
    // One guard page below the stack: an overflow faults instead of corrupting a neighbour.
    size_t page = 4096;
    void* p = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        std::fprintf(stderr, "emu: mmap of a fiber stack failed\n");
        std::abort();
    }
    mprotect(p, page, PROT_NONE);
    return (char*)p + page;
}

// ---- warp collectives -------------------------------------------------------------------------------
uint32_t live_lanes(Block* b, int w) {
    uint32_t m = 0;
    for (int l = 0; l < 32; l++) {
        int t = w * 32 + l;
        if (t < b->n && b->thr[t].st != DONE) m |= 1u << l;
    }
    return m;
}
uint32_t existing_lanes(Block* b, int w) {
    int n = b->n - w * 32;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1);
}

float bits_f(uint32_t h, int fp16) { return fp16 ? emu_h2f((uint16_t)h) : emu_bf2f((uint16_t)h); }

// Executes warp w's pending collective for all its lanes. Returns false (with b->err) on misuse.
bool complete_warp(Block* b, int w) {
    Warp& W = b->warps[w];
    uint32_t live = live_lanes(b, w);
    char buf[256];
    uint32_t mask = W.mask & existing_lanes(b, w);
    if (mask != live) {
        std::snprintf(buf, sizeof buf,
                      "warp %d: collective with mask 0x%08x but live lanes 0x%08x (an exited or "
                      "diverged lane)", w, W.mask, live);
        b->err = buf;
        return false;
    }
    switch (W.op) {
        case OP_SYNCWARP:
            break;
        case OP_SHFL:
            for (int l = 0; l < 32; l++) {
                if (!(live >> l & 1)) continue;
                const auto& s = W.in[l].shfl;
                int width = s.width, seg = l & ~(width - 1), src = l;
                switch (s.kind) {
                    case 0: src = seg + (s.arg & (width - 1)); break;
                    case 1: src = (l - seg) >= s.arg ? l - s.arg : l; break;
                    case 2: src = (l - seg) + s.arg < width ? l + s.arg : l; break;
                    case 3: src = l ^ s.arg; if (src >= seg + width || src < 0 || src > 31) src = l; break;
                }
                if (!(live >> src & 1)) {
                    std::snprintf(buf, sizeof buf, "warp %d lane %d: shuffle reads inactive lane %d", w, l, src);
                    b->err = buf;
                    return false;
                }
                W.out64[l] = W.in[src].shfl.v;
            }
            break;
        case OP_VOTE: {
            uint32_t ballot = 0;
            for (int l = 0; l < 32; l++)
                if ((live >> l & 1) && W.in[l].vote.pred) ballot |= 1u << l;
            for (int l = 0; l < 32; l++) {
                if (!(live >> l & 1)) continue;
                int kind = W.in[l].vote.kind;
                W.out[l][0] = kind == 0 ? ballot : kind == 1 ? (ballot != 0) : (ballot == live);
            }
            break;
        }
        case OP_MMA: {
            if (live != 0xffffffffu) {
                b->err = "mma.sync with fewer than 32 active lanes";
                return false;
            }
            int fp16 = W.in[0].mma.fp16;
            double A[16][16], B[16][8];
            float C[16][8];
            for (int l = 0; l < 32; l++) {
                const auto& m = W.in[l].mma;
                if (m.fp16 != fp16) {
                    b->err = "mma.sync: lanes disagree on the input type";
                    return false;
                }
                int g = l >> 2, t = l & 3;
                // A fragment: a0,a1: (g, 2t+i) a2,a3: (g+8, 2t+i) a4,a5: (g, 2t+8+i) a6,a7: (g+8, 2t+8+i)
                for (int i = 0; i < 2; i++) {
                    A[g][2 * t + i] = bits_f(m.a[0] >> (16 * i) & 0xffff, fp16);
                    A[g + 8][2 * t + i] = bits_f(m.a[1] >> (16 * i) & 0xffff, fp16);
                    A[g][2 * t + 8 + i] = bits_f(m.a[2] >> (16 * i) & 0xffff, fp16);
                    A[g + 8][2 * t + 8 + i] = bits_f(m.a[3] >> (16 * i) & 0xffff, fp16);
                    // B fragment: b0,b1: (k = 2t+i, n = g) b2,b3: (k = 2t+8+i, n = g)
                    B[2 * t + i][g] = bits_f(m.b[0] >> (16 * i) & 0xffff, fp16);
                    B[2 * t + 8 + i][g] = bits_f(m.b[1] >> (16 * i) & 0xffff, fp16);
                }
                // C fragment: c0,c1: (g, 2t+i) c2,c3: (g+8, 2t+i)
                C[g][2 * t] = m.c[0];
                C[g][2 * t + 1] = m.c[1];
                C[g + 8][2 * t] = m.c[2];
                C[g + 8][2 * t + 1] = m.c[3];
            }
            // Products of two bf16/fp16 values are exact in double; the sum is rounded once to f32.
            // (The hardware's internal accumulation order is unspecified; it agrees bit for bit
            // whenever the exact sum is representable, see the GPU self-test.)
            // (Each element's sum in k order, starting from C; a row's 8 sums in registers.)
            float D[16][8];
            for (int i = 0; i < 16; i++) {
                double acc[8];
                for (int j = 0; j < 8; j++) acc[j] = C[i][j];
                for (int k = 0; k < 16; k++) {
                    const double a = A[i][k];
                    #pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) acc[j] += a * B[k][j];
                }
                for (int j = 0; j < 8; j++) D[i][j] = (float)acc[j];
            }
            for (int l = 0; l < 32; l++) {
                int g = l >> 2, t = l & 3;
                float d[4] = {D[g][2 * t], D[g][2 * t + 1], D[g + 8][2 * t], D[g + 8][2 * t + 1]};
                std::memcpy(W.out[l], d, 16);
            }
            break;
        }
        case OP_LDMATRIX: {
            int count = W.in[0].ldm.count, trans = W.in[0].ldm.trans;
            uint32_t need = count == 4 ? 0xffffffffu : count == 2 ? 0xffffu : 0xffu;
            if ((live & need) != need) {
                b->err = "ldmatrix: an address-supplying lane is not active";
                return false;
            }
            for (int l = 0; l < 32; l++) {
                if (!(live >> l & 1)) continue;
                if (W.in[l].ldm.count != count || W.in[l].ldm.trans != trans) {
                    b->err = "ldmatrix: lanes disagree on the shape";
                    return false;
                }
            }
            for (int l = 0; l < count * 8; l++) {
                if ((uintptr_t)W.in[l].ldm.addr & 15) {
                    std::snprintf(buf, sizeof buf, "ldmatrix: lane %d row address %p is not 16-byte aligned", l,
                                  W.in[l].ldm.addr);
                    b->err = buf;
                    return false;
                }
            }
            for (int l = 0; l < 32; l++) {
                if (!(live >> l & 1)) continue;
                int g = l >> 2, t = l & 3;
                for (int j = 0; j < count; j++) {
                    uint16_t e0, e1;
                    if (!trans) {
                        const uint16_t* row = (const uint16_t*)W.in[8 * j + g].ldm.addr;
                        e0 = row[2 * t];
                        e1 = row[2 * t + 1];
                    } else {
                        e0 = ((const uint16_t*)W.in[8 * j + 2 * t].ldm.addr)[g];
                        e1 = ((const uint16_t*)W.in[8 * j + 2 * t + 1].ldm.addr)[g];
                    }
                    W.out[l][j] = (uint32_t)e0 | ((uint32_t)e1 << 16);
                }
            }
            break;
        }
        default:
            b->err = "internal: unknown collective";
            return false;
    }
    W.op = OP_NONE;
    W.arrived = 0;
    for (int l = 0; l < 32; l++)
        if (live >> l & 1) b->thr[w * 32 + l].st = RUN;
    return true;
}

// Called by a lane: deposit (done by the caller into W.in[lane]), check consistency, wait.
void warp_arrive(Op op, uint32_t mask) {
    Block* b = g_blk;
    int t = b->cur, w = t / 32;
    Warp& W = b->warps[w];
    if (W.arrived == 0) {
        W.op = op;
        W.mask = mask;
    } else if (W.op != op || W.mask != mask) {
        emu_trap("warp lanes reached different collectives (or masks): divergent warp");
    }
    W.arrived++;
    b->thr[t].st = WARP;
    yield_to_scheduler();
}

// Co-scheduled blocks (a co-scheduled grid, a cluster): wait for block `me`'s turn in `T` (false
// when the launch failed meanwhile).
bool await_turn(Turns* T, Launch* L, uint64_t me) {
    std::unique_lock<std::mutex> g(T->mu);
    // A failure elsewhere in the launch (another cluster's block) notifies no one in this group:
    // re-check the flag now and then rather than wait for a wake-up that never comes.
    while (!T->cv.wait_for(g, std::chrono::milliseconds(20), [&] { return T->turn == me || L->failed.load(); })) {
    }
    return !L->failed.load();
}

// Hands the turn to the next block in rotation; `leaving`: this block is done and leaves it. A
// full rotation of turns in which no block made progress is a deadlock across the group.
bool hand_over(Block* b, bool leaving) {
    Turns* T = b->turns;
    {
        std::lock_guard<std::mutex> g(T->mu);
        auto& r = T->rotation;
        size_t at = std::find(r.begin(), r.end(), b->index) - r.begin();
        bool progressed = leaving || b->progress != b->progress_at_turn_end;
        b->progress_at_turn_end = b->progress;
        T->idle_turns = progressed ? 0 : T->idle_turns + 1;
        if (leaving) {
            r.erase(r.begin() + at);
            if (!r.empty()) T->turn = r[at % r.size()];
        } else {
            if (T->idle_turns > r.size()) {
                b->err = "deadlock across co-scheduled blocks: every block polls memory that no block will "
                         "write, or waits at a cluster barrier that not every thread reaches (" +
                         std::to_string(r.size()) + " blocks still running)";
                T->cv.notify_all();
                return false;
            }
            T->turn = r[(at + 1) % r.size()];
        }
    }
    T->cv.notify_all();
    return true;
}

bool pass_turn(Block* b) { return hand_over(b, false) && await_turn(b->turns, b->L, b->index); }

// Runs one block to completion on this host thread. Returns false on error (b->err set).
bool run_block(Block* b, Stacks* S) {
    Launch* L = b->L;
    while ((int)S->stacks.size() < b->n) S->stacks.push_back(new_stack());
    for (int t = 0; t < b->n; t++) {
        b->thr[t].st = RUN;
        b->thr[t].cp.clear();
        b->thr[t].cluster_wait_for = -1;
        b->thr[t].proxy_fenced_acquires = 0;
        init_coords(b, t);
#ifdef EMU_FAST_SWITCH
        b->thr[t].sp = init_stack(S->stacks[t]);
#else
        getcontext(&b->thr[t].uc);
        b->thr[t].uc.uc_stack.ss_sp = S->stacks[t];
        b->thr[t].uc.uc_stack.ss_size = kStackSize;
        b->thr[t].uc.uc_link = nullptr;
        makecontext(&b->thr[t].uc, (void (*)())fiber_main, 0);
#endif
    }
    for (int w = 0; w < (b->n + 31) / 32; w++) {
        b->warps[w].op = OP_NONE;
        b->warps[w].arrived = 0;
        b->warps[w].live = b->n - w * 32 < 32 ? b->n - w * 32 : 32;
    }
    std::memset(smem, 0xff, L->smem_bytes);
    if (b->cluster == &b->own_cluster) b->own_cluster.arrived = b->own_cluster.phase = 0;
    b->smem_base = smem;
    b->async_base = async_view;
    b->err.clear();
    hopper_block_start(b);
    b->cluster->members[b->rank] = b;
    // Warp by warp (reversed: last warp first, its lanes last to first): a warp runs until each of
    // its lanes waits (at __syncthreads, a collective, a named barrier or a polling wait) or has
    // exited before the next warp starts, so warps are as far apart as a GPU may let them drift;
    // inside a warp the lanes interleave at each collective. A thread whose poll failed (SPIN)
    // polls again in the next round; a round in which nothing happened but failed polls, with no
    // barrier to open, can only repeat itself: a deadlock, reported.
    const int nwarps = (b->n + 31) / 32;
    for (;;) {
        const uint64_t progress_before = b->progress;
        for (int wk = 0; wk < nwarps; wk++) {
            const int w = L->reverse ? nwarps - 1 - wk : wk;
            const int lanes = b->n - w * 32 < 32 ? b->n - w * 32 : 32;
            for (bool again = true; again;) {
                again = false;
                for (int lk = 0; lk < lanes; lk++) {
                    const int t = w * 32 + (L->reverse ? lanes - 1 - lk : lk);
                    if (b->thr[t].st != RUN) continue;
                    again = true;
                    b->cur = t;
                    emu_threadIdx = b->thr[t].idx;
#ifdef EMU_FAST_SWITCH
                    emu_ctx_switch(&b->sched_sp, b->thr[t].sp);
#else
                    swapcontext(&b->sched_uc, &b->thr[t].uc);
#endif
                    if (!b->err.empty()) return false;
                    // A flag released to the other blocks: they run now, before this block's other
                    // threads go on, so a flag raised before the writes it stands for shows them
                    // half done (as a GPU may).
                    if (b->released && b->turns) {
                        b->released = false;
                        if (!pass_turn(b)) return false;
                    }
                    State s = b->thr[t].st;
                    if (s != SPIN) b->progress++;
                    if ((s == WARP || s == DONE) && b->warps[w].op != OP_NONE &&
                        b->warps[w].arrived == b->warps[w].live && !complete_warp(b, w))
                        return false;
                    if ((s == WGRP || s == DONE) && !hopper_try_complete_wgroup(b, t)) return false;
                }
            }
        }
        int count[DONE + 1] = {};
        for (int t = 0; t < b->n; t++) count[b->thr[t].st]++;
        if (count[DONE] == b->n) return hopper_block_end(b);
        if (count[BAR] > 0 && count[BAR] + count[DONE] == b->n) {
            for (int t = 0; t < b->n; t++)
                if (b->thr[t].st == BAR) b->thr[t].st = RUN;
            continue;
        }
        // Something happened this round: every failed poll may now succeed. (Threads a warpgroup
        // collective released in warps already passed this round are RUN as well.)
        if (b->progress != progress_before) {
            for (int t = 0; t < b->n; t++)
                if (b->thr[t].st == SPIN) b->thr[t].st = RUN;
            continue;
        }
        if (count[RUN] > 0) continue;
        // Nothing more happens inside this block; in a co-scheduled group another block may
        // release it (a flag in global memory, a cluster barrier, bytes multicast into it): pass
        // the turn and poll again when it comes back.
        if (b->turns && count[SPIN] > 0) {
            if (!pass_turn(b)) return false;
            for (int t = 0; t < b->n; t++)
                if (b->thr[t].st == SPIN) b->thr[t].st = RUN;
            continue;
        }
        char buf[300];
        std::snprintf(buf, sizeof buf,
                      "deadlock: %d threads wait at __syncthreads, %d at a warp collective, %d at a warpgroup "
                      "collective, %d at a named barrier, %d poll an mbarrier or global memory that no one will "
                      "change, %d "
                      "exited (a barrier or collective not reached by every thread, or a wait for a phase "
                      "or transaction count that never comes)",
                      count[BAR], count[WARP], count[WGRP], count[NBAR], count[SPIN], count[DONE]);
        b->err = buf + hopper_describe(b);
        return false;
    }
}

// Runs blocks of L until none is left (`only` < 0), or just block `only` of a co-scheduled group:
// the grid's (`cluster` null, or the block's cluster in a co-scheduled grid of clusters) or a
// cluster's.
void worker(Launch* L, int64_t only = -1, Cluster* cluster = nullptr) {
    Stacks* S = acquire_stacks();
    Block b;
    b.L = L;
    b.n = (int)(L->block.x * L->block.y * L->block.z);
    std::vector<Thr> thr(b.n);
    std::vector<Warp> warps((b.n + 31) / 32);
    std::vector<WGroup> wgroups(b.n % 128 == 0 ? b.n / 128 : 0);
    b.thr = thr.data();
    b.warps = warps.data();
    b.wgroups = wgroups.data();
    // A co-scheduled grid takes turns over all its blocks, clustered or not; a cluster launch's
    // blocks take turns within their cluster.
    b.turns = L->coscheduled ? &L->turns : cluster ? &cluster->turns : only >= 0 ? &L->turns : nullptr;
    b.cluster = cluster ? cluster : &b.own_cluster;
    emu_blockDim = L->block;
    emu_gridDim = L->grid;
    uint64_t nblocks = (uint64_t)L->grid.x * L->grid.y * L->grid.z;
    for (;;) {
        if (L->failed.load()) break;
        uint64_t i = only >= 0 ? (uint64_t)only : L->next_block.fetch_add(1);
        if (i >= nblocks) break;
        // Reversed, blocks start last to first too: a grid that needs its blocks in index order
        // (one waiting for a lower one, without being co-scheduled) fails in one of the orders.
        if (only < 0 && L->reverse) i = nblocks - 1 - i;
        emu_blockIdx.x = (unsigned)(i % L->grid.x);
        emu_blockIdx.y = (unsigned)((i / L->grid.x) % L->grid.y);
        emu_blockIdx.z = (unsigned)(i / ((uint64_t)L->grid.x * L->grid.y));
        b.index = i;
        b.rank = (uint32_t)(i % b.cluster->size);
        b.progress_at_turn_end = 0;
        b.released = false;
        b.acquires = 0;
        g_blk = &b;
        bool ok = only < 0 || await_turn(b.turns, L, i);
        ok = ok && run_block(&b, S);
        b.cluster->members[b.rank] = nullptr;
        g_blk = nullptr;
        if (!ok && !b.err.empty()) {
            char buf[120];
            std::snprintf(buf, sizeof buf, "block (%u,%u,%u): ", emu_blockIdx.x, emu_blockIdx.y, emu_blockIdx.z);
            L->fail(std::string(buf) + b.err);
        }
        if (only >= 0) {
            hand_over(&b, true);
            break;
        }
        if (!ok) break;
    }
    release_stacks(S);
}

// Runs clusters of L (its `cluster` consecutive blocks along x) until none is left: each cluster's
// blocks co-scheduled on host threads of their own, taking turns.
void cluster_worker(Launch* L, std::atomic<uint64_t>* next) {
    const uint64_t nclusters = (uint64_t)L->grid.x * L->grid.y * L->grid.z / L->cluster;
    for (;;) {
        if (L->failed.load()) break;
        uint64_t c = next->fetch_add(1);
        if (c >= nclusters) break;
        if (L->reverse) c = nclusters - 1 - c;
        Cluster cl;
        cl.size = L->cluster;
        for (uint32_t r = 0; r < cl.size; r++)
            cl.turns.rotation.push_back(c * cl.size + (L->reverse ? cl.size - 1 - r : r));
        cl.turns.turn = cl.turns.rotation.front();
        std::vector<std::thread> blocks;
        for (uint32_t r = 0; r < cl.size; r++) blocks.emplace_back(worker, L, (int64_t)(c * cl.size + r), &cl);
        for (auto& t : blocks) t.join();
    }
}

int n_workers() {
    static int n = [] {
        const char* e = std::getenv("MODERNBERT_EMU_THREADS");
        int v = e ? std::atoi(e) : 0;
        if (v <= 0) v = (int)std::thread::hardware_concurrency();
        return std::max(1, std::min(v, 16));
    }();
    return n;
}

void set_err(char* err, size_t errlen, const std::string& s) {
    if (err && errlen) {
        size_t n = std::min(errlen - 1, s.size());
        std::memcpy(err, s.data(), n);
        err[n] = 0;
    }
}

}  // namespace

// ---- the primitives' entry points (called from emu.h / device.cuh inside fibers) --------------------
extern "C" void emu_syncthreads(void) {
    Block* b = g_blk;
    b->thr[b->cur].st = BAR;
    yield_to_scheduler();
}

extern "C" void emu_syncwarp(uint32_t mask) { warp_arrive(OP_SYNCWARP, mask); }

extern "C" uint64_t emu_shfl(uint32_t mask, uint64_t v, int kind, int arg, int width) {
    Block* b = g_blk;
    int t = b->cur;
    if (width <= 0 || width > 32 || (width & (width - 1))) emu_trap("shuffle width is not a power of two <= 32");
    auto& s = b->warps[t / 32].in[t % 32].shfl;
    s.v = v;
    s.kind = kind;
    s.arg = arg;
    s.width = width;
    warp_arrive(OP_SHFL, mask);
    b = g_blk;
    return b->warps[t / 32].out64[t % 32];
}

extern "C" uint32_t emu_vote(uint32_t mask, int pred, int kind) {
    Block* b = g_blk;
    int t = b->cur;
    auto& s = b->warps[t / 32].in[t % 32].vote;
    s.pred = pred != 0;
    s.kind = kind;
    warp_arrive(OP_VOTE, mask);
    return g_blk->warps[t / 32].out[t % 32][0];
}

extern "C" void emu_mma_m16n8k16(int fp16, float d[4], const uint32_t a[4], const uint32_t b_[2], const float c[4]) {
    Block* b = g_blk;
    int t = b->cur;
    auto& s = b->warps[t / 32].in[t % 32].mma;
    s.fp16 = fp16;
    std::memcpy(s.a, a, 16);
    std::memcpy(s.b, b_, 8);
    std::memcpy(s.c, c, 16);
    warp_arrive(OP_MMA, 0xffffffffu);
    std::memcpy(d, g_blk->warps[t / 32].out[t % 32], 16);
}

extern "C" void emu_ldmatrix(int count, int trans, uint32_t* r, const void* smem_row) {
    Block* b = g_blk;
    int t = b->cur;
    auto& s = b->warps[t / 32].in[t % 32].ldm;
    s.count = count;
    s.trans = trans;
    s.addr = smem_row;
    warp_arrive(OP_LDMATRIX, 0xffffffffu);
    std::memcpy(r, g_blk->warps[t / 32].out[t % 32], 4 * (size_t)count);
}

extern "C" void emu_cp_async_16(void* dst, const void* src) {
    if (((uintptr_t)dst | (uintptr_t)src) & 15) emu_trap("cp.async: address not 16-byte aligned");
    Pending p;
    p.dst = dst;
    std::memcpy(p.data, src, 16);
    Block* b = g_blk;
    b->thr[b->cur].cp.push_back(p);
}

extern "C" void emu_cp_async_wait_all(void) {
    Block* b = g_blk;
    auto& v = b->thr[b->cur].cp;
    for (auto& p : v) std::memcpy(p.dst, p.data, 16);
    v.clear();
}

extern "C" [[noreturn]] void emu_trap(const char* why) {
    Block* b = g_blk;
    char buf[300];
    std::snprintf(buf, sizeof buf, "thread (%u,%u,%u): %s", emu_threadIdx.x, emu_threadIdx.y, emu_threadIdx.z, why);
    b->err = buf;
    b->thr[b->cur].st = DONE;
    b->warps[b->cur / 32].live--;
    yield_to_scheduler();
    __builtin_unreachable();
}

extern "C" void emu_grid_wait_geq(const uint32_t* flag, uint32_t value) {
    // ">=" modulo 2^32, as device.cuh's: flags may wrap.
    while ((int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) < 0) {
        Block* b = g_blk;
        b->thr[b->cur].st = SPIN;
        yield_to_scheduler();
    }
    g_blk->acquires++;
}

// grid_wait_all_geq's instructions. ld.relaxed.gpu of a flag: the emulator's memory is one view.
extern "C" uint32_t emu_grid_poll(const uint32_t* flag) { return __atomic_load_n(flag, __ATOMIC_ACQUIRE); }
// The pause after a poll that found a flag low: the thread waits (SPIN) until its block makes
// progress or passes the turn, as in emu_grid_wait_geq.
extern "C" void emu_grid_pause(void) {
    Block* b = g_blk;
    b->thr[b->cur].st = SPIN;
    yield_to_scheduler();
}
// fence.acq_rel.gpu after polls that saw their flags raised: an acquire (for the proxy rule, as a
// successful emu_grid_wait_geq). Sequentially consistent memory cannot show the fence missing.
extern "C" void emu_grid_acquire_fence(void) { g_blk->acquires++; }

// atom.acq_rel.gpu.inc: a ticket (the count before; the count + 1, or 0 past `limit`). An acquire
// (what earlier holders wrote is this block's to read) and a release: in the reversed order the
// other blocks run before this block's threads go on, as after grid_signal, so a ticket taken
// before the writes it stands for shows them undone.
extern "C" uint32_t emu_grid_count(uint32_t* counter, uint32_t limit) {
    uint32_t old = __atomic_load_n(counter, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(counter, &old, old >= limit ? 0 : old + 1, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
    }
    // Not counted in `acquires` (the proxy rule): the kernels read what a ticket acquires through
    // the generic proxy (the persistent forward's attention, by cp.async), and their bulk copies
    // after one read weights no block writes. A bulk copy of data a ticket acquired would need
    // its own fence.proxy.async.global, which this emulator would not notice missing.
    Block* b = g_blk;
    b->progress++;
    if (b->L->reverse && b->turns) {
        b->released = true;
        yield_to_scheduler();
    }
    return old;
}

// fence.proxy.async.global: the global memory this thread has seen through the generic proxy
// (other blocks' stores it acquired, directly or through a block barrier) is what its later bulk
// copies read. The emulator has one view of global memory, so it only checks the order: a bulk
// copy from global after an acquire with no fence between them fails (hopper.cpp, bulk_load).
extern "C" void emu_fence_proxy_async_global(void) {
    Block* b = g_blk;
    b->thr[b->cur].proxy_fenced_acquires = b->acquires;
}

extern "C" void emu_grid_signal(uint32_t* flag, uint32_t value) {
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
    Block* b = g_blk;
    b->progress++;
    // The other legal schedule, in the reversed order: the other blocks run at once, before this
    // block's threads go on (a flag raised before its writes shows them undone). In the forward
    // order the block keeps the turn until its threads only poll (a block that skips a wait runs
    // ahead into the next step).
    if (b->L->reverse && b->turns) {
        b->released = true;
        yield_to_scheduler();  // still RUN: the scheduler passes the turn, then resumes this thread
    }
}

// ---- launch API (src/kernels/emu.rs) -------------------------------------------------------------------
extern "C" size_t emu_kernel_count(void) { return emu_kernel_table_len; }
extern "C" const char* emu_kernel_name(size_t i) { return i < emu_kernel_table_len ? emu_kernel_table[i].name : nullptr; }
extern "C" int emu_kernel_triggers_dependents(size_t i) {
    return i < emu_kernel_table_len ? emu_kernel_table[i].triggers_dependents : 0;
}

// Runs launch `d` to completion: its blocks on n_workers() host threads (the calling one among them
// when `use_calling_thread`; a primary started from inside a dependent's fiber runs on new threads
// only, so the fiber's host thread keeps its block). Returns 0 on success; 1 unknown kernel, 2
// parameter size mismatch, 3 bad launch configuration, 4 the kernel (or its primary) failed.
int emu::run_launch_desc(const EmuLaunchDesc* d, bool use_calling_thread, std::string* err) {
    const char* name = d->name;
    const uint32_t* grid = d->grid;
    const uint32_t* block = d->block;
    const EmuKernel* k = nullptr;
    for (size_t i = 0; i < emu_kernel_table_len; i++)
        if (std::strcmp(emu_kernel_table[i].name, name) == 0) k = &emu_kernel_table[i];
    if (!k) {
        *err = std::string("unknown kernel ") + name;
        return 1;
    }
    if (d->params_size != k->param_size) {
        *err = std::string(name) + ": parameter struct is " + std::to_string(d->params_size) +
               " bytes, the kernel takes " + std::to_string(k->param_size);
        return 2;
    }
    uint64_t nthreads = (uint64_t)block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > (uint64_t)kMaxThreads || block[2] > 64 || grid[0] == 0 || grid[1] == 0 ||
        grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535 || d->smem_bytes > kMaxDynSmem) {
        *err = std::string(name) + ": invalid launch configuration (grid " + std::to_string(grid[0]) + "x" +
               std::to_string(grid[1]) + "x" + std::to_string(grid[2]) + ", block " + std::to_string(block[0]) +
               "x" + std::to_string(block[1]) + "x" + std::to_string(block[2]) + ", " +
               std::to_string(d->smem_bytes) + " bytes of dynamic shared memory)";
        return 3;
    }
    alignas(128) unsigned char pbuf[4096];
    if (d->params_size > sizeof pbuf) {
        *err = "parameter struct too large";
        return 2;
    }
    std::memcpy(pbuf, d->params, d->params_size);
    Launch L;
    L.k = k;
    L.params = pbuf;
    L.grid = {grid[0], grid[1], grid[2]};
    L.block = {block[0], block[1], block[2]};
    L.smem_bytes = d->smem_bytes;
    L.reverse = d->flags & 1;
    L.primary = d->primary;
    L.coscheduled = d->flags & 2;
    L.cluster = std::max(1u, (d->flags >> 8) & 0xffu);
    uint64_t nblocks = (uint64_t)grid[0] * grid[1] * grid[2];
    if (L.cluster > 1 && (L.cluster > 16 || grid[0] % L.cluster != 0)) {
        *err = std::string(name) + ": a cluster of " + std::to_string(L.cluster) + " blocks on a grid of " +
               std::to_string(grid[0]) + " along x (clusters of at most 16, dividing the grid)";
        return 3;
    }
    if (L.cluster > 1 && !L.coscheduled) {
        std::atomic<uint64_t> next{0};
        int nw = (int)std::min<uint64_t>(nblocks / L.cluster, (uint64_t)n_workers());
        std::vector<std::thread> dispatchers;
        for (int i = 0; i < nw; i++) dispatchers.emplace_back(cluster_worker, &L, &next);
        for (auto& t : dispatchers) t.join();
    } else if (L.coscheduled) {
        // Every block resident at once: one host thread each, taking turns (emu.h).
        if (nblocks > kMaxCoscheduledBlocks) {
            *err = std::string(name) + ": a co-scheduled grid of " + std::to_string(nblocks) + " blocks (at most " +
                   std::to_string(kMaxCoscheduledBlocks) + " here; a GPU holds at most its SMs' worth)";
            return 3;
        }
        // Every thread of every block at once needs its own fiber stack: two memory mappings each
        // (the stack, its guard page), less the pooled stacks the blocks will take, and each
        // block's host thread its own two. Past the kernel's limit mmap fails and the process
        // aborts; refuse the launch with the numbers instead.
        // (When the pool holds every fiber stack, as after a launch of the same grid, the scan of
        // /proc/self/maps — tens of thousands of lines here — is skipped: nothing new is mapped.)
        const uint64_t fibers_new = nblocks * nthreads - pooled_stacks(nblocks, nthreads);
        const uint64_t stacks_needed = 2 * (fibers_new + nblocks);
        const uint64_t room = fibers_new == 0 ? stacks_needed : free_mappings();
        if (stacks_needed > room) {
            *err = std::string(name) + ": a co-scheduled grid of " + std::to_string(nblocks) + " blocks of " +
                   std::to_string(nthreads) + " threads needs " + std::to_string(stacks_needed) +
                   " memory mappings for its fiber stacks; this process may map " + std::to_string(room) +
                   " more (vm.max_map_count): emulate fewer blocks";
            return 3;
        }
        for (uint64_t i = 0; i < nblocks; i++) L.turns.rotation.push_back(L.reverse ? nblocks - 1 - i : i);
        L.turns.turn = L.turns.rotation.front();
        // In clusters as well (a cooperative launch with a cluster dimension): each block also
        // belongs to its cluster (rank, barrier.cluster, multicast); the turns stay the grid's.
        std::vector<Cluster> clusters(L.cluster > 1 ? nblocks / L.cluster : 0);
        for (auto& c : clusters) c.size = L.cluster;
        std::vector<std::thread> blocks;
        for (uint64_t i = 0; i < nblocks; i++)
            blocks.emplace_back(worker, &L, (int64_t)i, clusters.empty() ? (Cluster*)nullptr : &clusters[i / L.cluster]);
        for (auto& t : blocks) t.join();
    } else {
        int nw = (int)std::min<uint64_t>(nblocks, (uint64_t)n_workers());
        std::vector<std::thread> helpers;
        for (int i = use_calling_thread ? 1 : 0; i < nw; i++) helpers.emplace_back(worker, &L, (int64_t)-1, (Cluster*)nullptr);
        if (use_calling_thread) worker(&L);
        for (auto& h : helpers) h.join();
    }
    // A dependent none of whose threads waited ran entirely before its primary; the primary runs now.
    if (L.primary && !L.primary_done) {
        L.primary_done = true;
        std::string perr;
        if (run_launch_desc(L.primary, false, &perr) != 0) L.primary_err = perr;
    }
    if (!L.primary_err.empty()) {
        *err = std::string(name) + ": its primary (programmatic dependent launch) failed: " + L.primary_err;
        return 4;
    }
    if (L.failed.load()) {
        *err = std::string(name) + ": " + L.err;
        return 4;
    }
    return 0;
}

extern "C" int emu_launch_desc(const EmuLaunchDesc* d, char* err, size_t errlen) {
    std::string e;
    int rc = run_launch_desc(d, true, &e);
    if (rc != 0) set_err(err, errlen, e);
    return rc;
}
