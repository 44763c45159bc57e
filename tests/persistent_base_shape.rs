//! The persistent small-batch forward at the shape it is built for: ModernBERT-base's width and
//! heads on an H100's count of blocks. tests/persistent_forward.rs covers orders, dtypes, block
//! counts and batches on a 128-wide fixture (2 heads, 24 Wqkv tiles); this covers what only the
//! real shape has — 12 heads (144 Wqkv tiles, 12 tickets a head), clusters of 4, several tiles a
//! block, x 768 and 1152 wide. 44 blocks, not an H100's 132: the emulator gives each of a
//! co-scheduled grid's threads a fiber stack of its own, and 132 blocks of 256 need more memory
//! mappings than a Linux process may have (the emulator refuses such a launch, saying so). A test
//! binary of its own (see persistent_forward.rs: the per-launch path's nested dependents and their
//! stacks).
mod common;

use std::sync::Arc;

use common::{first_bit_difference, random_batch};
use modernbert::bench::{random_weights, shape_config, ShapeArg};
use modernbert::gpu::{GpuExecutor, GpuPathChoice};
use modernbert::kernels::device::Device;
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::Dtype;

/// Base-shaped random weights, 2 layers (a global and a local one), on 44 emulated SMs: the
/// persistent forward runs on 44 blocks in clusters of 4 and equals the per-launch small path bit
/// for bit — one text of 32 tokens, and two sequences of 30 and 18 (48: the bound), each in one
/// thread order (bf16 forward, fp16 reversed).
#[test]
fn at_base_shape_in_clusters_of_4_the_persistent_forward_equals_the_per_launch_path() {
    let probe = common::test_device();
    if probe.as_emulator().is_none() {
        println!(
            "SKIPPED: {} is not the emulator; on a GPU tests/persistent_forward.rs runs on its own grid",
            probe.name()
        );
        return;
    }
    let config = shape_config(ShapeArg::Base, Some(2)).unwrap();
    let weights = random_weights(&config, 11);
    let (h, v) = (config.hidden_size, config.vocab_size as u32);
    let bound = modernbert::gpu::path::persistent_tokens(&config) as usize;
    assert_eq!(bound, 48);
    let dev = Arc::new(Emulator::new().with_compute_capability((9, 0)).with_multiprocessors(44));
    let texts: [&[usize]; 2] = [&[32], &[30, 18]];
    for (reverse, dtype) in [(false, Dtype::Bf16), (true, Dtype::F16)] {
        dev.set_reverse(reverse);
        let dyn_dev: Arc<dyn Device> = dev.clone();
        let exec = || {
            GpuExecutor::on_path(
                dyn_dev.clone(),
                dtype,
                &config,
                &weights,
                bound,
                4,
                GpuPathChoice::Hopper,
            )
            .unwrap()
        };
        let (persistent, per_launch) = (exec(), exec().without_persistent());
        let grid = persistent.persistent_grid().unwrap();
        assert_eq!((grid.blocks, grid.cluster), (44, 4));
        for (t, lens) in texts.iter().enumerate() {
            let batch = random_batch(lens, 31 + 10 * t as u64, v);
            let run = |e: &GpuExecutor| {
                let mut got = vec![f32::NAN; batch.tokens() * h];
                e.forward_into(&batch, &mut got).unwrap();
                got
            };
            let (want, got) = (run(&per_launch), run(&persistent));
            if let Some(i) = first_bit_difference(&got, &want) {
                panic!(
                    "{dtype:?}, reverse {reverse}, {lens:?}: token {} dim {} is {} (per-launch {})",
                    i / h,
                    i % h,
                    got[i],
                    want[i]
                );
            }
        }
    }
}
