//! cuda/gemm_sm90.cu: the wgmma + TMA GEMM against the f32 reference, in both thread orders.
//!
//! Naive same-precision computation: the 16-bit inputs, an f32 dot product, the result rounded to
//! the dtype. The kernel accumulates in f32 too (16 products at a time), so its error is the
//! output rounding plus f32 summation-order noise: the rule's 2 x naive holds with room.
//! The GeGLU epilogue (`act(x) * gate` of the f32 accumulators, one rounding) against the f32
//! reference of Wi then GeGLU; its naive computation is today's two-kernel path in the dtype: the
//! GEMM's output rounded, then `round(act(x) * gate)` — the fused kernel skips that intermediate
//! rounding, so it is the more exact of the two.
//! The RoPE epilogue (Wqkv + RoPE) against the f32 reference of the GEMM then RoPE; naive is
//! today's two kernels (the GEMM's output rounded, rotated in f32, rounded again). The residual
//! epilogue (Wo, Wo2) against `r + a · bᵀ` in f32; naive rounds the product before the add, as
//! the GEMM then layernorm.cu's `x += delta` do today. Both fused epilogues skip that
//! intermediate rounding.
//! On a GPU without sm_90 the kernel does not exist; the test says so and checks nothing there.
use kernels_tests::cases::gemm_sm90::{
    cases, expected, geglu_cases, residual_cases, residual_stats_cases, rope_cases, row_norm_cases, tile_stats,
    GemmSm90Case, GemmSm90Run,
};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::kernels::ops::{GemmSm90, Sm90Epilogue};
use modernbert::kernels::params::MB_GEMM90_ROPE_HEAD_DIM;

#[test]
fn gemm_sm90_matches_the_reference() {
    check_cases("gemm_sm90", cases(), expected);
}

#[test]
fn gemm_sm90_refuses_shapes_it_cannot_tile() {
    let dev = device();
    let mut rng = Rng::for_test("gemm_sm90_shapes");
    let run = GemmSm90Run::new(&*dev, &cases()[0], &mut Inputs::drawn(&mut rng, Dtype::Bf16));
    for (m, n, k) in [(0, 128, 64), (1, 100, 64), (1, 128, 48), (1, 0, 64)] {
        let mut g = run.gemm;
        (g.m, g.n, g.k) = (m, n, k);
        let r = modernbert::kernels::ops::gemm_sm90(&*dev, Dtype::Bf16, &g, false);
        assert!(
            matches!(r, Err(KernelError::Unsupported { .. })),
            "m {m} n {n} k {k}: {r:?}"
        );
    }
    let mut g = run.gemm;
    g.b = 0;
    assert!(modernbert::kernels::ops::gemm_sm90(&*dev, Dtype::Bf16, &g, false).is_err());
}

#[test]
fn gemm_sm90_geglu_matches_wi_then_geglu() {
    check_cases("gemm_sm90_geglu", geglu_cases(), expected);
}

#[test]
fn the_geglu_row_order_pairs_each_column_with_its_gate() {
    let rows = modernbert::kernels::ops::geglu_weight_rows(192);
    assert_eq!(rows.len(), 384);
    let mut seen = rows.clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..384).collect::<Vec<u32>>(), "a permutation of Wi's rows");
    for (r, &src) in rows.iter().enumerate() {
        let (block, within) = (r / 128, r % 128);
        if within < 64 {
            assert_eq!(src as usize, block * 64 + within, "row {r}: the activated half");
        } else {
            assert_eq!(src as usize, 192 + block * 64 + within - 64, "row {r}: its gate");
        }
    }
}

/// Every case of a table, both thread orders, both dtypes: `expect` gives (naive, reference) of
/// the first `m · width` outputs; the extra row must stay poisoned.
fn check_cases(name: &str, table: Vec<GemmSm90Case>, expect: impl Fn(Dtype, &GemmSm90Run) -> (Vec<f32>, Vec<f32>)) {
    check_cases_and(name, table, expect, |_, _, _| Ok(()));
}

/// [`check_cases`], and `also` on each run with its output.
fn check_cases_and(
    name: &str,
    table: Vec<GemmSm90Case>,
    expect: impl Fn(Dtype, &GemmSm90Run) -> (Vec<f32>, Vec<f32>),
    also: impl Fn(&dyn Device, &GemmSm90Run, &[f32]) -> Result<(), String>,
) {
    let dev = device();
    let mut rng = Rng::for_test(name);
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in &table {
            for dt in DTYPES {
                let what = format!("{name} {dt:?} {c:?} {order}");
                let run = GemmSm90Run::new(&*dev, c, &mut Inputs::drawn(&mut rng, dt));
                // Synchronised: the emulator holds a primary's launch until the next operation.
                let launched = run.launch(&*dev).and_then(|_| dev.synchronize());
                if skipped_without_hopper(&*dev, &launched) {
                    return;
                }
                if let Err(e) = launched {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let (naive, want) = expect(dt, &run);
                f.push(check(&what, &out[..want.len()], &naive, &want));
                f.push(check_untouched(&what, &out[want.len()..]));
                f.push(also(&*dev, &run, &out[..want.len()]).map_err(|e| format!("{what}: {e}")));
            }
        }
    }
    f.finish();
}

