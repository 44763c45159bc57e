//! The GPU executor — the real launch sequence, parameter structs, arena and kernels — run in bf16
//! and fp16 against the exact f32 CPU reference: on the host emulator by default, on GPU 0 with
//! `MODERNBERT_TEST_DEVICE=cuda` (the same assertions; a GPU that cannot be opened fails the run).
//!
//! Bounds (the engine's fidelity contract for half-precision devices): pooled-embedding cosine
//! ≥ 0.999 per sequence; MLM top-1 identical on ≥ 99 % of positions; classification argmax
//! identical. bf16 keeps 8 significant bits, so single values may move by ~1 %, but the errors are
//! unbiased and average out in pooled vectors; a real bug (a wrong window, a missing residual, a
//! swapped GeGLU half) drops cosines far below 0.99.

mod common;

use std::sync::Arc;

use common::{all_fixtures, argmax_rows, cosine, random_ids, test_device, test_device_choice, Fixture};
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::gpu::{GpuExecutor, GpuPath, GpuPathChoice};
use modernbert::kernels::device::Device;
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::Dtype;
use modernbert::model::{BackboneWeights, Checkpoint};
use modernbert::reference::ops::{pool, Pooling};
use modernbert::reference::{heads, CpuExecutor};
use modernbert::weights::TensorStore;

struct Pair {
    cpu: CpuExecutor,
    /// The checkpoint's weights for the GPU executor (the CPU executor keeps only packed copies).
    weights: BackboneWeights,
    store: TensorStore,
    config: ModelConfig,
}

fn load(dir: &std::path::Path) -> Pair {
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(dir).unwrap();
    let backbone = || Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    Pair {
        cpu: CpuExecutor::new(config.clone(), backbone()),
        weights: backbone(),
        store,
        config,
    }
}

/// Minimum per-sequence cosine of mean-pooled hidden states, device vs reference.
fn min_pooled_cosine(batch: &PackedBatch, got: &[f32], want: &[f32], hidden: usize) -> f64 {
    let g = pool(got, hidden, &batch.cu_seqlens, Some(&batch.key_lens), Pooling::Mean);
    let w = pool(want, hidden, &batch.cu_seqlens, Some(&batch.key_lens), Pooling::Mean);
    g.chunks(hidden)
        .zip(w.chunks(hidden))
        .map(|(a, b)| cosine(a, b))
        .fold(1.0, f64::min)
}

fn check_fixture(fx: &Fixture, dtype: Dtype) {
    check_fixture_on(fx, dtype, test_device(), GpuPathChoice::Auto);
}

/// The Hopper path's LayerNorm inside the GEMMs (row statistics from Wo and Wo2, mean and rstd
/// applied in the epilogues of Wi and Wqkv) where a cancellation would show: a residual stream
/// of large row means and outlier dimensions. Against the portable path's LayerNorm pass (f32
/// two-pass statistics of the stored stream) on the same device, each dtype: the fused one is no
/// worse — it rounds once fewer (no normalised rows stored) and its statistics are exact
/// combinations of two-pass tiles; both paths are bounded by the stream's own 16-bit storage.
#[test]
fn the_fused_layernorm_is_no_worse_than_the_pass_on_shifted_rows() {
    let Some(dev) = hopper_test_device() else {
        return;
    };
    let fx = Fixture::load(&common::fixtures_dir().join(SHIFTED));
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let portable = check_fixture_on(&fx, dtype, dev.clone(), GpuPathChoice::Portable);
        let hopper = check_fixture_on(&fx, dtype, dev.clone(), GpuPathChoice::Hopper);
        for ((pc, pe), (hc, he)) in portable.iter().zip(&hopper) {
            assert!(
                *hc >= pc - 1e-6 && *he <= 1.1 * pe,
                "{dtype:?}: Hopper (cosine {hc}, rel. error {he:.2e}) worse than portable ({pc}, {pe:.2e})"
            );
        }
    }
}

/// The pooled-cosine bound of a fixture in a dtype: the contract's 0.999, except where the fixture
/// is built to sit outside what a 16-bit residual stream holds. `backbone_hd64_i128_l3_shifted_bf16`
/// has rows whose |mean| is ~10 standard deviations: a bf16 stream stores each element to |x| · 2⁻⁹,
/// ≈ 2 % of a standard deviation there, on every path (the portable one measured 0.9952); it is held
/// to 0.99, and the fused LayerNorm to no worse than the pass (`the_fused_layernorm_..._shifted_rows`).
fn pooled_cosine_bound(fx: &Fixture, dtype: Dtype) -> f64 {
    if fx.name == SHIFTED && dtype == Dtype::Bf16 {
        0.99
    } else {
        0.999
    }
}

