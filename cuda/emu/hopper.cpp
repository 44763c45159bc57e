// hopper.cpp — the sm_90a instructions our Hopper kernels use, per the PTX ISA (9.7.15 wgmma,
// 9.7.9.25 cp.async.bulk.tensor, 9.7.13.15 mbarrier, 9.7.13.1 bar, 9.7.19.x setmaxnreg,
// griddepcontrol), run inside the emulator's fibers (emu.cpp). The wrappers kernels call are
// cuda/include/hopper.cuh; its header states the layouts.
//
// Adversarial by design, so a protocol bug fails every time rather than by luck:
//   - wgmma.mma_async computes at issue but delivers at the wait_group that retires its group; the
//     accumulator registers hold NaN in between, and the shared-memory (or register) operands are
//     read again at the wait: a change since the issue is an error (a stage released too early).
//     A wgmma with no wgmma.fence since the accumulators were last delivered is an error.
//   - The async proxy (TMA, wgmma) sees shared memory through its own copy, refreshed only by
//     fence.proxy.async: generic stores not fenced are invisible to it (it reads the previous
//     contents, NaN at first).
//   - A TMA load's destination holds NaN from the issue until a thread observes the phase of the
//     mbarrier it completes (try_wait.parity succeeding); the bytes land then.
//   - A TMA store reads shared memory at issue and writes global memory at the wait_group that
//     retires it (or when the block exits after a .read wait); exiting with its reads not waited for
//     is an error, as is exiting with loads or wgmma still in flight.
//   - A dependent launch (griddepcontrol) runs before its primary, which runs when the first thread
//     reaches griddepcontrol.wait: code before the wait sees none of the primary's writes.
//   - A TMA copy completing on an mbarrier initialised with no fence.mbarrier_init since is an error.
// Deliberate approximations: after every wgmma.wait_group the next wgmma needs a wgmma.fence
// (stricter than PTX, which asks for one only if the registers were touched: our kernels fence
// each K-block anyway); a fence.proxy.async by any thread refreshes the async view of all shared
// memory, and a fence.mbarrier_init covers every barrier of the block (both more lenient than
// PTX's per-thread ordering); the TMA bytes of a phase land for every thread at the first thread's
// successful wait. Register writes are invisible to the emulator: the rule that a wgmma.fence must
// follow the writes of A's register fragment is checked by review only.
#include "internal.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <limits>

extern thread_local unsigned char smem[];

using namespace emu;

