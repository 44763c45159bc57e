//! cuda/gemm_sm90.cu: the wgmma + TMA GEMM against the f32 reference, in both thread orders.
//!
//! Naive same-precision computation: the 16-bit inputs, an f32 dot product, the result rounded to
//! the dtype. The kernel accumulates in f32 too (16 products at a time), so its error is the
//! output rounding plus f32 summation-order noise: the rule's 2 x naive holds with room.
//! The GeGLU epilogue (`act(x) * gate` of the f32 accumulators, one rounding) against the f32
//! reference of Wi then GeGLU; its naive computation is today's two-kernel path in the dtype: the
//! GEMM's output rounded, then `round(act(x) * gate)` — the fused kernel skips that intermediate
//! rounding, so it is the more exact of the two.
//! On a GPU without sm_90 the kernel does not exist; the test says so and checks nothing there.
use kernels_tests::cases::gemm_sm90::{cases, geglu_cases, GemmSm90Case, GemmSm90Run};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::kernels::ops::Sm90Epilogue;

fn reference(run: &GemmSm90Run, c: &GemmSm90Case) -> Vec<f32> {
    let (m, n, k) = (c.m as usize, c.n as usize, c.k as usize);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for l in 0..k {
                s += run.a[i * k + l] as f64 * run.b[j * k + l] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
    out
}

fn naive(dt: Dtype, run: &GemmSm90Run, c: &GemmSm90Case) -> Vec<f32> {
    let (m, n, k) = (c.m as usize, c.n as usize, c.k as usize);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for l in 0..k {
                s += run.a[i * k + l] * run.b[j * k + l];
            }
            out[i * n + j] = round(dt, s);
        }
    }
    out
}

#[test]
fn gemm_sm90_matches_the_reference() {
    let dev = device();
    let mut rng = Rng::for_test("gemm_sm90");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("gemm_sm90 {dt:?} {c:?} {order}");
                let run = GemmSm90Run::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
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
                let mn = (c.m * c.n) as usize;
                f.push(check(&what, &out[..mn], &naive(dt, &run, &c), &reference(&run, &c)));
                f.push(check_untouched(&what, &out[mn..]));
            }
        }
    }
    f.finish();
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
    use modernbert::reference::ops as reference;
    let dev = device();
    let mut rng = Rng::for_test("gemm_sm90_geglu");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in geglu_cases() {
            let Sm90Epilogue::Geglu { act } = c.epilogue else {
                unreachable!()
            };
            for dt in DTYPES {
                let what = format!("gemm_sm90_geglu {dt:?} {c:?} {order}");
                let run = GemmSm90Run::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                let launched = run.launch(&*dev).and_then(|_| dev.synchronize());
                if skipped_without_hopper(&*dev, &launched) {
                    return;
                }
                if let Err(e) = launched {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let (m, inter) = (c.m as usize, c.n as usize / 2);
                // Wi in its own row order (the run reordered it for the kernel only).
                let h = reference(&run, &c);
                let h_rounded = round_vec(dt, &h);
                let a = activation(act);
                let mut want = vec![0f32; m * inter];
                let mut naive = vec![0f32; m * inter];
                reference::geglu(&h, inter, a, &mut want);
                reference::geglu(&h_rounded, inter, a, &mut naive);
                let naive = round_vec(dt, &naive);
                let out = run.out(&*dev);
                f.push(check(&what, &out[..m * inter], &naive, &want));
                f.push(check_untouched(&what, &out[m * inter..]));
            }
        }
    }
    f.finish();
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