const SHIFTED: &str = "backbone_hd64_i128_l3_shifted_bf16";

/// Per case: (pooled cosine, hidden-state relative max error) of `path` against the reference.
fn check_fixture_on(fx: &Fixture, dtype: Dtype, dev: Arc<dyn Device>, path: GpuPathChoice) -> Vec<(f64, f64)> {
    let mut errors = Vec::new();
    let p = load(&fx.dir);
    let h = p.config.hidden_size;
    let max_tokens = fx
        .expected
        .cases
        .iter()
        .map(|c| c.input_ids.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap();
    let gpu = GpuExecutor::on_path(dev, dtype, &p.config, &p.weights, max_tokens, 64, path).unwrap();
    let on = gpu.path();
    for case in &fx.expected.cases {
        let keys: Vec<usize> = match &case.attention_mask {
            Some(m) => m.iter().map(|r| r.iter().filter(|&&v| v == 1).count()).collect(),
            None => case.input_ids.iter().map(Vec::len).collect(),
        };
        let batch = PackedBatch::with_key_lens(&case.input_ids, &keys).unwrap();
        let want = p.cpu.forward(&batch).unwrap();
        let mut got = vec![f32::NAN; batch.tokens() * h];
        gpu.forward_into(&batch, &mut got).unwrap();
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{}/{}: non-finite output",
            fx.name,
            case.name
        );
        let cos = min_pooled_cosine(&batch, &got, &want, h);
        let rel = common::relative_max_error(&got, &want);
        println!(
            "{:<36} {:<28} {dtype:?} {on:?}: pooled cosine ≥ {cos:.6}, hidden rel. max error {rel:.2e}",
            fx.name, case.name
        );
        let bound = pooled_cosine_bound(fx, dtype);
        assert!(cos >= bound, "{}/{}: pooled cosine {cos} < {bound}", fx.name, case.name);
        errors.push((cos, rel));

        let ckpt = Checkpoint::new(&p.store, &p.config).unwrap();
        if case.outputs.contains_key("mlm_logits") {
            let mlm = ckpt.masked_lm_head().unwrap();
            let rows: Vec<usize> = (0..batch.tokens()).collect();
            let v = p.config.vocab_size;
            let a = argmax_rows(
                &heads::mlm_logits(&p.config, &mlm, &p.weights.tok_embeddings, &got, &rows),
                v,
            );
            let b = argmax_rows(
                &heads::mlm_logits(&p.config, &mlm, &p.weights.tok_embeddings, &want, &rows),
                v,
            );
            let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
            println!(
                "{:<36} {:<28} {dtype:?} {on:?}: MLM top-1 agreement {:.2} %",
                fx.name,
                case.name,
                100.0 * same
            );
            assert!(same >= 0.99, "{}/{}: MLM top-1 agreement {same}", fx.name, case.name);
        }
        if case.outputs.contains_key("seq_logits") {
            let cls = ckpt.classifier_head().unwrap();
            let pooling = p.config.classifier_pooling;
            let a = heads::sequence_logits(&p.config, &cls, &got, &batch, pooling);
            let b = heads::sequence_logits(&p.config, &cls, &want, &batch, pooling);
            let labels = cls.classifier.out_features;
            assert_eq!(
                argmax_rows(&a, labels),
                argmax_rows(&b, labels),
                "{}/{}: argmax",
                fx.name,
                case.name
            );
        }
    }
    errors
}

/// Every committed fixture the GPU kernels can run (head_dim 64), in bf16 and fp16.
#[test]
fn device_matches_the_reference_on_the_fixtures() {
    let fixtures: Vec<Fixture> = all_fixtures()
        .into_iter()
        .filter(|fx| ModelConfig::from_file(&fx.dir.join("config.json")).unwrap().head_dim() == 64)
        .collect();
    assert!(fixtures.len() >= 3, "expected the head_dim-64 fixtures");
    for fx in &fixtures {
        for dtype in [Dtype::Bf16, Dtype::F16] {
            check_fixture(fx, dtype);
        }
    }
}

