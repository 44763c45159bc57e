//! cuda/geglu.cu against `reference::ops::geglu`.
//!
//! Naive same-precision computation (PyTorch on bf16/fp16 tensors): `round(round(act(a)) * g)` —
//! the activation's output is a tensor of the dtype, then the product. The kernel computes
//! `act(a) * g` in fp32 and rounds once, so its error is ≤ ½ ulp of the output plus fp32 noise,
//! while the naive one has that same final rounding plus the rounded activation: ≤ 2x holds.
use kernels_tests::cases::geglu::{cases, GegluRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::reference::ops as reference;

#[test]
fn geglu_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("geglu");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("geglu {dt:?} {c:?} {order}");
                let (t, i) = (c.tokens as usize, c.inter as usize);
                let run = GegluRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let h = &run.h;
                let act = activation(c.activation);
                let mut want = vec![0f32; t * i];
                reference::geglu(&h[..t * 2 * i], i, act, &mut want);
                let naive: Vec<f32> = (0..t * i)
                    .map(|k| {
                        let (row, j) = (k / i, k % i);
                        round(dt, round(dt, act.apply(h[row * 2 * i + j])) * h[row * 2 * i + i + j])
                    })
                    .collect();
                f.push(check(&what, &out[..t * i], &naive, &want));
                f.push(check_untouched(&what, &out[t * i..]));
            }
        }
    }
    f.finish();
}
