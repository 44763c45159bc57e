//! cuda/embeddings.cu against `reference::ops::{embedding_gather, layer_norm}`.
//!
//! Naive same-precision computation: the gathered rows are exact; then LayerNorm as in
//! tests/layernorm.rs (every tensor rounded to the dtype, f32 reductions). The kernel rounds only
//! the output: ≤ 2x holds for the reason given there.
use kernels_tests::cases::embeddings::{cases, EmbeddingRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::reference::ops as reference;

#[test]
fn embeddings_match_reference() {
    let dev = device();
    let mut rng = Rng::for_test("embeddings");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("embeddings {dt:?} {c:?} {order}");
                let (t, h) = (c.tokens as usize, c.hidden as usize);
                let run = EmbeddingRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let clamped: Vec<u32> = run.ids[..t].iter().map(|&i| if i >= c.vocab { 0 } else { i }).collect();
                let mut x = vec![0f32; t * h];
                reference::embedding_gather(&run.table, h, &clamped, &mut x);
                let mut want = vec![0f32; t * h];
                let bias = c.bias.then_some(&run.bias[..]);
                reference::layer_norm(&x, &run.weight, bias, 1e-5, &mut want);
                f.push(check(
                    &what,
                    &out[..t * h],
                    &naive_layer_norm(dt, &x, &run.weight, bias, 1e-5),
                    &want,
                ));
                f.push(check_untouched(&what, &out[t * h..]));
            }
        }
    }
    f.finish();
}