namespace {

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void fail(const char* fmt, ...) {
    char buf[260];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emu_trap(buf);
}

Block* blk() { return g_blk; }

// Byte offset of [p, p + len) in dynamic shared memory; traps outside the launch's allocation.
uint32_t shared_range(const void* p, size_t len, const char* what) {
    uintptr_t base = (uintptr_t)smem, a = (uintptr_t)p;
    size_t size = blk()->L->smem_bytes;
    if (a < base || a - base > size || len > size - (a - base))
        fail("%s: %zu bytes at %p are outside the %zu bytes of dynamic shared memory (the async proxy "
             "reaches only extern __shared__ memory here)", what, len, p, size);
    return (uint32_t)(a - base);
}

// The swizzle of the PTX ISA's canonical layouts and of TMA (CU_TENSOR_MAP_SWIZZLE_*): within each
// 1024/512/256-byte repeat, the 16-byte chunk index (address bits 4..6 / 4..5 / 4) is XORed with
// address bits 7..9 / 7..8 / 7; the address is the shared-memory byte address, so tiles must start
// on a repeat boundary for their rows to line up with the pattern.
uint32_t swizzle(uint32_t addr, uint32_t span) {
    if (span == 0) return addr;
    uint32_t mask = span / 16 - 1;
    return addr ^ (((addr >> 7) & mask) << 4);
}

uint32_t desc_span(uint64_t desc) {
    switch (desc >> 62) {
        case 0: return 0;
        case 1: return 128;
        case 2: return 64;
        default: return 32;
    }
}

// A wgmma matrix descriptor's fields: start address bits 0-13, leading byte offset 16-29, stride
// byte offset 32-45 (all >> 4), base offset 49-51, swizzle mode 62-63 (0 none, 1 128B, 2 64B, 3 32B).
struct Desc {
    uint32_t start, lbo, sbo, span;
};

Desc decode(uint64_t desc) {
    if ((desc >> 49) & 7)
        fail("wgmma: matrix base offset %u (only 0 is emulated: start tiles on a swizzle repeat)",
             (unsigned)((desc >> 49) & 7));
    return Desc{(uint32_t)(desc & 0x3fff) << 4, (uint32_t)((desc >> 16) & 0x3fff) << 4,
                (uint32_t)((desc >> 32) & 0x3fff) << 4, desc_span(desc)};
}

// Shared byte address of element (row, k), k < 16, of a K-major 16-bit operand:
//   no swizzle: 8x8 core matrices of 8 rows x 16 contiguous bytes; core matrix (row/8, k/8) at
//               start + (row/8) * SBO + (k/8) * LBO;
//   swizzled:   rows of `span` bytes, 8-row groups SBO apart, K contiguous within a row (the 32
//               bytes of k16 fit in every span, so LBO is unused), then the swizzle above.
uint32_t desc_addr(uint64_t desc, int row, int k) {
    const Desc d = decode(desc);
    if (d.span == 0) return d.start + (row / 8) * d.sbo + (k / 8) * d.lbo + (row % 8) * 16 + (k % 8) * 2;
    return swizzle(d.start + (row / 8) * d.sbo + (row % 8) * d.span + k * 2, d.span);
}

// Shared byte address of element (n, k), k < 16, of an MN-major 16-bit B operand (imm-trans-b =
// 1: the N index contiguous), per the canonical MN-major layouts (PTX ISA "Shared Memory Matrix
// Layout"; in CuTe's terms, in 16-byte units with T = 8 elements: ((T,w,m),(8,k)) : ((1,T,LBO),(wT,SBO))
// swizzled, ((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO)) without):
//   swizzled:   rows of `span` bytes, one per k, holding span/2 consecutive n; 8-row (8-k) groups
//               SBO apart; the next span/2 n at LBO; then the swizzle above;
//   no swizzle: 8x8 core matrices of 8 k-rows x 16 contiguous bytes (8 n); core matrix
//               (n/8, k/8) at start + (n/8) * SBO + (k/8) * LBO.
uint32_t desc_addr_mn(uint64_t desc, int n, int k) {
    const Desc d = decode(desc);
    if (d.span == 0) return d.start + (n / 8) * d.sbo + (k / 8) * d.lbo + (k % 8) * 16 + (n % 8) * 2;
    const uint32_t per_row = d.span / 2;  // n per row of the swizzle atom
    return swizzle(d.start + (n / per_row) * d.lbo + (k / 8) * d.sbo + (k % 8) * d.span + (n % per_row) * 2, d.span);
}

// B's element (n, k) as `op` addresses it.
uint32_t b_addr(const WgmmaOp& op, int n, int k) {
    return op.trans_b ? desc_addr_mn(op.desc_b, n, k) : desc_addr(op.desc_b, n, k);
}

uint16_t view16(uint32_t addr) {
    if ((size_t)addr + 2 > blk()->L->smem_bytes)
        fail("wgmma: descriptor reaches shared byte %u, past the %u allocated", addr, blk()->L->smem_bytes);
    uint16_t v;
    std::memcpy(&v, async_view + addr, 2);
    return v;
}

float to_f(uint16_t h, int fp16) { return fp16 ? emu_h2f(h) : emu_bf2f(h); }

// The A operand (64 x 16) and B operand (n x 16) as the async proxy sees them now.
void read_operands(const WgmmaOp& op, std::vector<uint16_t>& a, std::vector<uint16_t>& b) {
    b.resize((size_t)op.n * 16);
    for (int r = 0; r < op.n; r++)
        for (int k = 0; k < 16; k++) b[r * 16 + k] = view16(b_addr(op, r, k));
    a.resize(64 * 16);
    if (op.a_regs.empty()) {
        for (int r = 0; r < 64; r++)
            for (int k = 0; k < 16; k++) a[r * 16 + k] = view16(desc_addr(op.desc_a, r, k));
        return;
    }
    // A from registers: thread 32w + l holds rows 16w + g and 16w + g + 8 (g = l / 4, t = l % 4) as
    // the A fragment of mma.m16n8k16: a0 = (g, 2t..2t+1), a1 = (g+8, ..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..).
    for (int thr = 0; thr < 128; thr++) {
        int w = thr / 32, g = (thr % 32) / 4, t = thr % 4;
        const uint32_t* r = op.a_regs[thr];
        int rows[4] = {16 * w + g, 16 * w + g + 8, 16 * w + g, 16 * w + g + 8};
        int cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int i = 0; i < 4; i++)
            for (int h = 0; h < 2; h++) a[rows[i] * 16 + cols[i] + h] = (uint16_t)(r[i] >> (16 * h));
    }
}

// Where thread `thr`'s accumulator element i of an m64nN f32 fragment sits in D: for each n8 block
// j = i / 4, rows 16w + g (+ 8 for i % 4 >= 2), columns 8j + 2t (+ 1 for odd i).
void frag_pos(int thr, int i, int* row, int* col) {
    int w = thr / 32, g = (thr % 32) / 4, t = thr % 4, j = i / 4, q = i % 4;
    *row = 16 * w + g + (q >= 2 ? 8 : 0);
    *col = 8 * j + 2 * t + (q & 1);
}

WGroup& my_wgroup() {
    Block* b = blk();
    if (b->n % 128 != 0) fail("warpgroup instruction in a block of %d threads (not whole warpgroups)", b->n);
    return b->wgroups[b->cur / 128];
}

void wg_arrive(WgOp op, const WgIn& in) {
    Block* b = blk();
    WGroup& G = my_wgroup();
    if (G.arrived == 0) {
        G.op = op;
    } else if (G.op != op) {
        fail("threads of warpgroup %d reached different warpgroup instructions (divergence)", b->cur / 128);
    }
    G.in[b->cur % 128] = in;
    G.arrived++;
    b->thr[b->cur].st = WGRP;
    yield_to_scheduler();
}