/// The device the Hopper path is tested on: the emulator reporting sm_90, or the GPU under test
/// when it is an sm_90 one (`None`, with a SKIPPED line, on another GPU: the sm_90a kernels do
/// not exist there).
fn hopper_test_device() -> Option<Arc<dyn Device>> {
    let dev = test_device();
    if dev.as_emulator().is_some() {
        return Some(Arc::new(Emulator::new().with_compute_capability((9, 0))));
    }
    if dev.compute_capability() < (9, 0) {
        println!("SKIPPED: {} is not sm_90; the Hopper path was not checked", dev.name());
        return None;
    }
    Some(dev)
}

/// The Hopper path (gemm_sm90 with the RoPE, GeGLU and residual epilogues) against the f32
/// reference, with the same bounds as the portable path, on every fixture it can run.
#[test]
fn hopper_path_matches_the_reference_on_the_fixtures() {
    let Some(dev) = hopper_test_device() else {
        return;
    };
    let mut checked = Vec::new();
    for fx in all_fixtures() {
        let p = load(&fx.dir);
        let probe = GpuExecutor::on_path(
            dev.clone(),
            Dtype::Bf16,
            &p.config,
            &p.weights,
            16,
            1,
            GpuPathChoice::Hopper,
        );
        match probe {
            Ok(exec) => assert_eq!(exec.path(), GpuPath::Hopper),
            Err(modernbert::error::Error::Unsupported(_)) => continue,
            Err(e) => panic!("{}: {e}", fx.name),
        }
        for dtype in [Dtype::Bf16, Dtype::F16] {
            check_fixture_on(&fx, dtype, dev.clone(), GpuPathChoice::Hopper);
        }
        checked.push(fx.name.clone());
    }
    for name in ["mlm_hd64_i128_l3_v5_bf16", SHIFTED] {
        assert!(
            checked.iter().any(|n| n == name),
            "{name}, at the Hopper path's shapes, was not run: {checked:?}"
        );
    }
}

