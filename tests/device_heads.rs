//! The task heads on the device — the MLM head with its top-k, ColBERT's projection and
//! normalisation, sentence-transformers' Dense — in bf16 and fp16 against the f32 host heads, on
//! the host emulator by default (on GPU 0 with `MODERNBERT_TEST_DEVICE=cuda`), and what leaves the
//! device per call, counted by the emulator.
//!
//! Bounds. The device head runs in the activation dtype on the device's own hidden states, so the
//! host head is given those same hidden states: the difference is the head's rounding alone (its
//! dense, LayerNorm and decoder outputs and the logits rounded to bf16/fp16, 8 / 11 significant
//! bits). A logit of size L moves by about L·2⁻⁹ in bf16, so log-probabilities may move by a few
//! hundredths; the bound allows 0.08 (bf16) and 0.01 (fp16) nats (measured on the emulator: 0.023 and
//! 0.0024). A wrong row, a missing bias or
//! activation, or a swapped norm moves them by whole nats. Engine-level results (whose backbone
//! also runs in bf16 or fp16, both tested) are held to the device-parity contract instead: the
//! device's top pick is the host's or a near tie of it; ColBERT and Dense vectors by cosine.

mod common;

use std::sync::Arc;

use common::{cosine, random_ids, small_batch_engine, test_device, test_device_choice};
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::engine::{DeviceChoice, EmbedOptions, Engine};
use modernbert::gpu::heads::Heads;
use modernbert::gpu::{GpuExecutor, GpuPathChoice};
use modernbert::kernels::device::Device;
use modernbert::kernels::Dtype;
use modernbert::model::Checkpoint;
use modernbert::reference::heads;
use modernbert::weights::TensorStore;

/// Bytes the device sent to the host so far (the emulator counts them; `None` on a GPU).
fn downloaded(dev: &dyn Device) -> Option<u64> {
    dev.as_emulator().map(|e| e.bytes_downloaded())
}

/// The MLM head on the device, at k = 5 and at k = vocab (the whole order, and more picks than
/// one launch holds, so the rows are split over several launches), against the host head on the
/// same hidden states.
#[test]
fn mlm_topk_matches_the_host_head() {
    let dir = common::fixtures_dir().join("mlm_hd64_v5_bf16");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let ckpt = Checkpoint::new(&store, &config).unwrap();
    let weights = ckpt.backbone().unwrap();
    let mlm = ckpt.masked_lm_head().unwrap();
    let v = config.vocab_size;
    let (h, vocab) = (config.hidden_size, v as u32);
    let ids = vec![
        random_ids(40, 1, vocab),
        random_ids(3, 2, vocab),
        random_ids(21, 3, vocab),
    ];
    let batch = PackedBatch::from_sequences(&ids).unwrap();
    // Every row of the first two sequences and three of the third (the batch's last row among
    // them): 46 rows, more than one launch takes at k = vocab.
    let rows: Vec<u32> = (0..43).chain([50, 60, 63]).collect();
    let heads = Heads {
        mlm: Some(&mlm),
        ..Default::default()
    };
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let dev = test_device();
        let exec = GpuExecutor::with_heads(
            dev.clone(),
            dtype,
            &config,
            &weights,
            &heads,
            (64, 8),
            GpuPathChoice::Auto,
        )
        .unwrap();
        let mut hidden = vec![0f32; batch.tokens() * h];
        let before_hidden = downloaded(dev.as_ref());
        exec.forward_into(&batch, &mut hidden).unwrap();
        let hidden_bytes = downloaded(dev.as_ref()).zip(before_hidden).map(|(a, b)| a - b);
        let picked: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        let logits = heads::mlm_logits(&config, &mlm, &weights.tok_embeddings, &hidden, &picked);
        let tolerance = match dtype {
            Dtype::Bf16 => 0.08,
            Dtype::F16 => 0.01,
        };
        for k in [5, v] {
            let mut got_ids = vec![0u32; rows.len() * k];
            let mut got_probs = vec![0f32; rows.len() * k];
            let before = downloaded(dev.as_ref());
            exec.mlm_topk_into(&batch, &rows, k, &mut got_ids, &mut got_probs)
                .unwrap();
            if let (Some(after), Some(before)) = (downloaded(dev.as_ref()), before) {
                // Only the picks leave the device: 8 bytes each (id, probability).
                assert_eq!(
                    after - before,
                    (rows.len() * k * 8) as u64,
                    "bytes downloaded at k = {k}"
                );
                if k == 5 {
                    println!(
                        "{dtype:?}: fill-mask of {} masks in {} tokens downloads {} B (hidden states: {} B)",
                        rows.len(),
                        batch.tokens(),
                        after - before,
                        hidden_bytes.unwrap()
                    );
                }
            }
            let mut worst = 0f64;
            for (r, host_row) in logits.chunks(v).enumerate() {
                let host = heads::softmax_topk(host_row, v);
                let mut host_prob = vec![0f32; v];
                for &(id, p) in &host {
                    host_prob[id as usize] = p;
                }
                let (ids, probs) = (&got_ids[r * k..][..k], &got_probs[r * k..][..k]);
                let mut seen = vec![false; v];
                for (j, (&id, &p)) in ids.iter().zip(probs).enumerate() {
                    assert!((id as usize) < v, "{dtype:?} row {r}: id {id}");
                    assert!(!seen[id as usize], "{dtype:?} row {r}: id {id} picked twice");
                    seen[id as usize] = true;
                    assert!(j == 0 || probs[j - 1] >= p, "{dtype:?} row {r}: not descending at {j}");
                    let err = ((p as f64).ln() - (host_prob[id as usize] as f64).ln()).abs();
                    worst = worst.max(err);
                    assert!(
                        err <= tolerance,
                        "{dtype:?} row {r} pick {j} (id {id}): log-prob off by {err}"
                    );
                }
                // The device's first pick is the host's, or within the tolerance of it.
                let top_gap = (host[0].1 as f64).ln() - (host_prob[ids[0] as usize] as f64).ln();
                assert!(
                    top_gap <= tolerance,
                    "{dtype:?} row {r}: top pick {} vs {}",
                    ids[0],
                    host[0].0
                );
                if k == v {
                    let total: f64 = probs.iter().map(|&p| p as f64).sum();
                    assert!(
                        (total - 1.0).abs() < 1e-3,
                        "{dtype:?} row {r}: probabilities sum to {total}"
                    );
                }
            }
            println!("{dtype:?} k = {k}: worst log-prob difference {worst:.4} (bound {tolerance})");
        }
    }
}

