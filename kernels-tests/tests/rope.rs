//! cuda/rope.cu against `reference::ops::rope_qk_inplace` (positions from cu_seqlens).
//!
//! Naive same-precision computation (transformers' ModernBERT on bf16/fp16): cos and sin computed
//! in f32 and cast to the dtype, then `round(round(x·cos) + round(rotate_half(x)·sin))`. The kernel
//! keeps cos, sin and the rotation in fp32 and rounds once: ½ ulp of the output plus fp32 angle
//! noise (≤ pos · ulp(inv_freq) ≈ 5e-4 rad at 8192, below the dtype's ½ ulp relative rounding of
//! cos/sin that the naive computation pays on top of the same final rounding): ≤ 2x holds.
use kernels_tests::cases::rope::{cases, RopeRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;
use modernbert::kernels::{ops, params::RopeParams};
use modernbert::reference::ops as reference;

#[test]
fn rope_matches_reference() {
    let dev = device();
    let mut rng = Rng::for_test("rope");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!(
                    "rope {dt:?} {:?} heads {} d {} theta {} {order}",
                    c.seqlens, c.heads, c.head_dim, c.theta
                );
                let (t, row) = (c.tokens(), c.row());
                let (h, d) = (c.heads as usize, c.head_dim as usize);
                let run = RopeRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                if let Err(e) = run.launch(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let got = run.out(&*dev);
                let (qkv, cu) = (&run.qkv, &run.cu_seqlens);
                let pos = reference::positions_from_cu_seqlens(cu);
                let mut want = qkv[..t * row].to_vec();
                reference::rope_qk_inplace(&mut want, &pos, h, d, c.theta);
                // Naive: dtype cos/sin tables and rounded products.
                let inv = reference::rope_inv_freq(c.theta, d);
                let mut naive = qkv[..t * row].to_vec();
                let half = d / 2;
                for (tok, r) in naive.chunks_mut(row).enumerate() {
                    for head in r[..2 * h * d].chunks_mut(d) {
                        for j in 0..half {
                            let a = pos[tok] as f32 * inv[j];
                            let (cs, sn) = (round(dt, a.cos()), round(dt, a.sin()));
                            let (x0, x1) = (head[j], head[j + half]);
                            head[j] = round(dt, round(dt, x0 * cs) + round(dt, -x1 * sn));
                            head[j + half] = round(dt, round(dt, x1 * cs) + round(dt, x0 * sn));
                        }
                    }
                }
                f.push(check(&what, &got[..t * row], &naive, &want));
                // V untouched bit for bit; rows past the batch untouched.
                for tok in 0..t {
                    if got[tok * row + 2 * h * d..(tok + 1) * row] != qkv[tok * row + 2 * h * d..(tok + 1) * row] {
                        f.fail(format!("{what}: V of token {tok} changed"));
                        break;
                    }
                }
                f.push(check_untouched(&what, &got[t * row..]));
            }
        }
    }
    f.finish();
}

/// head_dim above what the shared angle table holds (and odd head_dims) are refused before any launch.
#[test]
fn rope_rejects_unsupported_head_dims() {
    let dev = device();
    for head_dim in [params::MB_ROPE_MAX_HEAD_DIM + 2, 7, 0] {
        let p = RopeParams {
            qkv: 256,
            cu_seqlens: 256,
            batch: 256,
            max_tokens: 4,
            heads: 1,
            head_dim,
            theta: 10_000.0,
        };
        let err = ops::rope(&*dev, Dtype::Bf16, &p).unwrap_err().to_string();
        assert!(err.contains("head_dim"), "head_dim {head_dim}: {err}");
    }
}
