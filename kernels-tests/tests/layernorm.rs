//! cuda/layernorm.cu against `reference::ops::{add_inplace, layer_norm}`.
//!
//! Naive same-precision computation (what PyTorch does with bf16/fp16 tensors, op by op): the sum
//! `x = round(residual + delta)`; `mean = round(Σx / H)`; `xc = round(x − mean)`;
//! `var = round(Σ xc² / H)`; `rstd = round(1/sqrt(var + eps))`; `y = round(round(xc·rstd)·w) (+ b,
//! rounded)` — every tensor rounded to the dtype, the reductions accumulated in f32. Its error is at
//! least the output rounding (½ ulp of |y|) plus the rounded statistics' share. The kernel rounds the
//! same sum `x` (it is stored back) and then only the output: its error is ½ ulp plus f32 noise, so
//! ≤ 2x the naive one.
use kernels_tests::cases::layernorm::{cases, LayerNormCase, LayerNormRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::kernels::{ops, params::LayerNormParams};
use modernbert::reference::ops as reference;

fn run_case(dev: &dyn Device, dt: Dtype, c: &LayerNormCase, rng: &mut Rng, f: &mut Failures, order: &str) {
    let (t, h) = (c.tokens as usize, c.hidden as usize);
    let what = format!("layernorm {dt:?} {c:?} {order}");
    let run = LayerNormRun::new(dev, c, &mut Inputs::drawn(rng, dt));
    if let Err(e) = run.launch(dev) {
        return f.fail(format!("{what}: {e}"));
    }
    let out = run.out(dev);
    let res_out = run.residual_out(dev);
    let (res, w, b, eps) = (&run.residual, &run.weight, &run.bias, run.params.eps);
    // Reference in f32 on the rows in use.
    let mut x = res[..t * h].to_vec();
    if c.residual {
        reference::add_inplace(&mut x, &run.delta[..t * h]);
    }
    let mut want = vec![0f32; t * h];
    let bias = c.bias.then_some(&b[..]);
    reference::layer_norm(&x, w, bias, eps, &mut want);
    // The naive computation starts from the rounded sum, as a bf16 residual stream would.
    let xr = round_vec(dt, &x);
    let nv = naive_layer_norm(dt, &xr, w, bias, eps);
    f.push(check(&what, &out[..t * h], &nv, &want));
    f.push(check_untouched(&format!("{what} out"), &out[t * h..]));
    if c.residual {
        // The residual stream now holds the rounded sum (rows in use).
        if res_out[..t * h] != xr[..] {
            f.fail(format!(
                "{what}: residual += delta not stored as round(residual + delta)"
            ));
        }
    } else if res_out[..] != res[..] {
        f.fail(format!("{what}: residual modified without delta"));
    }
    // Rows past the batch are untouched either way.
    if res_out[t * h..] != res[t * h..] {
        f.fail(format!("{what}: residual rows past the batch modified"));
    }
}

#[test]
fn layernorm_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("layernorm");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                run_case(&*dev, dt, &c, &mut rng, &mut f, order);
            }
        }
    }
    f.finish();
}

#[test]
fn layernorm_rejects_unsupported_width() {
    let dev = device();
    let p = LayerNormParams {
        hidden: params::MB_MAX_NORM_WIDTH + 8,
        max_tokens: 1,
        ..Default::default()
    };
    assert!(matches!(
        ops::layernorm(&*dev, Dtype::Bf16, &p),
        Err(KernelError::Unsupported { .. })
    ));
}