/// The engine's fill-mask on the device: the same masks, valid picks, and the CPU engine's top
/// pick or a near tie of it (the device's backbone runs in bf16, so near ties may swap).
#[test]
fn engine_fill_mask_on_the_device() {
    let dir = common::fixtures_dir().join("mlm_hd64_v5_bf16");
    let texts = [
        "The capital of France is [MASK].",
        "[MASK] and [MASK] went up the hill",
        "x [MASK]",
    ];
    let cpu = small_batch_engine(&dir, DeviceChoice::Cpu, Dtype::Bf16);
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let gpu = small_batch_engine(&dir, test_device_choice(), dtype);
        fill_mask_matches(&gpu, &cpu, &texts);
    }
}

fn fill_mask_matches(gpu: &Engine, cpu: &Engine, texts: &[&str]) {
    let k = 4;
    let a = gpu.fill_mask(texts, k).unwrap();
    let b = cpu.fill_mask(texts, k).unwrap();
    let all = cpu.fill_mask(texts, gpu.config.vocab_size).unwrap();
    assert_eq!(a.len(), texts.len());
    for (t, ((got, want), everything)) in a.iter().zip(&b).zip(&all).enumerate() {
        assert_eq!(got.len(), want.len(), "text {t}: masks");
        for (m, ((g, w), e)) in got.iter().zip(want).zip(everything).enumerate() {
            assert_eq!(g.len(), k);
            let cpu_prob = |id: u32| e.iter().find(|p| p.id == id).map(|p| p.score).unwrap();
            for p in g {
                assert_eq!(p.token, gpu.tokenizer().unwrap().decode_token(p.id));
                // The whole bf16/fp16 forward and head against the f32 CPU engine: measured within
                // a factor 1.02 on this fixture (0.02 nats); 1.1 leaves ~5x margin in log space.
                let ratio = p.score as f64 / cpu_prob(p.id) as f64;
                assert!(
                    (1.0 / 1.1..1.1).contains(&ratio),
                    "text {t} mask {m}: {} vs CPU {}",
                    p.score,
                    cpu_prob(p.id)
                );
            }
            assert!(
                cpu_prob(g[0].id) >= 0.8 * w[0].score,
                "text {t} mask {m}: device top {} ({}) vs CPU top {} ({})",
                g[0].id,
                cpu_prob(g[0].id),
                w[0].id,
                w[0].score
            );
        }
    }
}

/// ColBERT vectors come from the device: the same tokens (skiplist applied), cosine to the CPU's,
/// unit norm, and only `[tokens, dim]` f32 downloaded.
#[test]
fn colbert_on_the_device() {
    let dir = common::fixtures_dir().join("colbert_hd64_pylate");
    let cpu = small_batch_engine(&dir, DeviceChoice::Cpu, Dtype::Bf16);
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let gpu = small_batch_engine(&dir, test_device_choice(), dtype);
        colbert_matches(&gpu, &cpu);
    }
}

