//! `modernbert bench --device model:h100 --model-errors`: the cost model against every committed
//! H100 measurement it can reproduce (profiles/calibration/h100-2026-11-25.json), in two lists —
//! the rows it was calibrated on (their error shows the fit, not the model's skill) and the rows
//! it never saw (held out). One JSON line per row, then one summary line per list.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{BenchArgs, OutputArg, SetArg, ShapeArg};
use crate::engine::DeviceChoice;
use crate::error::{Error, Result};
use crate::gpu::cost_model;
use crate::gpu::{GpuExecutor, GpuPathChoice};
use crate::kernels::model::calibration::{self, CalibrationFile, Split};
use crate::kernels::model::{Card, KernelClass, ModelDevice, Profile};
use crate::kernels::Dtype;
use crate::reference::ops::Pooling;

/// One compared measurement.
struct Compared {
    split: Split,
    source: &'static str,
    id: String,
    unit: &'static str,
    measured: f64,
    predicted: f64,
    provenance: String,
}

impl Compared {
    fn error_pct(&self) -> f64 {
        100.0 * (self.predicted - self.measured) / self.measured
    }
}

fn model_err(e: crate::kernels::KernelError) -> Error {
    Error::Device(format!("cost model: {e}"))
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Calibration => "calibration",
        Split::HeldOut => "held-out",
    }
}

/// Per-class mean predicted µs of one base forward of the ncu batch (512 × 512 tokens).
fn ncu_forward(profile: &Profile) -> Result<crate::kernels::model::Ledger> {
    let base = super::shape_config(ShapeArg::Base, None)?;
    let dev = Arc::new(ModelDevice::new(Card::H100, Some((8, 0)), profile.clone()));
    let (seqs, len) = (512usize, 512usize);
    let path = GpuPathChoice::Portable;
    let exec = GpuExecutor::without_weights(dev.clone(), Dtype::Bf16, &base, seqs * len, seqs, path)?;
    let ids: Vec<Vec<u32>> = (0..seqs).map(|_| vec![100u32; len]).collect();
    let batch = crate::batch::PackedBatch::from_sequences(&ids)?;
    let mut out = vec![0f32; seqs * base.hidden_size];
    exec.pooled_into(&batch, Pooling::Cls, false, base.hidden_size, false, &mut out)?;
    Ok(dev.ledger())
}

/// The bench's own throughput run of a committed row, on the model: its predicted tok/s.
fn throughput(args: &BenchArgs, set: &str, shape: &str, sequences: usize, passes: usize) -> Result<f64> {
    let set_arg = match set {
        "short-fixed" => SetArg::ShortFixed,
        "short-variable" => SetArg::ShortVariable,
        "long-fixed" => SetArg::LongFixed,
        "long-variable" => SetArg::LongVariable,
        other => return Err(Error::Input(format!("calibration file: unknown set `{other}`"))),
    };
    let shape_arg = match shape {
        "base" => ShapeArg::Base,
        "large" => ShapeArg::Large,
        other => return Err(Error::Input(format!("calibration file: unknown shape `{other}`"))),
    };
    let row_args = BenchArgs {
        model: None,
        shape: Some(shape_arg),
        layers: None,
        set: vec![set_arg],
        max_len: None,
        sequences,
        passes,
        output: OutputArg::Cls,
        latency: false,
        model_errors: false,
        // The committed measurements ran the portable launches.
        gpu_path: GpuPathChoice::Portable,
        ..args.clone()
    };
    let src = super::model_source(&row_args)?;
    let mut predicted = None;
    super::run_throughput(&row_args, &src, &mut |line: Value| {
        predicted = line["predicted_tokens_per_s"].as_f64();
        Ok(())
    })?;
    predicted.ok_or_else(|| Error::Device("the model bench printed no predicted_tokens_per_s".into()))
}

