//! The task heads on f32 hidden states (spec §4), shared by every backbone executor.

use crate::batch::PackedBatch;
use crate::config::ModelConfig;
use crate::model::{ClassifierHead, MaskedLmHead, PredictionHead};
use crate::reference::executor::{layer_norm, linear};
use crate::reference::ops::{self, Pooling};

/// `ModernBertPredictionHead` on `rows` rows: dense → activation → LayerNorm.
pub fn prediction_head(config: &ModelConfig, head: &PredictionHead, x: &[f32], rows: usize) -> Vec<f32> {
    let h = config.hidden_size;
    let mut dense = vec![0f32; rows * h];
    linear(x, &head.dense, rows, &mut dense);
    ops::activate_inplace(&mut dense, config.classifier_activation);
    let mut out = vec![0f32; rows * h];
    layer_norm(&dense, &head.norm, config.norm_eps, &mut out);
    out
}

/// MLM logits `[rows.len(), vocab]` for the selected packed rows of `hidden`; `tok_embeddings`
/// is the decoder weight when it is tied.
pub fn mlm_logits(
    config: &ModelConfig,
    mlm: &MaskedLmHead,
    tok_embeddings: &[f32],
    hidden: &[f32],
    rows: &[usize],
) -> Vec<f32> {
    let (h, v) = (config.hidden_size, config.vocab_size);
    let picked: Vec<f32> = rows
        .iter()
        .flat_map(|&r| hidden[r * h..][..h].iter().copied())
        .collect();
    let head = prediction_head(config, &mlm.head, &picked, rows.len());
    let decoder = mlm.decoder_weight.as_deref().unwrap_or(tok_embeddings);
    let mut logits = vec![0f32; rows.len() * v];
    ops::linear(
        &head,
        decoder,
        mlm.decoder_bias.as_deref(),
        rows.len(),
        h,
        v,
        &mut logits,
    );
    logits
}

/// Sequence classification logits `[sequences, labels]`: pool → head → classifier (pool first).
pub fn sequence_logits(
    config: &ModelConfig,
    cls: &ClassifierHead,
    hidden: &[f32],
    batch: &PackedBatch,
    pooling: Pooling,
) -> Vec<f32> {
    let pooled = ops::pool(
        hidden,
        config.hidden_size,
        &batch.cu_seqlens,
        Some(&batch.key_lens),
        pooling,
    );
    classify_rows(config, cls, &pooled, batch.sequences())
}

/// Token classification logits `[tokens, labels]`: head → classifier on every token.
pub fn token_logits(config: &ModelConfig, cls: &ClassifierHead, hidden: &[f32], tokens: usize) -> Vec<f32> {
    classify_rows(config, cls, hidden, tokens)
}

fn classify_rows(config: &ModelConfig, cls: &ClassifierHead, x: &[f32], rows: usize) -> Vec<f32> {
    let head = prediction_head(config, &cls.head, x, rows);
    let mut logits = vec![0f32; rows * cls.classifier.out_features];
    linear(&head, &cls.classifier, rows, &mut logits);
    logits
}

/// Fill-mask's pick from one row of logits: the softmax over the row and the `k` most probable
/// columns, most probable first, equal logits lower column first — the rule `cuda/topk.cu`
/// implements on the device (which never picks a NaN logit; the probabilities of such a row are
/// NaN either way, and the engine refuses the text).
pub fn softmax_topk(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let probs = ops::softmax(logits);
    // -0.0 and 0.0 are equal logits (total_cmp alone would order them).
    let key = |c: usize| if logits[c] == 0.0 { 0.0 } else { logits[c] };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(k);
    order.into_iter().map(|c| (c as u32, probs[c])).collect()
}