/// The small-batch path (the Hopper path's GEMMs as `gemm_stream_sm90`, each a programmatic
/// dependent of the launch before it) against the f32 reference on batches of 1 to 64 tokens —
/// one token, a 32-token text, the 64-token bound, four texts of unequal lengths — with the
/// contract's bounds, and no worse than the large-batch GEMMs on the same batch (both round the
/// same products to 16 bits once; the error ratio allows the accumulation orders to differ).
/// The emulator runs each dependent GEMM up to its griddepcontrol.wait before its primary, in
/// both thread orders.
#[test]
fn small_batch_path_matches_the_reference() {
    let Some(dev) = hopper_test_device() else {
        return;
    };
    let emulator = dev.as_emulator().is_some();
    for name in ["mlm_hd64_i128_l3_v5_bf16", SHIFTED] {
        let fx = Fixture::load(&common::fixtures_dir().join(name));
        let p = load(&fx.dir);
        let (h, v) = (p.config.hidden_size, p.config.vocab_size as u32);
        let bound = modernbert::gpu::path::small_batch_tokens(&p.config) as usize;
        assert_eq!(bound, 64, "{name}: hidden and intermediate 128");
        let texts: [&[usize]; 4] = [&[1], &[32], &[bound], &[29, 1, 17, 9]];
        for (order, dtype) in [
            (false, Dtype::Bf16),
            (true, Dtype::F16),
            (true, Dtype::Bf16),
            (false, Dtype::F16),
        ] {
            if emulator {
                dev.as_emulator().unwrap().set_reverse(order);
            } else if order {
                continue; // one thread order on a GPU: its own
            }
            let exec = |cap| {
                GpuExecutor::on_path(
                    dev.clone(),
                    dtype,
                    &p.config,
                    &p.weights,
                    bound,
                    8,
                    GpuPathChoice::Hopper,
                )
                .unwrap()
                .with_small_batch_tokens(cap)
            };
            let (small, large) = (exec(u32::MAX), exec(0));
            assert_eq!(
                (small.small_batch_tokens(), large.small_batch_tokens()),
                (bound as u32, 0)
            );
            let mut agreement = (0, 0, 0); // (small, large, tokens)
            for (t, lens) in texts.iter().enumerate() {
                let seqs: Vec<Vec<u32>> = lens
                    .iter()
                    .enumerate()
                    .map(|(j, &n)| common::random_ids(n, 100 * t as u64 + j as u64, v))
                    .collect();
                let batch = PackedBatch::from_sequences(&seqs).unwrap();
                let want = p.cpu.forward(&batch).unwrap();
                let run = |e: &GpuExecutor| {
                    let mut got = vec![f32::NAN; batch.tokens() * h];
                    e.forward_into(&batch, &mut got).unwrap();
                    got
                };
                let (got, reference_path) = (run(&small), run(&large));
                assert!(got.iter().all(|x| x.is_finite()), "{name} {lens:?}: non-finite output");
                let cos = min_pooled_cosine(&batch, &got, &want, h);
                let rel = common::relative_max_error(&got, &want);
                let rel_large = common::relative_max_error(&reference_path, &want);
                println!(
                    "{name:<36} {lens:?} {dtype:?} reverse {order}: small-batch pooled cosine ≥ {cos:.6}, \
                     rel. max error {rel:.2e} (large-batch GEMMs {:.6}, {rel_large:.2e})",
                    min_pooled_cosine(&batch, &reference_path, &want, h)
                );
                // The shifted fixture's large row means sit outside what a 16-bit stream holds
                // (see pooled_cosine_bound) on some random-id rows on every path: there the
                // small-batch path is held to the large-batch one's cosine, and to 0.99.
                let cos_large = min_pooled_cosine(&batch, &reference_path, &want, h);
                let floor = match name {
                    SHIFTED => (cos_large - 1e-5).min(pooled_cosine_bound(&fx, dtype)).max(0.99),
                    _ => pooled_cosine_bound(&fx, dtype),
                };
                assert!(
                    cos >= floor,
                    "{name} {lens:?} {dtype:?}: pooled cosine {cos} < {floor} (large-batch GEMMs {cos_large})"
                );
                assert!(
                    rel <= 2.0 * rel_large,
                    "{name} {lens:?} {dtype:?}: rel. error {rel:.2e}, twice the large-batch path's {rel_large:.2e}"
                );
                if name == "mlm_hd64_i128_l3_v5_bf16" {
                    let ckpt = Checkpoint::new(&p.store, &p.config).unwrap();
                    let mlm = ckpt.masked_lm_head().unwrap();
                    let rows: Vec<usize> = (0..batch.tokens()).collect();
                    let top1 = |hidden: &[f32]| {
                        argmax_rows(
                            &heads::mlm_logits(&p.config, &mlm, &p.weights.tok_embeddings, hidden, &rows),
                            p.config.vocab_size,
                        )
                    };
                    let b = top1(&want);
                    let agree = |a: Vec<usize>| a.iter().zip(&b).filter(|(x, y)| x == y).count();
                    agreement.0 += agree(top1(&got));
                    agreement.1 += agree(top1(&reference_path));
                    agreement.2 += b.len();
                }
            }
            // Over all four batches (153 tokens). Random ids under this random MLM head leave a
            // few top-2 logit gaps inside 16-bit rounding, where the large-batch GEMMs miss too
            // (151 of 153 in bf16): the small-batch path is held to no worse than them, and 98 %.
            let (small_same, large_same, tokens) = agreement;
            if tokens > 0 {
                println!("{name} {dtype:?}: MLM top-1 {small_same} of {tokens} (large-batch GEMMs {large_same})");
                assert!(
                    small_same >= large_same && small_same as f64 >= 0.98 * tokens as f64,
                    "{dtype:?}: MLM top-1 {small_same} of {tokens} (large-batch GEMMs {large_same})"
                );
            }
        }
        if emulator {
            dev.as_emulator().unwrap().set_reverse(false);
        }
    }
}

