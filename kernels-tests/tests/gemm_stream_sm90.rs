//! cuda/gemm_stream_sm90.cu, the small-batch GEMM, on the emulator in both thread orders, bf16 and
//! fp16: the same cases' structure, inputs and expectations as gemm_sm90 (cases::gemm_sm90::
//! expected: f64 products, the epilogue in f32; naive = the unfused path in the dtype), at the row
//! counts of a small batch. The kernel sums 8 warps' f32 partial products of 32-wide chunks, in a
//! fixed order, and rounds once: its error is the output rounding plus f32 summation noise, under
//! the rule's 2 × naive. Also: rows past the batch's tokens are neither read nor written; the
//! activations are read only after griddepcontrol.wait (a dependent launch on the emulator runs
//! before its primary up to that wait); shapes and epilogues it cannot do are refused.
//! On a GPU without sm_90 the kernel does not exist; the test says so and checks nothing there.
use kernels_tests::cases::gemm_sm90::{expected, naive_product, product, GemmSm90Case, GemmSm90Run};
use kernels_tests::cases::gemm_stream::{
    geglu_cases, launch, residual_cases, rope_cases, row_norm_cases, rows_in_use, store_cases,
};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::kernels::gemm_stream::{
    gemm_stream, gemm_stream_geometry, gemm_stream_params, stream_cluster, stream_max_rows, stream_smem_bytes,
};
use modernbert::kernels::ops::{GemmSm90, RowNorm, Sm90Epilogue};
use modernbert::kernels::params::{MB_STREAM_BN, MB_STREAM_CLUSTER, MB_STREAM_MAX_M, MB_STREAM_MAX_SMEM};
use modernbert::kernels::{KernelParam, LaunchAttrs};

/// Every case of a table, both thread orders, both dtypes: the first `rows · width` outputs
/// against [`expected`], the rows after them (to the poisoned row past m) untouched.
fn check_cases(name: &str, table: Vec<GemmSm90Case>) {
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
                let launched = launch(&*dev, &run, 0, false).and_then(|_| dev.synchronize());
                if skipped_without_hopper(&*dev, &launched) {
                    return;
                }
                if let Err(e) = launched {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let (naive, want) = expected(dt, &run);
                let used = rows_in_use(c) as usize * run.gemm.out_width() as usize;
                f.push(check(&what, &out[..used], &naive[..used], &want[..used]));
                f.push(check_untouched(&what, &out[used..]));
            }
        }
    }
    f.finish();
}

#[test]
fn gemm_stream_matches_the_reference() {
    check_cases("gemm_stream", store_cases());
}

#[test]
fn gemm_stream_geglu_matches_wi_then_geglu() {
    check_cases("gemm_stream_geglu", geglu_cases());
}

#[test]
fn gemm_stream_rope_matches_wqkv_then_rope() {
    check_cases("gemm_stream_rope", rope_cases());
}

#[test]
fn gemm_stream_residual_matches_r_plus_the_product() {
    check_cases("gemm_stream_residual", residual_cases());
}

/// LayerNorm inside: `rstd · (x · wᵀ − mean · colsum)` with the block's own two-pass statistics of
/// x's rows (means up to 1000, outlier columns) against the f64 LayerNorm then the product.
#[test]
fn gemm_stream_normalises_rows_as_layernorm_then_the_gemm() {
    check_cases("gemm_stream_row_norm", row_norm_cases());
}

/// A launch of capacity 64 whose BatchDesc holds 37 tokens (a CUDA graph's bucket replayed for a
/// smaller batch): rows 37.. are neither computed nor written.
#[test]
fn gemm_stream_computes_only_the_rows_in_use() {
    let dev = device();
    let mut rng = Rng::for_test("gemm_stream_rows_in_use");
    let c = GemmSm90Case {
        m: 64,
        n: 48,
        k: 128,
        epilogue: Sm90Epilogue::Store,
        seqlens: &[],
        in_place: false,
        row_norm: true,
    };
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        let run = GemmSm90Run::new(&*dev, &c, &mut Inputs::drawn(&mut rng, Dtype::Bf16));
        let batch = upload_batch(&*dev, 37, 1, 37);
        let launched = launch(&*dev, &run, batch.addr(), false).and_then(|_| dev.synchronize());
        if skipped_without_hopper(&*dev, &launched) {
            return;
        }
        launched.unwrap();
        let out = run.out(&*dev);
        let (naive, want) = expected(Dtype::Bf16, &run);
        let used = 37 * 48;
        f.push(check(order, &out[..used], &naive[..used], &want[..used]));
        f.push(check_untouched(order, &out[used..]));
    }
    f.finish();
}