bool wg_error(Block* b, int wg, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
bool wg_error(Block* b, int wg, const char* fmt, ...) {
    char buf[260];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    b->err = "warpgroup " + std::to_string(wg) + ": " + buf;
    return false;
}

// Retire the oldest committed groups until at most `keep` remain: check what each wgmma read,
// deliver its results in issue order.
bool retire_groups(Block* b, int wg, WGroup& G, size_t keep) {
    std::vector<uint64_t> groups;
    for (auto& op : G.inflight)
        if (op.group != std::numeric_limits<uint64_t>::max() &&
            std::find(groups.begin(), groups.end(), op.group) == groups.end())
            groups.push_back(op.group);
    std::sort(groups.begin(), groups.end());
    size_t retire = groups.size() > keep ? groups.size() - keep : 0;
    std::vector<uint16_t> a, bm;
    std::vector<WgmmaOp> still;
    for (auto& op : G.inflight) {
        bool done = op.group != std::numeric_limits<uint64_t>::max() && retire > 0 && op.group <= groups[retire - 1];
        if (!done) {
            still.push_back(std::move(op));
            continue;
        }
        read_operands(op, a, bm);
        if (a != op.a_seen)
            return wg_error(b, wg, "wgmma's A operand changed between its issue and the wait_group that retired "
                                   "it (its buffer was reused or refilled while the MMA could still read it)");
        if (bm != op.b_seen)
            return wg_error(b, wg, "wgmma's B operand in shared memory changed between its issue and the wait_group "
                                   "that retired it (its stage was released or refilled too early)");
        int per = op.n / 2;
        for (int thr = 0; thr < 128; thr++) std::memcpy(op.dst[thr], &op.result[(size_t)thr * per], per * 4);
    }
    G.inflight = std::move(still);
    return true;
}

// True when every shared byte the wgmma reads is the same in the generic and the async view.
bool unfenced_generic_stores_ok(const WgmmaOp& op) {
    auto same = [](uint32_t addr) { return std::memcmp(async_view + addr, smem + addr, 2) == 0; };
    for (int r = 0; r < op.n; r++)
        for (int k = 0; k < 16; k++)
            if (!same(b_addr(op, r, k))) return false;
    if (op.a_regs.empty())
        for (int r = 0; r < 64; r++)
            for (int k = 0; k < 16; k++)
                if (!same(desc_addr(op.desc_a, r, k))) return false;
    return true;
}

bool issue_wgmma(Block* b, int wg, WGroup& G) {
    const WgIn& in0 = G.in[0];
    for (int i = 1; i < 128; i++) {
        const WgIn& in = G.in[i];
        if (in.desc_a != in0.desc_a || in.desc_b != in0.desc_b || in.n != in0.n || in.fp16 != in0.fp16 ||
            in.scale_d != in0.scale_d || (in.a == nullptr) != (in0.a == nullptr) || in.trans_b != in0.trans_b)
            return wg_error(b, wg, "wgmma.mma_async operands differ across the warpgroup (thread %d)", i);
    }
    if (!G.fenced)
        return wg_error(b, wg, "wgmma.mma_async with no wgmma.fence since the accumulators were last delivered "
                               "(PTX ISA: a fence must order register accesses before wgmma)");
    int n = in0.n;
    if (n < 8 || n > 256 || n % 8) return wg_error(b, wg, "wgmma: N = %d (8..256, a multiple of 8)", n);
    WgmmaOp op;
    op.group = std::numeric_limits<uint64_t>::max();
    op.n = n;
    op.desc_a = in0.desc_a;
    op.desc_b = in0.desc_b;
    op.trans_b = in0.trans_b;
    if (in0.a)
        for (int i = 0; i < 128; i++) op.a_regs.push_back(G.in[i].a);
    read_operands(op, op.a_seen, op.b_seen);
    if (!unfenced_generic_stores_ok(op))
        return wg_error(b, wg, "wgmma reads shared memory that a generic store wrote after the last "
                               "fence.proxy.async (the async proxy would read the old value)");
    int fp16 = in0.fp16, per = n / 2;
    // Products of two 16-bit values are exact in double; the 16-term sum plus C is rounded once
    // to f32 (the hardware's internal order is unspecified; the GPU self-test compares sums that
    // are exact).
    // Each element's sum runs over k in order from 0. This loop is most of the emulator's time in
    // a Hopper GEMM: the operands are converted once, B is held k-major, and 8 columns at a time
    // are summed in registers (n is a multiple of 8).
    double A[64][16];
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < 16; k++) A[r][k] = to_f(op.a_seen[r * 16 + k], fp16);
    std::vector<double> Bt((size_t)16 * n);
    for (int c = 0; c < n; c++)
        for (int k = 0; k < 16; k++) Bt[(size_t)k * n + c] = to_f(op.b_seen[c * 16 + k], fp16);
    std::vector<double> D((size_t)64 * n);
    for (int r = 0; r < 64; r++)
        for (int c0 = 0; c0 < n; c0 += 8) {
            double acc[8] = {};
            for (int k = 0; k < 16; k++) {
                const double a = A[r][k];
                const double* const b = &Bt[(size_t)k * n + c0];
                #pragma GCC unroll 8
                for (int j = 0; j < 8; j++) acc[j] += a * b[j];
            }
            for (int j = 0; j < 8; j++) D[(size_t)r * n + c0 + j] = acc[j];
        }
    op.result.resize((size_t)128 * per);
    op.dst.resize(128);
    for (int thr = 0; thr < 128; thr++) {
        float* d = G.in[thr].d;
        op.dst[thr] = d;
        // The accumulator input: a wgmma still in flight on the same registers chains into this
        // one (the ISA allows back-to-back wgmma on one accumulator without a wait); else the registers.
        const float* c_in = d;
        for (auto it = G.inflight.rbegin(); it != G.inflight.rend(); ++it)
            if (it->dst[thr] == d && it->n == n) {
                c_in = &it->result[(size_t)thr * per];
                break;
            }
        for (int i = 0; i < per; i++) {
            int row, col;
            frag_pos(thr, i, &row, &col);
            double c = in0.scale_d ? (double)c_in[i] : 0.0;
            op.result[(size_t)thr * per + i] = (float)(D[(size_t)row * n + col] + c);
        }
    }
    for (int thr = 0; thr < 128; thr++)
        for (int i = 0; i < per; i++) G.in[thr].d[i] = std::numeric_limits<float>::quiet_NaN();
    G.inflight.push_back(std::move(op));
    return true;
}