/// Which path each choice gives: `auto` takes the Hopper path on an sm_90 emulator when the
/// model fits it and the portable one otherwise; `hopper` is refused, saying why, where it
/// cannot run.
#[test]
fn the_gpu_path_is_chosen_by_device_and_model() {
    let fits = load(&common::fixtures_dir().join("mlm_hd64_i128_l3_v5_bf16"));
    let biased = load(&common::fixtures_dir().join("backbone_hd64_w128_l5_bias_v4_bf16"));
    let untiled = load(&common::fixtures_dir().join("mlm_hd64_v5_bf16")); // intermediate 96
    let sm90: Arc<dyn Device> = Arc::new(Emulator::new().with_compute_capability((9, 0)));
    let sm80: Arc<dyn Device> = Arc::new(Emulator::new());
    let path = |dev: &Arc<dyn Device>, p: &Pair, choice| {
        GpuExecutor::on_path(dev.clone(), Dtype::Bf16, &p.config, &p.weights, 16, 1, choice).map(|e| e.path())
    };
    use GpuPathChoice::{Auto, Hopper, Portable};
    assert_eq!(path(&sm90, &fits, Auto).unwrap(), GpuPath::Hopper);
    assert_eq!(path(&sm90, &fits, Portable).unwrap(), GpuPath::Portable);
    assert_eq!(path(&sm80, &fits, Auto).unwrap(), GpuPath::Portable);
    assert_eq!(path(&sm90, &biased, Auto).unwrap(), GpuPath::Portable);
    assert_eq!(path(&sm90, &untiled, Auto).unwrap(), GpuPath::Portable);
    for (dev, p, says) in [
        (&sm80, &fits, "needs sm_90a"),
        (&sm90, &biased, "biases"),
        (&sm90, &untiled, "intermediate 96"),
    ] {
        let err = path(dev, p, Hopper).unwrap_err().to_string();
        assert!(err.contains("Hopper GPU path") && err.contains(says), "{err}");
    }
}

