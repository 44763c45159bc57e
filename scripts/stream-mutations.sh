#!/usr/bin/env bash
# Mutations of the small-batch GEMM, each restored after it is tried. Not part of test.sh (a
# rebuild per mutation, about a minute each); run it after changing the kernel or its use.
# - kernel: each breaks cuda/gemm_stream_sm90.cu in one way (the wait before the activations, the
#   chunk's k permutation, a warp's chunks, the warps' sum, the pairs' weight rows for RoPE and
#   GeGLU, RoPE's frequency and position, the row norm's statistics and mean, the rows in use, the
#   residual's operand, x's copies shared by a cluster: the check of the launch's cluster size,
#   the barrier before them, the bytes each block expects, the multicast mask, the rows each block
#   copies, the wait for them), and a
#   kernel test on the emulator must fail;
# - executor: each breaks its use in the forward (src/gpu/executor.rs, src/gpu/path.rs: the
#   bound's comparison and its widths, the dependent launches, the rows in use, a folded norm), and
#   tests/cost_model.rs or tests/device_parity.rs must fail;
# - attention: attention as a dependent of the Wqkv GEMM (cuda/attention.cu's wait before it reads
#   qkv, src/kernels/ops.rs's refusal below sm_90), and kernels-tests' attention test must fail;
# - emulator: the host emulator's arithmetic every kernel test stands on (cuda/emu: wgmma's and
#   mma.sync's sums, each thread's index), and the kernel tests of gemm_sm90 or attention
#   must fail; its thread block clusters (a multicast's destinations, the cluster barrier's
#   count, %cluster_ctarank), and gemm_stream_sm90's or the sm_90a self-test's must fail;
# - persistent: the persistent forward, cuda/forward_small_sm90.cu — the grid barrier's wait and
#   counter, the flags carried between launches, the sync between a half's attention blocks, the
#   next tile's weights and their slot's phase, the blocks without a tile; x's copies in clusters
#   (the proxy fence, the multicast mask, the bytes expected, the rows each rank copies, x's
#   barrier's phase); x in chunks (the cluster barrier between them, the groups of tiles, the
#   chunk's rows stored where they belong, the slot kept until the last chunk; a pair's weights
#   and refills; the row slices' rows and weights); attention inside the Wqkv step (a head's
#   ticket limit, a tile's head, the halves' units, the barriers skipped, the block's heads
#   handed to its threads); its first and
#   last steps (the embeddings, the final norm's rows); the emulator's flag comparison at the
#   wrap (device.cuh's is the same expression) and atom.inc's wrap; its grid (the clusters' fit,
#   the widest tried) and its choice (the bound's comparison, its width) — and
#   tests/persistent_forward.rs, the forward_small unit tests or tests/cost_model.rs must fail; and a flag raised before the value it stands for (the hand-off
#   microbenchmark's), which the emulator shows by passing the turn to the other co-scheduled
#   blocks at every release store. Two are not among them, because they survive for a reason:
#   the forward's own flag raised before its block's last sync (on the emulator a block's halves
#   reach that sync together: in the forward order the block keeps the turn until its threads
#   only poll, in the reversed order warp 7's half runs before warp 0's thread 0 signals; on a GPU
#   they need not); and the cluster barrier after the x barriers' inits removed (the executor's
#   programs start with the embeddings, and the grid barrier after them already orders every
#   block's inits before any copy into it; the cluster barrier keeps a program that starts with a
#   GEMM correct).
#   bash scripts/stream-mutations.sh            # all; exits 1 if any mutation survives
#   bash scripts/stream-mutations.sh executor   # one section: kernel, executor, attention, emulator, persistent
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/mutations-lib.sh
section=${1:-all}
case $section in all | kernel | executor | attention | emulator | persistent) ;;
  *) echo "usage: $0 [kernel|executor|attention|emulator|persistent]"; exit 2 ;; esac
if [ "$section" = all ] || [ "$section" = kernel ]; then
target cuda/gemm_stream_sm90.cu "cd kernels-tests && cargo test -q --test gemm_stream_sm90"
mutate "activations read before griddepcontrol.wait" \
  "    pdl_wait();
    const uint32_t rows" "    const uint32_t rows"
