//! cuda/mlm_head.cu: head_act_norm against `reference::ops::{Activation::apply, layer_norm}`, and
//! bias_add (fp32 logits) against the f32 sum.
//!
//! Naive same-precision computations: head: `y = round(x + dense_bias)`, `a = round(act(y))`, then
//! the naive LayerNorm of tests/layernorm.rs. The kernel rounds y and a the same way (the unfused
//! model materialises both in the dtype) and then only the output: ≤ 2x as for LayerNorm.
//! bias_add: PyTorch adds in the dtype, `round(x + b)`, then upcasts; the kernel adds in fp32
//! (exact for two dtype values up to one f32 rounding): far below, ≤ 2x holds.
use kernels_tests::cases::mlm_head::cases;
use kernels_tests::*;
use modernbert::kernels::{
    ops,
    params::{BiasAddParams, HeadActNormParams},
};
use modernbert::reference::ops::{self as reference, Activation};

#[test]
fn mlm_head_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("mlm_head");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("head_act_norm {dt:?} {c:?} {order}");
                let (t, cap, h, v) = (
                    c.tokens as usize,
                    c.capacity as usize,
                    c.hidden as usize,
                    c.vocab as usize,
                );
                let x = rng.normal_vec(dt, cap * h, 0.0, 1.5);
                let db = rng.normal_vec(dt, h, 0.0, 0.5);
                let w = rng.normal_vec(dt, h, 1.0, 0.2);
                let b = rng.normal_vec(dt, h, 0.0, 0.2);
                let d_x = upload(&*dev, dt, &x, "x");
                let d_db = upload(&*dev, dt, &db, "dense_bias");
                let d_w = upload(&*dev, dt, &w, "weight");
                let d_b = upload(&*dev, dt, &b, "bias");
                let d_out = poisoned(&*dev, cap * h * 2, "out");
                let d_batch = upload_batch(&*dev, c.tokens, 1, c.tokens);
                let p = HeadActNormParams {
                    x: d_x.addr(),
                    dense_bias: if c.dense_bias { d_db.addr() } else { 0 },
                    weight: d_w.addr(),
                    bias: if c.norm_bias { d_b.addr() } else { 0 },
                    out: d_out.addr(),
                    batch: d_batch.addr(),
                    max_tokens: c.capacity,
                    hidden: c.hidden,
                    activation: c.activation,
                    eps: 1e-5,
                };
                if let Err(e) = ops::head_act_norm(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = download(&*dev, dt, &d_out);
                let act = if c.activation == 0 {
                    Activation::GeluErf
                } else {
                    Activation::GeluTanh
                };
                let pre: Vec<f32> = (0..t * h)
                    .map(|k| x[k] + if c.dense_bias { db[k % h] } else { 0.0 })
                    .collect();
                let a: Vec<f32> = pre.iter().map(|&y| act.apply(y)).collect();
                let mut want = vec![0f32; t * h];
                let bias = c.norm_bias.then_some(&b[..]);
                reference::layer_norm(&a, &w, bias, 1e-5, &mut want);
                let a_naive: Vec<f32> = pre.iter().map(|&y| round(dt, act.apply(round(dt, y)))).collect();
                let naive = naive_layer_norm(dt, &a_naive, &w, bias, 1e-5);
                f.push(check(&what, &out[..t * h], &naive, &want));
                f.push(check_untouched(&what, &out[t * h..]));

                // bias_add over [tokens, vocab].
                let what = format!("bias_add {dt:?} {c:?} {order}");
                let logits_in = rng.normal_vec(dt, cap * v, 0.0, 3.0);
                let vb = rng.normal_vec(dt, v, 0.0, 1.0);
                let d_in = upload(&*dev, dt, &logits_in, "logits_in");
                let d_vb = upload(&*dev, dt, &vb, "decoder_bias");
                let d_logits = poisoned(&*dev, cap * v * 4, "logits");
                let p = BiasAddParams {
                    x: d_in.addr(),
                    bias: d_vb.addr(),
                    out: d_logits.addr(),
                    batch: d_batch.addr(),
                    max_rows: c.capacity,
                    cols: c.vocab,
                };
                if let Err(e) = ops::bias_add(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let got = download_f32(&*dev, &d_logits);
                let want: Vec<f32> = (0..t * v).map(|k| logits_in[k] + vb[k % v]).collect();
                let naive: Vec<f32> = want.iter().map(|&s| round(dt, s)).collect();
                f.push(check(&what, &got[..t * v], &naive, &want));
                f.push(check_untouched(&what, &got[t * v..]));
            }
        }
    }
    f.finish();
}