/// Fill-mask through the Engine on `emulated:sm90`: the Hopper backbone, then the MLM head on
/// the device, gives the CPU engine's top-1 token at every mask.
#[test]
fn engine_fill_mask_on_the_hopper_path() {
    let dir = common::fixtures_dir().join("mlm_hd64_i128_l3_v5_bf16");
    let engine = |device| {
        Engine::new(
            &dir,
            &EngineOptions {
                device,
                gpu_path: GpuPathChoice::Hopper,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (hopper, cpu) = (engine(DeviceChoice::Emulated((9, 0))), engine(DeviceChoice::Cpu));
    match &hopper.backbone {
        modernbert::engine::Backbone::Gpu(exec) => assert_eq!(exec.path(), GpuPath::Hopper),
        modernbert::engine::Backbone::Cpu(_) => panic!("the emulated engine runs on the CPU"),
    }
    let texts = ["Paris is [MASK].", "A quick brown [MASK].", "Answers [MASK]!"];
    let a = hopper.fill_mask(&texts, 3).unwrap();
    let b = cpu.fill_mask(&texts, 3).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for (mx, my) in x.iter().zip(y) {
            assert_eq!(mx[0].id, my[0].id, "top-1 at a mask");
        }
    }
}

/// The Engine API on the device under test: texts in, embeddings out (pooled on the device).
#[test]
fn engine_on_the_device() {
    let dir = common::fixtures_dir().join("colbert_hd64_pylate");
    let texts = ["a first text about engines", "second, shorter", "x"];
    let options = EmbedOptions {
        pooling: Some(Pooling::Mean),
        normalize: Some(true),
        dim: Some(48),
        ..Default::default()
    };
    let choice = test_device_choice();
    let on_device = Engine::new(
        &dir,
        &EngineOptions {
            device: choice,
            max_batch_tokens: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let cpu = Engine::new(
        &dir,
        &EngineOptions {
            device: DeviceChoice::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let name = on_device.backbone.device_name();
    let expected = if choice == DeviceChoice::EMULATED {
        "emulator"
    } else {
        "cuda"
    };
    assert!(name.starts_with(expected), "{name}");
    let a = on_device.embed(&texts, &options).unwrap();
    let b = cpu.embed(&texts, &options).unwrap();
    assert_eq!((a.len(), a[0].len()), (3, 48));
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(x, y) >= 0.999, "cosine {}", cosine(x, y));
        assert!(
            (x.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() < 1e-4,
            "normalised on the device"
        );
    }
    // ColBERT vectors come from the device's hidden states through the host heads.
    let q = on_device.colbert(&["what is it?"], true).unwrap();
    let r = cpu.colbert(&["what is it?"], true).unwrap();
    assert_eq!(q[0].len(), r[0].len());
    let worst = q[0].iter().zip(&r[0]).map(|(x, y)| cosine(x, y)).fold(1.0, f64::min);
    assert!(worst >= 0.99, "per-token ColBERT cosine {worst}");
}

/// A model whose head_dim is not 64 is refused by the GPU executor with a clear error.
#[test]
fn other_head_dims_are_refused() {
    let dir = common::fixtures_dir().join("st_cls_nonorm");
    let err = Engine::new(
        &dir,
        &EngineOptions {
            device: test_device_choice(),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("head_dim 64"), "{err}");
}

/// 8192 tokens (the model maximum) through a fixture with a 16-token window and global layers.
#[test]
#[ignore = "heavy on the emulator (about a minute); scripts/test.sh runs it"]
fn device_8192_tokens() {
    let p = load(&common::fixtures_dir().join("backbone_hd64_w16_l4_v5_f32"));
    let ids = vec![
        random_ids(8192, 1, p.config.vocab_size as u32),
        random_ids(300, 2, p.config.vocab_size as u32),
    ];
    let batch = PackedBatch::from_sequences(&ids).unwrap();
    let gpu = GpuExecutor::new(test_device(), Dtype::Bf16, &p.config, &p.weights, batch.tokens(), 2).unwrap();
    let want = p.cpu.forward(&batch).unwrap();
    let mut got = vec![0f32; want.len()];
    gpu.forward_into(&batch, &mut got).unwrap();
    let cos = min_pooled_cosine(&batch, &got, &want, p.config.hidden_size);
    println!("8192 + 300 tokens, bf16: pooled cosine ≥ {cos:.6}");
    assert!(cos >= 0.999);
}

/// A ModernBERT-base-shaped model (768 hidden, 12 heads, real window and thetas) with 3 layers,
/// on the portable path and on the Hopper one, and on the Hopper one at 8192 tokens.
#[test]
#[ignore = "heavy: builds a checkpoint with transformers, 8192 tokens on the emulator; scripts/test.sh runs it"]
fn device_base_shaped_model() {
    let dir = common::repo_root().join("target/fullsize-base-3-layers");
    let status = std::process::Command::new(common::reference_python())
        .arg(common::repo_root().join("scripts/make_fullsize.py"))
        .args(["--layers", "3", "--out"])
        .arg(&dir)
        .status()
        .expect("run scripts/make_fullsize.py (bash scripts/reference-env.sh first)");
    assert!(status.success());
    let fx = Fixture::load(&dir);
    check_fixture(&fx, Dtype::Bf16);
    // The Hopper path at the shapes it is built for (the emulator: about a minute).
    let Some(dev) = hopper_test_device() else {
        return;
    };
    check_fixture_on(&fx, Dtype::Bf16, dev.clone(), GpuPathChoice::Hopper);
    // And one sequence of 8192 tokens (the model maximum): the LayerNorm inside the GEMMs on
    // every row of a full-length batch at base width, a global layer over 8192 keys.
    let p = load(&dir);
    let ids = vec![random_ids(8192, 3, p.config.vocab_size as u32)];
    let batch = PackedBatch::from_sequences(&ids).unwrap();
    let gpu = GpuExecutor::on_path(
        dev,
        Dtype::Bf16,
        &p.config,
        &p.weights,
        batch.tokens(),
        1,
        GpuPathChoice::Hopper,
    )
    .unwrap();
    let want = p.cpu.forward(&batch).unwrap();
    let mut got = vec![f32::NAN; want.len()];
    gpu.forward_into(&batch, &mut got).unwrap();
    let h = p.config.hidden_size;
    let cos = min_pooled_cosine(&batch, &got, &want, h);
    let worst_row = got
        .chunks(h)
        .zip(want.chunks(h))
        .map(|(a, b)| cosine(a, b))
        .fold(1.0, f64::min);
    let rel = common::relative_max_error(&got, &want);
    println!(
        "base-shaped, 8192 tokens, Bf16 Hopper: pooled cosine {cos:.6}, worst token cosine {worst_row:.6}, \
         hidden rel. max error {rel:.2e}"
    );
    assert!(
        cos >= 0.999 && worst_row >= 0.99,
        "pooled {cos}, worst token {worst_row}"
    );
}

/// Graph replay: a launch sequence recorded for one batch's capacity bucket, replayed for other
/// batches of the same bucket, gives bit-identical results to launching each batch directly —
/// the kernels read every per-batch value from device memory.
#[test]
fn graph_replay_equals_direct_launches() {
    replay_equals_direct("backbone_hd64_w16_l4_v5_f32", test_device(), GpuPathChoice::Portable);
}

/// An arena for fewer tokens than the smallest graph bucket (16) is sized to that bucket, so
/// its batches replay a graph too (an arena for exactly 8 tokens would never have fitted one),
/// with the results of direct launches.
#[test]
fn an_arena_below_the_smallest_bucket_replays_graphs() {
    let emu = Arc::new(Emulator::new());
    let p = load(&common::fixtures_dir().join("backbone_hd64_w16_l4_v5_f32"));
    let vocab = p.config.vocab_size as u32;
    let exec = |graphs| {
        GpuExecutor::on_path(
            emu.clone(),
            Dtype::Bf16,
            &p.config,
            &p.weights,
            8,
            1,
            GpuPathChoice::Portable,
        )
        .unwrap()
        .with_graphs(graphs)
    };
    let (direct, graphed) = (exec(false), exec(true));
    assert_eq!((graphed.max_tokens(), graphed.max_sequences()), (16, 1));
    let batch = PackedBatch::from_sequences(&[random_ids(8, 1, vocab)]).unwrap();
    let h = p.config.hidden_size;
    let (mut a, mut b) = (vec![0f32; 8 * h], vec![0f32; 8 * h]);
    direct.forward_into(&batch, &mut a).unwrap();
    assert_eq!(emu.graphs_recorded(), 0);
    graphed.forward_into(&batch, &mut b).unwrap();
    assert_eq!(emu.graphs_recorded(), 1, "the 8-token batch did not run as a graph");
    assert_eq!(a, b);
}

/// The same on the Hopper path, whose GEMMs' tensor maps are encoded when the graph is recorded
/// (for the bucket's capacity rows) and whose RoPE epilogue reads positions from device memory.
#[test]
fn graph_replay_equals_direct_launches_on_the_hopper_path() {
    if let Some(dev) = hopper_test_device() {
        replay_equals_direct("mlm_hd64_i128_l3_v5_bf16", dev, GpuPathChoice::Hopper);
    }
}

/// The same on the small-batch path: the graph is recorded for the 64-token bucket's capacity
/// rows, the direct launches for each batch's own, and `gemm_stream_sm90` reads the rows in use
/// from the BatchDesc; each row's sums run in the same order either way, so the bits agree.
#[test]
fn graph_replay_equals_direct_launches_on_the_small_batch_path() {
    let Some(dev) = hopper_test_device() else {
        return;
    };
    let fixture = "mlm_hd64_i128_l3_v5_bf16";
    let p = load(&common::fixtures_dir().join(fixture));
    let vocab = p.config.vocab_size as u32;
    // All three fall in the bucket (64 tokens, 4 sequences, max length 64), the small-batch bound.
    let batches = [
        vec![random_ids(33, 1, vocab)],
        vec![random_ids(20, 2, vocab), random_ids(30, 3, vocab)],
        vec![
            random_ids(1, 4, vocab),
            random_ids(57, 5, vocab),
            random_ids(3, 6, vocab),
        ],
    ];
    replay_equals_direct_on(fixture, dev, GpuPathChoice::Hopper, &batches);
}

fn replay_equals_direct(fixture: &str, dev: Arc<dyn Device>, path: GpuPathChoice) {
    let vocab = load(&common::fixtures_dir().join(fixture)).config.vocab_size as u32;
    // All three fall in the bucket (256 tokens, 4 sequences, max length 192).
    let batches = [
        vec![
            random_ids(150, 3, vocab),
            random_ids(40, 4, vocab),
            random_ids(1, 5, vocab),
        ],
        vec![random_ids(170, 6, vocab), random_ids(60, 7, vocab)],
        vec![
            random_ids(129, 8, vocab),
            random_ids(65, 9, vocab),
            random_ids(2, 10, vocab),
            random_ids(33, 11, vocab),
        ],
    ];
    replay_equals_direct_on(fixture, dev, path, &batches);
}

fn replay_equals_direct_on(fixture: &str, dev: Arc<dyn Device>, path: GpuPathChoice, batches: &[Vec<Vec<u32>>]) {
    let p = load(&common::fixtures_dir().join(fixture));
    let h = p.config.hidden_size;
    let exec = |graphs| {
        GpuExecutor::on_path(dev.clone(), Dtype::Bf16, &p.config, &p.weights, 512, 8, path)
            .unwrap()
            .with_graphs(graphs)
    };
    let (direct, graphed) = (exec(false), exec(true));
    for ids in batches {
        let batch = PackedBatch::from_sequences(ids).unwrap();
        let mut a = vec![0f32; batch.tokens() * h];
        let mut b = vec![0f32; batch.tokens() * h];
        direct.forward_into(&batch, &mut a).unwrap();
        graphed.forward_into(&batch, &mut b).unwrap();
        assert_eq!(
            a,
            b,
            "graph replay differs for lengths {:?}",
            ids.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}
