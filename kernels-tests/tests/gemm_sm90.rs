//! cuda/gemm_sm90.cu: the wgmma + TMA GEMM against the f32 reference, in both thread orders.
//!
//! Naive same-precision computation: the 16-bit inputs, an f32 dot product, the result rounded to
//! the dtype. The kernel accumulates in f32 too (16 products at a time), so its error is the
//! output rounding plus f32 summation-order noise: the rule's 2 x naive holds with room.
//! On a GPU without sm_90 the kernel does not exist; the test says so and checks nothing there.
use kernels_tests::cases::gemm_sm90::{cases, GemmSm90Case, GemmSm90Run};
use kernels_tests::cases::Inputs;
use kernels_tests::*;

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

/// The kernel exists on this device (the emulator, or a GPU of compute capability 9.0).
pub fn hopper_available(dev: &dyn Device, probe: Result<(), KernelError>) -> bool {
    match probe {
        Err(KernelError::UnknownKernel(k)) if dev.as_emulator().is_none() => {
            eprintln!(
                "SKIPPED on {}: `{k}` is sm_90a code and this GPU is not compute capability 9.0",
                dev.name()
            );
            false
        }
        _ => true,
    }
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
                if !hopper_available(&*dev, launched.as_ref().map(|_| ()).map_err(clone_err)) {
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

fn clone_err(e: &KernelError) -> KernelError {
    match e {
        KernelError::UnknownKernel(k) => KernelError::UnknownKernel(k.clone()),
        other => KernelError::Cuda(other.to_string()),
    }
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
