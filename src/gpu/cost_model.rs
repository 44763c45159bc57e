//! The calibrated cost model: the kernel classes' efficiencies (`kernels::model::calibration`)
//! plus the two fixed costs only a whole forward can show, fitted here by running the executor
//! on a model device.
//!
//! - `kernel_fixed_s`, GPU time every launch takes beyond its roofline time: from the batch-1
//!   8-token latency with graphs (one host launch, then 200 tiny kernels back to back on the GPU:
//!   `t_on = host_launch + N·(fixed + roofline)`).
//! - `host_launch_s`, host time per direct launch: from the same row without graphs, where the
//!   host issuing 200 launches one by one is slower than the GPU running them
//!   (`t_off ≈ N·host_launch + the last kernel`).
//!
//! Both rows are the calibration's; every other latency row is held out. The per-call copies (a
//! few hundred bytes up, 3 KB down at batch 1) are costed at the assumed PCIe rate; their fixed
//! latencies are not separable from these two numbers with the committed measurements, so they
//! are inside them.

use std::sync::{Arc, OnceLock};

use crate::batch::PackedBatch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::{GpuExecutor, GpuPathChoice};
use crate::kernels::model::calibration::{self, CalibrationFile, LatencyRow, Split};
use crate::kernels::model::{Card, ModelDevice, Profile};
use crate::kernels::{Dtype, KernelError};
use crate::reference::ops::Pooling;

fn model_err(e: KernelError) -> Error {
    Error::Device(format!("cost model: {e}"))
}

/// The latency bench's arena: its default batches (1, 8) × lengths (… 512).
const LATENCY_MAX_TOKENS: usize = 8 * 512;
const LATENCY_MAX_SEQUENCES: usize = 8;

/// The base model's latency call of `batch` sequences × `len` tokens — warm-up (which records
/// the graph), then one timed call: upload, forward, CLS pooled, download — on a model device
/// with `profile`. Returns (predicted seconds, launches of the timed call).
pub fn latency_call(
    profile: &Profile,
    config: &ModelConfig,
    batch: usize,
    len: usize,
    graphs: bool,
) -> Result<(f64, u64)> {
    let dev = Arc::new(ModelDevice::new(Card::H100, None, profile.clone()));
    let exec = GpuExecutor::without_weights(
        dev.clone(),
        Dtype::Bf16,
        config,
        LATENCY_MAX_TOKENS,
        LATENCY_MAX_SEQUENCES,
        // The measurements it is fitted to ran the portable launches.
        GpuPathChoice::Portable,
    )?
    .with_graphs(graphs);
    let seqs: Vec<Vec<u32>> = (0..batch).map(|_| vec![100u32; len]).collect();
    let b = PackedBatch::from_sequences(&seqs)?;
    let mut out = vec![0f32; batch * config.hidden_size];
    let h = config.hidden_size;
    exec.pooled_into(&b, Pooling::Cls, false, h, false, &mut out)?;
    dev.reset_ledger();
    let start = dev.clock_s();
    exec.pooled_into(&b, Pooling::Cls, false, h, false, &mut out)?;
    Ok((dev.clock_s() - start, dev.ledger().launches()))
}

fn calibration_row(file: &CalibrationFile, graphs: bool) -> Result<&LatencyRow> {
    file.latency
        .rows
        .iter()
        .find(|r| r.split == Split::Calibration && r.graphs == graphs)
        .ok_or_else(|| Error::Device(format!("cost model: no calibration latency row with graphs {graphs}")))
}

/// Fit the H100 profile: efficiencies given the fixed cost, the fixed costs given the
/// efficiencies, three rounds (the fixed cost moves the big kernels' efficiencies by < 1 %).
pub fn fit_h100(file: &CalibrationFile) -> Result<Profile> {
    let base = crate::bench::shape_config(crate::bench::ShapeArg::Base, None)?;
    let (on, off) = (calibration_row(file, true)?, calibration_row(file, false)?);
    let (mut fixed, mut host) = (0.0f64, 0.0f64);
    let mut profile = calibration::fit_efficiencies(file, fixed).map_err(model_err)?;
    for _ in 0..3 {
        profile = calibration::fit_efficiencies(file, fixed).map_err(model_err)?;
        // Both times are close to linear in their parameter with slope N (launches): Newton
        // steps converge in a few iterations.
        for _ in 0..8 {
            profile.kernel_fixed_s = fixed;
            profile.host_launch_s = host;
            let (t_on, n) = latency_call(&profile, &base, on.batch, on.len, true)?;
            let (t_off, _) = latency_call(&profile, &base, off.batch, off.len, false)?;
            fixed += (on.p50_us * 1e-6 - t_on) / n as f64;
            host += (off.p50_us * 1e-6 - t_off) / n as f64;
        }
    }
    profile.kernel_fixed_s = fixed;
    profile.host_launch_s = host;
    if !(fixed > 0.0 && host > 0.0) {
        return Err(Error::Device(format!(
            "cost model: the latency fit gave fixed {fixed} s, host {host} s per launch"
        )));
    }
    Ok(profile)
}

/// The calibrated profile of `card` (fitted once per process: deterministic, ~50 simulated
/// forwards).
pub fn profile(card: Card) -> Result<Profile> {
    static H100: OnceLock<std::result::Result<Profile, String>> = OnceLock::new();
    let h100 = H100
        .get_or_init(|| {
            CalibrationFile::h100()
                .map_err(|e| e.to_string())
                .and_then(|f| fit_h100(&f).map_err(|e| e.to_string()))
        })
        .clone()
        .map_err(Error::Device)?;
    Ok(calibration::for_card(&h100, card))
}

/// A model device of `card`, calibrated; `capability` forces a code path.
pub fn model_device(card: Card, capability: Option<(u32, u32)>) -> Result<ModelDevice> {
    Ok(ModelDevice::new(card, capability, profile(card)?))
}
