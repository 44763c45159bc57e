//! cuda/handoff_sm90.cu on the emulator: each way of handing one step to the next keeps every
//! step's dependency (after S steps every value is S), in both thread orders — the plain launches
//! by stream order, the dependent ones by griddepcontrol.wait (the emulator lets a dependent run
//! as early as PDL allows), the persistent kernel by its grid barrier (co-scheduled blocks taking
//! turns). The times are the binary's (src/bin/handoff.rs), on a GPU only. Mutations killed: no
//! griddepcontrol.wait, no grid barrier, the barrier a step behind. One the emulator cannot see:
//! a flag raised before its value is written — it runs a block until the block waits, so no other
//! block runs between the two stores (on a GPU, st.release is what orders them).
use kernels_tests::handoff::{Handoff, HandoffRun};
use kernels_tests::*;

#[test]
fn every_handoff_keeps_the_steps_in_order() {
    let dev = device();
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for way in Handoff::ALL {
            for (steps, blocks) in [(1, 1), (6, 5), (4, 40)] {
                let what = format!("{} steps {steps} blocks {blocks} {order}", way.name());
                let run = HandoffRun::new(&*dev, way, steps, blocks).expect("buffers");
                let launched = run.launch(&*dev).and_then(|_| dev.synchronize());
                if skipped_without_hopper(&*dev, &launched) {
                    return;
                }
                match launched {
                    Err(e) => f.fail(format!("{what}: {e}")),
                    Ok(()) => f.push(run.check(&*dev).map_err(|e| format!("{what}: {e}"))),
                }
            }
        }
    }
    f.finish();
}

/// A run can be reset and repeated (the binary times several on the same buffers).
#[test]
fn a_handoff_run_repeats_after_a_reset() {
    let dev = device();
    let mut run = HandoffRun::new(&*dev, Handoff::Persistent, 3, 4).expect("buffers");
    for _ in 0..2 {
        run.reset(&*dev).unwrap();
        let launched = run.launch(&*dev).and_then(|_| dev.synchronize());
        if skipped_without_hopper(&*dev, &launched) {
            return;
        }
        launched.unwrap();
        run.check(&*dev).unwrap();
    }
}
