//! The model's weights on the device: converted once to the activation dtype (bf16 or fp16) and
//! uploaded into one device allocation; every tensor is an address inside it.

use half::{bf16, f16};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::path::GpuPath;
use crate::kernels::device::{Device, DeviceBuffer};
use crate::kernels::{ops, Dtype};
use crate::limits::{bytes_of, sum_of};
use crate::model::{BackboneWeights, Linear, Norm};

/// A linear layer on the device: `weight` `[out, in]`, optional `bias` `[out]` (0 = none).
#[derive(Clone, Copy, Debug)]
pub struct DeviceLinear {
    pub weight: u64,
    pub bias: u64,
    pub out_features: u32,
    pub in_features: u32,
}

/// A LayerNorm on the device (`bias` 0 = none).
#[derive(Clone, Copy, Debug)]
pub struct DeviceNorm {
    pub weight: u64,
    pub bias: u64,
}

/// One encoder layer. On the Hopper path the LayerNorms run inside the GEMMs after them
/// ([`ops::RowNorm`]): `wqkv` (where there is an `attn_norm`) and `wi` hold their norm's weight
/// folded in, `W[n, k] · γ[k]` rounded once, and `*_colsum` the sums of those stored rows; the
/// norms' own tensors stay, unused there, so that both paths share one layout.
pub struct DeviceLayer {
    pub attn_norm: Option<DeviceNorm>,
    pub wqkv: DeviceLinear,
    pub wo: DeviceLinear,
    pub mlp_norm: DeviceNorm,
    pub wi: DeviceLinear,
    pub mlp_wo: DeviceLinear,
    /// Hopper path with an `attn_norm`: f32 `[3H]`, `Σ_k wqkv[n, k]`; else 0.
    pub wqkv_colsum: u64,
    /// Hopper path: f32 `[2I]`, `Σ_k wi[n, k]` (rows in the GeGLU epilogue's order); else 0.
    pub wi_colsum: u64,
}

pub struct DeviceWeights {
    /// Owns the memory every address below points into.
    _storage: DeviceBuffer,
    pub tok_embeddings: u64,
    pub emb_norm: DeviceNorm,
    pub layers: Vec<DeviceLayer>,
    pub final_norm: DeviceNorm,
    pub bytes: usize,
}

/// Lays tensors out back to back (256-byte aligned, like cudaMalloc) in a host image of the
/// device buffer, then uploads the image in one copy.
pub(crate) struct Packer {
    dtype: Dtype,
    image: Vec<u8>,
}

impl Packer {
    pub(crate) fn new(dtype: Dtype) -> Self {
        Packer {
            dtype,
            image: Vec::new(),
        }
    }

    /// The host image so far (its length is the device buffer's size).
    pub(crate) fn image(&self) -> &[u8] {
        &self.image
    }

    /// Bytes of one tensor of `elements` values in the image: 2 per element, 256-byte aligned.
    pub(crate) fn planned(what: &str, elements: &[usize]) -> Result<usize> {
        Ok(sum_of(what, &[bytes_of(what, &[elements, &[2]].concat())?, 255])? / 256 * 256)
    }

    /// `values` as f32, 256-byte aligned like [`push`](Self::push)'s tensors.
    pub(crate) fn push_f32(&mut self, values: &[f32]) -> usize {
        let offset = self.image.len().next_multiple_of(256);
        self.image.resize(offset, 0);
        self.image.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        offset
    }

    /// `v` as the dtype stores it.
    fn rounded(&self, v: f32) -> f32 {
        match self.dtype {
            Dtype::Bf16 => bf16::from_f32(v).to_f32(),
            Dtype::F16 => f16::from_f32(v).to_f32(),
        }
    }

    pub(crate) fn push(&mut self, values: &[f32]) -> usize {
        let offset = self.image.len().next_multiple_of(256);
        self.image.resize(offset, 0);
        match self.dtype {
            Dtype::Bf16 => self
                .image
                .extend(values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes())),
            Dtype::F16 => self
                .image
                .extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        }
        offset
    }
}

impl DeviceWeights {
    /// Bytes of the device weight buffer for `c`, computed with checked arithmetic before anything
    /// is allocated: every tensor 256-byte aligned, 2 bytes per element; layer 0 has no attn_norm.
    pub fn planned_bytes(c: &ModelConfig, path: GpuPath) -> Result<usize> {
        let what = "the model's weights (config.json sizes)";
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let t = |dims: &[usize]| Packer::planned(what, dims);
        let norm = || -> Result<usize> { sum_of(what, &[t(&[h])?, if c.norm_bias { t(&[h])? } else { 0 }]) };
        let lin = |out: usize, inp: usize, bias: bool| -> Result<usize> {
            sum_of(what, &[t(&[out, inp])?, if bias { t(&[out])? } else { 0 }])
        };
        // f32 column sums (the Hopper path): Wi's in every layer, Wqkv's where an attn_norm is.
        let colsums = |n: usize| -> Result<usize> {
            match path {
                GpuPath::Portable => Ok(0),
                GpuPath::Hopper => t(&[n, 2]),
            }
        };
        let layer = sum_of(
            what,
            &[
                lin(bytes_of(what, &[3, h])?, h, c.attention_bias)?,
                lin(h, h, c.attention_bias)?,
                norm()?,
                lin(bytes_of(what, &[2, i])?, h, c.mlp_bias)?,
                lin(h, i, c.mlp_bias)?,
                colsums(bytes_of(what, &[2, i])?)?,
            ],
        )?;
        let layers = bytes_of(what, &[layer, c.num_hidden_layers])?;
        let attn_norm = sum_of(what, &[norm()?, colsums(bytes_of(what, &[3, h])?)?])?;
        let attn_norms = bytes_of(what, &[attn_norm, c.num_hidden_layers.saturating_sub(1)])?;
        sum_of(what, &[t(&[v, h])?, norm()?, layers, attn_norms, norm()?])
    }