/// The persistent schedule — a block per multiprocessor, each looping over its tiles with its
/// stage ring, barrier phases and (residual) staging carried from tile to tile — gives exactly
/// the bits of one block a tile, output and row statistics, on every epilogue: 1, 2 and 3 blocks
/// (the emulator's multiprocessors) over 4 to 18 tiles, both thread orders. (On a GPU, its own
/// multiprocessors, one thread order.)
#[test]
fn the_persistent_schedule_gives_the_bits_of_one_block_a_tile() {
    use modernbert::kernels::emu::Emulator;
    use modernbert::kernels::ops::{gemm_sm90_tiles, TileSchedule};
    let env = device();
    let devices: Vec<Box<dyn Device>> = if env.as_emulator().is_some() {
        (1..=3)
            .map(|n| Box::new(Emulator::new().with_multiprocessors(n)) as Box<dyn Device>)
            .collect()
    } else {
        vec![env]
    };
    // Several tiles each: a Store, GeGLU, RoPE (with a row norm), in-place residual with statistics.
    let table = [
        cases()[2],
        geglu_cases()[2],
        row_norm_cases()[4],
        residual_stats_cases()[1],
        residual_stats_cases()[2],
    ];
    let mut f = Failures::default();
    let seed = Rng::for_test("gemm_sm90_persistent").next_u64();
    for dev in &devices {
        for reverse in orders(&**dev) {
            let order = set_order(&**dev, reverse);
            for c in &table {
                assert!(gemm_sm90_tiles(c.m, c.n) >= 4, "{c:?}");
                for dt in DTYPES {
                    let what = format!("{} {dt:?} {c:?} {order}", dev.name());
                    let mut outs = Vec::new();
                    for schedule in [TileSchedule::Persistent, TileSchedule::OnePerTile] {
                        let mut rng = Rng::new(seed);
                        let run = GemmSm90Run::new(&**dev, c, &mut Inputs::drawn(&mut rng, dt));
                        let launched = run.launch_scheduled(&**dev, schedule).and_then(|_| dev.synchronize());
                        if skipped_without_hopper(&**dev, &launched) {
                            return;
                        }
                        match launched {
                            Ok(()) => outs.push((run.out(&**dev), run.stats_out(&**dev))),
                            Err(e) => f.fail(format!("{what} {schedule:?}: {e}")),
                        }
                    }
                    if let [(o1, s1), (o2, s2)] = &outs[..] {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        let same = bits(o1) == bits(o2) && s1.as_deref().map(bits) == s2.as_deref().map(bits);
                        f.push(if same {
                            Ok(())
                        } else {
                            Err(format!("{what}: persistent and one block a tile differ"))
                        });
                    }
                }
            }
        }
    }
    f.finish();
}

#[test]
fn gemm_sm90_rope_matches_wqkv_then_rope() {
    check_cases("gemm_sm90_rope", rope_cases(), expected);
}

#[test]
fn gemm_sm90_residual_matches_r_plus_the_product() {
    check_cases("gemm_sm90_residual", residual_cases(), expected);
}

