#!/usr/bin/env bash
# Mutations of the Hopper attention, each restored after it is tried. Not part of test.sh (a
# rebuild per mutation, under a minute each); run it after changing the kernel, its use or the
# emulator's wgmma.
# - kernel: each breaks cuda/attention_sm90.cu in one way (P·V's B major mode and k step, P's
#   fragment, the waits that retire S and P·V, the first K stage's release, the V tail's zeroing and its
#   proxy fence, the masks, a window consumer's tiles, a barrier phase, a transaction count, the
#   softmax's rescale of l and masked rows' shift (softmax.cuh, shared with attention.cu), a passed
#   tile's wait, the last P·V, the consumers' turns, Q's boxes), and kernels-tests/tests/attention_sm90.rs
#   (and attention.rs for softmax.cuh) on the emulator must fail;
# - emulator: the MN-major B operand of wgmma (cuda/emu/hopper.cpp), and the attention test or the
#   sm_90a self-test (tests/hopper_selftest.rs, against its own model of the ISA's layouts) must fail;
# - static: what makes ptxas serialize the wgmmas (a wgmma under a branch it cannot prove
#   warp-uniform), and kernels-tests/tests/static_checks.rs must fail (needs nvcc:
#   scripts/install-toolchain.sh, NVCC exported);
# - executor: its use in the forward (src/gpu/executor.rs), and tests/device_parity.rs or
#   tests/cost_model.rs must fail.
#   bash scripts/attention-mutations.sh            # all; exits 1 if any mutation survives
#   bash scripts/attention-mutations.sh kernel     # one section: kernel, emulator, static, executor
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/mutations-lib.sh
section=${1:-all}
case $section in all | kernel | emulator | static | executor) ;;
  *) echo "usage: $0 [kernel|emulator|static|executor]"; exit 2 ;; esac
# The emulator-only sections build no kernels with nvcc (faster; their tests need none).
emu_only="MODERNBERT_CUDA_ARCHS=none MODERNBERT_REQUIRE_KERNELS=0"
if [ "$section" = all ] || [ "$section" = kernel ]; then
target cuda/attention_sm90.cu "cd kernels-tests && env $emu_only cargo test -q --test attention_sm90"
mutate "P·V reads V as K-major (no imm-trans-b)" \
  "        wgmma_rs_m64n64k16_f16_transb(o, p, dv, 1);
    } else {
        wgmma_rs_m64n64k16_bf16_transb(o, p, dv, 1);" "        wgmma_rs_m64n64k16_f16(o, p, dv, 1);
    } else {
        wgmma_rs_m64n64k16_bf16(o, p, dv, 1);"
mutate "V's k16 step advances one 8-key group, not two" \
  "v_rows + kk * 2 * GROUP_BYTES" "v_rows + kk * GROUP_BYTES"
mutate "P's A fragment: rows g + 8 and columns 2t + 8 swapped" \
  "            pf[kk][1] = pack16x2<FP16>(lo[2], lo[3]);
            pf[kk][2] = pack16x2<FP16>(hi[0], hi[1]);" "            pf[kk][1] = pack16x2<FP16>(hi[0], hi[1]);
            pf[kk][2] = pack16x2<FP16>(lo[2], lo[3]);"
mutate "softmax of S_t before it retired (wait_group 2)" \
  "            wgmma_wait<1>();" "            wgmma_wait<2>();"
mutate "O rescaled and P overwritten before P·V retired" \
  "            wgmma_wait<0>();  // P_{t-1} V_{t-1} done: O may be rescaled, pf overwritten
            wgmma_fence_operands(o);
            if (lane_in_wg == 0) mbar_arrive(&bar->v_empty[stage(t - 1)]);
            rescale_and_pack(alpha);" "            rescale_and_pack(alpha);
            wgmma_wait<0>();
            wgmma_fence_operands(o);
            if (lane_in_wg == 0) mbar_arrive(&bar->v_empty[stage(t - 1)]);"
# (Releasing K_t early in the steady loop is no bug: the producer refills that stage only after
# V_{t+1}, which waits for P_{t-1}·V_{t-1} to retire, after S_t. The first tile has no such guard.)
mutate "the first tile's K stage released before S retired" \
  "        issue_s(t_first);
        your_turn();
        wgmma_wait<0>();
        wgmma_fence_operands(sacc);
        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t_first)]);" "        issue_s(t_first);
        your_turn();
        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t_first)]);
        wgmma_wait<0>();
        wgmma_fence_operands(sacc);"
mutate "V's tail zeroed without fence.proxy.async" \
  "                fence_proxy_async();  // the zeros visible" "                // no fence: the zeros visible"
mutate "V's tail not zeroed" \
  "                    reinterpret_cast<uint4*>(v_dst)[i] = make_uint4(0u, 0u, 0u, 0u);" "                    (void)i;"
