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

pub use super::cases::{launch_gemms, launch_micro, layer_gemms};
use super::costs::{ClassEfficiency, KernelClass, Profile};
use super::{Card, ModelDevice};
use crate::kernels::KernelError;

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
    /// [`Profile::dependent_fixed_s`].
    pub pdl_handoff_s: f64,
    pub pdl_handoff_source: String,
    /// [`Profile::grid_barrier_s`].
    pub grid_barrier_s: f64,
    pub grid_barrier_source: String,
    /// [`Profile::head_handoff_s`].
    pub head_handoff_s: f64,
    pub head_handoff_source: String,
    /// The stream tile's math (`stream_tile.cuh`: mma.sync with both operands from shared memory,
    /// the gemm_stream class's compute rate), useful TFLOP/s over the whole card.
    pub stream_tile_tflops: f64,
    pub stream_tile_source: String,
    /// [`Profile::l2_bytes_per_s`].
    pub l2_bytes_per_s: f64,
    pub l2_source: String,
    /// The useful FLOP rates of `attention_sm90` (global layers; windows), never measured.
    pub attention_sm90_global_tflops: f64,
    pub attention_sm90_local_tflops: f64,
    pub attention_sm90_source: String,
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

pub(super) fn bad(message: impl Into<String>) -> KernelError {
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
    // gemm_stream_sm90 has never run on a GPU: assumed at the copy ceiling (it streams its
    // weights with 16-byte loads, as the copy does) and at the file's assumed rate for its math
    // (mma.sync fed from shared memory, far below the tiled GEMMs' wgmma).
    let stream_tflops = file.assumptions.stream_tile_tflops;
    if !(stream_tflops > 0.0 && stream_tflops * 1e12 <= base.peak_flops) {
        return Err(bad(format!("the stream tile assumed at {stream_tflops} TFLOP/s")));
    }
    fitted.efficiency[KernelClass::GemmStream.index()] = ClassEfficiency {
        compute: stream_tflops * 1e12 / base.peak_flops,
        memory: copy,
    };
    // attention_sm90 has never run on a GPU: its compute rates are the file's assumptions, its
    // memory side the copy ceiling, as the measured attention's.
    for (class, tflops) in [
        (
            KernelClass::AttentionSm90Global,
            file.assumptions.attention_sm90_global_tflops,
        ),
        (
            KernelClass::AttentionSm90Local,
            file.assumptions.attention_sm90_local_tflops,
        ),
    ] {
        if !(tflops > 0.0 && tflops * 1e12 <= base.peak_flops) {
            return Err(bad(format!("{} assumed at {tflops} TFLOP/s", class.name())));
        }
        fitted.efficiency[class.index()] = ClassEfficiency {
            compute: tflops * 1e12 / base.peak_flops,
            memory: copy,
        };
    }
    fitted.kernel_fixed_s = kernel_fixed_s;
    fitted.dependent_fixed_s = file.assumptions.pdl_handoff_s;
    fitted.l2_bytes_per_s = file.assumptions.l2_bytes_per_s;
    fitted.grid_barrier_s = file.assumptions.grid_barrier_s;
    fitted.head_handoff_s = file.assumptions.head_handoff_s;
    // forward_small_sm90's time is its steps' (Profile::persistent_s); its class's efficiency is
    // only the stream GEMM's, so that nothing reads an unfitted 1.0.
    fitted.efficiency[KernelClass::ForwardSmall.index()] = fitted.efficiency[KernelClass::GemmStream.index()];
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
