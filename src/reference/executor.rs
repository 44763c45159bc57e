//! The exact f32 CPU executor: transformers' ModernBERT forward on a packed batch, op by op.
//! It is the oracle of the GPU executor and the engine's fallback on machines without a GPU.

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
    /// `[vocab, hidden]`: the embedding table (also the tied MLM decoder).
    tok_embeddings: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<CpuLayer>,
    final_norm: Norm,
    /// Parameters of the backbone as loaded (embeddings included).
    parameters: usize,
}

/// One encoder layer's weights as the CPU uses them.
struct CpuLayer {
    /// `None` for layer 0 (transformers uses Identity there).
    attn_norm: Option<Norm>,
    /// `[3H, H]`.
    wqkv: CpuLinear,
    /// `[H, H]`.
    wo: CpuLinear,
    mlp_norm: Norm,
    /// `[2I, H]`: rows `[0, I)` feed the activation, `[I, 2I)` are the linear gate.
    wi: CpuLinear,
    /// `[H, I]`.
    mlp_wo: CpuLinear,
}

/// A backbone `Linear` in the form the CPU multiplies by.
enum CpuLinear {
    /// Packed for the microkernel; the `[out, in]` original is dropped, so the host holds each
    /// weight once.
    Packed {
        weight: sgemm::PackedWeight,
        bias: Option<Vec<f32>>,
    },
    /// The original, for the `gemm` crate, on CPUs without a microkernel.
    Plain(Linear),
}

impl CpuLinear {
    fn new(l: Linear) -> Self {
        if !sgemm::available() {
            return CpuLinear::Plain(l);
        }
        let weight = sgemm::PackedWeight::new(&l.weight, l.out_features, l.in_features);
        CpuLinear::Packed { weight, bias: l.bias }
    }

    /// `out[rows, out_features] = x · Wᵀ (+ b)`.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        match self {
            CpuLinear::Packed { weight, bias } => sgemm::linear_packed(x, weight, bias.as_deref(), rows, out),
            CpuLinear::Plain(l) => linear(x, l, rows, out),
        }
    }
}

impl CpuExecutor {
    /// Takes the weights; each layer's four GEMM weights are packed once, here, one at a time,
    /// each original freed as soon as its packed copy exists (peak: the weights + one matrix).
    pub fn new(config: ModelConfig, weights: BackboneWeights) -> Self {
        let parameters = weights.parameter_count();
        let BackboneWeights {
            tok_embeddings,
            emb_norm,
            layers,
            final_norm,
        } = weights;
        let layers = layers
            .into_iter()
            .map(|l| CpuLayer {
                attn_norm: l.attn_norm,
                wqkv: CpuLinear::new(l.wqkv),
                wo: CpuLinear::new(l.wo),
                mlp_norm: l.mlp_norm,
                wi: CpuLinear::new(l.wi),
                mlp_wo: CpuLinear::new(l.mlp_wo),
            })
            .collect();
        CpuExecutor {
            config,
            tok_embeddings,
            emb_norm,
            layers,
            final_norm,
            parameters,
        }
    }

    /// Parameters of the backbone (embeddings included): `4 ×` this is its f32 size.
    pub fn parameter_count(&self) -> usize {
        self.parameters
    }

    /// Bytes of weights this executor holds (packed panels with their padding included).
    pub fn weight_bytes(&self) -> usize {
        let norm = |n: &Norm| 4 * (n.weight.len() + n.bias.as_ref().map_or(0, Vec::len));
        let lin = |l: &CpuLinear| match l {
            CpuLinear::Packed { weight, bias } => weight.bytes() + 4 * bias.as_ref().map_or(0, Vec::len),
            CpuLinear::Plain(l) => 4 * (l.weight.len() + l.bias.as_ref().map_or(0, Vec::len)),
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.as_ref().map_or(0, norm)
                    + lin(&l.wqkv)
                    + lin(&l.wo)
                    + norm(&l.mlp_norm)
                    + lin(&l.wi)
                    + lin(&l.mlp_wo)
            })
            .sum();
        4 * self.tok_embeddings.len() + norm(&self.emb_norm) + norm(&self.final_norm) + layers
    }

    /// The `[vocab, hidden]` token embeddings (the tied MLM decoder).
    pub fn tok_embeddings(&self) -> &[f32] {
        &self.tok_embeddings
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

        ops::embedding_gather(&self.tok_embeddings, h, &batch.ids, &mut normed);
        layer_norm(&normed, &self.emb_norm, c.norm_eps, &mut x);

        for (i, layer) in self.layers.iter().enumerate() {
            // attention block (pre-norm; layer 0 has none)
            let attn_in = match &layer.attn_norm {
                Some(norm) => {
                    layer_norm(&x, norm, c.norm_eps, &mut normed);
                    &normed
                }
                None => &x,
            };
            layer.wqkv.forward(attn_in, t, &mut qkv);
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
            layer.wo.forward(&attn, t, &mut proj);
            ops::add_inplace(&mut x, &proj);

            // MLP block: GeGLU
            layer_norm(&x, &layer.mlp_norm, c.norm_eps, &mut normed);
            layer.wi.forward(&normed, t, &mut wide);
            ops::geglu(&wide, inter, c.hidden_activation, &mut gated);
            layer.mlp_wo.forward(&gated, t, &mut proj);
            ops::add_inplace(&mut x, &proj);
        }

        let mut out = normed;
        layer_norm(&x, &self.final_norm, c.norm_eps, &mut out);
        Ok(out)
    }

    /// MLM logits `[rows.len(), vocab]` for the selected packed rows of `hidden`.
    pub fn mlm_logits(&self, mlm: &MaskedLmHead, hidden: &[f32], rows: &[usize]) -> Vec<f32> {
        heads::mlm_logits(&self.config, mlm, &self.tok_embeddings, hidden, rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The executor keeps one copy of each weight: what it holds is the f32 size of the backbone,
    /// plus at most the panels' zero padding (the columns past `n` in the last panel of each).
    #[test]
    fn holds_each_weight_once() {
        let json = r#"{"model_type": "modernbert", "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 96, "num_hidden_layers": 3, "vocab_size": 120}"#;
        let config = ModelConfig::from_json_str(json, "config.json".as_ref()).unwrap();
        let weights = crate::bench::random_weights(&config, 7);
        let f32_bytes = 4 * weights.parameter_count();
        let exec = CpuExecutor::new(config, weights);
        assert_eq!(4 * exec.parameter_count(), f32_bytes);
        let held = exec.weight_bytes();
        // Padding: ≤ one panel of 32 columns per linear (4 per layer), plus 64 alignment bytes each.
        let slack = 3 * 4 * (32 * 96 * 4 + 128);
        assert!(
            held >= f32_bytes && held <= f32_bytes + slack,
            "held {held} bytes for {f32_bytes} bytes of f32 weights"
        );
    }
}
