//! The calibration file's measured cases, launched on any device through the product's own
//! launchers (`kernels::ops`) and GEMM entry point, with buffers that are address ranges only on
//! the cost model: a microbenchmark row, the GEMMs of one layer, a GEMM ceiling.

use super::calibration::{bad, MicroRow};
use crate::kernels::device::{Device, DeviceBuffer, GemmDesc};
use crate::kernels::params::*;
use crate::kernels::{ops, Dtype, KernelError};

fn need(row: &MicroRow, v: Option<u32>, what: &str) -> Result<u32, KernelError> {
    v.ok_or_else(|| bad(format!("microbench row `{}` has no `{what}`", row.id)))
}

/// Upload a BatchDesc for `tokens` / `sequences` into a small buffer; returns its address.
fn batch_desc(
    dev: &dyn Device,
    keep: &mut Vec<DeviceBuffer>,
    tokens: u32,
    sequences: u32,
    max_seqlen: u32,
) -> Result<u64, KernelError> {
    let mut bytes = Vec::with_capacity(16);
    for v in [tokens, sequences, max_seqlen, 0] {
        bytes.extend(v.to_le_bytes());
    }
    let b = dev.upload_new(&bytes, "batch")?;
    let addr = b.addr();
    keep.push(b);
    Ok(addr)
}

/// `cu_seqlens` and `key_lens` of `sequences` sequences of `seqlen` tokens; returns their addresses.
fn fixed_lengths(
    dev: &dyn Device,
    keep: &mut Vec<DeviceBuffer>,
    sequences: u32,
    seqlen: u32,
) -> Result<(u64, u64), KernelError> {
    let cu: Vec<u8> = (0..=sequences).flat_map(|i| (i * seqlen).to_le_bytes()).collect();
    let keys: Vec<u8> = (0..sequences).flat_map(|_| seqlen.to_le_bytes()).collect();
    let (c, k) = (dev.upload_new(&cu, "cu_seqlens")?, dev.upload_new(&keys, "key_lens")?);
    let at = (c.addr(), k.addr());
    keep.push(c);
    keep.push(k);
    Ok(at)
}