// The mbarrier at `bar` of block `b` (the current one by default).
Mbar* find_mbar(uint64_t* bar, bool must_exist, Block* b = nullptr) {
    if (!b) b = blk();
    for (auto& m : b->mbars)
        if (m.addr == bar) return &m;
    if (must_exist) fail("mbarrier at %p used before mbarrier.init", (void*)bar);
    return nullptr;
}

// The barrier a TMA copy completes on: initialised, and the init fenced for the async proxy.
Mbar* tma_barrier(uint64_t* bar, Block* b = nullptr) {
    Mbar* m = find_mbar(bar, true, b);
    if (!m->init_fenced)
        fail("a TMA copy completes on the mbarrier at %p, initialised with no fence.mbarrier_init since "
             "(the async proxy may not see the initialised barrier)", (void*)bar);
    return m;
}

void materialize(Mbar* m) {
    for (auto& c : m->landed) {
        std::memcpy(smem + c.off, c.data, 16);
        std::memcpy(async_view + c.off, c.data, 16);
        blk()->copy_due[c.off / 16] = 0;
    }
    m->landed.clear();
}

// A bulk copy's 16 bytes at `off` of block `b`'s shared memory, refused while an earlier copy's
// bytes there are still due (not yet observed through their barrier): the two race.
static void claim_copy_bytes(Block* b, uint32_t off, const char* what) {
    uint8_t& due = b->copy_due.at(off / 16);
    if (due)
        fail("%s into shared bytes %u.. of cluster rank %u while an earlier copy's bytes there are still due (their "
             "mbarrier phase not yet waited for): the copies race (a barrier must order the second after the block "
             "has observed, and finished reading, the first)",
             what, off, b->rank);
    due = 1;
}

void maybe_complete(Mbar* m) {
    if (m->tx < -(int64_t)0xfffff || m->tx > (int64_t)0xfffff)
        fail("mbarrier at %p: transaction count %lld outside the ISA's range of +-(2^20 - 1)", m->addr,
             (long long)m->tx);
    if (m->pending == 0 && m->tx == 0) {
        m->phase++;
        m->pending = m->count;
        m->landed.insert(m->landed.end(), m->inflight.begin(), m->inflight.end());
        m->inflight.clear();
        *(uint64_t*)m->addr = m->phase;  // the word itself; nothing may read it but mbarrier ops
    }
    blk()->progress++;
}

void arrive(uint64_t* bar) {
    Mbar* m = find_mbar(bar, true);
    if (m->pending <= 0) fail("mbarrier at %p: more arrivals than its count of %u in one phase", (void*)bar, m->count);
    m->pending--;
    maybe_complete(m);
}

// ---- tensor maps ----
const uint32_t kTmapMagic = 0x4d42544du;  // "MBTM"

struct EmuTmap {  // the emulator's encoding inside the 128 bytes of a CUtensorMap
    uint32_t magic, rank, elem, swizzle, oob_nan, dtype;
    uint64_t gaddr;
    uint64_t dims[5];
    uint64_t strides[4];  // bytes, dimensions 1..4 (dimension 0's is the element size)
    uint32_t box[5];
};
static_assert(sizeof(EmuTmap) <= 128, "the emulator's tensor map must fit a CUtensorMap");

const EmuTmap* check_map(const void* map, int rank) {
    const EmuTmap* m = (const EmuTmap*)map;
    if ((uintptr_t)map % 64 || m->magic != kTmapMagic)
        fail("cp.async.bulk.tensor: %p is not a tensor map encoded for this device", map);
    if ((int)m->rank != rank) fail("cp.async.bulk.tensor.%dd on a tensor map of rank %u", rank, m->rank);
    return m;
}

// Calls f(global element address or null when out of bounds, linear byte offset in the box) for
// every element of the box at `coords`, innermost dimension fastest.
template <class F>
void for_box(const EmuTmap* m, const int32_t* coords, F f) {
    uint32_t box[5] = {1, 1, 1, 1, 1};
    for (uint32_t d = 0; d < m->rank; d++) box[d] = m->box[d];
    uint64_t lin = 0;
    for (uint32_t i4 = 0; i4 < box[4]; i4++)
        for (uint32_t i3 = 0; i3 < box[3]; i3++)
            for (uint32_t i2 = 0; i2 < box[2]; i2++)
                for (uint32_t i1 = 0; i1 < box[1]; i1++)
                    for (uint32_t i0 = 0; i0 < box[0]; i0++, lin += m->elem) {
                        uint32_t idx[5] = {i0, i1, i2, i3, i4};
                        bool in = true;
                        uint64_t addr = m->gaddr;
                        for (uint32_t d = 0; d < m->rank; d++) {
                            int64_t g = (int64_t)coords[d] + idx[d];
                            if (g < 0 || (uint64_t)g >= m->dims[d]) {
                                in = false;
                                break;
                            }
                            addr += (uint64_t)g * (d == 0 ? m->elem : m->strides[d - 1]);
                        }
                        f(in ? (unsigned char*)(uintptr_t)addr : nullptr, (uint32_t)lin);
                    }
}

