//! cuda/embeddings.cu against `reference::ops::{embedding_gather, layer_norm}`.
//!
//! Naive same-precision computation: the gathered rows are exact; then LayerNorm as in
//! tests/layernorm.rs (every tensor rounded to the dtype, f32 reductions). The kernel rounds only
//! the output: ≤ 2x holds for the reason given there.
use kernels_tests::cases::embeddings::cases;
use kernels_tests::*;
use modernbert::kernels::{ops, params::EmbeddingLayerNormParams};
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
                let (t, cap, h, v) = (
                    c.tokens as usize,
                    c.capacity as usize,
                    c.hidden as usize,
                    c.vocab as usize,
                );
                let table = rng.normal_vec(dt, v * h, 0.0, 1.0);
                let w = rng.normal_vec(dt, h, 1.0, 0.2);
                let b = rng.normal_vec(dt, h, 0.0, 0.2);
                let mut ids: Vec<u32> = (0..cap).map(|_| rng.below(c.vocab)).collect();
                ids[t / 2] = c.vocab + 5; // out of range: reads row 0
                let d_ids = upload_u32(&*dev, &ids, "ids");
                let d_table = upload(&*dev, dt, &table, "table");
                let d_w = upload(&*dev, dt, &w, "weight");
                let d_b = upload(&*dev, dt, &b, "bias");
                let d_out = poisoned(&*dev, cap * h * 2, "out");
                let d_batch = upload_batch(&*dev, c.tokens, 1, c.tokens);
                let p = EmbeddingLayerNormParams {
                    ids: d_ids.addr(),
                    table: d_table.addr(),
                    weight: d_w.addr(),
                    bias: if c.bias { d_b.addr() } else { 0 },
                    out: d_out.addr(),
                    batch: d_batch.addr(),
                    max_tokens: c.capacity,
                    hidden: c.hidden,
                    vocab: c.vocab,
                    eps: 1e-5,
                };
                if let Err(e) = ops::embeddings(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = download(&*dev, dt, &d_out);
                let clamped: Vec<u32> = ids[..t].iter().map(|&i| if i >= c.vocab { 0 } else { i }).collect();
                let mut x = vec![0f32; t * h];
                reference::embedding_gather(&table, h, &clamped, &mut x);
                let mut want = vec![0f32; t * h];
                let bias = c.bias.then_some(&b[..]);
                reference::layer_norm(&x, &w, bias, 1e-5, &mut want);
                f.push(check(
                    &what,
                    &out[..t * h],
                    &naive_layer_norm(dt, &x, &w, bias, 1e-5),
                    &want,
                ));
                f.push(check_untouched(&what, &out[t * h..]));
            }
        }
    }
    f.finish();
}
