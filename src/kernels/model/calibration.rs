//! The committed GPU measurements the model is calibrated on and checked against
//! (`profiles/calibration/h100-2026-11-25.json`, every number copied from profiles/results.md with
//! its run and commit), and the kernel-level part of the fit: one efficiency per kernel class.
//!
//! Each class's efficiency is a fraction of the card's vendor peak, measured once on the H100:
//! - memory-bound row kernels: the microbenchmark's minimum bytes / its time / 3.35 TB/s;
//! - attention (global, local): the microbenchmark's useful FLOPs / its time / 989.4 TFLOP/s;
//! - GEMMs: the ncu mean of the four GEMMs of a layer inside the real forward (the only GEMM
//!   measurement at the forward's shapes; the 8192³ ceiling is held out);
//! - the memory side of the compute classes and of the unmeasured gather and top-k kernels: the
//!   1 GiB copy ceiling (3005 GB/s = 0.897 of 3.35 TB/s).
//!
//! On another card the fractions stay and the peaks change: an H200 has the H100's compute and
//! 4.8 TB/s, so every DRAM-bound class runs 4.8 / 3.35 = 1.43× faster and the compute-bound ones
//! (GEMMs at the forward's sizes, attention) not at all — a prediction, never measured. The fixed
//! per-launch costs are fitted on the latency rows by `gpu::cost_model`, which runs the executor.

use serde::Deserialize;

use super::costs::{KernelClass, Profile};
use super::{Card, ModelDevice};
use crate::kernels::device::{Device, GemmDesc};
use crate::kernels::params::*;
use crate::kernels::{ops, Dtype, KernelError};

/// The committed calibration file (read at build time: nothing is typed twice).
pub const H100_2026_11_25: &str = include_str!("../../../profiles/calibration/h100-2026-11-25.json");
/// Where it lives, for provenance in the output.
pub const H100_2026_11_25_PATH: &str = "profiles/calibration/h100-2026-11-25.json";