    /// The weight buffer of `c` allocated at [`planned_bytes`](Self::planned_bytes) and laid
    /// out as [`upload`](Self::upload) lays it out, with nothing written: for a device that
    /// computes nothing (the cost model), where a launch's cost depends on shapes, never on
    /// values — so the bench does not generate ~600 MB of random weights to predict a time.
    pub fn reserve(dev: &dyn Device, c: &ModelConfig, path: GpuPath) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut l = Layout::default();
        let emb = l.take(c.vocab_size * h)?;
        let emb_norm = l.norm(h, c.norm_bias)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for layer in 0..c.num_hidden_layers {
            // Layer 0 has no attn_norm (the embeddings' norm comes first).
            let attn_norm = if layer == 0 {
                None
            } else {
                Some(l.norm(h, c.norm_bias)?)
            };
            let hopper = path == GpuPath::Hopper;
            layers.push((
                attn_norm,
                l.linear(3 * h, h, c.attention_bias)?,
                l.linear(h, h, c.attention_bias)?,
                l.norm(h, c.norm_bias)?,
                l.linear(2 * i, h, c.mlp_bias)?,
                l.linear(h, i, c.mlp_bias)?,
                if hopper && layer > 0 {
                    Some(l.f32s(3 * h)?)
                } else {
                    None
                },
                if hopper { Some(l.f32s(2 * i)?) } else { None },
            ));
        }
        let final_norm = l.norm(h, c.norm_bias)?;
        let storage = dev
            .alloc(l.bytes.max(1), "weights")
            .map_err(|e| Error::Device(e.to_string()))?;
        Ok(Self::at(storage, l.bytes, emb, emb_norm, layers, final_norm))
    }

    /// `w` converted to `dtype` and uploaded in one copy; on [`GpuPath::Hopper`] each Wi is
    /// stored in the row order of [`ops::geglu_weight_rows`] (its GEMM's GeGLU epilogue needs
    /// each output tile's activated and gate columns side by side).
    pub fn upload(dev: &dyn Device, dtype: Dtype, w: &BackboneWeights, path: GpuPath) -> Result<Self> {
        let mut p = Packer::new(dtype);
        let geglu_ordered = |wi: &Linear| -> Linear {
            let rows = ops::geglu_weight_rows(wi.out_features as u32 / 2);
            let k = wi.in_features;
            Linear {
                weight: rows
                    .iter()
                    .flat_map(|&r| &wi.weight[r as usize * k..(r as usize + 1) * k])
                    .copied()
                    .collect(),
                // Unused (the Hopper path takes no biases) but laid out as `reserve` lays it.
                bias: wi.bias.as_ref().map(|b| rows.iter().map(|&r| b[r as usize]).collect()),
                out_features: wi.out_features,
                in_features: k,
            }
        };
        // Offsets first (the buffer's address is known only after allocation).
        let off_linear = |p: &mut Packer, l: &Linear| {
            (
                p.push(&l.weight),
                l.bias.as_ref().map(|b| p.push(b)),
                l.out_features as u32,
                l.in_features as u32,
            )
        };
        let off_norm = |p: &mut Packer, n: &Norm| (p.push(&n.weight), n.bias.as_ref().map(|b| p.push(b)));
        // The Hopper path's LayerNorm inside the next GEMM: its weight folded into the GEMM's
        // columns, rounded as stored, and the stored rows' sums (in f64, then f32).
        let fold = |p: &Packer, lin: &Linear, norm: &Norm| -> (Linear, Vec<f32>) {
            let k = lin.in_features;
            let weight: Vec<f32> = lin
                .weight
                .chunks(k)
                .flat_map(|row| row.iter().zip(&norm.weight).map(|(&w, &g)| p.rounded(w * g)))
                .collect();
            let colsum = weight
                .chunks(k)
                .map(|row| row.iter().map(|&v| v as f64).sum::<f64>() as f32)
                .collect();
            let folded = Linear {
                weight,
                bias: lin.bias.clone(),
                out_features: lin.out_features,
                in_features: k,
            };
            (folded, colsum)
        };
        let emb = p.push(&w.tok_embeddings);
        let emb_norm = off_norm(&mut p, &w.emb_norm);
        let layers: Vec<_> = w
            .layers
            .iter()
            .map(|l| match path {
                GpuPath::Portable => (
                    l.attn_norm.as_ref().map(|n| off_norm(&mut p, n)),
                    off_linear(&mut p, &l.wqkv),
                    off_linear(&mut p, &l.wo),
                    off_norm(&mut p, &l.mlp_norm),
                    off_linear(&mut p, &l.wi),
                    off_linear(&mut p, &l.mlp_wo),
                    None,
                    None,
                ),
                GpuPath::Hopper => {
                    let attn_norm = l.attn_norm.as_ref().map(|n| off_norm(&mut p, n));
                    let wqkv = l.attn_norm.as_ref().map(|norm| fold(&p, &l.wqkv, norm));
                    let wi = fold(&p, &geglu_ordered(&l.wi), &l.mlp_norm);
                    (
                        attn_norm,
                        off_linear(&mut p, wqkv.as_ref().map_or(&l.wqkv, |(w, _)| w)),
                        off_linear(&mut p, &l.wo),
                        off_norm(&mut p, &l.mlp_norm),
                        off_linear(&mut p, &wi.0),
                        off_linear(&mut p, &l.mlp_wo),
                        wqkv.as_ref().map(|(_, colsum)| p.push_f32(colsum)),
                        Some(p.push_f32(&wi.1)),
                    )
                }
            })
            .collect();
        let final_norm = off_norm(&mut p, &w.final_norm);

        let bytes = p.image.len();
        let mut storage = dev
            .alloc(bytes.max(1), "weights")
            .map_err(|e| Error::Device(e.to_string()))?;
        dev.upload(&mut storage, 0, &p.image)
            .map_err(|e| Error::Device(e.to_string()))?;
        Ok(Self::at(storage, bytes, emb, emb_norm, layers, final_norm))
    }

    /// The addresses of a buffer laid out at these offsets.
    fn at(
        storage: DeviceBuffer,
        bytes: usize,
        emb: usize,
        emb_norm: NormOffsets,
        layers: Vec<LayerOffsets>,
        final_norm: NormOffsets,
    ) -> Self {
        let base = storage.addr();
        let at = |o: usize| base + o as u64;
        let opt = |o: Option<usize>| o.map_or(0, at);
        let linear = |(w, b, out, inp): (usize, Option<usize>, u32, u32)| DeviceLinear {
            weight: at(w),
            bias: opt(b),
            out_features: out,
            in_features: inp,
        };
        let norm = |(w, b): (usize, Option<usize>)| DeviceNorm {
            weight: at(w),
            bias: opt(b),
        };
        DeviceWeights {
            tok_embeddings: at(emb),
            emb_norm: norm(emb_norm),
            layers: layers
                .into_iter()
                .map(|(an, qkv, wo, mn, wi, mwo, qkv_sum, wi_sum)| DeviceLayer {
                    attn_norm: an.map(norm),
                    wqkv: linear(qkv),
                    wo: linear(wo),
                    mlp_norm: norm(mn),
                    wi: linear(wi),
                    mlp_wo: linear(mwo),
                    wqkv_colsum: opt(qkv_sum),
                    wi_colsum: opt(wi_sum),
                })
                .collect(),
            final_norm: norm(final_norm),
            bytes,
            _storage: storage,
        }
    }
}

