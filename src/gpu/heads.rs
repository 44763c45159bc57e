//! The task heads' weights on the device, uploaded once beside the backbone's: the masked-LM head
//! (dense → act → LayerNorm → decoder), and the `Dense` projection of sentence-transformers or
//! PyLate ColBERT. The decoder of a tied MLM head is the backbone's token-embedding table, already
//! on the device, so it is not uploaded twice.

use crate::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::weights::{DeviceLinear, DeviceNorm, Packer};
use crate::kernels::device::{Device, DeviceBuffer};
use crate::kernels::params::{MB_ACT_GELU_ERF, MB_ACT_GELU_TANH, MB_ACT_RELU, MB_ACT_SILU};
use crate::kernels::Dtype;
use crate::limits::sum_of;
use crate::model::{Linear, MaskedLmHead};

/// The host heads a GPU executor is asked to run (any of them may be absent).
#[derive(Clone, Copy, Default)]
pub struct Heads<'a> {
    pub mlm: Option<&'a MaskedLmHead>,
    /// The `Dense` module: a projection of pooled embeddings, or ColBERT's per-token projection.
    pub dense: Option<&'a Linear>,
    /// Whether `dense` is ColBERT's (per token, f32 normalised rows leave the device).
    pub colbert: bool,
}

/// The arena room the heads need (what [`crate::gpu::arena::ArenaPlan`] sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadShapes {
    /// The MLM decoder's width (the vocabulary), when there is an MLM head.
    pub mlm_vocab: Option<usize>,
    /// The Dense projection's output width, when there is one.
    pub dense_out: Option<usize>,
    pub colbert: bool,
}

impl Heads<'_> {
    pub fn shapes(&self, config: &ModelConfig) -> HeadShapes {
        HeadShapes {
            mlm_vocab: self.mlm.map(|_| config.vocab_size),
            dense_out: self.dense.map(|d| d.out_features),
            colbert: self.colbert && self.dense.is_some(),
        }
    }
}

/// `ModernBertPredictionHead` of the MLM head plus its decoder, on the device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceMlmHead {
    /// `head.dense` (its bias, if any, is added by `head_act_norm`, before the activation).
    pub dense: DeviceLinear,
    pub norm: DeviceNorm,
    /// `MB_ACT_*` of `classifier_activation`.
    pub activation: u32,
    /// `decoder` `[vocab, hidden]` (the token embeddings when tied) and its bias.
    pub decoder: DeviceLinear,
}

pub struct DeviceHeads {
    /// Owns the memory the addresses below point into (none when there are no heads).
    _storage: Option<DeviceBuffer>,
    pub mlm: Option<DeviceMlmHead>,
    pub dense: Option<DeviceLinear>,
    /// Whether `dense` is ColBERT's (the arena then has its f32 output rows).
    pub colbert: bool,
    pub bytes: usize,
}

/// The kernels' code (`MB_ACT_*`) of an activation: the device runs every one config.json may name.
pub fn activation_code(act: Activation) -> u32 {
    match act {
        Activation::GeluErf => MB_ACT_GELU_ERF,
        Activation::GeluTanh => MB_ACT_GELU_TANH,
        Activation::Relu => MB_ACT_RELU,
        Activation::Silu => MB_ACT_SILU,
    }
}

impl DeviceHeads {
    /// Bytes of the heads' device buffer, checked, before anything is allocated (as
    /// [`DeviceHeads::upload`] lays it out).
    pub fn planned_bytes(heads: &Heads) -> Result<usize> {
        let what = "the task heads' weights";
        let t = |dims: &[usize]| Packer::planned(what, dims);
        let opt = |v: Option<&Vec<f32>>| v.map_or(Ok(0), |v| t(&[v.len()]));
        let lin = |l: &Linear| -> Result<usize> { sum_of(what, &[t(&[l.weight.len()])?, opt(l.bias.as_ref())?]) };
        let mut parts = Vec::new();
        if let Some(m) = heads.mlm {
            parts.push(lin(&m.head.dense)?);
            parts.push(t(&[m.head.norm.weight.len()])?);
            parts.push(opt(m.head.norm.bias.as_ref())?);
            parts.push(opt(m.decoder_weight.as_ref())?);
            parts.push(opt(m.decoder_bias.as_ref())?);
        }
        if let Some(d) = heads.dense {
            parts.push(lin(d)?);
        }
        sum_of(what, &parts)
    }

    /// Convert the heads to `dtype` and upload them in one copy; `tok_embeddings` is the device
    /// address of the backbone's table (a tied decoder's weight).
    pub fn upload(
        dev: &dyn Device,
        dtype: Dtype,
        config: &ModelConfig,
        heads: &Heads,
        tok_embeddings: u64,
    ) -> Result<Self> {
        let mut p = Packer::new(dtype);
        let linear = |p: &mut Packer, l: &Linear| (p.push(&l.weight), l.bias.as_ref().map(|b| p.push(b)));
        let mlm = heads.mlm.map(|m| {
            (
                linear(&mut p, &m.head.dense),
                p.push(&m.head.norm.weight),
                m.head.norm.bias.as_ref().map(|b| p.push(b)),
                m.decoder_weight.as_ref().map(|w| p.push(w)),
                m.decoder_bias.as_ref().map(|b| p.push(b)),
            )
        });
        let dense = heads.dense.map(|d| linear(&mut p, d));
        let bytes = p.image().len();
        if bytes == 0 {
            return Ok(DeviceHeads {
                _storage: None,
                mlm: None,
                dense: None,
                colbert: false,
                bytes: 0,
            });
        }
        let dev_err = |e: crate::kernels::KernelError| Error::Device(e.to_string());
        let mut storage = dev.alloc(bytes, "head weights").map_err(dev_err)?;
        dev.upload(&mut storage, 0, p.image()).map_err(dev_err)?;
        let base = storage.addr();
        let at = |o: usize| base + o as u64;
        let opt = |o: Option<usize>| o.map_or(0, at);
        let (h, v) = (config.hidden_size as u32, config.vocab_size as u32);
        let activation = activation_code(config.classifier_activation);
        let mlm = match (heads.mlm, mlm) {
            (Some(m), Some((dense, norm_w, norm_b, dec_w, dec_b))) => Some(DeviceMlmHead {
                dense: DeviceLinear {
                    weight: at(dense.0),
                    bias: opt(dense.1),
                    out_features: m.head.dense.out_features as u32,
                    in_features: m.head.dense.in_features as u32,
                },
                norm: DeviceNorm {
                    weight: at(norm_w),
                    bias: opt(norm_b),
                },
                activation,
                decoder: DeviceLinear {
                    weight: dec_w.map_or(tok_embeddings, at),
                    bias: opt(dec_b),
                    out_features: v,
                    in_features: h,
                },
            }),
            _ => None,
        };
        let dense = match (heads.dense, dense) {
            (Some(d), Some((w, b))) => Some(DeviceLinear {
                weight: at(w),
                bias: opt(b),
                out_features: d.out_features as u32,
                in_features: d.in_features as u32,
            }),
            _ => None,
        };
        Ok(DeviceHeads {
            _storage: Some(storage),
            mlm,
            colbert: heads.colbert && dense.is_some(),
            dense,
            bytes,
        })
    }
}