#[test]
fn gemm_sm90_epilogues_refuse_what_they_cannot_do() {
    use modernbert::kernels::ops::gemm_sm90;
    let dev = device();
    let mut rng = Rng::for_test("gemm_sm90_epilogue_refusals");
    let run = GemmSm90Run::new(&*dev, &rope_cases()[1], &mut Inputs::drawn(&mut rng, Dtype::Bf16));
    let Sm90Epilogue::Rope { cu_seqlens, batch, .. } = run.gemm.epilogue else {
        unreachable!()
    };
    let rope = |theta: f32, head_dim, rotated, cu_seqlens, batch| Sm90Epilogue::Rope {
        theta,
        head_dim,
        rotated,
        cu_seqlens,
        batch,
    };
    let d = MB_GEMM90_ROPE_HEAD_DIM;
    let c = run.gemm.c;
    for (why, epilogue) in [
        ("heads of 128", rope(1e4, 128, 256, cu_seqlens, batch)),
        ("rotated not whole tiles", rope(1e4, d, 64, cu_seqlens, batch)),
        ("rotated past n", rope(1e4, d, run.gemm.n + 128, cu_seqlens, batch)),
        ("theta 0", rope(0.0, d, 256, cu_seqlens, batch)),
        ("theta NaN", rope(f32::NAN, d, 256, cu_seqlens, batch)),
        ("no cu_seqlens", rope(1e4, d, 256, 0, batch)),
        ("no batch", rope(1e4, d, 256, cu_seqlens, 0)),
        ("no residual", Sm90Epilogue::Residual { r: 0, stats: 0 }),
        (
            "a residual overlapping c",
            Sm90Epilogue::Residual { r: c + 256, stats: 0 },
        ),
    ] {
        let g = GemmSm90 { epilogue, ..run.gemm };
        let r = gemm_sm90(&*dev, Dtype::Bf16, &g, false);
        assert!(matches!(r, Err(KernelError::Unsupported { .. })), "{why}: {r:?}");
    }
    // The row norm: whole statistics tiles of K, both buffers, a usable epsilon, and not on the
    // residual epilogue (whose input is no LayerNorm's).
    use modernbert::kernels::ops::RowNorm;
    let norm = |stats, colsum, eps| Some(RowNorm { stats, colsum, eps });
    let (a, b) = (run.gemm.a, run.gemm.b);
    let store = GemmSm90 {
        epilogue: Sm90Epilogue::Store,
        ..run.gemm
    };
    for (why, g) in [
        (
            "k not whole tiles",
            GemmSm90 {
                k: 64,
                norm: norm(a, b, 1e-5),
                ..store
            },
        ),
        (
            "no statistics",
            GemmSm90 {
                norm: norm(0, b, 1e-5),
                ..store
            },
        ),
        (
            "no column sums",
            GemmSm90 {
                norm: norm(a, 0, 1e-5),
                ..store
            },
        ),
        (
            "eps NaN",
            GemmSm90 {
                norm: norm(a, b, f32::NAN),
                ..store
            },
        ),
        (
            "eps negative",
            GemmSm90 {
                norm: norm(a, b, -1.0),
                ..store
            },
        ),
        (
            "on the residual epilogue",
            GemmSm90 {
                epilogue: Sm90Epilogue::Residual { r: c, stats: 0 },
                norm: norm(a, b, 1e-5),
                ..store
            },
        ),
    ] {
        let r = gemm_sm90(&*dev, Dtype::Bf16, &g, false);
        assert!(matches!(r, Err(KernelError::Unsupported { .. })), "{why}: {r:?}");
    }
}

/// The residual epilogue's row statistics: per row and 128-column tile, the mean and the sum of
/// squared deviations of the values it stored, against f64 on those stored values. Rows of means
/// up to 1000 with outlier columns: a one-pass E[x²] − E[x]² in f32 misses m2 by percents there
/// (≈ 2⁻²⁴ · 128 · 1000² against m2 ≈ 128 · 1.3² + outliers); the two-pass tile is within
/// f32 rounding (mean: 128 additions of values ≤ |mean| + 120; m2: terms of the tile's own scale).
#[test]
fn gemm_sm90_residual_writes_row_statistics() {
    check_cases_and(
        "gemm_sm90_residual_stats",
        residual_stats_cases(),
        expected,
        |dev, run, out| {
            let all = run.stats_out(dev).ok_or("no statistics buffer")?;
            let want = tile_stats(out);
            let (got, past) = all.split_at(want.len().min(all.len()));
            if got.len() != want.len() {
                return Err(format!("{} statistics, expected {}", got.len() / 2, want.len() / 2));
            }
            check_untouched("statistics of the row past m", past)?;
            for (i, (g, w)) in got.chunks(2).zip(want.chunks(2)).enumerate() {
                let (row, tile) = (i / (run.case.n as usize / 128), i % (run.case.n as usize / 128));
                let mean_ok = (g[0] - w[0]).abs() <= 1e-5 * w[0].abs().max(1.0);
                let m2_ok = (g[1] - w[1]).abs() <= 1e-4 * w[1] + 1e-3;
                if !(mean_ok && m2_ok) {
                    return Err(format!(
                        "row {row} tile {tile}: (mean, m2) ({}, {}), expected ({}, {})",
                        g[0], g[1], w[0], w[1]
                    ));
                }
            }
            Ok(())
        },
    );
}

/// LayerNorm inside the GEMM: `rstd · (a · bᵀ − mean · colsum)` with the statistics of `a`'s rows
/// (rows of means up to 1000 with outlier columns) against the f64 LayerNorm of `a` times `b`
/// (γ is folded into `b`: here `b` is that folded weight), then the epilogue's own operation.
/// Naive is today's passes: layernorm.cu's f32 two-pass LayerNorm rounded to the dtype, then the
/// GEMM (rounded), then GeGLU or RoPE (rounded). The fused kernel skips the normalised rows'
/// rounding; what it adds is the f32 accumulation of `a · bᵀ` at `a`'s own scale, |mean| / std
/// times the normalised product's, ≈ 2⁻²⁴ · sqrt(k) · 1000 ≈ 2·10⁻³ of an output at most here,
/// under the bf16 rounding (2⁻⁹) the rule's naive carries and near fp16's (2⁻¹²): the large means
/// are where a cancellation would show.
#[test]
fn gemm_sm90_normalises_rows_as_layernorm_then_the_gemm() {
    check_cases("gemm_sm90_row_norm", row_norm_cases(), expected);
}