#[derive(Clone, Debug, Deserialize)]
pub struct CalibrationFile {
    pub card: String,
    pub date: String,
    pub assumptions: Assumptions,
    pub ceilings: Vec<Ceiling>,
    pub microbench: Vec<MicroRow>,
    pub ncu: Table<NcuRow>,
    pub latency: Table<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Assumptions {
    pub pcie_bytes_per_s: f64,
    pub pcie_source: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Table<R> {
    pub what: String,
    pub run: String,
    pub commit: String,
    pub rows: Vec<R>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Ceiling {
    pub id: String,
    pub gb_s: Option<f64>,
    pub tflops: Option<f64>,
    pub m: Option<u32>,
    pub n: Option<u32>,
    pub k: Option<u32>,
    pub run: String,
    pub commit: String,
    #[serde(rename = "use")]
    pub split: Split,
}

/// A microbenchmark case: `op` and the dimensions it needs (the others absent).
#[derive(Clone, Debug, Deserialize)]
pub struct MicroRow {
    pub id: String,
    pub op: String,
    pub tokens: Option<u32>,
    pub hidden: Option<u32>,
    pub vocab: Option<u32>,
    pub heads: Option<u32>,
    pub head_dim: Option<u32>,
    pub sequences: Option<u32>,
    pub seqlen: Option<u32>,
    pub window_radius: Option<i32>,
    pub inter: Option<u32>,
    pub dim: Option<u32>,
    pub us: f64,
    pub run: String,
    pub commit: String,
    #[serde(rename = "use")]
    pub split: Split,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NcuRow {
    pub id: String,
    pub class: String,
    pub mean_us: f64,
    #[serde(rename = "use")]
    pub split: Split,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LatencyRow {
    pub batch: usize,
    pub len: usize,
    pub graphs: bool,
    pub p50_us: f64,
    #[serde(rename = "use")]
    pub split: Split,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ThroughputRow {
    pub set: String,
    pub shape: String,
    pub sequences: usize,
    pub passes: usize,
    pub tokens_per_s: f64,
    pub run: String,
    pub commit: String,
    #[serde(rename = "use")]
    pub split: Split,
}

/// Whether a measurement sets a parameter or is only compared with the prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Split {
    #[serde(rename = "calibration")]
    Calibration,
    #[serde(rename = "held-out")]
    HeldOut,
}

fn bad(message: impl Into<String>) -> KernelError {
    KernelError::Unsupported {
        kernel: "cost model calibration".into(),
        message: message.into(),
    }
}

impl CalibrationFile {
    /// The committed H100 file.
    pub fn h100() -> Result<Self, KernelError> {
        serde_json::from_str(H100_2026_11_25).map_err(|e| bad(format!("{H100_2026_11_25_PATH}: {e}")))
    }

    /// The copy ceiling in bytes/s (the one row with `gb_s`).
    pub fn copy_bytes_per_s(&self) -> Result<f64, KernelError> {
        self.ceilings
            .iter()
            .find_map(|c| c.gb_s)
            .map(|g| g * 1e9)
            .ok_or_else(|| bad("no copy ceiling"))
    }
}

/// A scratch model device on the calibration card with `profile`, for one case.
fn scratch(profile: &Profile) -> ModelDevice {
    ModelDevice::new(Card::H100, None, profile.clone())
}

fn need(row: &MicroRow, v: Option<u32>, what: &str) -> Result<u32, KernelError> {
    v.ok_or_else(|| bad(format!("microbench row `{}` has no `{what}`", row.id)))
}

/// Upload a BatchDesc for `tokens` / `sequences` into a small buffer; returns its address.
fn batch_desc(
    dev: &dyn Device,
    keep: &mut Vec<crate::kernels::device::DeviceBuffer>,
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
    keep: &mut Vec<crate::kernels::device::DeviceBuffer>,
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
            ops::attention(dev, dt, &p)
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

/// The ncu table's batch: base short-fixed, 512 × 512 tokens.
pub const NCU_TOKENS: u32 = 512 * 512;

/// Predicted seconds of one microbenchmark case under `profile` (with its fixed cost).
pub fn predict_micro(profile: &Profile, row: &MicroRow) -> Result<f64, KernelError> {
    let dev = scratch(profile);
    launch_micro(&dev, row)?;
    Ok(dev.ledger().kernel_seconds())
}

/// Predicted seconds of GEMMs of `shapes` under `profile`.
pub fn predict_gemms(profile: &Profile, shapes: &[(u32, u32, u32)]) -> Result<f64, KernelError> {
    let dev = scratch(profile);
    launch_gemms(&dev, shapes)?;
    Ok(dev.ledger().kernel_seconds())
}

/// The efficiencies of every class from the calibration rows, given the fixed per-launch cost
/// `kernel_fixed_s` (subtracted from each measured time: the rest is the roofline part).
pub fn fit_efficiencies(file: &CalibrationFile, kernel_fixed_s: f64) -> Result<Profile, KernelError> {
    let h100 = Card::H100;
    let base = Profile::at_peaks(
        h100.peak_flops(),
        h100.dram_bytes_per_s(),
        file.assumptions.pcie_bytes_per_s,
    );
    let mut fitted = base.clone();
    let copy = file.copy_bytes_per_s()? / h100.dram_bytes_per_s();
    for class in [
        KernelClass::Gemm,
        KernelClass::AttentionGlobal,
        KernelClass::AttentionLocal,
        KernelClass::GatherRows,
        KernelClass::SoftmaxTopk,
    ] {
        fitted.efficiency[class.index()].memory = copy;
    }
    // Work at the peaks / the measured time of its roofline part = the fraction of the peak.
    let fraction = |at_peaks_s: f64, measured_s: f64, what: &str| -> Result<f64, KernelError> {
        let roof = measured_s - kernel_fixed_s;
        if !(roof > 0.0 && at_peaks_s > 0.0) {
            return Err(bad(format!("{what}: measured {measured_s} s leaves no roofline time")));
        }
        Ok(at_peaks_s / roof)
    };
    for row in file.microbench.iter().filter(|r| r.split == Split::Calibration) {
        let dev = scratch(&base);
        launch_micro(&dev, row)?;
        let ledger = dev.ledger();
        let (class, totals) = KernelClass::ALL
            .into_iter()
            .map(|c| (c, ledger.classes[c.index()]))
            .find(|(_, t)| t.launches > 0)
            .ok_or_else(|| bad(format!("`{}` launched nothing", row.id)))?;
        let e = &mut fitted.efficiency[class.index()];
        if totals.flops > 0.0 {
            e.compute = fraction(totals.flops / base.peak_flops, row.us * 1e-6, &row.id)?;
        } else {
            e.memory = fraction(totals.seconds, row.us * 1e-6, &row.id)?;
        }
    }
    // head_act_norm is the same register-resident row kernel as layernorm (norm.cuh).
    fitted.efficiency[KernelClass::HeadActNorm.index()] = fitted.efficiency[KernelClass::LayerNorm.index()];
    let config = crate::bench::shape_config(crate::bench::ShapeArg::Base, None).map_err(|e| bad(e.to_string()))?;
    for row in file.ncu.rows.iter().filter(|r| r.split == Split::Calibration) {
        if KernelClass::from_name(&row.class) != Some(KernelClass::Gemm) {
            return Err(bad(format!("ncu row `{}`: only the GEMM row can calibrate", row.id)));
        }
        let shapes = layer_gemms(&config, NCU_TOKENS);
        let flops: f64 = shapes
            .iter()
            .map(|&(m, n, k)| 2.0 * m as f64 * n as f64 * k as f64)
            .sum();
        let per_gemm_at_peak = flops / shapes.len() as f64 / base.peak_flops;
        fitted.efficiency[KernelClass::Gemm.index()].compute = fraction(per_gemm_at_peak, row.mean_us * 1e-6, &row.id)?;
    }
    fitted.kernel_fixed_s = kernel_fixed_s;
    Ok(fitted)
}

/// `profile`'s efficiencies and fixed costs on another card: the same fractions of its peaks.
pub fn for_card(profile: &Profile, card: Card) -> Profile {
    Profile {
        peak_flops: card.peak_flops(),
        dram_bytes_per_s: card.dram_bytes_per_s(),
        ..profile.clone()
    }
}