/// Launch a microbenchmark case on `dev` through the product's own launchers (`kernels::ops`),
/// with buffers that are address ranges only.
pub fn launch_micro(dev: &dyn Device, row: &MicroRow) -> Result<(), KernelError> {
    let mut keep = Vec::new();
    let mut big = |bytes: u64, label: &str| -> Result<u64, KernelError> {
        let b = dev.alloc(bytes as usize, label)?;
        let a = b.addr();
        keep.push(b);
        Ok(a)
    };
    let mut small = Vec::new();
    let dt = Dtype::Bf16;
    match row.op.as_str() {
        "layernorm" | "embeddings" => {
            let (t, h) = (need(row, row.tokens, "tokens")?, need(row, row.hidden, "hidden")?);
            let rows = t as u64 * h as u64 * 2;
            let (x, out, w) = (big(rows, "x")?, big(rows, "out")?, big(h as u64 * 4, "norm")?);
            let batch = batch_desc(dev, &mut small, t, 1, t)?;
            if row.op == "layernorm" {
                let delta = big(rows, "delta")?;
                let p = LayerNormParams {
                    residual: x,
                    delta,
                    weight: w,
                    bias: w + h as u64 * 2,
                    out,
                    batch,
                    max_tokens: t,
                    hidden: h,
                    eps: 1e-5,
                    _pad0: 0,
                };
                ops::layernorm(dev, dt, &p)
            } else {
                let v = need(row, row.vocab, "vocab")?;
                let (ids, table) = (big(t as u64 * 4, "ids")?, big(v as u64 * h as u64 * 2, "table")?);
                let p = EmbeddingLayerNormParams {
                    ids,
                    table,
                    weight: w,
                    bias: w + h as u64 * 2,
                    out,
                    batch,
                    max_tokens: t,
                    hidden: h,
                    vocab: v,
                    eps: 1e-5,
                };
                ops::embeddings(dev, dt, &p)
            }
        }
        "rope" => {
            let t = need(row, row.tokens, "tokens")?;
            let (heads, hd) = (need(row, row.heads, "heads")?, need(row, row.head_dim, "head_dim")?);
            let qkv = big(t as u64 * 3 * heads as u64 * hd as u64 * 2, "qkv")?;
            let batch = batch_desc(dev, &mut small, t, 1, t)?;
            let (cu, _) = fixed_lengths(dev, &mut small, 1, t)?;
            let p = RopeParams {
                qkv,
                cu_seqlens: cu,
                batch,
                max_tokens: t,
                heads,
                head_dim: hd,
                theta: 160_000.0,
            };
            ops::rope(dev, dt, &p)
        }
        "attention" => {
            let (s, l) = (need(row, row.sequences, "sequences")?, need(row, row.seqlen, "seqlen")?);
            let (heads, hd) = (need(row, row.heads, "heads")?, need(row, row.head_dim, "head_dim")?);
            let width = heads as u64 * hd as u64;
            let t = s * l;
            let (qkv, out) = (big(t as u64 * 3 * width * 2, "qkv")?, big(t as u64 * width * 2, "out")?);
            let batch = batch_desc(dev, &mut small, t, s, l)?;
            let (cu, keys) = fixed_lengths(dev, &mut small, s, l)?;
            let p = AttentionParams {
                qkv,
                out,
                cu_seqlens: cu,
                key_lens: keys,
                batch,
                max_sequences: s,
                max_seqlen: l,
                heads,
                head_dim: hd,
                window_radius: row.window_radius.unwrap_or(-1),
                softmax_scale: 0.125,
            };
            ops::attention(dev, dt, &p, false)
        }
        "geglu" => {
            let (t, i) = (need(row, row.tokens, "tokens")?, need(row, row.inter, "inter")?);
            let (h, out) = (
                big(t as u64 * 2 * i as u64 * 2, "h")?,
                big(t as u64 * i as u64 * 2, "out")?,
            );
            let batch = batch_desc(dev, &mut small, t, 1, t)?;
            let p = GegluParams {
                h,
                out,
                batch,
                max_tokens: t,
                inter: i,
                activation: MB_ACT_GELU_ERF,
                _pad0: 0,
            };
            ops::geglu(dev, dt, &p)
        }
        "pool_mean" => {
            let (s, l) = (need(row, row.sequences, "sequences")?, need(row, row.seqlen, "seqlen")?);
            let h = need(row, row.hidden, "hidden")?;
            let t = s * l;
            let (hidden, out) = (
                big(t as u64 * h as u64 * 2, "hidden")?,
                big(s as u64 * h as u64 * 4, "out")?,
            );
            let batch = batch_desc(dev, &mut small, t, s, l)?;
            let (cu, keys) = fixed_lengths(dev, &mut small, s, l)?;
            let p = PoolParams {
                hidden,
                out,
                cu_seqlens: cu,
                key_lens: keys,
                batch,
                max_sequences: s,
                hidden_dim: h,
                out_dim: h,
                pooling: MB_POOL_MEAN,
                normalize: 0,
                _pad0: 0,
            };
            ops::pool(dev, dt, &p)
        }
        "colbert_normalize" => {
            let (t, d) = (need(row, row.tokens, "tokens")?, need(row, row.dim, "dim")?);
            let (x, out) = (big(t as u64 * d as u64 * 2, "x")?, big(t as u64 * d as u64 * 4, "out")?);
            let batch = batch_desc(dev, &mut small, t, 1, t)?;
            let p = RowNormalizeParams {
                x,
                out,
                batch,
                max_rows: t,
                dim: d,
            };
            ops::colbert_normalize(dev, dt, &p)
        }
        other => Err(bad(format!("microbench op `{other}` has no case here"))),
    }
}

/// GEMMs `[m, k] x [n, k]ᵀ` on `dev` (address ranges only).
pub fn launch_gemms(dev: &dyn Device, shapes: &[(u32, u32, u32)]) -> Result<(), KernelError> {
    for &(m, n, k) in shapes {
        let a = dev.alloc(m as usize * k as usize * 2, "a")?;
        let w = dev.alloc(n as usize * k as usize * 2, "w")?;
        let out = dev.alloc(m as usize * n as usize * 2, "out")?;
        let g = GemmDesc {
            a: a.addr(),
            w: w.addr(),
            bias: 0,
            out: out.addr(),
            m,
            n,
            k,
        };
        dev.gemm(Dtype::Bf16, &g)?;
    }
    Ok(())
}

/// The four GEMMs of one ModernBERT layer at `tokens` rows: QKV, O, Wi (2I), Wo.
pub fn layer_gemms(c: &crate::config::ModelConfig, tokens: u32) -> Vec<(u32, u32, u32)> {
    let (h, i) = (c.hidden_size as u32, c.intermediate_size as u32);
    vec![(tokens, 3 * h, h), (tokens, h, h), (tokens, 2 * i, h), (tokens, h, i)]
}