fn colbert_matches(gpu: &Engine, cpu: &Engine) {
    for is_query in [true, false] {
        let texts = ["what is it?", "a document, with punctuation; and more words!"];
        let a = gpu.colbert(&texts, is_query).unwrap();
        let b = cpu.colbert(&texts, is_query).unwrap();
        for (t, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.len(), y.len(), "text {t} (query {is_query}): vectors");
            for (u, w) in x.iter().zip(y) {
                assert!(cosine(u, w) >= 0.99, "text {t}: per-token cosine {}", cosine(u, w));
                let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "normalised on the device: {norm}");
            }
        }
    }
    if let modernbert::engine::Backbone::Gpu(exec) = &gpu.backbone {
        if let Some(before) = downloaded(exec.device()) {
            let (ids, _) = gpu.colbert_tokens(&["what is it?"], false).unwrap();
            gpu.colbert(&["what is it?"], false).unwrap();
            let dim = gpu.dense.as_ref().unwrap().out_features;
            let bytes = downloaded(exec.device()).unwrap() - before;
            assert_eq!(
                bytes,
                (ids[0].len() * dim * 4) as u64,
                "only [tokens, dim] f32 leaves the device"
            );
        }
    }
}

/// A sentence-transformers model with a Dense module: pooling → Dense → normalise on the device
/// (Dense before the pooling there; linear, so the same up to rounding).
#[test]
fn sentence_transformers_dense_on_the_device() {
    // The ColBERT fixture's Dense (64 → 16) as a sentence-transformers pipeline.
    let tmp = common::copy_fixture("colbert_hd64_pylate");
    let dir = tmp.path();
    std::fs::remove_file(dir.join("config_sentence_transformers.json")).unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 64, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"1_Dense","type":"sentence_transformers.models.Dense"},
            {"idx":3,"name":"3","path":"3_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    let cpu = small_batch_engine(dir, DeviceChoice::Cpu, Dtype::Bf16);
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let gpu = small_batch_engine(dir, test_device_choice(), dtype);
        dense_embeddings_match(&gpu, &cpu);
    }
}

fn dense_embeddings_match(gpu: &Engine, cpu: &Engine) {
    assert!(gpu.layout.colbert.is_none() && gpu.dense.is_some());
    let texts = ["a first text about engines", "second, shorter", "x", ""];
    for dim in [None, Some(10)] {
        let options = EmbedOptions {
            dim,
            ..Default::default()
        };
        let a = gpu.embed(&texts, &options).unwrap();
        let b = cpu.embed(&texts, &options).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.len(), dim.unwrap_or(16));
            assert!(cosine(x, y) >= 0.999, "cosine {}", cosine(x, y));
            let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        }
    }
}

/// The heads' weights count in the device bytes, and a head the executor was not given is a
/// clear error, not a wrong answer.
#[test]
fn missing_heads_are_errors() {
    let dir = common::fixtures_dir().join("mlm_hd64_v5_bf16");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let ckpt = Checkpoint::new(&store, &config).unwrap();
    let weights = ckpt.backbone().unwrap();
    let dev: Arc<dyn Device> = test_device();
    let bare = GpuExecutor::new(dev.clone(), Dtype::Bf16, &config, &weights, 16, 2).unwrap();
    let batch = PackedBatch::from_sequences(&[vec![1, 2, 3]]).unwrap();
    let (mut ids, mut probs) = (vec![0u32; 5], vec![0f32; 5]);
    let err = bare.mlm_topk_into(&batch, &[1], 5, &mut ids, &mut probs).unwrap_err();
    assert!(err.to_string().contains("no MLM head"), "{err}");
    let mut out = vec![0f32; 3 * 16];
    let err = bare.colbert_into(&batch, &mut out).unwrap_err();
    assert!(err.to_string().contains("no Dense"), "{err}");
    let mlm = ckpt.masked_lm_head().unwrap();
    let heads = Heads {
        mlm: Some(&mlm),
        ..Default::default()
    };
    let with = GpuExecutor::with_heads(
        dev,
        Dtype::Bf16,
        &config,
        &weights,
        &heads,
        (16, 2),
        GpuPathChoice::Auto,
    )
    .unwrap();
    assert!(with.device_bytes() > bare.device_bytes());
    let err = with.mlm_topk_into(&batch, &[3], 5, &mut ids, &mut probs).unwrap_err();
    assert!(err.to_string().contains("row 3"), "{err}");
    let (mut ids, mut probs) = (vec![0u32; 20], vec![0f32; 20]);
    let err = with
        .mlm_topk_into(&batch, &[0, 1, 2, 2], 5, &mut ids, &mut probs)
        .unwrap_err();
    assert!(err.to_string().contains("4 rows of a batch of 3 tokens"), "{err}");

    // A sentence-transformers Dense is not ColBERT's: no per-token f32 rows in its arena.
    let dir = common::fixtures_dir().join("colbert_hd64_pylate");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::open_dir(&dir).unwrap();
    let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    let dense = modernbert::layout::load_dense(&dir.join("1_Dense"), config.hidden_size).unwrap();
    let st = Heads {
        dense: Some(&dense),
        colbert: false,
        ..Default::default()
    };
    let exec = GpuExecutor::with_heads(
        test_device(),
        Dtype::Bf16,
        &config,
        &weights,
        &st,
        (16, 2),
        GpuPathChoice::Auto,
    )
    .unwrap();
    let mut out = vec![0f32; 3 * dense.out_features];
    let err = exec.colbert_into(&batch, &mut out).unwrap_err();
    assert!(err.to_string().contains("not ColBERT"), "{err}");
}
