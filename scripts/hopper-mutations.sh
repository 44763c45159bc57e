#!/usr/bin/env bash
# Mutations of the Hopper chain: each breaks cuda/gemm_sm90.cu in one way (a swizzle, a descriptor
# stride, wait_group, fence.proxy.async, an mbarrier phase, expect_tx, griddepcontrol.wait, the
# mbarrier-init fence, the GeGLU epilogue's operands, the RoPE epilogue's pair, frequency, position
# and padding rows, A's griddepcontrol order, the residual epilogue's wait and byte count, the row
# statistics' variance and slots, the row norm's combination and mean, the persistent schedule's
# staging hand-over, last stage, residual phase, statistics slot and tile loop), and a kernel
# test on the emulator must
# fail; the source is restored after each. Not part of test.sh (a rebuild per mutation, a few
# minutes in all); run it after changing the kernel or the emulator.
#   bash scripts/hopper-mutations.sh            # all; exits 1 if any mutation survives
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/mutations-lib.sh
target cuda/gemm_sm90.cu "cd kernels-tests && cargo test -q --test gemm_sm90 --test hopper_selftest"
mutate "wrong swizzle mode (B's descriptor says 64-byte)" \
  "wgmma_desc(b_rows + kk * 32, 16, GROUP_STRIDE, SWIZZLE_ROW)" "wgmma_desc(b_rows + kk * 32, 16, GROUP_STRIDE, 64)"
mutate "descriptor stride off by 16 bytes" \
  "constexpr uint32_t GROUP_STRIDE = 8 * SWIZZLE_ROW;" "constexpr uint32_t GROUP_STRIDE = 8 * SWIZZLE_ROW + 16;"
mutate "wait_group one too permissive" \
  "wgmma_wait<1>();  // the previous" "wgmma_wait<2>();  // the previous"
mutate "missing fence.proxy.async" \
  "    fence_proxy_async();
    named_bar_sync" "    named_bar_sync"
mutate "flipped mbarrier phase" \
  "mbar_wait(&full[s], (it / STAGES) & 1);" "mbar_wait(&full[s], ((it / STAGES) & 1) ^ 1);"
mutate "expect_tx off by one tile" \
  "mbar_arrive_expect_tx(&full[s], A_BYTES + B_BYTES);" "mbar_arrive_expect_tx(&full[s], A_BYTES);"
mutate "missing griddepcontrol.wait" \
  "pdl_wait();  // A and R are" "// no wait: A and R are"
mutate "missing fence.mbarrier_init" \
  "        mbar_init_fence();  // the initialised" "        // the initialised"
mutate "GeGLU epilogue: activated half and gate swapped" \
  "            const float* x = &acc[4 * j];
            const float* gate = &acc[4 * (j + HALF / 8)];" "            const float* gate = &acc[4 * j];
            const float* x = &acc[4 * (j + HALF / 8)];"
mutate "RoPE epilogue: x[j] rotated with the wrong partner" \
  "hi = lo + HALF_BLOCKS;" "hi = lo + HALF_BLOCKS - 1;"
mutate "RoPE epilogue: odd columns take the even column's frequency" \
  "rope_inv_freq(p.theta, 8 * j + 2 * t + e, ROPE_D)" "rope_inv_freq(p.theta, 8 * j + 2 * t, ROPE_D)"
mutate "RoPE epilogue: the second consumer's rows take the first's positions" \
  "position(row1)" "position(row1 - consumer * 64)"
mutate "RoPE epilogue: padding rows rotated by their position past the batch" \
  "row < tokens ? (float)rope_position(cu, sequences, row) : 0.f" "(float)rope_position(cu, sequences, row)"
mutate "A's first box loaded before griddepcontrol.wait" \
  "                    if (it == 0) pdl_wait();  // A and R are the previous kernels' outputs
                    tma_load_2d(a_tiles + s * A_BYTES, &p.a, kb * BK, m0, &full[s]);" "                    tma_load_2d(a_tiles + s * A_BYTES, &p.a, kb * BK, m0, &full[s]);
                    if (it == 0) pdl_wait();  // A and R are the previous kernels' outputs"