mutate "a tile past the keys not masked" \
  "const bool full = kv0 + BN <= n_keys && (!local" "const bool full = (!local"
mutate "the window's mask one key narrow on the right" \
  "(key - i <= r && i - key <= r)" "(key - i < r && i - key <= r)"
mutate "a window consumer starts one tile late" \
  "first = hi > lo ? (lo - klo) / BN : n_tiles;" "first = hi > lo ? (lo - klo) / BN + 1 : n_tiles;"
mutate "V of the previous tile waited for at the wrong phase" \
  "mbar_wait(&bar->v_full[stage(t - 1)], phase(t - 1));" "mbar_wait(&bar->v_full[stage(t - 1)], phase(t - 1) ^ 1);"
mutate "K's expect_tx of half a tile" \
  "mbar_arrive_expect_tx(&bar->k_full[s], TILE_BYTES);" "mbar_arrive_expect_tx(&bar->k_full[s], TILE_BYTES / 2);"
mutate "a passed tile's K not waited for" \
  "        mbar_wait(&bar->k_full[stage(t)], phase(t));
        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t)]);" "        if (lane_in_wg == 0) mbar_arrive(&bar->k_empty[stage(t)]);"
mutate "the last tile's P·V never issued" \
  "        issue_pv(t_last);" "        wgmma_commit();"
mutate "ping-pong: consumer 0's first turn never handed over" \
  "    if (pingpong && c == 1) named_bar_arrive(TURN + 0, 256);  // consumer 0 goes first" "    // consumer 0 goes first"
mutate "ping-pong between consumers of unequal rounds" \
  "const bool pingpong = t_first <= t_last && rounds == other_last - other_first + 2;" "const bool pingpong = t_first <= t_last;"
mutate "ping-pong: both consumers wait on one barrier" \
  "if (pingpong) named_bar_sync(TURN + c, 256);" "if (pingpong) named_bar_sync(TURN, 256);"
mutate "Q loaded for the first consumer only" \
  "for (int c = 0; c < MB_ATT90_CONSUMERS; c++)" "for (int c = 0; c < 1; c++)"
# The online softmax's step, shared with attention.cu (cuda/include/softmax.cuh).
target cuda/include/softmax.cuh "cd kernels-tests && env $emu_only cargo test -q --test attention_sm90 --test attention"
mutate "l not rescaled with O" \
  "        l[rr] *= alpha[rr];" "        (void)0;"
mutate "a row with every key so far masked shifted by -inf (NaN)" \
  "shift[rr] = mx[rr] == -INFINITY ? 0.f : mx[rr] * sl2;" "shift[rr] = mx[rr] * sl2;"
fi
if [ "$section" = all ] || [ "$section" = emulator ]; then
target cuda/emu/hopper.cpp "cd kernels-tests && env $emu_only cargo test -q --test attention_sm90 --test hopper_selftest"
mutate "MN-major B decoded as K-major" \
  "return op.trans_b ? desc_addr_mn(op.desc_b, n, k) : desc_addr(op.desc_b, n, k);" "return desc_addr(op.desc_b, n, k);"
mutate "MN-major: the leading byte offset ignored" \
  "(n / per_row) * d.lbo" "(n / per_row) * 0"
mutate "MN-major: 8-k groups at 8 rows, not the stride byte offset" \
  "(k / 8) * d.sbo + (k % 8) * d.span" "(k / 8) * 8 * d.span + (k % 8) * d.span"
fi
if [ "$section" = all ] || [ "$section" = static ]; then
if [ -z "${NVCC:-}" ]; then echo "static: NVCC is not exported (scripts/install-toolchain.sh prints it)"; exit 2; fi
target cuda/attention_sm90.cu "cd kernels-tests && env MODERNBERT_REQUIRE_KERNELS=1 cargo test -q --test static_checks hopper_wgmmas"
mutate "the steady loop's P·V under a branch on the thread's index" \
  "            issue_pv(t - 1);
            your_turn();" "            if (lane_in_wg < 127) { issue_pv(t - 1); } else { wgmma_commit(); }
            your_turn();"
mutate "the last P·V skipped for rows past the sequence" \
  "        issue_pv(t_last);" "        if (i0 < len) issue_pv(t_last); else wgmma_commit();"
fi
if [ "$section" = all ] || [ "$section" = executor ]; then
target src/gpu/executor.rs "env $emu_only cargo test -q --test device_parity hopper && env $emu_only cargo test -q --test cost_model"
mutate "the Hopper path's large batches keep attention.cu" \
  "                    if small {
                        ops::attention(self.dev.as_ref(), self.dtype, &p, true)?;
                    } else {
                        attention_sm90::attention_sm90(self.dev.as_ref(), self.dtype, &p, s.tokens)?;
                    }" "                    ops::attention(self.dev.as_ref(), self.dtype, &p, small)?;"
fi
mutations_done