mutate "cluster: the launch's cluster size not checked against the params'" \
  "    if (cluster_nctarank() != p.cluster) __trap();" "    // (no check)"
mutate "cluster: no barrier between the peers' mbarrier inits and the copies into them" \
  "    cluster_arrive_relaxed();
    cluster_wait();" "    // (no cluster barrier)"
mutate "cluster: each block expects only the rows it copies itself" \
  "mbar_arrive_expect_tx(x_ready, rows * 2 * k);" "mbar_arrive_expect_tx(x_ready, (rows + cluster - 1 - rank) / cluster * 2 * k);"
mutate "cluster: a block's rows multicast to itself alone" \
  "x_ready, (uint16_t)((1u << cluster) - 1));" "x_ready, (uint16_t)(1u << rank));"
mutate "cluster: every rank copies rows from 0, not from its rank" \
  "for (uint32_t r = rank + cluster * tid; r < rows;" "for (uint32_t r = cluster * tid; r < rows;"
mutate "cluster: x read before its bytes have landed" \
  "    while (!mbar_try_wait(x_ready, 0)) {
    }" "    // (no wait for x's bytes)"
mutate "rows in use: the capacity, not the batch's tokens" \
  "const uint32_t rows = rows_in_use(p.batch, p.m)," "const uint32_t rows = p.m,"
cp "$backup" "$src"
target cuda/include/stream_tile.cuh "cd kernels-tests && cargo test -q --test gemm_stream_sm90"
mutate "k permutation: the second mma's x words swapped" \
  "a1[4] = {lo.z, hi.z, lo.w, hi.w}" "a1[4] = {lo.w, hi.w, lo.z, hi.z}"
mutate "k permutation: the weight's words of the second mma taken from the first" \
  "b1[2] = {wv[j][nt].z, wv[j][nt].w}" "b1[2] = {wv[j][nt].x, wv[j][nt].y}"
mutate "a warp skips its last chunk" \
  "chunk < k / KCHUNK; chunk += WARPS" "chunk + WARPS < k / KCHUNK; chunk += WARPS"
mutate "the warps' sum leaves out the last warp" \
  "for (int wi = 0; wi < WARPS; wi++) {" "for (int wi = 0; wi < WARPS - 1; wi++) {"
mutate "RoPE: each dimension paired with d + 8, not d + 32" \
  "half * (ROPE_D / 2) + i" "half * 8 + i"
mutate "GeGLU: the gate taken from the next 8 rows, not the block's second half" \
  "half * (GEGLU_BLOCK / 2) + i" "half * 8 + i"
mutate "RoPE: the frequency of the tile's first pair for all" \
  "const uint32_t j = (tile % (ROPE_D / 16)) * 8 + c;" "const uint32_t j = (tile % (ROPE_D / 16)) * 8;"
mutate "RoPE: positions not restarting per sequence" \
  "const float pos = (float)rope_position(cu, batch->sequences, row);" "const float pos = (float)row;"
mutate "row norm: a one-pass variance (E[x²] − mean²)" \
  "            const float d = to_f32(xr[i]) - mean;
            m2 += d * d;
        }
        m2 = warp_sum(m2);" "            const float d = to_f32(xr[i]);
            m2 += d * d;
        }
        m2 = warp_sum(m2) - (float)k * mean * mean;"
mutate "row norm: the mean not subtracted" \
  "v[h] = fmaf(-s.x, colsum[col[h]], v[h]) * s.y;" "v[h] = v[h] * s.y;"
mutate "residual: added to the wrong column of r" \
  "to_f32(r_in[(size_t)row * p.n + col[h]])" "to_f32(r_in[(size_t)row * p.n + col[0]])"
cp "$backup" "$src"
fi

if [ "$section" = all ] || [ "$section" = executor ]; then
executor_tests="cargo test -q --test cost_model --test device_parity"
target src/gpu/executor.rs "$executor_tests"
mutate "executor: a launch of exactly the bound takes the large-batch GEMMs" \
  "let small = shape.tokens <= self.small_batch_tokens;" "let small = shape.tokens < self.small_batch_tokens;"