/// Byte offsets of a norm's weight and bias, a linear's weight, bias and shape, a layer's tensors.
type NormOffsets = (usize, Option<usize>);
type LinearOffsets = (usize, Option<usize>, u32, u32);
/// (attn_norm, Wqkv, Wo, mlp_norm, Wi, Wo2, Wqkv's column sums, Wi's column sums).
type LayerOffsets = (
    Option<NormOffsets>,
    LinearOffsets,
    LinearOffsets,
    NormOffsets,
    LinearOffsets,
    LinearOffsets,
    Option<usize>,
    Option<usize>,
);

/// Offsets of tensors laid out as [`Packer::push`] lays them out, without an image.
#[derive(Default)]
struct Layout {
    bytes: usize,
}

impl Layout {
    fn take(&mut self, elements: usize) -> Result<usize> {
        let what = "the model's weights (config.json sizes)";
        let at = self.bytes;
        self.bytes = sum_of(what, &[at, Packer::planned(what, &[elements])?])?;
        Ok(at)
    }
    /// `n` f32 values (as [`Packer::push_f32`] lays them out).
    fn f32s(&mut self, n: usize) -> Result<usize> {
        self.take(bytes_of("the model's weights", &[n, 2])?)
    }
    fn norm(&mut self, h: usize, bias: bool) -> Result<NormOffsets> {
        Ok((self.take(h)?, if bias { Some(self.take(h)?) } else { None }))
    }
    fn linear(&mut self, out: usize, inp: usize, bias: bool) -> Result<LinearOffsets> {
        let weight = self.take(bytes_of("the model's weights", &[out, inp])?)?;
        let bias = if bias { Some(self.take(out)?) } else { None };
        Ok((weight, bias, out as u32, inp as u32))
    }
}
