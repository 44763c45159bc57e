//! cuda/pooling.cu against `reference::ops::{pool, truncate_rows, l2_normalize_rows}`.
//!
//! Naive same-precision computation (sentence-transformers on a bf16/fp16 model): the pooled vector
//! is a tensor of the dtype (mean with f32 accumulation, rounded), truncated, and the normalisation
//! `round(x / round(‖x‖))`, upcast to f32 at the end. The kernel keeps everything in fp32 (f32
//! output), so its error is fp32 summation noise, far below the naive dtype roundings: ≤ 2x holds
//! (CLS without normalisation is exact in both: the floor covers it).
use kernels_tests::cases::cu_seqlens;
use kernels_tests::cases::pooling::cases;
use kernels_tests::*;
use modernbert::kernels::{ops, params::PoolParams};
use modernbert::reference::ops::{self as reference, Pooling};

#[test]
fn pooling_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("pooling");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("pool {dt:?} {c:?} {order}");
                let cu = cu_seqlens(&c.seqlens);
                let t = *cu.last().unwrap() as usize;
                let (h, od, ms) = (c.hidden as usize, c.out_dim as usize, c.max_sequences as usize);
                let n_seq = c.seqlens.len();
                let hidden = rng.normal_vec(dt, t * h, 0.3, 1.0);
                let d_hidden = upload(&*dev, dt, &hidden, "hidden");
                let d_out = poisoned(&*dev, ms * od * 4, "out");
                let d_cu = upload_u32(&*dev, &cu, "cu_seqlens");
                let d_kl = c.key_lens.as_ref().map(|k| upload_u32(&*dev, k, "key_lens"));
                let d_batch = upload_batch(&*dev, t as u32, n_seq as u32, *c.seqlens.iter().max().unwrap());
                let p = PoolParams {
                    hidden: d_hidden.addr(),
                    out: d_out.addr(),
                    cu_seqlens: d_cu.addr(),
                    key_lens: d_kl.as_ref().map_or(0, |b| b.addr()),
                    batch: d_batch.addr(),
                    max_sequences: c.max_sequences,
                    hidden_dim: c.hidden,
                    out_dim: c.out_dim,
                    pooling: c.pooling,
                    normalize: c.normalize as u32,
                    _pad0: 0,
                };
                if let Err(e) = ops::pool(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = download_f32(&*dev, &d_out);
                let pooling = if c.pooling == 0 { Pooling::Cls } else { Pooling::Mean };
                let pooled = reference::pool(&hidden, h, &cu, c.key_lens.as_deref(), pooling);
                let mut want = reference::truncate_rows(&pooled, h, od);
                let mut naive = round_vec(dt, &want);
                if c.normalize {
                    reference::l2_normalize_rows(&mut want, od);
                    for row in naive.chunks_mut(od) {
                        let norm = round(dt, row.iter().map(|v| v * v).sum::<f32>().sqrt()).max(1e-12);
                        row.iter_mut().for_each(|v| *v = round(dt, *v / norm));
                    }
                }
                f.push(check(&what, &out[..n_seq * od], &naive, &want));
                f.push(check_untouched(&what, &out[n_seq * od..]));
            }
        }
    }
    f.finish();
}