/// Two GEMMs in a row, the second a programmatic dependent of the first reading its output: the
/// emulator runs the dependent first, up to its griddepcontrol.wait, so activations read before
/// that wait would be the poisoned buffer's, not the first GEMM's product.
#[test]
fn a_dependent_gemm_stream_reads_its_input_after_the_wait() {
    let dev = device();
    let mut rng = Rng::for_test("gemm_stream_dependent");
    let first = GemmSm90Case {
        m: 24,
        n: 128,
        k: 64,
        epilogue: Sm90Epilogue::Store,
        seqlens: &[],
        in_place: false,
        row_norm: false,
    };
    let second = GemmSm90Case { n: 32, k: 128, ..first };
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for dt in DTYPES {
            let mut inputs = Inputs::drawn(&mut rng, dt);
            let run1 = GemmSm90Run::new(&*dev, &first, &mut inputs);
            let run2 = GemmSm90Run::new(&*dev, &second, &mut inputs);
            // The second reads the first's output (m x 128, its first m rows).
            let g2 = GemmSm90 {
                a: run1.gemm.c,
                ..run2.gemm
            };
            let launched = launch(&*dev, &run1, 0, false)
                .and_then(|_| gemm_stream(&*dev, dt, &g2, 0, true))
                .and_then(|_| dev.synchronize());
            if skipped_without_hopper(&*dev, &launched) {
                return;
            }
            launched.unwrap();
            let y = run1.out(&*dev);
            let y = &y[..(first.m * first.n) as usize];
            let z = run2.out(&*dev);
            let (naive, want) = (naive_product(dt, y, &run2.b, &second), product(y, &run2.b, &second));
            let used = (second.m * second.n) as usize;
            let what = format!("{dt:?} {order}");
            f.push(check(&what, &z[..used], &naive[..used], &want[..used]));
        }
    }
    f.finish();
}

#[test]
fn gemm_stream_refuses_what_it_cannot_do() {
    let dev = device();
    let mut rng = Rng::for_test("gemm_stream_refusals");
    let run = GemmSm90Run::new(&*dev, &rope_cases()[1], &mut Inputs::drawn(&mut rng, Dtype::Bf16));
    let Sm90Epilogue::Rope { cu_seqlens, batch, .. } = run.gemm.epilogue else {
        unreachable!()
    };
    let store = GemmSm90 {
        epilogue: Sm90Epilogue::Store,
        ..run.gemm
    };
    let rope = |theta: f32, head_dim, rotated, cu_seqlens, batch| GemmSm90 {
        epilogue: Sm90Epilogue::Rope {
            theta,
            head_dim,
            rotated,
            cu_seqlens,
            batch,
        },
        ..run.gemm
    };
    let norm = |colsum, eps| Some(RowNorm { stats: 0, colsum, eps });
    let c = run.gemm.c;
    let cases: Vec<(&str, GemmSm90, u64)> = vec![
        ("no rows", GemmSm90 { m: 0, ..store }, 0),
        ("more rows than 64", GemmSm90 { m: 65, ..store }, 0),
        ("n not whole blocks", GemmSm90 { n: 24, ..store }, 0),
        ("k not a multiple of 64", GemmSm90 { k: 96, ..store }, 0),
        ("no weight", GemmSm90 { b: 0, ..store }, 0),
        ("no output", GemmSm90 { c: 0, ..store }, 0),
        ("heads of 128", rope(1e4, 128, 256, cu_seqlens, batch), 0),
        ("rotated not whole heads", rope(1e4, 64, 96, cu_seqlens, batch), 0),
        ("rotated past n", rope(1e4, 64, run.gemm.n + 64, cu_seqlens, batch), 0),
        ("theta NaN", rope(f32::NAN, 64, 256, cu_seqlens, batch), 0),
        ("rope without cu_seqlens", rope(1e4, 64, 256, 0, batch), 0),
        ("rope without its batch", rope(1e4, 64, 256, cu_seqlens, 0), 0),
        (
            "rope with another batch",
            rope(1e4, 64, 256, cu_seqlens, batch),
            batch + 16,
        ),
        (
            "geglu n not whole 128-row blocks",
            GemmSm90 {
                n: 64,
                epilogue: Sm90Epilogue::Geglu { act: 0 },
                ..store
            },
            0,
        ),
        (
            "geglu with an unknown activation",
            GemmSm90 {
                epilogue: Sm90Epilogue::Geglu { act: 9 },
                ..store
            },
            0,
        ),
        (
            "residual without r",
            GemmSm90 {
                epilogue: Sm90Epilogue::Residual { r: 0, stats: 0 },
                ..store
            },
            0,
        ),
        (
            "residual writing statistics",
            GemmSm90 {
                epilogue: Sm90Epilogue::Residual { r: c, stats: c },
                ..store
            },
            0,
        ),
        (
            "residual overlapping c",
            GemmSm90 {
                epilogue: Sm90Epilogue::Residual { r: c + 256, stats: 0 },
                ..store
            },
            0,
        ),
        (
            "norm on the residual",
            GemmSm90 {
                epilogue: Sm90Epilogue::Residual { r: c, stats: 0 },
                norm: norm(c, 1e-5),
                ..store
            },
            0,
        ),
        (
            "norm without colsum",
            GemmSm90 {
                norm: norm(0, 1e-5),
                ..store
            },
            0,
        ),
        (
            "norm eps NaN",
            GemmSm90 {
                norm: norm(c, f32::NAN),
                ..store
            },
            0,
        ),
        (
            "norm eps negative",
            GemmSm90 {
                norm: norm(c, -1.0),
                ..store
            },
            0,
        ),
    ];
    for (why, g, batch) in cases {
        let r = gemm_stream(&*dev, Dtype::Bf16, &g, batch, false);
        assert!(matches!(r, Err(KernelError::Unsupported { .. })), "{why}: {r:?}");
    }
}

