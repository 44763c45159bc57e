//! cuda/colbert.cu against `reference::ops::l2_normalize_rows`.
//!
//! Naive same-precision computation: `round(x / round(‖x‖))` (the norm a tensor of the dtype, f32
//! accumulation), upcast. The kernel keeps the norm and quotient in fp32 (f32 output): its error is
//! fp32 noise, far below the naive dtype roundings, so ≤ 2x holds.
use kernels_tests::cases::colbert::{cases, ColbertRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
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
                let (r, d) = (c.rows as usize, c.dim as usize);
                let run = ColbertRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                let mut want = run.x[..r * d].to_vec();
                reference::l2_normalize_rows(&mut want, d);
                let mut naive = run.x[..r * d].to_vec();
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
