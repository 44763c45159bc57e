//! cuda/topk.cu: softmax_topk against `reference::heads::softmax_topk` on the same (rounded)
//! logits.
//!
//! The ids must be exactly the host's: the k largest logits in descending order, equal logits
//! lower column first (the cases on a coarse grid make many ties, so the rule decides). The
//! probabilities are computed in fp32 (a max, an exp per column and a block sum) against the
//! host's f64 softmax of the same values: relative error ≤ 1e-4 (fp32's 6e-8 per operation over a
//! 50,368-term sum stays near 1e-6; a wrong max, sum or row is off by orders of magnitude). There
//! is no dtype rounding in the kernel to compare with a naive computation: the logits are read
//! once, exactly, and nothing is rounded to the dtype afterwards. A NaN logit makes every
//! probability of its row NaN (the engine refuses that text); a row of NaNs has no candidate.
use kernels_tests::cases::topk::{cases, TopkRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::reference::heads;

#[test]
fn softmax_topk_matches_the_host_rule() {
    let dev = device();
    let mut rng = Rng::for_test("topk");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!("softmax_topk {dt:?} {c:?} {order}");
                let run = TopkRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let (cols, k) = (c.cols as usize, c.k as usize);
                let (ids, probs) = (run.ids(&*dev), run.probs(&*dev));
                for (r, row) in run.logits.chunks(cols).enumerate() {
                    let (got_ids, got_p) = (&ids[r * k..][..k], &probs[r * k..][..k]);
                    let nan_at = row.iter().position(|v| v.is_nan());
                    if nan_at.is_some() {
                        if row.iter().all(|v| v.is_nan()) && got_ids.iter().any(|&i| i as usize != cols) {
                            f.fail(format!("{what} row {r}: all NaN, yet ids {got_ids:?}"));
                        }
                        if !got_p.iter().all(|p| p.is_nan()) {
                            f.fail(format!("{what} row {r}: a NaN logit, yet probabilities {got_p:?}"));
                        }
                        continue;
                    }
                    let want = heads::softmax_topk(row, k);
                    let want_ids: Vec<u32> = want.iter().map(|&(i, _)| i).collect();
                    if got_ids != want_ids.as_slice() {
                        f.fail(format!("{what} row {r}: ids {got_ids:?}, host {want_ids:?}"));
                        continue;
                    }
                    let worst = got_p
                        .iter()
                        .zip(&want)
                        .map(|(&g, &(_, p))| ((g as f64 - p as f64) / p as f64).abs())
                        .fold(0f64, f64::max);
                    if !(worst <= 1e-4) {
                        f.fail(format!("{what} row {r}: probabilities off by {worst:.2e} (relative)"));
                    }
                }
                if ids[ids.len() - 1] != u32::MAX || !probs[probs.len() - 1].is_nan() {
                    f.fail(format!("{what}: wrote past [rows, k]"));
                }
            }
        }
    }
    f.finish();
}