fn compare(args: &BenchArgs) -> Result<Vec<Compared>> {
    let file = CalibrationFile::h100().map_err(model_err)?;
    let profile = cost_model::profile(Card::H100)?;
    let mut rows = Vec::new();
    for c in &file.ceilings {
        if let (Some(t), Some(m), Some(n), Some(k)) = (c.tflops, c.m, c.n, c.k) {
            let s = calibration::predict_gemms(&profile, &[(m, n, k)]).map_err(model_err)?;
            let flops = 2.0 * m as f64 * n as f64 * k as f64;
            rows.push(Compared {
                split: c.split,
                source: "ceiling",
                id: c.id.clone(),
                unit: "TFLOP/s",
                measured: t,
                predicted: flops / s / 1e12,
                provenance: format!("run {} ({})", c.run, c.commit),
            });
        }
    }
    for r in &file.microbench {
        rows.push(Compared {
            split: r.split,
            source: "microbench",
            id: r.id.clone(),
            unit: "us",
            measured: r.us,
            predicted: calibration::predict_micro(&profile, r).map_err(model_err)? * 1e6,
            provenance: format!("run {} ({})", r.run, r.commit),
        });
    }
    let ledger = ncu_forward(&profile)?;
    for r in &file.ncu.rows {
        let class = KernelClass::from_name(&r.class)
            .ok_or_else(|| Error::Input(format!("calibration file: unknown class `{}`", r.class)))?;
        let t = ledger.classes[class.index()];
        rows.push(Compared {
            split: r.split,
            source: "ncu",
            id: r.id.clone(),
            unit: "us",
            measured: r.mean_us,
            predicted: t.seconds * 1e6 / t.launches.max(1) as f64,
            provenance: format!("run {} ({})", file.ncu.run, file.ncu.commit),
        });
    }
    let base = super::shape_config(ShapeArg::Base, None)?;
    for r in &file.latency.rows {
        let (s, _) = cost_model::latency_call(&profile, &base, r.batch, r.len, r.graphs)?;
        rows.push(Compared {
            split: r.split,
            source: "latency",
            id: format!("{} x {} graphs {}", r.batch, r.len, if r.graphs { "on" } else { "off" }),
            unit: "us p50",
            measured: r.p50_us,
            predicted: s * 1e6,
            provenance: format!("run {} ({})", file.latency.run, file.latency.commit),
        });
    }
    for r in &file.throughput {
        rows.push(Compared {
            split: r.split,
            source: "throughput",
            id: format!("{} {} ({} x {})", r.shape, r.set, r.sequences, r.passes),
            unit: "tok/s",
            measured: r.tokens_per_s,
            predicted: throughput(args, &r.set, &r.shape, r.sequences, r.passes)?,
            provenance: format!("run {} ({})", r.run, r.commit),
        });
    }
    Ok(rows)
}

pub fn run(args: &BenchArgs, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    if !matches!(args.device, DeviceChoice::Model { card: Card::H100, .. }) {
        return Err(Error::Input(
            "--model-errors needs --device model:h100[:sm80|:sm90]: the committed measurements are an H100's".into(),
        ));
    }
    let rows = compare(args)?;
    for split in [Split::Calibration, Split::HeldOut] {
        let mine: Vec<&Compared> = rows.iter().filter(|r| r.split == split).collect();
        let mut table = Vec::new();
        for r in &mine {
            emit(json!({
                "bench": "model-error",
                "split": split_name(split),
                "source": r.source,
                "id": r.id,
                "unit": r.unit,
                "measured": r.measured,
                "predicted": (r.predicted * 100.0).round() / 100.0,
                "error_pct": (r.error_pct() * 100.0).round() / 100.0,
                "measured_provenance": r.provenance,
                "calibration": calibration::H100_2026_11_25_PATH,
            }))?;
            table.push(vec![
                r.source.to_string(),
                r.id.clone(),
                format!("{:.1}", r.measured),
                format!("{:.1}", r.predicted),
                format!("{:+.1}%", r.error_pct()),
            ]);
        }
        let abs: Vec<f64> = mine.iter().map(|r| r.error_pct().abs()).collect();
        let mean = abs.iter().sum::<f64>() / abs.len().max(1) as f64;
        let max = abs.iter().cloned().fold(0.0, f64::max);
        emit(json!({
            "bench": "model-errors-summary",
            "split": split_name(split),
            "rows": abs.len(),
            "mean_abs_error_pct": (mean * 100.0).round() / 100.0,
            "max_abs_error_pct": (max * 100.0).round() / 100.0,
        }))?;
        eprintln!(
            "# cost model vs the committed H100 measurements: {} rows ({}), mean |error| {mean:.1} %, max {max:.1} %",
            split_name(split),
            abs.len()
        );
        super::print_table(&["source", "measurement", "measured", "predicted", "error"], &table);
    }
    Ok(())
}
