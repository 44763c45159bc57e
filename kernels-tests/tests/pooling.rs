//! cuda/pooling.cu against `reference::ops::{pool, truncate_rows, l2_normalize_rows}`.
//!
//! Naive same-precision computation (sentence-transformers on a bf16/fp16 model): the pooled vector
//! is a tensor of the dtype (mean with f32 accumulation, rounded), truncated, and the normalisation
//! `round(x / round(‖x‖))`, upcast to f32 at the end. The kernel keeps everything in fp32 (f32
//! output), so its error is fp32 summation noise, far below the naive dtype roundings: ≤ 2x holds
//! (CLS without normalisation is exact in both: the floor covers it).
use kernels_tests::cases::pooling::{cases, PoolRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
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
                let (h, od, n_seq) = (c.hidden as usize, c.out_dim as usize, c.seqlens.len());
                let run = PoolRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let pooling = if c.pooling == 0 { Pooling::Cls } else { Pooling::Mean };
                let pooled = reference::pool(&run.hidden, h, &run.cu_seqlens, c.key_lens.as_deref(), pooling);
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
