//! The persistent small-batch forward (`cuda/forward_small_sm90.cu`) against the per-launch small
//! path, bit for bit. A test binary of its own: the per-launch path's chain of programmatic
//! dependents nests on the emulator (each dependent runs up to its wait before its primary), and
//! its fibers' stacks, beside another such chain in the same process, can pass the kernel's limit
//! on memory mappings.
mod common;

use std::sync::Arc;

use common::{first_bit_difference, random_batch};
use modernbert::config::ModelConfig;
use modernbert::gpu::{GpuExecutor, GpuPathChoice};
use modernbert::kernels::device::Device;
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::Dtype;
use modernbert::model::Checkpoint;
use modernbert::weights::TensorStore;

/// The persistent small-batch forward (every layer in one co-scheduled launch of
/// `forward_small_sm90`, a grid barrier between steps) computes what the per-launch small path
/// does, bit for bit: the same tile and attention code in another order of blocks. Batches of one
/// to four sequences up to the bound, bf16 and fp16, both thread orders, on 1 to 3 blocks (every
/// block taking several tiles of a step, and the weight slots running across steps; 2 blocks in a
/// cluster, x multicast to both) and on 12 (more blocks than some steps have tiles; clusters of
/// 4); and a second call on the same program (the flags carried over) gives the same bits again.
#[test]
fn the_persistent_forward_equals_the_per_launch_small_path() {
    let dev = common::test_device();
    let dev: Arc<dyn Device> = if dev.as_emulator().is_some() {
        Arc::new(Emulator::new().with_compute_capability((9, 0)))
    } else if dev.compute_capability() < (9, 0) {
        println!(
            "SKIPPED: {} is not sm_90; the persistent forward was not checked",
            dev.name()
        );
        return;
    } else {
        dev
    };
    let dir = common::fixtures_dir().join("mlm_hd64_i128_l3_v5_bf16");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    let (h, v) = (config.hidden_size, config.vocab_size as u32);
    let bound = modernbert::gpu::path::persistent_tokens(&config) as usize;
    assert_eq!(bound, 64, "hidden and intermediate 128: the stream GEMM's bound");
    let texts: [&[usize]; 4] = [&[1], &[31], &[bound], &[29, 1, 17, 9]];
    let emulator = dev.as_emulator().is_some();
    // 12 blocks: more than Wo's and Wo2's 8 tiles, so some blocks have none in those steps.
    let blocks: &[u32] = if emulator { &[1, 2, 3, 12] } else { &[0] };
    for &sms in blocks {
        let dev: Arc<dyn Device> = match dev.as_emulator() {
            Some(_) => Arc::new(
                Emulator::new()
                    .with_compute_capability((9, 0))
                    .with_multiprocessors(sms),
            ),
            None => dev.clone(),
        };
        for (order, dtype) in [(false, Dtype::Bf16), (true, Dtype::F16)] {
            if emulator {
                dev.as_emulator().unwrap().set_reverse(order);
            } else if order {
                continue;
            }
            let exec = || {
                GpuExecutor::on_path(dev.clone(), dtype, &config, &weights, bound, 8, GpuPathChoice::Hopper).unwrap()
            };
            let (persistent, per_launch) = (exec(), exec().without_persistent());
            assert_eq!(
                (persistent.persistent_tokens(), per_launch.persistent_tokens()),
                (bound as u32, 0)
            );
            // The fixture's GEMMs have 24, 8, 16 and 8 tiles: 12 blocks run in clusters of 4 (x
            // multicast to 4 blocks), 2 in one cluster of 2, 1 and 3 without clusters.
            if emulator {
                let cluster = persistent.persistent_grid().unwrap().cluster;
                assert_eq!(cluster, [1, 2, 1, 4][blocks.iter().position(|&b| b == sms).unwrap()]);
            }
            for (t, lens) in texts.iter().enumerate() {
                let batch = random_batch(lens, 7 + 100 * t as u64, v);
                let run = |e: &GpuExecutor| {
                    let mut got = vec![f32::NAN; batch.tokens() * h];
                    e.forward_into(&batch, &mut got).unwrap();
                    got
                };
                let (want, got, again) = (run(&per_launch), run(&persistent), run(&persistent));
                for (what, out) in [("first call", &got), ("second call", &again)] {
                    if let Some(i) = first_bit_difference(out, &want) {
                        panic!(
                            "{sms} blocks, {dtype:?}, reverse {order}, {lens:?}, {what}: token {} dim {} is {} \
                             (per-launch {})",
                            i / h,
                            i % h,
                            out[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}
