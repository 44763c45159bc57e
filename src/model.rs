//! The named tensors of a ModernBERT checkpoint (spec §5), checked against the config's shapes and
//! converted to f32 for the CPU executor.
//!
//! Names: backbone keys with a `model.` prefix (ForMaskedLM / ForSequenceClassification /
//! ForTokenClassification checkpoints) or without (ModernBertModel, sentence-transformers, PyLate);
//! head keys (`head.*`, `decoder.*`, `classifier.*`) never carry it. Layer 0 has no `attn_norm`.
//! The MLM decoder weight is tied to the token embeddings unless stored.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::TensorStore;

/// `y = x Wᵀ (+ b)` with `W` as `[out, in]`.
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out_features: usize,
    pub in_features: usize,
}

pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

pub struct LayerWeights {
    /// `None` for layer 0 (transformers uses Identity there).
    pub attn_norm: Option<Norm>,
    pub wqkv: Linear,
    pub wo: Linear,
    pub mlp_norm: Norm,
    /// `[2I, H]`: rows `[0, I)` feed the activation, `[I, 2I)` are the linear gate.
    pub wi: Linear,
    pub mlp_wo: Linear,
}

pub struct BackboneWeights {
    /// `[vocab, hidden]`.
    pub tok_embeddings: Vec<f32>,
    pub emb_norm: Norm,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Norm,
}

/// `ModernBertPredictionHead`: dense → activation → LayerNorm.
pub struct PredictionHead {
    pub dense: Linear,
    pub norm: Norm,
}

pub struct MaskedLmHead {
    pub head: PredictionHead,
    /// `[vocab, hidden]`, or `None` when tied to the token embeddings.
    pub decoder_weight: Option<Vec<f32>>,
    pub decoder_bias: Option<Vec<f32>>,
}

pub struct ClassifierHead {
    pub head: PredictionHead,
    /// `[num_labels, hidden]` with bias (always, whatever `classifier_bias` says).
    pub classifier: Linear,
}

/// Resolves names against one checkpoint's prefix convention.
pub struct Checkpoint<'a> {
    pub store: &'a TensorStore,
    pub config: &'a ModelConfig,
    /// `"model."` or `""`.
    pub prefix: &'static str,
}

impl<'a> Checkpoint<'a> {
    pub fn new(store: &'a TensorStore, config: &'a ModelConfig) -> Result<Self> {
        const PROBE: &str = "embeddings.tok_embeddings.weight";
        let prefix = if store.contains(&format!("model.{PROBE}")) {
            "model."
        } else if store.contains(PROBE) {
            ""
        } else {
            return Err(Error::Weights(format!(
                "missing tensor {PROBE:?} (also looked for \"model.{PROBE}\")"
            )));
        };
        Ok(Checkpoint { store, config, prefix })
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.store.f32(name, shape)
    }

    /// A bias that must exist iff `flag` is set.
    fn bias(&self, name: &str, flag: bool, len: usize) -> Result<Option<Vec<f32>>> {
        if flag {
            Ok(Some(self.tensor(name, &[len])?))
        } else {
            Ok(None)
        }
    }

    fn linear(&self, stem: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: self.tensor(&format!("{stem}.weight"), &[out, inp])?,
            bias: self.bias(&format!("{stem}.bias"), bias, out)?,
            out_features: out,
            in_features: inp,
        })
    }

    fn norm(&self, stem: &str) -> Result<Norm> {
        let h = self.config.hidden_size;
        Ok(Norm {
            weight: self.tensor(&format!("{stem}.weight"), &[h])?,
            bias: self.bias(&format!("{stem}.bias"), self.config.norm_bias, h)?,
        })
    }

    pub fn backbone(&self) -> Result<BackboneWeights> {
        let c = self.config;
        let (h, i, p) = (c.hidden_size, c.intermediate_size, self.prefix);
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let stem = format!("{p}layers.{l}");
                Ok(LayerWeights {
                    attn_norm: if l == 0 {
                        None
                    } else {
                        Some(self.norm(&format!("{stem}.attn_norm"))?)
                    },
                    wqkv: self.linear(&format!("{stem}.attn.Wqkv"), 3 * h, h, c.attention_bias)?,
                    wo: self.linear(&format!("{stem}.attn.Wo"), h, h, c.attention_bias)?,
                    mlp_norm: self.norm(&format!("{stem}.mlp_norm"))?,
                    wi: self.linear(&format!("{stem}.mlp.Wi"), 2 * i, h, c.mlp_bias)?,
                    mlp_wo: self.linear(&format!("{stem}.mlp.Wo"), h, i, c.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let extra = format!("{p}layers.{}.attn.Wqkv.weight", c.num_hidden_layers);
        if self.store.contains(&extra) {
            return Err(Error::Weights(format!(
                "checkpoint has tensor {extra:?} but config.json says num_hidden_layers = {}",
                c.num_hidden_layers
            )));
        }
        Ok(BackboneWeights {
            tok_embeddings: self.tensor(&format!("{p}embeddings.tok_embeddings.weight"), &[c.vocab_size, h])?,
            emb_norm: self.norm(&format!("{p}embeddings.norm"))?,
            layers,
            final_norm: self.norm(&format!("{p}final_norm"))?,
        })
    }

    pub fn has_prediction_head(&self) -> bool {
        self.store.contains("head.dense.weight")
    }

    fn prediction_head(&self) -> Result<PredictionHead> {
        let h = self.config.hidden_size;
        Ok(PredictionHead {
            dense: self.linear("head.dense", h, h, self.config.classifier_bias)?,
            norm: self.norm("head.norm")?,
        })
    }

    pub fn masked_lm_head(&self) -> Result<MaskedLmHead> {
        let c = self.config;
        let decoder_weight = if self.store.contains("decoder.weight") {
            Some(self.tensor("decoder.weight", &[c.vocab_size, c.hidden_size])?)
        } else if c.tie_word_embeddings {
            None
        } else {
            return Err(Error::Weights(
                "missing tensor \"decoder.weight\" (tie_word_embeddings is false)".into(),
            ));
        };
        Ok(MaskedLmHead {
            head: self.prediction_head()?,
            decoder_weight,
            decoder_bias: self.bias("decoder.bias", c.decoder_bias, c.vocab_size)?,
        })
    }

    pub fn classifier_head(&self) -> Result<ClassifierHead> {
        let shape = self.store.shape("classifier.weight").ok_or_else(|| {
            Error::Weights("missing tensor \"classifier.weight\" (not a classification checkpoint)".into())
        })?;
        let labels = shape.first().copied().unwrap_or(0);
        if labels == 0 {
            return Err(Error::Weights(format!(
                "tensor \"classifier.weight\" has shape {shape:?}"
            )));
        }
        Ok(ClassifierHead {
            head: self.prediction_head()?,
            classifier: self.linear("classifier", labels, self.config.hidden_size, true)?,
        })
    }
}

impl BackboneWeights {
    /// Parameters of the backbone (embeddings included).
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.weight.len() + l.bias.as_ref().map_or(0, Vec::len);
        let norm = |n: &Norm| n.weight.len() + n.bias.as_ref().map_or(0, Vec::len);
        self.tok_embeddings.len()
            + norm(&self.emb_norm)
            + norm(&self.final_norm)
            + self
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
                .sum::<usize>()
    }
}