mutate "executor: the small-batch GEMMs launched as ordinary launches, not dependents" \
  "gemm_stream::gemm_stream(self.dev.as_ref(), self.dtype, g, batch, true)" \
  "gemm_stream::gemm_stream(self.dev.as_ref(), self.dtype, g, batch, false)"
mutate "executor: no BatchDesc, so every capacity row is computed" \
  "gemm_stream::gemm_stream(self.dev.as_ref(), self.dtype, g, batch, true)" \
  "gemm_stream::gemm_stream(self.dev.as_ref(), self.dtype, g, 0, true)"
mutate "executor: attention on the small-batch path an ordinary launch, not a dependent" \
  "ops::attention(self.dev.as_ref(), self.dtype, &p, true)?;" "ops::attention(self.dev.as_ref(), self.dtype, &p, false)?;"
mutate "executor: Wi's folded LayerNorm dropped on the small-batch path" \
  "                &layer.wi,
                Some(norm(layer.wi_colsum))," "                &layer.wi,
                if small { None } else { Some(norm(layer.wi_colsum)) },"
cp "$backup" "$src"
target src/gpu/path.rs "$executor_tests"
mutate "path: the bound from the hidden width alone (Wo2's K = intermediate ignored)" \
  "stream_max_rows(h).min(stream_max_rows(i))" "stream_max_rows(h)"
cp "$backup" "$src"
fi

if [ "$section" = all ] || [ "$section" = attention ]; then
attention_tests="cd kernels-tests && cargo test -q --test attention a_dependent_attention"
target cuda/include/attention_block.cuh "$attention_tests"
mutate "attention: qkv read before griddepcontrol.wait" \
  "    if (DEPENDENT) pdl_wait();  // qkv is the previous launch's output" "    // (no wait: qkv read at once)"
cp "$backup" "$src"
target src/kernels/ops.rs "$attention_tests"
mutate "attention: a dependent launch accepted below sm_90" \
  "if dependent && dev.compute_capability() < (9, 0) {" "if dependent && dev.compute_capability() < (8, 0) {"
cp "$backup" "$src"
fi

