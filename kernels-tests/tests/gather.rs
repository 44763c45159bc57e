//! cuda/gather.cu: gather_rows is a copy, so it must be bit exact: `out[r] == x[rows[r]]`, and the
//! row past the gathered ones stays poisoned.
use kernels_tests::cases::gather::{cases, GatherRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;

#[test]
fn gather_rows_copies_exactly() {
    let dev = device();
    let mut rng = Rng::for_test("gather");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("gather_rows {dt:?} {c:?} {order}");
                let run = GatherRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let (w, n) = (c.width as usize, c.rows.len());
                let out = run.out(&*dev);
                let want: Vec<f32> = c
                    .rows
                    .iter()
                    .flat_map(|&r| run.x[r as usize * w..][..w].iter().copied())
                    .collect();
                let same = out[..n * w].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                f.push(if same {
                    Ok(())
                } else {
                    Err(format!("{what}: not a bit-exact gather"))
                });
                f.push(check_untouched(&what, &out[n * w..]));
            }
        }
    }
    f.finish();
}