mutate "residual epilogue: no wait for R's boxes" \
  "        mbar_wait(residual_full, tile_iter & 1);" "        // no wait"
mutate "residual epilogue: expect_tx of one box, not two" \
  "mbar_arrive_expect_tx(bar, MB_GEMM90_C_TILE_BYTES);" "mbar_arrive_expect_tx(bar, MB_GEMM90_C_TILE_BYTES / 2);"
mutate "row statistics: a one-pass variance (Σx² − n·mean²)" \
  "            const float d0 = stored(r0, j, e) - mean0, d1 = stored(r1, j, e) - mean1;
            m20 = fmaf(d0, d0, m20);
            m21 = fmaf(d1, d1, m21);
        }
    }
    m20 = quad_sum(m20);
    m21 = quad_sum(m21);" "            const float d0 = stored(r0, j, e), d1 = stored(r1, j, e);
            m20 = fmaf(d0, d0, m20);
            m21 = fmaf(d1, d1, m21);
        }
    }
    m20 = quad_sum(m20) - (float)BN * mean0 * mean0;
    m21 = quad_sum(m21) - (float)BN * mean1 * mean1;"
mutate "row statistics: each row's statistics written to its first tile's slot" \
  "stats[(size_t)row0 * parts + tile] = MbRowStats{mean0, m20};" "stats[(size_t)row0 * parts] = MbRowStats{mean0, m20};"
mutate "row statistics: rows past m written (no bound on the store)" \
  "        if (row1 < p.m) stats[(size_t)row1 * parts + tile] = MbRowStats{mean1, m21};" "        stats[(size_t)row1 * parts + tile] = MbRowStats{mean1, m21};"
mutate "row norm: the tiles' means combined without the between-tile term" \
  "        m2 += s[i].m2 + (float)BN * d * d;" "        m2 += s[i].m2 + 0.f * d;"
mutate "row norm: the mean not subtracted (no mean · colsum)" \
  "acc[4 * j + e] = fmaf(-s0.x, cs, acc[4 * j + e]) * s0.y;" "acc[4 * j + e] = acc[4 * j + e] * s0.y;"
mutate "row norm: the second row of a thread normalised with the first's statistics" \
  "acc[4 * j + 2 + e] = fmaf(-s1.x, cs, acc[4 * j + 2 + e]) * s1.y;" "acc[4 * j + 2 + e] = fmaf(-s0.x, cs, acc[4 * j + 2 + e]) * s0.y;"
mutate "persistent: R of the next tile loaded before the previous tile's stores read the staging tile" \
  "                    if (tile_iter > 0) mbar_wait(c_free, (tile_iter - 1) & 1);" "                    // (no wait for c_free)"
mutate "persistent: a tile's last stage never released" \
  "        if (lane_in_wg == 0) mbar_arrive(&empty[(it - 1) % STAGES]);  // the tile's last stage" "        // (the last stage kept)"
mutate "persistent: R waited for at the first tile's phase on every tile" \
  "        mbar_wait(residual_full, tile_iter & 1);" "        mbar_wait(residual_full, 0);"
mutate "persistent: the row statistics' slot taken from the block, not the tile" \
  "write_row_stats<typename Elem<FP16>::T>(p, c_tile, r0, r1, row0, row1, t, n_tile);" "write_row_stats<typename Elem<FP16>::T>(p, c_tile, r0, r1, row0, row1, t, (int)blockIdx.x);"
mutate "persistent: the consumers compute each block's first tile only" \
  "    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, tile_iter++) {
        float acc[BN / 2];" "    for (int tile = blockIdx.x; tile < tiles; tile += tiles, tile_iter++) {
        float acc[BN / 2];"
mutations_done
