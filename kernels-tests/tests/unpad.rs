//! cuda/unpad.cu: unpad and repad are pure copies, so the rule here is stronger than the tolerance
//! rule: bit-for-bit equality with the copy done on the host (the naive computation is exact too).
//! repad must write every padded element (zeros past each sequence and past the batch); unpad must
//! leave packed rows past the batch untouched.
use kernels_tests::cases::cu_seqlens;
use kernels_tests::cases::unpad::cases;
use kernels_tests::*;
use modernbert::kernels::{ops, params::PadParams};

#[test]
fn unpad_and_repad_are_exact() {
    let dev = device();
    let mut rng = Rng::for_test("unpad");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for c in cases() {
            for dt in DTYPES {
                let what = format!(
                    "unpad/repad {dt:?} {:?} cap {}x{} width {} {order}",
                    c.seqlens, c.max_sequences, c.padded_len, c.width
                );
                let cu = cu_seqlens(&c.seqlens);
                let t = *cu.last().unwrap() as usize;
                let (s, l, w) = (c.max_sequences as usize, c.padded_len as usize, c.width as usize);
                let padded = rng.normal_vec(dt, s * l * w, 0.0, 1.0);
                let d_padded = upload(&*dev, dt, &padded, "padded");
                let extra = 3; // packed rows past the batch
                let d_packed = poisoned(&*dev, (t + extra) * w * 2, "packed");
                let d_cu = upload_u32(&*dev, &cu, "cu_seqlens");
                let d_batch = upload_batch(
                    &*dev,
                    t as u32,
                    c.seqlens.len() as u32,
                    *c.seqlens.iter().max().unwrap(),
                );
                let mut p = PadParams {
                    padded: d_padded.addr(),
                    packed: d_packed.addr(),
                    cu_seqlens: d_cu.addr(),
                    batch: d_batch.addr(),
                    max_sequences: c.max_sequences,
                    padded_len: c.padded_len,
                    width: c.width,
                    _pad0: 0,
                };
                if let Err(e) = ops::unpad(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let packed = download(&*dev, dt, &d_packed);
                let mut want = Vec::with_capacity(t * w);
                for (b, &len) in c.seqlens.iter().enumerate() {
                    for i in 0..len as usize {
                        want.extend_from_slice(&padded[(b * l + i) * w..][..w]);
                    }
                }
                if packed[..t * w] != want[..] {
                    f.fail(format!(
                        "{what}: unpad differs at {:?}",
                        packed.iter().zip(&want).position(|(a, b)| a != b)
                    ));
                }
                f.push(check_untouched(&format!("{what} unpad"), &packed[t * w..]));
                // repad into a poisoned padded buffer.
                let d_out = poisoned(&*dev, s * l * w * 2, "repadded");
                p.padded = d_out.addr();
                if let Err(e) = ops::repad(&*dev, dt, &p) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = download(&*dev, dt, &d_out);
                let mut want = vec![0f32; s * l * w];
                for (b, &len) in c.seqlens.iter().enumerate() {
                    for i in 0..len as usize {
                        want[(b * l + i) * w..][..w].copy_from_slice(&padded[(b * l + i) * w..][..w]);
                    }
                }
                if let Some(i) = first_nan(&out) {
                    f.fail(format!("{what}: repad left element {i} unwritten"));
                } else if out != want {
                    f.fail(format!(
                        "{what}: repad differs at {:?}",
                        out.iter().zip(&want).position(|(a, b)| a != b)
                    ));
                }
            }
        }
    }
    f.finish();
}