if [ "$section" = all ] || [ "$section" = emulator ]; then
emu_tests="cd kernels-tests && cargo test -q --test gemm_sm90 --test attention"
target cuda/emu/hopper.cpp "$emu_tests"
mutate "emulator: wgmma's sum leaves out its last k" \
  "            for (int k = 0; k < 16; k++) {
                const double a = A[r][k];" "            for (int k = 0; k < 15; k++) {
                const double a = A[r][k];"
mutate "emulator: wgmma's columns past the first 8 of each 16 left at 0" \
  "for (int c0 = 0; c0 < n; c0 += 8) {" "for (int c0 = 0; c0 < n; c0 += 16) {"
cp "$backup" "$src"
target cuda/emu/emu.cpp "$emu_tests"
mutate "emulator: mma.sync's sum leaves out its last k" \
  "                for (int k = 0; k < 16; k++) {
                    const double a = A[i][k];" "                for (int k = 0; k < 15; k++) {
                    const double a = A[i][k];"
mutate "emulator: mma.sync's accumulator input ignored" \
  "for (int j = 0; j < 8; j++) acc[j] = C[i][j];" "for (int j = 0; j < 8; j++) acc[j] = 0;"
mutate "emulator: threadIdx.x wraps at 32 (every warp sees the first warp's indices)" \
  "b->thr[t].idx.x = t % bx;" "b->thr[t].idx.x = t % bx % 32;"
cp "$backup" "$src"
cluster_tests="cd kernels-tests && cargo test -q --test gemm_stream_sm90 --test hopper_selftest"
target cuda/emu/hopper.cpp "$cluster_tests"
mutate "emulator: a multicast copy lands in the issuing block alone" \
  "        if (!(cta_mask >> r & 1)) continue;" "        if (!(cta_mask >> r & 1) || cl->members[r] != blk()) continue;"
mutate "emulator: the cluster barrier opens when one block's threads have arrived" \
  "if (++cl->arrived == (uint64_t)cl->size * (uint64_t)b->n) {" "if (++cl->arrived == (uint64_t)b->n) {"
mutate "emulator: %cluster_ctarank always 0" \
  "extern \"C\" uint32_t emu_cluster_ctarank(void) { return blk()->rank; }" \
  "extern \"C\" uint32_t emu_cluster_ctarank(void) { return 0; }"
cp "$backup" "$src"
fi
if [ "$section" = all ] || [ "$section" = persistent ]; then
persistent_tests="cargo test -q --test persistent_forward"
target cuda/forward_small_sm90.cu "$persistent_tests"
mutate "persistent: no grid barrier (a block starts a step before the others finished the last)" \
  "            if (tid < 32) grid_wait_all_geq(flags, tid, 32, G, base + s);" \
  "            // (no wait)"
mutate "persistent: the barrier waits for the step before the last (a counter off by one)" \
  "grid_wait_all_geq(flags, tid, 32, G, base + s);" "grid_wait_all_geq(flags, tid, 32, G, base + s - 1);"
mutate "persistent: the flags counted from 0 each launch, not from where the last one left them" \
  "const uint32_t base = flags[blk];" "const uint32_t base = 0;"
mutate "persistent: a half's next attention block loads over the one its warps still read" \
  "            sync();  // the half's warps" "            // sync();  // the half's warps"
mutate "persistent: the block's next unit two on, not one" \
  "                                        issue = next_unit(steps, P.count, G, {issue.step, issue.j + 1});" \
  "                                        issue = next_unit(steps, P.count, G, {issue.step, issue.j + 2});"
mutate "persistent: a unit's weights those of the tile numbered as the unit (the second slice's past n)" \
  "                                        issue_weights(steps[issue.step].gemm, unit_of(issue.j, G) % (steps[issue.step].gemm.n / BN)," \
  "                                        issue_weights(steps[issue.step].gemm, unit_of(issue.j, G),"
mutate "persistent: a block counts a unit in the last round past the step's units" \
  "    return rounds + (unit_of(rounds, G) < units ? 1 : 0);" "    return rounds + (unit_of(rounds, G) <= units ? 1 : 0);"
mutate "persistent: the snake's odd rounds dealt from the block after the last (a unit of each round lost)" \
  "    return j * G + (j % 2 ? G - 1 - blockIdx.x : blockIdx.x);" "    return j * G + (j % 2 ? G - blockIdx.x : blockIdx.x);"
mutate "persistent: both row slices take the first half's rows" \
  "min(in_use, blk / tiles * half_rows)" "min(in_use, 0 * half_rows)"
mutate "persistent: every slot waited on at phase 0 (the second use of a slot reads stale weights)" \
  "mbar_try_wait(&slot_bar[at], ((i + u) / MB_FSMALL_SLOTS) % 2)" "mbar_try_wait(&slot_bar[at], 0)"
mutate "persistent: the last block with tiles skips the GEMM step" \
  "if (blk < units) {" "if (blk + 1 < units) {"
mutate "persistent: a head's ticket limit one short (its attention starts before its last tile is written)" \
  "if (grid_count(&head_counts[h], per_head - 1) == per_head - 1)" \
  "if (grid_count(&head_counts[h], per_head - 2) == per_head - 2)"
mutate "persistent: a tile's head taken as the tile mod heads (tickets counted for the wrong heads)" \
  "h = tile / (a.head_dim / BN) % a.heads;" "h = tile % a.heads;"
mutate "persistent: every unit of a sequence its first query block (the rest never attended)" \
  "const uint32_t qb = u % qblocks, b = u / qblocks;" "const uint32_t qb = 0, b = u / qblocks;"
mutate "persistent: a head's units all on half 0, which skips every other one" \
  "            if (i % 2 != half) continue;" "            if (half != 0 || i % 2 != 0) continue;"
mutate "persistent: a grid barrier skipped before the final norm as well as before attention" \
  "        if (s > 0 && step.kind != MB_FSMALL_ATTENTION) {" "        if (s > 0 && step.kind == MB_FSMALL_GEMM) {"
mutate "persistent: the block's heads taken from before its tickets (every thread reads 0 heads)" \
  "                if (tid == 0) heads_mine = mine;" "                if (tid == 0) heads_mine = 0;"
mutate "persistent: x copied by bulk copies with no proxy fence after the grid barrier's acquire" \
  "                    fence_proxy_async_global();" "                    // (no proxy fence)"
mutate "persistent: a block's rows multicast to itself alone" \
  "x_ready, (uint16_t)((1u << cluster) - 1));" "x_ready, (uint16_t)(1u << rank));"
mutate "persistent: each block expects only the rows it copies itself" \
  "mbar_arrive_expect_tx(x_ready, n * 2 * k);" \
  "mbar_arrive_expect_tx(x_ready, (n + cluster - 1 - rank) / cluster * 2 * k);"
mutate "persistent: every rank copies rows from 0, not from its rank" \
  "for (uint32_t r = rank + cluster * tid; r < n;" "for (uint32_t r = cluster * tid; r < n;"
mutate "persistent: no cluster barrier between chunks (a peer copies the next chunk over one still read)" \
  "                        if (g > 0 || c > 0) {" "                        if (false) {"
mutate "persistent: with several chunks, a group of all the block's tiles (more than its slots hold)" \
  "const uint32_t per_group = chunks == 1 ? busiest : MB_FSMALL_SLOTS;" "const uint32_t per_group = busiest;"
mutate "persistent: every chunk's rows stored as the first chunk's" \
  "epilogue<T>(p, tile, row0, n, m16, part, row_stats);" "epilogue<T>(p, tile, 0, n, m16, part, row_stats);"
mutate "persistent: a slot refilled after the first chunk, while later chunks still read it" \
  "if (u == 0 && last_chunk && tid == 0) {" "if (u == 0 && c == 0 && tid == 0) {"
mutate "persistent: a pair's second tile computed with the first tile's weights" \
  "slots + ((i + 1) % MB_FSMALL_SLOTS) * slot_bytes};" "slots + (i % MB_FSMALL_SLOTS) * slot_bytes};"
mutate "persistent: a pair's slots refilled one tile apart, not each with the tile two on" \
  "const uint32_t at = (i + v) % MB_FSMALL_SLOTS;" "const uint32_t at = (i + 2 * v) % MB_FSMALL_SLOTS;"
mutate "persistent: x's barrier waited on at phase 0 every step (a later step reads x before it lands)" \
  "mbar_try_wait(x_ready, x_loads % 2)" "mbar_try_wait(x_ready, 0)"
mutate "persistent: the embeddings step skipped (layer 0 reads the arena's stale x)" \
  "            embed_rows<T>(step.embed, blk, G);" "            // (no embeddings)"
mutate "persistent: the final norm's rows strided by G + 1 (some rows never normed)" \
  "            layernorm_rows<T>(step.norm, blk, G);" "            layernorm_rows<T>(step.norm, blk, G + 1);"
cp "$backup" "$src"
# Past 32 blocks a lane of warp 0 watches two flags: only the base shape's 44 blocks see a lane's second.
target cuda/forward_small_sm90.cu "cargo test -q --test persistent_base_shape"
mutate "persistent: warp 0's lanes watch every other lane's flags (blocks 32 .. 43 of 44 unwatched)" \
  "grid_wait_all_geq(flags, tid, 32, G, base + s);" "grid_wait_all_geq(flags, tid, 64, G, base + s);"
cp "$backup" "$src"
target src/kernels/forward_small.rs "cargo test -q --lib forward_small"
mutate "grid: clusters not checked against a step's blocks with a unit" \
  "b.is_multiple_of(c) && (gemm_slices" "true && (gemm_slices"
mutate "grid: a cluster may straddle a step's two row slices" \
  "(gemm_slices(steps, i, self.blocks) == 1 || tiles.is_multiple_of(c))" "true"
mutate "grid: the widest cluster tried first is 2" \
  "    let mut cluster = MB_FSMALL_CLUSTER;" "    let mut cluster = 2;"
cp "$backup" "$src"
target cuda/include/device.cuh "$persistent_tests"
mutate "persistent: the barrier's flags compared without wrapping (they start 64 steps before 2^32)" \
  "waiting &= ~((int32_t)(v[i] - value) >= 0 ? 1u << i : 0u);" "waiting &= ~(v[i] >= value ? 1u << i : 0u);"
cp "$backup" "$src"
target cuda/emu/emu.cpp "$persistent_tests"
mutate "emulator: atom.inc never wraps at its limit (a head's counter runs on into the next layer)" \
  "old >= limit ? 0 : old + 1" "old + 1"
cp "$backup" "$src"
target cuda/include/device.cuh "cd kernels-tests && cargo test -q --test static_checks grid_barriers"
mutate "grid barrier: each flag acquired in turn (a round trip a flag; the static check reads the SASS)" \
  'asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];\n"' 'asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n"'
mutate "grid barrier: no acquire fence after the polls (the emulator's memory cannot show it; the SASS can)" \
  '__device__ __forceinline__ void grid_acquire_fence() { asm volatile("fence.acq_rel.gpu;\n" ::: "memory"); }' \
  '__device__ __forceinline__ void grid_acquire_fence() {}'
target cuda/include/device.cuh "cd kernels-tests && cargo test -q --test gpu_selftest grid_barrier"
mutate "grid barrier: flags compared without wrapping" \
  "waiting &= ~((int32_t)(v[i] - value) >= 0 ? 1u << i : 0u);" "waiting &= ~(v[i] >= value ? 1u << i : 0u);"
mutate "grid barrier: the wait ends once a batch's first flag is raised" \
  "            if (waiting == 0) break;" "            if (waiting == 0 || (v[0] - value) < (1u << 31)) break;"
mutate "grid barrier: a thread's second batch never waited for" \
  "    for (uint32_t j0 = first; j0 < count; j0 += MB_GRID_WAIT_BATCH * stride) {" \
  "    for (uint32_t j0 = first; j0 < count && j0 == first; j0 += MB_GRID_WAIT_BATCH * stride) {"
cp "$backup" "$src"
target cuda/selftest.cu "cd kernels-tests && cargo test -q --test gpu_selftest grid_barrier"
mutate "selftest: the barrier's lanes watch every other lane's flags" \
  "grid_wait_all_geq(flags, threadIdx.x, 32, G, p.n);" "grid_wait_all_geq(flags, threadIdx.x, 64, G, p.n);"
mutate "selftest: a block raises its flag before writing its value" \
  "            out[b] = b + 1;
            grid_signal(&flags[b], p.n);" "            grid_signal(&flags[b], p.n);
            out[b] = b + 1;"
cp "$backup" "$src"
target cuda/handoff_sm90.cu "cd kernels-tests && cargo test -q --test handoff_sm90"
mutate "emulator: a flag raised before the value it stands for is seen early (handoff_persistent)" \
  "            out[(size_t)s * g + b] = prev + 1;
            grid_signal(&flags[b], s + 1);" "            grid_signal(&flags[b], s + 1);
            out[(size_t)s * g + b] = prev + 1;"
cp "$backup" "$src"
target src/gpu/executor.rs "cargo test -q --test cost_model"
mutate "executor: a launch of exactly the persistent bound's tokens takes the large-batch path" \
  "tokens <= self.persistent_tokens()" "tokens < self.persistent_tokens()"
mutate "executor: a launch of exactly the persistent bound's tokens x longest sequence takes the large-batch path" \
  "<= path::PERSISTENT_TOKENS_X_SEQLEN as u64" "< path::PERSISTENT_TOKENS_X_SEQLEN as u64"
mutate "executor: a batch the persistent forward takes replays its wider bucket's per-launch graph" \
  "            .filter(|&(t, _, l)| !takes || self.persistent_takes(t, l))
" ""
mutate "executor: the embeddings launched as well before the persistent forward (whose first step they are)" \
  "        let small = shape.tokens <= self.small_batch_tokens;
        if let Some(program)" "        let small = shape.tokens <= self.small_batch_tokens;
        self.embeddings(a, shape)?;
        if let Some(program)"
cp "$backup" "$src"
target src/gpu/path.rs "cargo test -q --test cost_model"
mutate "path: the persistent bound at the hidden width alone (Wo2's K = intermediate ignored)" \
  "forward_small_max_chunk(h.max(i)) == 0" "forward_small_max_chunk(h) == 0"
cp "$backup" "$src"
fi
mutations_done
