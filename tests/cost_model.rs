//! The cost model (`--device model:<card>`): its prediction of the committed base short-fixed
//! H100 throughput, its exact counts (launches per forward, activation bytes per token) checked
//! independently of it, the device syntax, and the H200's bandwidth scaling. The model device
//! computes nothing, so these run in seconds.

mod common;

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use common::counting::CountingDevice;
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::engine::{open_device, DeviceChoice};
use modernbert::gpu::weights::DeviceWeights;
use modernbert::gpu::{GpuExecutor, GpuPath, GpuPathChoice};
use modernbert::kernels::model::calibration::CalibrationFile;
use modernbert::kernels::model::{Card, ModelDevice};
use modernbert::kernels::Dtype;
use modernbert::model::Checkpoint;
use modernbert::reference::ops::Pooling;
use modernbert::weights::TensorStore;

/// `modernbert bench ARGS`: (success, stdout JSON lines, stderr).
fn bench(args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modernbert"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> Vec<Value> {
    let (success, lines, stderr) = bench(args);
    assert!(success, "bench {args:?} failed: {stderr}");
    lines
}

/// ModernBERT's launch list on the portable path, independent of the recorder: embeddings;
/// layer 0 without attn_norm (QKV, RoPE, attention, O, mlp_norm, Wi, GeGLU, Wo = 8); every later
/// layer with it (9); the final norm; the CLS pooling.
fn launches_of(layers: u64) -> u64 {
    1 + 8 + 9 * (layers - 1) + 1 + 1
}

/// On the Hopper path RoPE, GeGLU and the LayerNorms are inside the GEMMs: every layer is
/// (LN+)QKV+RoPE, attention, O+add, LN+Wi+GeGLU, Wo+add (5); the final norm stays a pass.
fn hopper_launches_of(layers: u64) -> u64 {
    1 + 5 * layers + 1 + 1
}

