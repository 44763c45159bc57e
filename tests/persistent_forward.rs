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
/// to four sequences up to the per-launch path's 64 tokens, bf16 and fp16, both thread orders, on
/// 1 to 3 blocks (every block taking several tiles of a step, and the weight slots running across
/// steps; 2 blocks in a cluster, x multicast to both), on 12 (more blocks than some steps have
/// tiles; clusters of 4) and on 16 (Wo's and Wo2's rows in two slices on two blocks a tile); and
/// a second call on the same program (the flags carried over) gives
/// the same bits again. Each batch runs twice: with x in one chunk of 64 rows, and in chunks of
/// 16 (a block's tiles in groups of two, a cluster barrier between chunks). Past 64 tokens, up to
/// the bound of 256, there is no per-launch small path: there chunks of 64 and of 16 give the
/// same bits (the fidelity of those batches: tests/device_parity.rs).
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
    let per_launch_bound = modernbert::gpu::path::small_batch_tokens(&config) as usize;
    assert_eq!(
        (bound, per_launch_bound),
        (256, 64),
        "hidden and intermediate 128: the persistent bound, and the stream GEMM's"
    );
    // The last two past the per-launch path's 64 tokens and within the persistent forward's
    // bounds (tokens × the longest sequence ≤ 128 × 128): 256 tokens (its bound) in four, and
    // 128 in three.
    let texts: [&[usize]; 6] = [&[1], &[31], &[64], &[29, 1, 17, 9], &[64, 64, 64, 64], &[100, 3, 25]];
    let emulator = dev.as_emulator().is_some();
    // 12 blocks: more than Wo's and Wo2's 8 tiles, so some blocks have none in those steps; 16:
    // Wo's and Wo2's rows in two slices, a (tile, half) on each block.
    let blocks: &[u32] = if emulator { &[1, 2, 3, 12, 16] } else { &[0] };
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
            let chunked = exec().with_persistent_chunk(16).unwrap();
            let large = exec().with_small_batch_tokens(0);
            assert_eq!(
                (persistent.persistent_tokens(), per_launch.persistent_tokens()),
                (bound as u32, 0)
            );
            assert_eq!((persistent.persistent_chunk(), chunked.persistent_chunk()), (64, 16));
            // The fixture's GEMMs have 24, 8, 16 and 8 tiles: 12 and 16 blocks run in clusters of
            // 4 (x multicast to 4 blocks), 2 in one cluster of 2, 1 and 3 without clusters.
            if emulator {
                let cluster = persistent.persistent_grid().unwrap().cluster;
                assert_eq!(cluster, [1, 2, 1, 4, 4][blocks.iter().position(|&b| b == sms).unwrap()]);
            }
            for (t, lens) in texts.iter().enumerate() {
                let batch = random_batch(lens, 7 + 100 * t as u64, v);
                assert!(persistent.persistent_takes(batch.tokens() as u32, batch.max_seqlen() as u32));
                let run = |e: &GpuExecutor| {
                    let mut got = vec![f32::NAN; batch.tokens() * h];
                    e.forward_into(&batch, &mut got).unwrap();
                    got
                };
                let (reference, want) = match batch.tokens() <= per_launch_bound {
                    true => ("per-launch", run(&per_launch)),
                    false => ("one chunk of 64", run(&persistent)),
                };
                if batch.tokens() > per_launch_bound {
                    // No small path to match bit for bit here, and both chunkings share attention's
                    // units (several query blocks a sequence): the large-batch path's own kernels,
                    // token by token. Not bit for bit: its GEMMs sum K in another order and its
                    // LayerNorm statistics come from Wo's and Wo2's epilogues; 0.999 is the
                    // contract's bound for a pooled embedding, held here by every token.
                    let other = run(&large);
                    for (i, (a, b)) in want.chunks(h).zip(other.chunks(h)).enumerate() {
                        let c = common::cosine(a, b);
                        assert!(
                            c >= 0.999,
                            "{sms} blocks, {dtype:?}, {lens:?}: token {i} cosine {c} against the large path"
                        );
                    }
                }
                let runs = [
                    ("first call", run(&persistent)),
                    ("second call", run(&persistent)),
                    ("chunks of 16", run(&chunked)),
                ];
                for (what, out) in &runs {
                    if let Some(i) = first_bit_difference(out, &want) {
                        panic!(
                            "{sms} blocks, {dtype:?}, reverse {order}, {lens:?}, {what}: token {} dim {} is {} \
                             ({reference} {})",
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