uint64_t box_bytes(const EmuTmap* m) {
    uint64_t n = m->elem;
    for (uint32_t d = 0; d < m->rank; d++) n *= m->box[d];
    return n;
}

}  // namespace

namespace emu {

struct BulkStore {
    std::vector<std::pair<unsigned char*, uint32_t>> elems;  // (global address, byte offset in `data`)
    std::vector<unsigned char> data;                         // the bytes read from shared memory at issue
    uint32_t elem = 0;
    uint32_t smem_off = 0, smem_len = 0, span = 0;           // the source, as read (checked at .read waits)
    bool read_waited = false;
};

void hopper_block_start(Block* b) {
    b->progress = 0;
    b->mbars.clear();
    b->copy_due.assign(kMaxDynSmem / 16, 0);
    for (auto& nb : b->nbars) {
        nb.arrived = nb.expected = 0;
        nb.waiting.clear();
    }
    for (int g = 0; g < (b->n % 128 == 0 ? b->n / 128 : 0); g++) {
        WGroup& G = b->wgroups[g];
        G.op = WG_NONE;
        G.arrived = 0;
        G.fenced = false;
        G.next_group = 0;
        G.inflight.clear();
    }
    for (int t = 0; t < b->n; t++) {
        b->thr[t].bulk_open.clear();
        b->thr[t].bulk_groups.clear();
    }
    std::memset(async_view, 0xff, b->L->smem_bytes);
}

bool hopper_try_complete_wgroup(Block* b, int t) {
    if (b->n % 128 != 0) return true;
    int wg = t / 128;
    WGroup& G = b->wgroups[wg];
    if (G.op == WG_NONE) return true;
    int live = 0;
    for (int i = wg * 128; i < wg * 128 + 128; i++) live += b->thr[i].st != DONE;
    if (G.arrived < live) return true;
    if (live < 128)
        return wg_error(b, wg, "a warpgroup instruction reached by %d threads; the other %d exited", G.arrived,
                        128 - live);
    bool ok = true;
    switch (G.op) {
        case WG_FENCE:
            G.fenced = true;
            break;
        case WG_COMMIT:
            for (auto& op : G.inflight)
                if (op.group == std::numeric_limits<uint64_t>::max()) op.group = G.next_group;
            G.next_group++;
            break;
        case WG_WAIT:
            for (int i = 1; i < 128; i++)
                if (G.in[i].arg != G.in[0].arg) return wg_error(b, wg, "wgmma.wait_group N differs across the warpgroup");
            ok = retire_groups(b, wg, G, (size_t)G.in[0].arg);
            G.fenced = false;
            break;
        case WG_MMA:
            ok = issue_wgmma(b, wg, G);
            break;
        case WG_SETMAXNREG:
            for (int i = 1; i < 128; i++)
                if (G.in[i].arg != G.in[0].arg || G.in[i].n != G.in[0].n)
                    return wg_error(b, wg, "setmaxnreg with different counts across the warpgroup");
            break;
        case WG_NONE:
            break;
    }
    if (!ok) return false;
    G.op = WG_NONE;
    G.arrived = 0;
    for (int i = wg * 128; i < wg * 128 + 128; i++)
        if (b->thr[i].st == WGRP) b->thr[i].st = RUN;
    b->progress++;
    return true;
}

std::string hopper_describe(Block* b) {
    std::string s;
    for (auto& m : b->mbars) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "; mbarrier at smem+%ld: phase %llu, %lld of %u arrivals and %lld tx bytes missing",
                      (long)((unsigned char*)m.addr - smem), (unsigned long long)m.phase, (long long)m.pending, m.count,
                      (long long)m.tx);
        s += buf;
    }
    return s;
}

bool hopper_block_end(Block* b) {
    for (int g = 0; g < (b->n % 128 == 0 ? b->n / 128 : 0); g++)
        if (!b->wgroups[g].inflight.empty())
            return wg_error(b, g, "exited with %zu wgmma.mma_async never retired by a wgmma.wait_group",
                            b->wgroups[g].inflight.size());
    for (auto& m : b->mbars)
        if (!m.inflight.empty() || m.tx != 0) {
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "exited with TMA bytes in flight on the mbarrier at %p (%zu chunks, transaction count "
                          "%lld): a phase never completed", m.addr, m.inflight.size(), (long long)m.tx);
            b->err = buf;
            return false;
        }
    for (int t = 0; t < b->n; t++) {
        auto& th = b->thr[t];
        bool unread = !th.bulk_open.empty();
        for (auto& g : th.bulk_groups)
            for (auto* s : g) unread |= !s->read_waited;
        if (unread) {
            b->err = "thread " + std::to_string(t) +
                     " exited with a TMA store whose shared-memory reads were never waited for "
                     "(cp.async.bulk.commit_group + cp.async.bulk.wait_group.read)";
            return false;
        }
        for (auto& g : th.bulk_groups)
            for (auto* s : g) {
                for (auto& e : s->elems) std::memcpy(e.first, &s->data[e.second], s->elem);
                delete s;
            }
        th.bulk_groups.clear();
    }
    return true;
}

}  // namespace emu

