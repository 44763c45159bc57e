//! The exact f32 CPU executor: transformers' ModernBERT forward on a packed batch, op by op.
//! It is the oracle of the GPU executor and the engine's fallback on machines without a GPU.

use std::sync::OnceLock;

use crate::batch::PackedBatch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::limits::{bytes_of, zeroed};
use crate::model::{BackboneWeights, ClassifierHead, Linear, MaskedLmHead, Norm};
use crate::reference::heads;
use crate::reference::ops::{self, Pooling};
use crate::reference::sgemm;

pub struct CpuExecutor {
    pub config: ModelConfig,
    pub weights: BackboneWeights,
    /// Each layer's four weights packed for the AVX-512 kernel, on first use (where it runs): a
    /// copy, so `weights` must not change after a forward.
    packed: Vec<LayerPacked>,
}

/// The packed copies of one layer's `wqkv`, `wo`, `wi`, `mlp_wo`.
#[derive(Default)]
struct LayerPacked([OnceLock<sgemm::PackedWeight>; 4]);

impl CpuExecutor {
    pub fn new(config: ModelConfig, weights: BackboneWeights) -> Self {
        let packed = weights.layers.iter().map(|_| LayerPacked::default()).collect();
        CpuExecutor {
            config,
            weights,
            packed,
        }
    }

    /// `last_hidden_state` of every packed token: `[tokens, hidden]` (after the final norm).
    pub fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let c = &self.config;
        let (t, h, inter) = (batch.tokens(), c.hidden_size, c.intermediate_size);
        let (heads, head_dim) = (c.num_attention_heads, c.head_dim());
        if let Some(&bad) = batch.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                c.vocab_size
            )));
        }
        let positions = ops::positions_from_cu_seqlens(&batch.cu_seqlens);
        let key_lens = batch.has_query_only_tokens().then_some(batch.key_lens.as_slice());

        // Fallible: a batch the host cannot hold is an error, not an abort.
        let rows = |width: usize, what: &str| zeroed::<f32>(bytes_of(what, &[t, width])?, what);
        let mut x = rows(h, "the residual stream")?; // [t, h]
        let mut normed = rows(h, "LayerNorm outputs")?; // [t, h]
        let mut qkv = rows(3 * h, "Q, K and V")?; // [t, 3h]
        let mut attn = rows(h, "attention outputs")?; // [t, h]
        let mut proj = rows(h, "projections")?; // [t, h]
        let mut wide = rows(2 * inter, "the MLP's input projection")?; // [t, 2i]
        let mut gated = rows(inter, "GeGLU outputs")?; // [t, i]

        ops::embedding_gather(&self.weights.tok_embeddings, h, &batch.ids, &mut normed);
        layer_norm(&normed, &self.weights.emb_norm, c.norm_eps, &mut x);

        for (i, (layer, LayerPacked([p_qkv, p_wo, p_wi, p_mlp_wo]))) in
            self.weights.layers.iter().zip(&self.packed).enumerate()
        {
            // attention block (pre-norm; layer 0 has none)
            let attn_in = match &layer.attn_norm {
                Some(norm) => {
                    layer_norm(&x, norm, c.norm_eps, &mut normed);
                    &normed
                }
                None => &x,
            };
            linear_packed(attn_in, &layer.wqkv, p_qkv, t, &mut qkv);
            ops::rope_qk_inplace(&mut qkv, &positions, heads, head_dim, c.rope_theta(i));
            ops::attention(
                &qkv,
                &batch.cu_seqlens,
                key_lens,
                heads,
                head_dim,
                c.window(i),
                &mut attn,
            );
            linear_packed(&attn, &layer.wo, p_wo, t, &mut proj);
            ops::add_inplace(&mut x, &proj);

            // MLP block: GeGLU
            layer_norm(&x, &layer.mlp_norm, c.norm_eps, &mut normed);
            linear_packed(&normed, &layer.wi, p_wi, t, &mut wide);
            ops::geglu(&wide, inter, c.hidden_activation, &mut gated);
            linear_packed(&gated, &layer.mlp_wo, p_mlp_wo, t, &mut proj);
            ops::add_inplace(&mut x, &proj);
        }

        let mut out = normed;
        layer_norm(&x, &self.weights.final_norm, c.norm_eps, &mut out);
        Ok(out)
    }

    /// MLM logits `[rows.len(), vocab]` for the selected packed rows of `hidden`.
    pub fn mlm_logits(&self, mlm: &MaskedLmHead, hidden: &[f32], rows: &[usize]) -> Vec<f32> {
        heads::mlm_logits(&self.config, mlm, &self.weights.tok_embeddings, hidden, rows)
    }

    /// Sequence classification logits `[sequences, labels]`.
    pub fn sequence_logits(
        &self,
        cls: &ClassifierHead,
        hidden: &[f32],
        batch: &PackedBatch,
        pooling: Pooling,
    ) -> Vec<f32> {
        heads::sequence_logits(&self.config, cls, hidden, batch, pooling)
    }

    /// Token classification logits `[tokens, labels]`.
    pub fn token_logits(&self, cls: &ClassifierHead, hidden: &[f32], tokens: usize) -> Vec<f32> {
        heads::token_logits(&self.config, cls, hidden, tokens)
    }
}

/// A backbone `Linear` on the CPU: the AVX-512 kernel with the weight packed once into `packed`
/// where the CPU has it, else [`linear`].
fn linear_packed(x: &[f32], l: &Linear, packed: &OnceLock<sgemm::PackedWeight>, rows: usize, out: &mut [f32]) {
    if sgemm::available() {
        let packed = packed.get_or_init(|| sgemm::PackedWeight::new(&l.weight, l.out_features, l.in_features));
        sgemm::linear_packed(x, packed, l.bias.as_deref(), rows, out);
    } else {
        linear(x, l, rows, out);
    }
}

/// `out[rows, out_features] = x · Wᵀ (+ b)` for a model `Linear` (the heads' few rows).
pub(crate) fn linear(x: &[f32], l: &Linear, rows: usize, out: &mut [f32]) {
    ops::linear(
        x,
        &l.weight,
        l.bias.as_deref(),
        rows,
        l.in_features,
        l.out_features,
        out,
    );
}

pub(crate) fn layer_norm(x: &[f32], n: &Norm, eps: f32, out: &mut [f32]) {
    ops::layer_norm(x, &n.weight, n.bias.as_deref(), eps, out);
}
