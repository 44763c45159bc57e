//! cuda/unpad.cu: unpad and repad are pure copies, so the rule here is stronger than the tolerance
//! rule: bit-for-bit equality with the copy done on the host (the naive computation is exact too).
//! repad must write every padded element (zeros past each sequence and past the batch); unpad must
//! leave packed rows past the batch untouched.
use kernels_tests::cases::unpad::{cases, PadRun};
use kernels_tests::cases::Inputs;
use kernels_tests::*;

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
                let t = c.tokens();
                let (s, l, w) = (c.max_sequences as usize, c.padded_len as usize, c.width as usize);
                let run = PadRun::new(&*dev, &c, &mut Inputs::drawn(&mut rng, dt));
                let padded = &run.padded;
                if let Err(e) = run.launch_unpad(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let packed = run.packed(&*dev);
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
                // repad (of the packed rows just written) into a poisoned padded buffer.
                if let Err(e) = run.launch_repad(&*dev) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.repadded(&*dev);
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