// ---- entry points (cuda/include/hopper.cuh) --------------------------------------------------------
extern "C" uint32_t emu_smem_offset(const void* p) { return shared_range(p, 0, "shared address"); }

extern "C" void emu_wgmma_fence(void) { wg_arrive(WG_FENCE, WgIn{}); }
extern "C" void emu_wgmma_commit(void) { wg_arrive(WG_COMMIT, WgIn{}); }
extern "C" void emu_wgmma_wait(int n) {
    WgIn in{};
    in.arg = n;
    wg_arrive(WG_WAIT, in);
}

extern "C" void emu_wgmma(int fp16, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b, float* d,
                          int scale_d, int trans_b) {
    WgIn in{};
    in.desc_a = a_regs ? 0 : desc_a;
    in.desc_b = desc_b;
    in.a = a_regs;
    in.d = d;
    in.n = n;
    in.fp16 = fp16;
    in.scale_d = scale_d != 0;
    in.trans_b = trans_b != 0;
    wg_arrive(WG_MMA, in);
}

extern "C" void emu_setmaxnreg(int inc, int regs) {
    if (regs < 24 || regs > 256 || regs % 8)
        fail("setmaxnreg.%s %d: the count must be a multiple of 8 in [24, 256]", inc ? "inc" : "dec", regs);
    WgIn in{};
    in.n = inc;
    in.arg = regs;
    wg_arrive(WG_SETMAXNREG, in);
}

extern "C" void emu_fence_proxy_async(void) { std::memcpy(async_view, smem, blk()->L->smem_bytes); }

extern "C" void emu_mbar_init(uint64_t* bar, uint32_t count) {
    if ((uintptr_t)bar % 8) fail("mbarrier.init: %p is not 8-byte aligned", (void*)bar);
    if (count == 0 || count > (1u << 20) - 1) fail("mbarrier.init: count %u (1 .. 2^20 - 1)", count);
    Mbar* m = find_mbar(bar, false);
    if (m && (!m->inflight.empty() || m->tx != 0)) fail("mbarrier.init on a barrier with TMA bytes in flight");
    if (!m) {
        blk()->mbars.push_back(Mbar{});
        m = &blk()->mbars.back();
    }
    *m = Mbar{};
    m->addr = bar;
    m->count = count;
    m->pending = count;
    *bar = 0;
    blk()->progress++;
}

extern "C" void emu_mbar_arrive(uint64_t* bar) { arrive(bar); }

// Conservatively for the whole block (PTX: the executing thread's prior inits).
extern "C" void emu_mbar_init_fence(void) {
    for (auto& m : blk()->mbars) m.init_fenced = true;
}

extern "C" void emu_mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
    Mbar* m = find_mbar(bar, true);
    m->tx += bytes;
    maybe_complete(m);
}

extern "C" void emu_mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    Mbar* m = find_mbar(bar, true);
    m->tx += bytes;
    arrive(bar);
}

extern "C" int emu_mbar_try_wait_parity(uint64_t* bar, uint32_t parity) {
    Mbar* m = find_mbar(bar, true);
    // The phase with parity `parity` has completed when the current phase's parity differs.
    if ((m->phase & 1) != (parity & 1)) {
        materialize(m);
        return 1;
    }
    Block* b = blk();
    b->thr[b->cur].st = SPIN;
    yield_to_scheduler();
    return 0;
}

// A bulk copy reads global memory through the async proxy: after a grid acquire (other blocks'
// generic stores), the issuing thread must have fenced the proxies (fence.proxy.async.global).
static void check_proxy_fenced(const char* what) {
    Block* b = blk();
    if (b->acquires > b->thr[b->cur].proxy_fenced_acquires)
        fail("%s from global memory after a grid acquire with no fence.proxy.async.global in this thread "
             "since (other blocks' generic stores are not yet visible to the async proxy)", what);
}

extern "C" void emu_tma_load(void* dst, const void* map, const int32_t* coords, int rank, uint64_t* bar) {
    check_proxy_fenced("cp.async.bulk.tensor");
    const EmuTmap* m = check_map(map, rank);
    uint64_t bytes = box_bytes(m);
    uint32_t off = shared_range(dst, bytes, "cp.async.bulk.tensor (load)");
    if (off % 128) fail("cp.async.bulk.tensor: shared destination %u is not 128-byte aligned", off);
    Mbar* mb = tma_barrier(bar);
    std::vector<unsigned char> staged(bytes);
    const uint16_t nan_bits[2] = {0x7fff, 0x7e00};
    for_box(m, coords, [&](unsigned char* g, uint32_t lin) {
        if (g) {
            std::memcpy(&staged[lin], g, m->elem);
        } else if (!m->oob_nan) {
            std::memset(&staged[lin], 0, m->elem);
        } else if (m->elem == 2) {
            std::memcpy(&staged[lin], &nan_bits[m->dtype == MB_TMAP_F16], 2);
        } else {
            float f = std::numeric_limits<float>::quiet_NaN();
            std::memcpy(&staged[lin], &f, 4);
        }
    });
    for (uint64_t c = 0; c < bytes; c += 16) {
        Chunk ch;
        ch.off = swizzle(off + (uint32_t)c, m->swizzle);
        claim_copy_bytes(blk(), ch.off, "cp.async.bulk.tensor");
        std::memcpy(ch.data, &staged[c], 16);
        std::memset(smem + ch.off, 0xff, 16);
        std::memset(async_view + ch.off, 0xff, 16);
        mb->inflight.push_back(ch);
    }
    mb->tx -= (int64_t)bytes;
    maybe_complete(mb);
}

