//! cuda/layernorm.cu against `reference::ops::{add_inplace, layer_norm}`.
//!
//! Naive same-precision computation (what PyTorch does with bf16/fp16 tensors, op by op): the sum
//! `x = round(residual + delta)`; `mean = round(Σx / H)`; `xc = round(x − mean)`;
//! `var = round(Σ xc² / H)`; `rstd = round(1/sqrt(var + eps))`; `y = round(round(xc·rstd)·w) (+ b,
//! rounded)` — every tensor rounded to the dtype, the reductions accumulated in f32. Its error is at
//! least the output rounding (½ ulp of |y|) plus the rounded statistics' share. The kernel rounds the
//! same sum `x` (it is stored back) and then only the output: its error is ½ ulp plus f32 noise, so
//! ≤ 2x the naive one.
use kernels_tests::cases::layernorm::{cases, LayerNormCase};
use kernels_tests::*;
use modernbert::kernels::{ops, params::LayerNormParams};
use modernbert::reference::ops as reference;

fn run_case(dev: &dyn Device, dt: Dtype, c: &LayerNormCase, rng: &mut Rng, f: &mut Failures, order: &str) {
    let (t, cap, h) = (c.tokens as usize, c.capacity as usize, c.hidden as usize);
    let what = format!("layernorm {dt:?} {c:?} {order}");
    let eps = 1e-5;
    let mut res = rng.normal_vec(dt, cap * h, 0.5, 2.0);
    let delta = rng.normal_vec(dt, cap * h, 0.0, 1.0);
    let w = rng.normal_vec(dt, h, 1.0, 0.3);
    let b = rng.normal_vec(dt, h, 0.0, 0.5);
    let d_res = upload(dev, dt, &res, "residual");
    let d_delta = upload(dev, dt, &delta, "delta");
    let d_w = upload(dev, dt, &w, "weight");
    let d_b = upload(dev, dt, &b, "bias");
    let d_out = poisoned(dev, cap * h * 2, "out");
    let d_batch = upload_batch(dev, c.tokens, 1, c.tokens);
    let p = LayerNormParams {
        residual: d_res.addr(),
        delta: if c.residual { d_delta.addr() } else { 0 },
        weight: d_w.addr(),
        bias: if c.bias { d_b.addr() } else { 0 },
        out: d_out.addr(),
        batch: d_batch.addr(),
        max_tokens: c.capacity,
        hidden: c.hidden,
        eps,
        _pad0: 0,
    };
    if let Err(e) = ops::layernorm(dev, dt, &p) {
        return f.fail(format!("{what}: {e}"));
    }
    let out = download(dev, dt, &d_out);
    let res_out = download(dev, dt, &d_res);
    // Reference in f32 on the rows in use.
    let mut x = res[..t * h].to_vec();
    if c.residual {
        reference::add_inplace(&mut x, &delta[..t * h]);
    }
    let mut want = vec![0f32; t * h];
    let bias = c.bias.then_some(&b[..]);
    reference::layer_norm(&x, &w, bias, eps, &mut want);
    // The naive computation starts from the rounded sum, as a bf16 residual stream would.
    let xr = round_vec(dt, &x);
    let nv = naive_layer_norm(dt, &xr, &w, bias, eps);
    f.push(check(&what, &out[..t * h], &nv, &want));
    f.push(check_untouched(&format!("{what} out"), &out[t * h..]));
    if c.residual {
        // The residual stream now holds the rounded sum (rows in use) and is untouched past them.
        if res_out[..t * h] != xr[..] {
            f.fail(format!(
                "{what}: residual += delta not stored as round(residual + delta)"
            ));
        }
        res.truncate(t * h);
    }
    if res_out[t * h..]
        != res[t * h..]
            .iter()
            .copied()
            .chain(std::iter::empty())
            .collect::<Vec<_>>()[..]
        && !c.residual
    {
        f.fail(format!("{what}: residual modified without delta"));
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
        hidden: 8200,
        max_tokens: 1,
        ..Default::default()
    };
    assert!(matches!(
        ops::layernorm(&*dev, Dtype::Bf16, &p),
        Err(KernelError::Unsupported { .. })
    ));
}
