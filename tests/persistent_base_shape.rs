//! The persistent small-batch forward at the shape it is built for: ModernBERT-base's width and
//! heads. tests/persistent_forward.rs covers orders, dtypes, block counts and batches on a
//! 128-wide fixture (2 heads, 24 Wqkv tiles); this covers what only the real shape has — 12 heads
//! (144 Wqkv tiles, 12 tickets a head), clusters of 4, several tiles a block, x 768 and 1152
//! wide. On the emulator 44 blocks, not an H100's 132: each of a co-scheduled grid's threads has a
//! fiber stack of its own, and 132 blocks of 256 need more memory mappings than a Linux process
//! may have (the emulator refuses such a launch, saying so); on a GPU, the GPU's own grid. A test
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

/// Base-shaped random weights, 2 layers (a global and a local one), on 44 emulated SMs (or a
/// Hopper GPU's own): the persistent forward runs on 44 blocks in clusters of 4 (on a GPU, the
/// grid the driver allows) and equals the per-launch small path bit for bit — one text of 32
/// tokens, two sequences of 30 and 18 (48: one chunk of x) and of 40 and 24 (64: two chunks, the
/// busiest block's 4 Wqkv tiles in two groups); bf16 (forward order), fp16 (reversed).
#[test]
fn at_base_shape_in_clusters_the_persistent_forward_equals_the_per_launch_path() {
    let probe = common::test_device();
    let emulator = probe.as_emulator().is_some();
    if !emulator && probe.compute_capability() < (9, 0) {
        println!(
            "SKIPPED: {} is not sm_90; the persistent forward was not checked",
            probe.name()
        );
        return;
    }
    let config = shape_config(ShapeArg::Base, Some(2)).unwrap();
    let weights = random_weights(&config, 11);
    let (h, v) = (config.hidden_size, config.vocab_size as u32);
    // The arena holds the per-launch small path's 64 tokens: the persistent forward's bound (256)
    // is cut to them, and x at base passes in chunks of 48 rows, so 64 tokens take two.
    assert_eq!(modernbert::gpu::path::persistent_tokens(&config), 256);
    let bound = modernbert::gpu::path::small_batch_tokens(&config) as usize;
    assert_eq!(bound, 64);
    let dyn_dev: Arc<dyn Device> = match emulator {
        true => Arc::new(Emulator::new().with_compute_capability((9, 0)).with_multiprocessors(44)),
        false => probe,
    };
    let texts: [&[usize]; 3] = [&[32], &[30, 18], &[40, 24]];
    for (reverse, dtype) in [(false, Dtype::Bf16), (true, Dtype::F16)] {
        if let Some(emu) = dyn_dev.as_emulator() {
            emu.set_reverse(reverse);
        }
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
        assert_eq!(
            (persistent.persistent_tokens(), persistent.persistent_chunk()),
            (64, 48)
        );
        let grid = persistent.persistent_grid().unwrap();
        if emulator {
            assert_eq!((grid.blocks, grid.cluster), (44, 4));
        } else {
            println!(
                "{}: {} blocks in clusters of {}",
                dyn_dev.name(),
                grid.blocks,
                grid.cluster
            );
        }
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