extern "C" void emu_bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    if (bytes % 16 || ((uintptr_t)dst | (uintptr_t)src) % 16)
        fail("cp.async.bulk: %u bytes from %p to %p (size and addresses must be multiples of 16)", bytes, src, dst);
    check_proxy_fenced("cp.async.bulk");
    uint32_t off = shared_range(dst, bytes, "cp.async.bulk");
    Mbar* mb = tma_barrier(bar);
    for (uint32_t c = 0; c < bytes; c += 16) {
        Chunk ch;
        ch.off = off + c;
        claim_copy_bytes(blk(), ch.off, "cp.async.bulk");
        std::memcpy(ch.data, (const unsigned char*)src + c, 16);
        std::memset(smem + ch.off, 0xff, 16);
        std::memset(async_view + ch.off, 0xff, 16);
        mb->inflight.push_back(ch);
    }
    mb->tx -= bytes;
    maybe_complete(mb);
}

// cp.async.bulk ... .multicast::cluster: the same bytes to the same offset in the shared memory of
// every block of the cluster named by `cta_mask` (bit r: rank r), each completing the mbarrier at
// `bar`'s offset in that block. A destination block must be running and its barrier initialised
// and fenced: the cluster barrier after the inits is what orders them before a peer's copy.
extern "C" void emu_bulk_load_multicast(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint16_t cta_mask) {
    if (bytes % 16 || ((uintptr_t)dst | (uintptr_t)src) % 16)
        fail("cp.async.bulk: %u bytes from %p to %p (size and addresses must be multiples of 16)", bytes, src, dst);
    check_proxy_fenced("cp.async.bulk.multicast");
    const uint32_t off = shared_range(dst, bytes, "cp.async.bulk.multicast");
    const uint32_t bar_off = shared_range(bar, 8, "cp.async.bulk.multicast's mbarrier");
    Cluster* cl = blk()->cluster;
    if (cta_mask == 0 || (cl->size < 16 && (cta_mask >> cl->size) != 0))
        fail("cp.async.bulk.multicast: CTA mask %#x on a cluster of %u blocks", (unsigned)cta_mask, cl->size);
    for (uint32_t r = 0; r < cl->size; r++) {
        if (!(cta_mask >> r & 1)) continue;
        Block* peer = cl->members[r];
        if (!peer)
            fail("cp.async.bulk.multicast into cluster rank %u, which has not started or has exited (a cluster "
                 "barrier must order the copy after its mbarrier's init and before its exit)", r);
        Mbar* mb = tma_barrier((uint64_t*)(peer->smem_base + bar_off), peer);
        for (uint32_t c = 0; c < bytes; c += 16) {
            Chunk ch;
            ch.off = off + c;
            claim_copy_bytes(peer, ch.off, "cp.async.bulk.multicast");
            std::memcpy(ch.data, (const unsigned char*)src + c, 16);
            std::memset(peer->smem_base + ch.off, 0xff, 16);
            std::memset(peer->async_base + ch.off, 0xff, 16);
            mb->inflight.push_back(ch);
        }
        mb->tx -= bytes;
        maybe_complete(mb);
        peer->progress++;
    }
}

extern "C" uint32_t emu_cluster_ctarank(void) { return blk()->rank; }
extern "C" uint32_t emu_cluster_nctarank(void) { return blk()->cluster->size; }

// barrier.cluster.arrive (.relaxed or .release: memory order is not modelled): the phase
// completes when every thread of every block of the cluster has arrived. Stricter than the ISA in one way: a thread that exited never arrives, so a
// barrier some threads skip by exiting is a deadlock here.
extern "C" void emu_cluster_arrive(void) {
    Block* b = blk();
    Thr& th = b->thr[b->cur];
    if (th.cluster_wait_for >= 0) fail("barrier.cluster.arrive twice with no barrier.cluster.wait between");
    Cluster* cl = b->cluster;
    th.cluster_wait_for = (int64_t)cl->phase;
    if (++cl->arrived == (uint64_t)cl->size * (uint64_t)b->n) {
        cl->arrived = 0;
        cl->phase++;
    }
    b->progress++;
}

// barrier.cluster.wait (acquire): until the phase this thread arrived in has completed.
extern "C" void emu_cluster_wait(void) {
    Block* b = blk();
    if (b->thr[b->cur].cluster_wait_for < 0) fail("barrier.cluster.wait with no barrier.cluster.arrive before it");
    while ((int64_t)b->cluster->phase <= b->thr[b->cur].cluster_wait_for) {
        b->thr[b->cur].st = SPIN;
        yield_to_scheduler();
        b = blk();
    }
    b->thr[b->cur].cluster_wait_for = -1;
}