#[test]
fn base_short_fixed_is_within_10_percent_of_the_committed_h100_throughput() {
    let lines = ok(&["--device", "model:h100:sm80", "--shape", "base", "--set", "short-fixed"]);
    let l = &lines[0];
    let committed = CalibrationFile::h100()
        .unwrap()
        .throughput
        .into_iter()
        .find(|r| r.set == "short-fixed" && r.shape == "base")
        .unwrap();
    assert_eq!(committed.tokens_per_s, 1_443_345.0, "the committed run-4 number");
    let predicted = l["predicted_tokens_per_s"].as_f64().unwrap();
    let error = (predicted - committed.tokens_per_s) / committed.tokens_per_s;
    assert!(
        error.abs() < 0.10,
        "predicted {predicted} tok/s, {:.1} % off",
        100.0 * error
    );
    // Nothing measured is reported as measured.
    assert!(
        l["tokens_per_s"].is_null() && l["pass_s"].is_null() && l["mfu"].is_null(),
        "{l}"
    );
    assert_eq!(l["prediction"], true);
    assert_eq!(l["device_kind"], "model");
    assert_eq!(l["path"], "sm80");
    assert_eq!(l["compute_capability"], "sm80");
    assert_eq!(l["sequences"], 8192);
    assert_eq!(l["passes"], 10);
    assert_eq!(l["launches_per_forward"], launches_of(22));
    // The recorded launches' FLOPs are the bench's own formula (src/bench/workload.rs), pass by pass.
    let counted = l["model_flops_counted"].as_f64().unwrap();
    let formula = l["model_flops_per_pass"].as_f64().unwrap() * 10.0;
    assert!((counted / formula - 1.0).abs() < 1e-9, "{counted} vs {formula}");
    let classes: Vec<&str> = l["predicted_breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    for c in [
        "gemm",
        "attention_global",
        "attention_local",
        "layernorm",
        "rope",
        "geglu",
    ] {
        assert!(classes.contains(&c), "{classes:?}");
    }
    let share: f64 = l["predicted_breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["predicted_share"].as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-3, "{share}");
}

#[test]
fn unknown_cards_and_suffixes_are_clear_errors() {
    for (device, says) in [
        ("model:a100", "unknown card `a100`"),
        ("model:h100:sm70", "unknown suffix `:sm70`"),
        ("emulated:sm75", "unknown suffix `:sm75`"),
        ("model", "needs a card"),
        ("model:h100:sm80:sm90", "at most one"),
        ("gpu", "unknown device `gpu`"),
    ] {
        let (success, _, stderr) = bench(&["--device", device, "--layers", "1", "--shape", "base"]);
        assert!(!success, "{device} was accepted");
        assert!(stderr.contains(says), "{device}: {stderr}");
    }
    let (success, _, stderr) = bench(&["--device", "model:h200", "--model-errors"]);
    assert!(!success && stderr.contains("model:h100"), "{stderr}");
}

#[test]
fn sm90_issues_the_hopper_launches_and_portable_the_sm80_ones() {
    let args = |d: &'static str, path: &'static str| {
        vec![
            "--device",
            d,
            "--gpu-path",
            path,
            "--shape",
            "base",
            "--set",
            "short-variable",
            "--sequences",
            "512",
            "--passes",
            "1",
        ]
    };
    let sm80 = &ok(&args("model:h100:sm80", "auto"))[0];
    let portable = &ok(&args("model:h100:sm90", "portable"))[0];
    let hopper = &ok(&args("model:h100:sm90", "auto"))[0];
    let native = &ok(&args("model:h100", "auto"))[0];
    assert_eq!(hopper["compute_capability"], "sm90");
    assert_eq!(native["compute_capability"], "sm90", "an H100's own capability");
    assert_eq!((&sm80["path"], &portable["path"]), (&"sm80".into(), &"sm80".into()));
    assert_eq!((&hopper["path"], &native["path"]), (&"sm90a".into(), &"sm90a".into()));
    for k in [
        "predicted_tokens_per_s",
        "launches_per_forward",
        "activation_bytes_per_token",
    ] {
        assert_eq!(sm80[k], portable[k], "{k}");
    }
    assert_eq!(portable["launches_per_forward"], launches_of(22));
    assert_eq!(hopper["launches_per_forward"], hopper_launches_of(22));
    let bytes = |l: &Value| l["activation_bytes_per_token"].as_f64().unwrap();
    let tok_s = |l: &Value| l["predicted_tokens_per_s"].as_f64().unwrap();
    assert!(
        bytes(hopper) < 0.7 * bytes(portable),
        "{} vs {}",
        bytes(hopper),
        bytes(portable)
    );
    assert!(
        tok_s(hopper) > tok_s(portable),
        "{} vs {}",
        tok_s(hopper),
        tok_s(portable)
    );
    let classes: Vec<&str> = hopper["predicted_breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert!(
        !classes.contains(&"rope") && !classes.contains(&"geglu"),
        "no standalone RoPE or GeGLU launch: {classes:?}"
    );
    // The one LayerNorm pass left per forward is the final norm's (portable: 2 per layer after
    // layer 0, 1 in layer 0, the final one).
    let classes = |l: &Value| l["predicted_breakdown"].as_array().unwrap().clone();
    let launches = |c: &Value| c["launches"].as_u64().unwrap();
    let forwards =
        |l: &Value| classes(l).iter().map(launches).sum::<u64>() / l["launches_per_forward"].as_u64().unwrap();
    let layernorms = |l: &Value| {
        classes(l)
            .iter()
            .filter(|c| c["class"] == "layernorm")
            .map(launches)
            .sum::<u64>()
    };
    assert_eq!(layernorms(hopper), forwards(hopper), "{:?}", classes(hopper));
    assert_eq!(layernorms(portable), (2 * 22 - 1 + 1) * forwards(portable));
    // An sm_80 device cannot take the Hopper path: asked for, it is refused, saying why.
    let (success, _, stderr) = bench(&["--device", "model:h100:sm80", "--gpu-path", "hopper", "--shape", "base"]);
    assert!(!success && stderr.contains("needs sm_90a"), "{stderr}");
    let (success, _, stderr) = bench(&["--device", "model:h100", "--gpu-path", "fast", "--shape", "base"]);
    assert!(!success && stderr.contains("unknown GPU path `fast`"), "{stderr}");
}

#[test]
fn device_choice_sets_the_compute_capability() {
    let cc = |s: &str| {
        let dev = open_device(DeviceChoice::parse(s).unwrap()).unwrap().unwrap();
        dev.compute_capability()
    };
    assert_eq!(cc("emulated"), (8, 0));
    assert_eq!(cc("emulated:sm80"), (8, 0));
    assert_eq!(cc("emulated:sm90"), (9, 0));
    assert_eq!(cc("model:h100"), (9, 0));
    assert_eq!(cc("model:h200:sm80"), (8, 0));
    assert_eq!(DeviceChoice::parse("emulated").unwrap(), DeviceChoice::EMULATED);
}

#[test]
fn h200_predicts_more_than_h100_by_at_most_the_bandwidth_ratio() {
    // On the portable path about half the predicted short-fixed time is DRAM-bound (row kernels)
    // and half compute-bound (GEMMs, attention): the H200's 4.8 vs 3.35 TB/s speeds up only the
    // first half. The Hopper path has no RoPE or GeGLU pass and lighter norms, so less to gain.
    let args = |d: &'static str, path: &'static str| {
        vec![
            "--device",
            d,
            "--gpu-path",
            path,
            "--shape",
            "base",
            "--set",
            "short-fixed",
            "--sequences",
            "512",
            "--passes",
            "1",
        ]
    };
    let tok_s = |d, path| ok(&args(d, path))[0]["predicted_tokens_per_s"].as_f64().unwrap();
    let mut gains = Vec::new();
    for path in ["portable", "hopper"] {
        let (h100, h200) = (tok_s("model:h100", path), tok_s("model:h200", path));
        let ratio = h200 / h100;
        assert!(
            ratio > 1.0 && ratio < 4.8 / 3.35,
            "{path}: h200 {h200} / h100 {h100} = {ratio}"
        );
        gains.push(ratio);
    }
    assert!(gains[0] > 1.05 && gains[1] < gains[0], "{gains:?}");
}

#[test]
fn activation_bytes_per_token_of_one_and_two_layer_models_match_the_hand_count() {
    // Base width, 1 layer, 2 sequences of 512 tokens (T = 1024, S = 2), CLS pooling. Per token,
    // bf16 (2 B) activations: embeddings 4 (id) + 2·2H; QKV 2H + 6H; RoPE Q and K read + written
    // 8H; attention Q, K, V read + O written 8H; O 2H + 2H; mlp_norm x, delta read + x, out
    // written 8H; Wi 2H + 4I; GeGLU 4I + 2I; Wo 2I + 2H; final norm 8H → 4 + 52H + 12I; pooling
    // reads S rows of 2H and writes S rows of 4H (f32): 6H·S/T.
    let (h, i, t, s) = (768.0, 1152.0, 1024.0, 2.0);
    let pooling = 6.0 * h * s / t;
    let expected = 4.0 + 52.0 * h + 12.0 * i + pooling;
    let with_layers = |path: &'static str, layers: &'static str| {
        ok(&[
            "--device",
            "model:h100",
            "--gpu-path",
            path,
            "--shape",
            "base",
            "--layers",
            layers,
            "--set",
            "short-fixed",
            "--sequences",
            "2",
            "--passes",
            "1",
        ])
    };
    let lines = with_layers("portable", "1");
    assert_eq!(lines[0]["activation_bytes_per_token"].as_f64().unwrap(), expected);
    assert_eq!(lines[0]["launches_per_forward"], launches_of(1));
    // The Hopper path: embeddings 4 + 4H; QKV+RoPE x read, Q K V written 2H + 6H; attention 8H;
    // O+add attention output and x read, x written 6H, and its row statistics (8 B per row and
    // 128-column tile) H/16; LN+Wi+GeGLU x and the statistics read 2H + H/16, 2I written; Wo+add
    // 2I + 4H (the last layer writes no statistics); final norm 4H → 4 + 36H + H/8 + 4I.
    let lines = with_layers("hopper", "1");
    let expected = 4.0 + 36.0 * h + h / 8.0 + 4.0 * i + pooling;
    assert_eq!(lines[0]["activation_bytes_per_token"].as_f64().unwrap(), expected);
    assert_eq!(lines[0]["launches_per_forward"], hopper_launches_of(1));
    // Two layers (a global, then a local one): each as above, and the statistics between them —
    // layer 0's Wo2 writes them (H/16), layer 1's Wqkv reads them (H/16) → 4 + 64H + 3H/8 + 8I.
    let lines = with_layers("hopper", "2");
    let expected = 4.0 + 64.0 * h + 3.0 * h / 8.0 + 8.0 * i + pooling;
    assert_eq!(lines[0]["activation_bytes_per_token"].as_f64().unwrap(), expected);
    assert_eq!(lines[0]["launches_per_forward"], hopper_launches_of(2));
}

fn fixture() -> (ModelConfig, modernbert::model::BackboneWeights) {
    load_fixture("backbone_hd64_w128_l5_bias_v4_bf16")
}

fn load_fixture(name: &str) -> (ModelConfig, modernbert::model::BackboneWeights) {
    let dir = common::fixtures_dir().join(name);
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    (config, weights)
}

#[test]
fn launches_per_forward_equal_what_the_executor_issues() {
    let batch = PackedBatch::from_sequences(&[vec![5u32; 40], vec![7u32; 3]]).unwrap();
    // (path, persistent): the Hopper path's 43 tokens are within the fixture's persistent bound.
    for (path, persistent) in [
        (GpuPath::Portable, false),
        (GpuPath::Hopper, false),
        (GpuPath::Hopper, true),
    ] {
        let (config, weights, capability, choice) = match path {
            GpuPath::Portable => {
                let (c, w) = fixture();
                (c, w, (8, 0), GpuPathChoice::Portable)
            }
            GpuPath::Hopper => {
                let (c, w) = load_fixture("mlm_hd64_i128_l3_v5_bf16");
                (c, w, (9, 0), GpuPathChoice::Hopper)
            }
        };
        let h = config.hidden_size;
        let mut out = vec![0f32; batch.sequences() * h];
        // Counts every launch and GEMM it runs on the emulator: the executor's launch list, seen
        // from outside the cost model.
        let counting = Arc::new(CountingDevice::with_compute_capability(true, capability));
        let exec = GpuExecutor::on_path(counting.clone(), Dtype::Bf16, &config, &weights, 64, 4, choice).unwrap();
        let exec = if persistent { exec } else { exec.without_persistent() };
        assert_eq!(exec.path(), path);
        assert_eq!(exec.persistent_tokens() > 0, persistent);
        exec.pooled_into(&batch, Pooling::Cls, false, h, false, &mut out)
            .unwrap();
        let issued = counting.launches() as u64;
        let layers = config.num_hidden_layers as u64;
        let expected = match path {
            GpuPath::Portable => launches_of(layers),
            // The embeddings, every layer and the final norm in one launch; the pooling.
            GpuPath::Hopper if persistent => 2,
            GpuPath::Hopper => hopper_launches_of(layers),
        };
        assert_eq!(issued, expected, "{path:?}, persistent {persistent}");

        let profile = modernbert::gpu::cost_model::profile(Card::H100).unwrap();
        for graphs in [false, true] {
            let model = Arc::new(ModelDevice::new(Card::H100, Some(capability), profile.clone()));
            let exec = GpuExecutor::without_weights(model.clone(), Dtype::Bf16, &config, 64, 4, choice)
                .unwrap()
                .with_graphs(graphs);
            let exec = if persistent { exec } else { exec.without_persistent() };
            assert_eq!(exec.path(), path);
            exec.pooled_into(&batch, Pooling::Cls, false, h, false, &mut out)
                .unwrap();
            let ledger = model.ledger();
            assert_eq!(
                ledger.launches(),
                issued,
                "{path:?}, persistent {persistent}, graphs {graphs}"
            );
            assert_eq!(ledger.graph_replays, graphs as u64);
        }
    }
}

#[test]
fn reserved_weights_are_laid_out_as_uploaded_ones() {
    let (config, weights) = fixture();
    let model = ModelDevice::new(
        Card::H100,
        None,
        modernbert::gpu::cost_model::profile(Card::H100).unwrap(),
    );
    let rel = |w: &DeviceWeights, a: u64| if a == 0 { None } else { Some(a - w.tok_embeddings) };
    let layout = |w: &DeviceWeights| {
        let mut v = vec![
            rel(w, w.emb_norm.weight),
            rel(w, w.emb_norm.bias),
            rel(w, w.final_norm.weight),
        ];
        for l in &w.layers {
            v.extend([
                l.attn_norm.map(|n| n.weight - w.tok_embeddings),
                rel(w, l.wqkv.weight),
                rel(w, l.wqkv.bias),
                rel(w, l.wo.weight),
                rel(w, l.mlp_norm.weight),
                rel(w, l.wi.weight),
                rel(w, l.mlp_wo.weight),
                rel(w, l.mlp_wo.bias),
                rel(w, l.wqkv_colsum),
                rel(w, l.wi_colsum),
            ]);
        }
        v
    };
    for path in [GpuPath::Portable, GpuPath::Hopper] {
        let up = DeviceWeights::upload(&model, Dtype::Bf16, &weights, path).unwrap();
        let re = DeviceWeights::reserve(&model, &config, path).unwrap();
        assert_eq!(
            re.bytes,
            DeviceWeights::planned_bytes(&config, path).unwrap(),
            "{path:?}"
        );
        assert_eq!(up.bytes, re.bytes, "{path:?}");
        assert_eq!(layout(&up), layout(&re), "{path:?}");
    }
}

/// The small-batch GEMMs (`gemm_stream_sm90`) are chosen on the Hopper path exactly for launches
/// of at most `small_batch_tokens` capacity rows — base 64, large 16 (the kernel's shared memory
/// at Wo2's K) — direct launches by the batch's own tokens, graph replays by the bucket's; each
/// is a programmatic dependent launch costed with the assumed hand-off, as is attention between
/// them (attention_sm90 at a full fixed cost on the large-batch path), and a small-batch layer
/// moves by hand count, per token: Wqkv x 2H in, Q K V 6H out; attention 8H; Wo the attention
/// output 2H and x 2H in, x 2H out; Wi x 2H in, the gated half 2I out; Wo2 2I in, x 2H in and
/// out — 28H + 4I, with no row statistics (each GEMM takes its rows' own); embeddings 4 + 4H and
/// the final norm 4H around the layers.
#[test]
fn the_small_batch_gemms_are_chosen_up_to_the_bound_and_counted_by_hand() {
    use modernbert::bench::{shape_config, ShapeArg};
    use modernbert::config::LayerKind;
    use modernbert::kernels::model::KernelClass;
    let profile = modernbert::gpu::cost_model::profile(Card::H100).unwrap();
    for (shape, bound) in [(ShapeArg::Base, 64usize), (ShapeArg::Large, 16)] {
        let config = shape_config(shape, None).unwrap();
        assert_eq!(modernbert::gpu::path::small_batch_tokens(&config) as usize, bound);
        let (h, i, layers) = (
            config.hidden_size as f64,
            config.intermediate_size as f64,
            config.num_hidden_layers as u64,
        );
        // (tokens of one sequence, graphs, expected small)
        let cases = [
            (1, false, true),
            (bound, false, true),
            (bound + 1, false, false),
            (bound / 2 + 1, true, true), // the bucket is `bound`
            (bound + 1, true, false),    // the bucket is 2·bound
        ];
        for (tokens, graphs, small) in cases {
            let model = Arc::new(ModelDevice::new(Card::H100, Some((9, 0)), profile.clone()));
            let exec = GpuExecutor::without_weights(model.clone(), Dtype::Bf16, &config, 512, 4, GpuPathChoice::Auto)
                .unwrap()
                .with_graphs(graphs)
                .without_persistent(); // the per-launch small path (the persistent one: below)
            assert_eq!(exec.small_batch_tokens() as usize, bound);
            let batch = PackedBatch::from_sequences(&[vec![5u32; tokens]]).unwrap();
            let mut out = vec![0f32; batch.tokens() * config.hidden_size];
            exec.forward_into(&batch, &mut out).unwrap();
            let ledger = model.ledger();
            let of = |c: KernelClass| ledger.classes[c.index()];
            let (stream, tiled) = (of(KernelClass::GemmStream), of(KernelClass::Gemm));
            let what = format!("{shape:?}, {tokens} tokens, graphs {graphs}");
            assert_eq!(stream.launches, if small { 4 * layers } else { 0 }, "{what}");
            assert_eq!(tiled.launches, if small { 0 } else { 4 * layers }, "{what}");
            // Attention: attention.cu as a dependent on small batches, attention_sm90 on the
            // others, never both. Every launch of a class costs the same here (one sequence), so
            // each is the class's mean; a dependent one pays the hand-off, an ordinary one the
            // fixed cost.
            let sm80 = [KernelClass::AttentionGlobal, KernelClass::AttentionLocal];
            let sm90 = [KernelClass::AttentionSm90Global, KernelClass::AttentionSm90Local];
            let (used, unused) = if small { (sm80, sm90) } else { (sm90, sm80) };
            for class in unused {
                assert_eq!(of(class).launches, 0, "{what}: {class:?}");
            }
            // A window layer whose sequence is no longer than the radius (64) runs attention.cu's
            // global code and is costed at the global class — on the small path every launch
            // (its bounds, 64 and 16 tokens, are within the radius); attention_sm90 keeps its
            // window class. (The window class's attention.cu timing: the persistent case below,
            // at 100 and 128 tokens.)
            assert!(bound <= 64);
            let global_layers = (0..config.num_hidden_layers)
                .filter(|&l| config.layer_kind(l) == LayerKind::Global || small)
                .count() as u64;
            assert_eq!(of(used[0]).launches, global_layers, "{what}: global");
            assert_eq!(of(used[1]).launches, layers - global_layers, "{what}: window");
            for class in used {
                let c = of(class);
                if c.launches == 0 {
                    continue;
                }
                let n = c.launches as f64;
                let one = modernbert::kernels::model::LaunchCost {
                    class,
                    flops: c.flops / n,
                    param_bytes: c.param_bytes / n,
                    activation_bytes: c.activation_bytes / n,
                    l2_bytes: 0.0,
                };
                let each = if small {
                    profile.dependent_kernel_s(&one)
                } else {
                    profile.kernel_s(&one)
                };
                assert!(
                    (c.seconds - n * each).abs() < 1e-9 * c.seconds,
                    "{what}: {class:?} {} s vs {} s",
                    c.seconds,
                    n * each
                );
            }
            if small {
                let t = tokens as f64;
                let layer = 28.0 * h + 4.0 * i;
                let other: f64 = KernelClass::ALL
                    .into_iter()
                    .filter(|&c| c != KernelClass::GemmStream)
                    .map(|c| of(c).activation_bytes)
                    .sum();
                assert_eq!(
                    stream.activation_bytes + other,
                    t * (4.0 + 8.0 * h + layers as f64 * layer),
                    "{what}"
                );
                // The weights once per GEMM: W (2 B an element) and, after a norm, its column sums.
                let weights = layers as f64 * 2.0 * (3.0 * h * h + h * h + 2.0 * i * h + h * i);
                let colsums = (layers - 1) as f64 * 4.0 * 3.0 * h + layers as f64 * 4.0 * 2.0 * i;
                assert_eq!(stream.param_bytes, weights + colsums, "{what}");
                // Each stream GEMM's time: the assumed hand-off, then the slower of its DRAM
                // bytes at the copy ceiling and its L2 reads — DRAM's, and x again by every
                // cluster of 4 blocks but one, (n/64 − 1)·t·k·2 — at the assumed L2 bandwidth.
                let dram_rate = profile.efficiency(KernelClass::GemmStream).memory * profile.dram_bytes_per_s;
                let gemm_s = |n: f64, k: f64, out: f64, normed: bool| {
                    let dram = 2.0 * n * k + if normed { 4.0 * n } else { 0.0 } + 2.0 * t * (k + out);
                    let l2 = (n / 64.0 - 1.0) * t * k * 2.0;
                    profile.dependent_fixed_s + (dram / dram_rate).max((dram + l2) / profile.l2_bytes_per_s)
                };
                let layer_s = |first: bool| {
                    gemm_s(3.0 * h, h, 3.0 * h, !first)
                        + gemm_s(h, h, 2.0 * h, false)
                        + gemm_s(2.0 * i, h, i, true)
                        + gemm_s(h, i, 2.0 * h, false)
                };
                let expected = layer_s(true) + (layers - 1) as f64 * layer_s(false);
                assert!(
                    (stream.seconds - expected).abs() < 1e-9 * expected,
                    "{what}: {} vs {expected}",
                    stream.seconds
                );
            }
        }
    }
}

/// The persistent small-batch forward (`forward_small_sm90`) is chosen for launches of at most
/// `persistent_tokens` capacity rows — base 256 (x in chunks of 48 rows beside two weight slots
/// of Wo2's K), large 0 — where tokens × the longest sequence is at most 128 × 128, and is one
/// launch (the embeddings, every layer, the final norm) whose time is, by hand: the fixed cost, then per step the slower of its weights' DRAM time and the
/// assumed grid barrier (none before the first step; before attention, which runs inside the
/// Wqkv step, the assumed head hand-off) + the rest of its roofline (x, outputs, the math of the
/// busiest block's tiles, x read again from L2 by each further cluster with a tile:
/// min(n/16, blocks) / 4 − 1 of them; at 132 blocks no block has more than two tiles, one group,
/// so x's chunks are read once; attention's math as long as its busiest block-half's units).
#[test]
fn the_persistent_forward_is_chosen_up_to_its_bound_and_timed_by_hand() {
    use modernbert::bench::{shape_config, ShapeArg};
    use modernbert::config::LayerKind;
    use modernbert::kernels::model::{KernelClass, LaunchCost};
    let profile = modernbert::gpu::cost_model::profile(Card::H100).unwrap();
    let large = shape_config(ShapeArg::Large, None).unwrap();
    assert_eq!(modernbert::gpu::path::persistent_tokens(&large), 0);
    let config = shape_config(ShapeArg::Base, None).unwrap();
    let bound = 256usize;
    assert_eq!(modernbert::gpu::path::persistent_tokens(&config) as usize, bound);
    let (h, i, heads) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.num_attention_heads as f64,
    );
    assert_eq!(modernbert::gpu::path::PERSISTENT_TOKENS_X_SEQLEN, 128 * 128);
    // (sequences' tokens, graphs, expected persistent); the time by hand for one sequence.
    let cases: [(&[usize], bool, bool); 10] = [
        (&[1], false, true),
        (&[128], false, true),
        (&[129], false, false), // 129 × 129 > 128 × 128: the large-batch path
        (&[17], true, true),    // the bucket is 32
        (&[100], true, true),   // the bucket is (128 tokens, 128 long)
        (&[129], true, false),  // the bucket is 256
        (&[32; 8], false, true),
        (&[64, 64, 64, 64], true, true),
        (&[128, 128], false, false), // 256 × 128
        (&[65, 64], true, true),     // its bucket (256 × 128) would not be: a direct launch
    ];
    for (lens, graphs, persistent) in cases {
        let tokens: usize = lens.iter().sum();
        let model = Arc::new(ModelDevice::new(Card::H100, Some((9, 0)), profile.clone()));
        let exec = GpuExecutor::without_weights(model.clone(), Dtype::Bf16, &config, 512, 8, GpuPathChoice::Auto)
            .unwrap()
            .with_graphs(graphs);
        assert_eq!(exec.persistent_tokens() as usize, bound);
        let seqs: Vec<Vec<u32>> = lens.iter().map(|&n| vec![5u32; n]).collect();
        let batch = PackedBatch::from_sequences(&seqs).unwrap();
        let mut out = vec![0f32; batch.tokens() * config.hidden_size];
        exec.forward_into(&batch, &mut out).unwrap();
        let ledger = model.ledger();
        let of = |c: KernelClass| ledger.classes[c.index()];
        let what = format!("{lens:?} tokens, graphs {graphs}");
        let (fsmall, stream) = (of(KernelClass::ForwardSmall), of(KernelClass::GemmStream));
        assert_eq!(fsmall.launches, persistent as u64, "{what}");
        // Past the bound the large-batch path: no stream GEMMs (they take at most 64 rows).
        assert_eq!(stream.launches, 0, "{what}");
        // Without pooling: the embeddings, the layers, the final norm (one launch when persistent).
        assert_eq!(ledger.launches(), if persistent { 1 } else { 112 }, "{what}");
        if !persistent || lens.len() > 1 {
            continue;
        }
        let t = tokens as f64;
        // One block per SM (Wqkv's and Wi's 144 tiles are wider), in clusters of 4 (the model
        // device groups every SM: 33 clusters), x read from L2 once per cluster with a tile.
        let (blocks, cluster) = (132.0, 4.0);
        // `barrier`: every step's but the first's.
        let step_after = |barrier: f64, c: LaunchCost| {
            let weights = c.param_bytes / (profile.efficiency(c.class).memory * profile.dram_bytes_per_s);
            let e = profile.efficiency(c.class);
            let rest = (c.flops / (e.compute * profile.peak_flops))
                .max(c.activation_bytes / (e.memory * profile.dram_bytes_per_s))
                .max((c.activation_bytes + c.l2_bytes) / profile.l2_bytes_per_s);
            weights.max(barrier + rest)
        };
        let step_s = |c: LaunchCost| step_after(profile.grid_barrier_s, c);
        // The math ends with the busiest block's units, timed by their shared-memory reads: per
        // chunk of x (48 rows) one unit per tile computed together plus one per 16 rows, over
        // one tile on all rows alone. Wqkv's and Wi's 144 tiles on 132 blocks: a pair on the
        // busiest block. Wo's and Wo2's 48 tiles, no attention after them: rows in two slices,
        // a half (rounded to 16) on each of 96 blocks.
        let reads = |rows: f64, units: f64| {
            let chunks = (rows / 48.0).ceil().max(1.0);
            (0..chunks as u32)
                .map(|c| units + ((rows - 48.0 * c as f64).min(48.0) / 16.0).ceil())
                .sum::<f64>()
        };
        let waves = |n: f64, slices: f64| {
            let busiest = (n / 16.0 * slices / blocks).ceil();
            let block_rows = if slices == 1.0 { t } else { (t / 32.0).ceil() * 16.0 };
            let time = match busiest {
                2.0 => reads(block_rows, 2.0),
                1.0 => reads(block_rows, 1.0),
                _ => unreachable!("{n} columns: {busiest} units on the busiest block"),
            };
            time / reads(t, 1.0) * blocks / (n / 16.0)
        };
        // `slices`: 1, or 2 where the step's tiles fit twice in the grid and no attention follows.
        let gemm = |n: f64, k: f64, out: f64, normed: bool, slices: f64| LaunchCost {
            class: KernelClass::GemmStream,
            flops: 2.0 * t * n * k * waves(n, slices),
            param_bytes: 2.0 * n * k + if normed { 4.0 * n } else { 0.0 },
            activation_bytes: 2.0 * t * (k + out),
            l2_bytes: ((n / 16.0 * slices).min(blocks) / cluster / slices - 1.0).max(0.0) * t * k * 2.0,
        };
        // Query-key pairs of the one sequence: all of them, or within the window of ±64.
        let pairs = |kind| match kind {
            LayerKind::Global => t * t,
            LayerKind::Local => (0..tokens as i64)
                .map(|q| ((q + 64).min(tokens as i64 - 1) - (q - 64).max(0) + 1) as f64)
                .sum::<f64>(),
        };
        let units_per_head = (t / 64.0).ceil();
        let attention = |kind| LaunchCost {
            // A window of ±64 covering the whole sequence: attention_block's global code, the
            // global class.
            class: match kind {
                LayerKind::Local if tokens > 64 => KernelClass::AttentionLocal,
                _ => KernelClass::AttentionGlobal,
            },
            // A head's 64-query units on the block that took its last ticket, a unit a half
            // in turn: the step takes the busier half's units at half an SM's share of the rate.
            flops: 4.0 * 64.0 * heads * pairs(kind) * (units_per_head / 2.0).ceil() * 2.0 * blocks
                / (heads * units_per_head),
            param_bytes: 0.0,
            activation_bytes: 8.0 * t * h,
            l2_bytes: 0.0,
        };
        // The embeddings and the final norm as rows: the gathered rows and ids; the residual
        // read, the normed rows written; their weight (and no bias) as parameters.
        let rows = |class, activation_bytes| LaunchCost {
            class,
            flops: 0.0,
            param_bytes: 2.0 * h,
            activation_bytes,
            l2_bytes: 0.0,
        };
        let embeddings = rows(KernelClass::Embeddings, t * (4.0 + 4.0 * h));
        let final_norm = rows(KernelClass::LayerNorm, 4.0 * t * h);
        let expected = profile.kernel_fixed_s
            + step_after(0.0, embeddings)
            + step_s(final_norm)
            + (0..config.num_hidden_layers)
                .map(|l| {
                    step_s(gemm(3.0 * h, h, 3.0 * h, l > 0, 1.0))
                        + step_after(profile.head_handoff_s, attention(config.layer_kind(l)))
                        + step_s(gemm(h, h, 2.0 * h, false, 2.0))
                        + step_s(gemm(2.0 * i, h, i, true, 1.0))
                        + step_s(gemm(h, i, 2.0 * h, false, 2.0))
                })
                .sum::<f64>();
        assert!(
            (fsmall.seconds - expected).abs() < 1e-9 * expected,
            "{what}: {} s vs {expected} s",
            fsmall.seconds
        );
    }
}