/// The shared-memory formula's bounds: base's widest K takes all 64 rows, large's Wo2 (K = 2624)
/// 16, and a K too wide for 16 rows takes none.
#[test]
fn the_stream_rows_fit_shared_memory() {
    for k in [768, 1152, 1024] {
        assert_eq!(stream_max_rows(k), MB_STREAM_MAX_M, "k {k}");
    }
    assert_eq!(stream_max_rows(2624), 16);
    assert!(stream_smem_bytes(16, 2624) <= MB_STREAM_MAX_SMEM);
    assert!(stream_smem_bytes(32, 2624) > MB_STREAM_MAX_SMEM);
    assert_eq!(stream_max_rows(8192), 0);
}

#[test]
fn the_clusters_divide_the_grid_and_the_cases_cover_each_size() {
    // The largest power of two up to MB_STREAM_CLUSTER dividing the grid (n / 16 blocks).
    for (n, want) in [
        (16, 1),
        (48, 1),
        (32, 2),
        (96, 2),
        (64, 4),
        (768, 4),
        (2304, 4),
        (5248, 4),
    ] {
        assert_eq!(stream_cluster(n), want, "n {n}");
    }
    assert_eq!(MB_STREAM_CLUSTER, 4);
    // Every ModernBERT width takes whole clusters of 4: base (768, 1152), large (1024, 2624).
    for (h, i) in [(768u32, 1152u32), (1024, 2624)] {
        for n in [3 * h, h, 2 * i] {
            assert_eq!(stream_cluster(n), MB_STREAM_CLUSTER, "n {n}");
            assert_eq!((n / MB_STREAM_BN) % MB_STREAM_CLUSTER, 0);
        }
    }
    let sizes: std::collections::BTreeSet<u32> = store_cases().iter().map(|c| stream_cluster(c.n)).collect();
    assert_eq!(
        sizes.into_iter().collect::<Vec<_>>(),
        vec![1, 2, 4],
        "the store cases' cluster sizes"
    );
}

#[test]
fn a_launch_in_clusters_other_than_the_params_traps() {
    // The kernel's copies of x follow p.cluster; launched in clusters of another size (or none),
    // it traps before any copy rather than send them to blocks that do not exist.
    let dev = device();
    if is_gpu(&*dev) {
        // A trap takes the GPU context down with it: emulator only.
        eprintln!(
            "SKIPPED on {}: a kernel that traps is tested on the emulator",
            dev.name()
        );
        return;
    }
    let mut rng = Rng::for_test("gemm_stream_cluster_mismatch");
    let c = &store_cases()[4]; // 64 x 768 x 768: clusters of 4
    let run = GemmSm90Run::new(&*dev, c, &mut Inputs::drawn(&mut rng, Dtype::Bf16));
    let p = gemm_stream_params(Dtype::Bf16, &run.gemm, 0).unwrap();
    assert_eq!(p.cluster, 4);
    let (grid, block, smem) = gemm_stream_geometry(&p);
    for cluster in [1, 2] {
        let attrs = LaunchAttrs {
            cluster,
            ..LaunchAttrs::default()
        };
        let launched = dev
            .launch_ex_raw("gemm_stream_sm90_bf16", grid, block, smem, p.as_bytes(), attrs)
            .and_then(|_| dev.synchronize());
        if skipped_without_hopper(&*dev, &launched) {
            return;
        }
        match launched {
            Err(e) => assert!(e.to_string().contains("__trap()"), "clusters of {cluster}: {e}"),
            Ok(()) => panic!("clusters of {cluster} for a kernel told 4: launched without a trap"),
        }
    }
}
