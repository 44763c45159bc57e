//! The GPU executor's forward pass allocates nothing: no host heap allocation inside the executor
//! (a counting global allocator, per thread) and no device allocation (a counting device), once
//! the engine is created. This is what makes a forward CUDA-graph capturable and its latency flat.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::counting::CountingDevice;
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::gpu::{GpuExecutor, GpuPath, GpuPathChoice};
use modernbert::kernels::Dtype;
use modernbert::model::Checkpoint;
use modernbert::weights::TensorStore;

/// Counts heap allocations made by the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn executor(execute: bool) -> (GpuExecutor, Arc<CountingDevice>, usize) {
    let (exec, dev, h, _) = executor_on(execute, GpuPath::Portable);
    (exec, dev, h)
}

/// On the portable path, the fixture with biases; on the Hopper path (an sm_90 counting
/// device), the one at its shapes.
/// (executor, device, hidden size, layers).
fn executor_on(execute: bool, path: GpuPath) -> (GpuExecutor, Arc<CountingDevice>, usize, usize) {
    let (fixture, capability, choice) = match path {
        GpuPath::Portable => ("backbone_hd64_w128_l5_bias_v4_bf16", (8, 0), GpuPathChoice::Portable),
        GpuPath::Hopper => ("mlm_hd64_i128_l3_v5_bf16", (9, 0), GpuPathChoice::Hopper),
    };
    let dir = common::fixtures_dir().join(fixture);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    let dev = Arc::new(CountingDevice::with_compute_capability(execute, capability));
    let exec = GpuExecutor::on_path(dev.clone(), Dtype::Bf16, &config, &weights, 1024, 16, choice).unwrap();
    assert_eq!(exec.path(), path);
    (exec, dev, config.hidden_size, config.num_hidden_layers)
}

fn batches() -> (PackedBatch, PackedBatch) {
    let big = PackedBatch::from_sequences(&[vec![5u32; 700], vec![7u32; 300]]).unwrap();
    let small = PackedBatch::from_sequences(&[vec![9u32; 17], vec![3u32; 1], vec![4u32; 129]]).unwrap();
    (big, small)
}

/// Within the Hopper path's persistent bound (every layer in one launch of `forward_small_sm90`).
fn tiny_batch() -> PackedBatch {
    PackedBatch::from_sequences(&[vec![6u32; 20], vec![8u32; 5]]).unwrap()
}

#[test]
fn forward_makes_no_host_allocation() {
    for path in [GpuPath::Portable, GpuPath::Hopper] {
        forward_makes_no_host_allocation_on(path);
    }
}

fn forward_makes_no_host_allocation_on(path: GpuPath) {
    let (exec, dev, h, layers) = executor_on(false, path);
    let (big, small) = batches();
    let tiny = tiny_batch();
    assert!(exec.persistent_takes(tiny.tokens() as u32, tiny.max_seqlen() as u32) || path == GpuPath::Portable);
    let mut out_big = vec![0f32; big.tokens() * h];
    let mut out_small = vec![0f32; small.tokens() * h];
    let mut out_tiny = vec![0f32; tiny.tokens() * h];
    exec.forward_into(&big, &mut out_big).unwrap(); // warm-up
    exec.forward_into(&tiny, &mut out_tiny).unwrap();
    let mut pooled = vec![0f32; small.sequences() * h];
    exec.pooled_into(
        &small,
        modernbert::reference::ops::Pooling::Mean,
        true,
        h,
        false,
        &mut pooled,
    )
    .unwrap();

    let launches_before = dev.launches();
    let before = allocations();
    exec.forward_into(&big, &mut out_big).unwrap();
    exec.forward_into(&small, &mut out_small).unwrap();
    exec.forward_into(&tiny, &mut out_tiny).unwrap();
    exec.pooled_into(
        &small,
        modernbert::reference::ops::Pooling::Cls,
        false,
        h / 2,
        false,
        &mut pooled[..small.sequences() * h / 2],
    )
    .unwrap();
    let made = allocations() - before;
    let launched = dev.launches() - launches_before;
    println!("{path:?}, 4 forwards: {launched} launches/GEMMs, {made} host allocations");
    // At least a layer's launches (5 on the Hopper path, 9 on the portable one) per layer of each
    // call the persistent forward does not take (it runs every layer in one launch), and a
    // launch for each of the 4 calls.
    let layered = [&big, &small, &small]
        .iter()
        .filter(|b| !exec.persistent_takes(b.tokens() as u32, b.max_seqlen() as u32))
        .count();
    assert!(
        launched >= (layered * 5 * layers).max(4),
        "the forwards really launched their kernels"
    );
    assert_eq!(
        made, 0,
        "host heap allocations inside the executor's forward ({path:?})"
    );
}

#[test]
fn forward_makes_no_device_allocation() {
    for path in [GpuPath::Portable, GpuPath::Hopper] {
        forward_makes_no_device_allocation_on(path);
    }
}

fn forward_makes_no_device_allocation_on(path: GpuPath) {
    let (exec, dev, h, _) = executor_on(true, path);
    let created = dev.allocs();
    assert_eq!(created, 2, "weights + arena: one allocation each");
    let (big, small) = batches();
    let mut out = vec![0f32; big.tokens() * h];
    exec.forward_into(&big, &mut out).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    let mut out = vec![0f32; small.tokens() * h];
    exec.forward_into(&small, &mut out).unwrap();
    let tiny = tiny_batch();
    let mut out = vec![0f32; tiny.tokens() * h];
    exec.forward_into(&tiny, &mut out).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert_eq!(dev.allocs(), created, "device allocations during forward passes");
}

#[test]
fn batches_larger_than_the_arena_are_refused_not_overrun() {
    let (exec, _, h) = executor(false);
    let too_big = PackedBatch::from_sequences(&[vec![1u32; 1025]]).unwrap();
    let mut out = vec![0f32; too_big.tokens() * h];
    let err = exec.forward_into(&too_big, &mut out).unwrap_err().to_string();
    assert!(err.contains("exceeds the arena"), "{err}");
    let bad_id = PackedBatch::from_sequences(&[vec![1u32, 1 << 30]]).unwrap();
    let mut out = vec![0f32; 2 * h];
    assert!(exec
        .forward_into(&bad_id, &mut out)
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}