extern "C" void emu_tma_store(const void* map, const int32_t* coords, int rank, const void* src) {
    const EmuTmap* m = check_map(map, rank);
    uint64_t bytes = box_bytes(m);
    uint32_t off = shared_range(src, bytes, "cp.async.bulk.tensor (store)");
    if (off % 128) fail("cp.async.bulk.tensor: shared source %u is not 128-byte aligned", off);
    auto* s = new BulkStore;
    s->elem = m->elem;
    s->smem_off = off;
    s->smem_len = (uint32_t)bytes;
    s->span = m->swizzle;
    s->data.resize(bytes);
    // Read through the async proxy: generic stores need a fence.proxy.async before this.
    for (uint64_t c = 0; c < bytes; c += 16) {
        uint32_t at = swizzle(off + (uint32_t)c, m->swizzle);
        if (std::memcmp(async_view + at, smem + at, 16) != 0)
            fail("TMA store reads shared byte %u, which a generic store wrote after the last fence.proxy.async "
                 "(the async proxy would read the old value)", at);
        std::memcpy(&s->data[c], async_view + at, 16);
    }
    for_box(m, coords, [&](unsigned char* g, uint32_t lin) {
        if (g) s->elems.emplace_back(g, lin);
    });
    Block* b = blk();
    b->thr[b->cur].bulk_open.push_back(s);
}

extern "C" void emu_bulk_commit(void) {
    Block* b = blk();
    auto& th = b->thr[b->cur];
    th.bulk_groups.push_back(std::move(th.bulk_open));
    th.bulk_open.clear();
}

extern "C" void emu_bulk_wait(int n, int read_only) {
    Block* b = blk();
    auto& th = b->thr[b->cur];
    size_t keep = (size_t)std::max(n, 0), groups = th.bulk_groups.size();
    size_t retire = groups > keep ? groups - keep : 0;
    for (size_t i = 0; i < retire; i++)
        for (auto* s : th.bulk_groups[i]) {
            if (s->read_waited) continue;
            // The reads happen somewhere between the issue and this wait: a generic store to the
            // source in between is a race.
            for (uint32_t c = 0; c < s->smem_len; c += 16)
                if (std::memcmp(&s->data[c], smem + swizzle(s->smem_off + c, s->span), 16) != 0)
                    fail("TMA store: its shared-memory source changed before cp.async.bulk.wait_group%s "
                         "(byte %u)", read_only ? ".read" : "", c);
            s->read_waited = true;
        }
    if (!read_only) {
        // Writes done: they land in global memory now (with .read they land by the block's exit).
        for (size_t i = 0; i < retire; i++)
            for (auto* s : th.bulk_groups[i]) {
                for (auto& e : s->elems) std::memcpy(e.first, &s->data[e.second], s->elem);
                delete s;
            }
        th.bulk_groups.erase(th.bulk_groups.begin(), th.bulk_groups.begin() + retire);
    }
    b->progress++;
}

extern "C" void emu_named_bar(int id, int nthreads, int wait) {
    Block* b = blk();
    if (id < 1 || id > 15) fail("bar %d: named barriers are 1..15 here (0 is __syncthreads)", id);
    if (nthreads <= 0 || nthreads % 32 || nthreads > b->n)
        fail("bar %d, %d: the thread count must be a positive multiple of 32, at most the block's %d", id, nthreads,
             b->n);
    NamedBar& nb = b->nbars[id];
    if (nb.expected == 0) nb.expected = nthreads;
    if (nb.expected != nthreads)
        fail("bar %d: threads disagree on the count (%d and %d)", id, nb.expected, nthreads);
    nb.arrived++;
    b->progress++;
    if (nb.arrived == nb.expected) {
        for (int t : nb.waiting) b->thr[t].st = RUN;
        nb.waiting.clear();
        nb.arrived = nb.expected = 0;
        return;
    }
    if (wait) {
        nb.waiting.push_back(b->cur);
        b->thr[b->cur].st = NBAR;
        yield_to_scheduler();
    }
}

extern "C" void emu_griddep_wait(void) {
    Launch* L = blk()->L;
    if (!L->primary) return;
    std::lock_guard<std::mutex> g(L->primary_mu);
    if (L->primary_done) return;
    L->primary_done = true;
    std::string err;
    if (run_launch_desc(L->primary, false, &err) != 0) L->primary_err = err;
}

extern "C" int emu_tensor_map_encode(void* map128, const MbTensorMapDesc* d) {
    // The rules are checked once, in Rust (src/kernels/tensor_map.rs), for every device; here only
    // what the encoding itself needs.
    if (d->rank < 1 || d->rank > 5 || d->dtype > MB_TMAP_F32) return 1;
    EmuTmap m{};
    m.magic = kTmapMagic;
    m.rank = d->rank;
    m.dtype = d->dtype;
    m.elem = d->dtype == MB_TMAP_F32 ? 4 : 2;
    m.swizzle = d->swizzle;
    m.oob_nan = d->oob_nan;
    m.gaddr = d->global_address;
    for (uint32_t i = 0; i < 5; i++) {
        m.dims[i] = i < d->rank ? d->dims[i] : 1;
        m.box[i] = i < d->rank ? d->box[i] : 1;
        if (i >= 1) m.strides[i - 1] = i < d->rank ? d->strides[i] : 0;
    }
    std::memset(map128, 0, 128);
    std::memcpy(map128, &m, sizeof m);
    return 0;
}
