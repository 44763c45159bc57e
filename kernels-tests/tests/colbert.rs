//! cuda/colbert.cu against `reference::ops::l2_normalize_rows`.
//!
//! Naive same-precision computation: `round(x / round(‖x‖))` (the norm a tensor of the dtype, f32
//! accumulation), upcast. The kernel keeps the norm and quotient in fp32 (f32 output): its error is
//! fp32 noise, far below the naive dtype roundings, so ≤ 2x holds.
use kernels_tests::cases::colbert::cases;
use kernels_tests::*;
use modernbert::kernels::{ops, params::RowNormalizeParams};
use modernbert::reference::ops as reference;

#[test]
fn colbert_normalize_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("colbert");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("colbert {dt:?} {c:?} {order}");
                let (r, cap, d) = (c.rows as usize, c.capacity as usize, c.dim as usize);
                let x = rng.normal_vec(dt, cap * d, 0.0, 1.0);
                let d_x = upload(&*dev, dt, &x, "x");
                let d_out = poisoned(&*dev, cap * d * 4, "out");
                let d_batch = upload_batch(&*dev, c.rows, 1, c.rows);
                let p = RowNormalizeParams {
                    x: d_x.addr(),
                    out: d_out.addr(),
                    batch: d_batch.addr(),
                    max_rows: c.capacity,
                    dim: c.dim,
                };
                if let Err(e) = ops::colbert_normalize(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = download_f32(&*dev, &d_out);
                let mut want = x[..r * d].to_vec();
                reference::l2_normalize_rows(&mut want, d);
                let mut naive = x[..r * d].to_vec();
                for row in naive.chunks_mut(d) {
                    let norm = round(dt, row.iter().map(|v| v * v).sum::<f32>().sqrt()).max(1e-12);
                    row.iter_mut().for_each(|v| *v = round(dt, *v / norm));
                }
                f.push(check(&what, &out[..r * d], &naive, &want));
                f.push(check_untouched(&what, &out[r * d..]));
            }
        }
    }
    f.finish();
}
