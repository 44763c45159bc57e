//! cuda/mlm_head.cu: head_act_norm against `reference::ops::{Activation::apply, layer_norm}`.
//!
//! Naive same-precision computations: head: `y = round(x + dense_bias)`, `a = round(act(y))`, then
//! the naive LayerNorm of tests/layernorm.rs. The kernel rounds y and a the same way (the unfused
//! model materialises both in the dtype) and then only the output: ≤ 2x as for LayerNorm.
use kernels_tests::cases::mlm_head::{cases, HeadRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::reference::ops as reference;

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
                let (t, h) = (c.tokens as usize, c.hidden as usize);
                let run = HeadRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch_head(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let act = activation(c.activation);
                let (x, db) = (&run.x, &run.dense_bias);
                let pre: Vec<f32> = (0..t * h)
                    .map(|k| x[k] + if c.dense_bias { db[k % h] } else { 0.0 })
                    .collect();
                let a: Vec<f32> = pre.iter().map(|&y| act.apply(y)).collect();
                let mut want = vec![0f32; t * h];
                let bias = c.norm_bias.then_some(&run.bias[..]);
                reference::layer_norm(&a, &run.weight, bias, 1e-5, &mut want);
                let a_naive: Vec<f32> = pre.iter().map(|&y| round(dt, act.apply(round(dt, y)))).collect();
                let naive = naive_layer_norm(dt, &a_naive, &run.weight, bias, 1e-5);
                f.push(check(&what, &out[..t * h], &naive, &want));
                f.push(check_untouched(&what, &out[t * h..]));
            }
        }
    }
    f.finish();
}
