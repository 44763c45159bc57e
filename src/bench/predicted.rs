//! The bench on the cost model (`--device model:<card>`): the same sets, batches and calls as on
//! a GPU, timed by the model's predicted clock instead of the wall clock, and every timing field
//! moved to a `predicted_*` name (the measured name is null: nothing here was measured). The
//! exact counts — launches per forward, activation bytes per token, each class's FLOPs and
//! bytes — come from the launches the executor issued.

use std::time::Instant;

use serde_json::{json, Value};

use crate::kernels::model::{calibration, KernelClass, Ledger, ModelDevice};

/// Seconds on the wall clock, or on the model's predicted host clock.
pub struct Clock<'a> {
    start: Instant,
    model: Option<&'a ModelDevice>,
}

impl<'a> Clock<'a> {
    pub fn new(model: Option<&'a ModelDevice>) -> Self {
        Clock {
            start: Instant::now(),
            model,
        }
    }
    pub fn now_s(&self) -> f64 {
        match self.model {
            Some(m) => m.clock_s(),
            None => self.start.elapsed().as_secs_f64(),
        }
    }
}

/// Move each timing field `k` of `line` to `predicted_k`, leaving `k` null.
pub fn relabel(line: &mut Value, keys: &[&str]) {
    if let Value::Object(m) = line {
        for k in keys {
            if let Some(v) = m.insert((*k).to_string(), Value::Null) {
                m.insert(format!("predicted_{k}"), v);
            }
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// `launches_per_forward`: every forward of a run issues the same list (the layer loop is fixed),
/// so the ledger's launches divide evenly; `None` if they do not.
pub fn launches_per_forward(ledger: &Ledger, forwards: u64) -> Option<u64> {
    let n = ledger.launches();
    (forwards > 0 && n.is_multiple_of(forwards)).then(|| n / forwards)
}

/// The fields a model run adds to a JSON line: what was counted exactly, then the predictions.
/// `forwards` calls over `tokens` real tokens made `ledger`.
pub fn fields(model: &ModelDevice, ledger: &Ledger, forwards: u64, tokens: u64) -> Value {
    let total_s = ledger.kernel_seconds();
    let breakdown: Vec<Value> = KernelClass::ALL
        .into_iter()
        .filter_map(|c| {
            let t = ledger.classes[c.index()];
            (t.launches > 0).then(|| {
                json!({
                    "class": c.name(),
                    "launches": t.launches,
                    "flops": t.flops,
                    "bytes": t.param_bytes + t.activation_bytes,
                    "activation_bytes": t.activation_bytes,
                    "predicted_us": round(t.seconds * 1e6, 1),
                    "predicted_mean_us": round(t.seconds * 1e6 / t.launches as f64, 2),
                    "predicted_share": round(if total_s > 0.0 { t.seconds / total_s } else { 0.0 }, 4),
                })
            })
        })
        .collect();
    let p = model.profile();
    json!({
        "prediction": true,
        "calibration": calibration::H100_2026_11_25_PATH,
        "launches_per_forward": launches_per_forward(ledger, forwards),
        "graph_replays": ledger.graph_replays,
        "activation_bytes_per_token": if tokens > 0 { Some(ledger.activation_bytes() / tokens as f64) } else { None },
        "model_flops_counted": ledger.flops(),
        "predicted_kernel_us": round(total_s * 1e6, 1),
        "predicted_breakdown": breakdown,
        "model_profile": {
            "peak_tflops": p.peak_flops / 1e12,
            "dram_gb_s": p.dram_bytes_per_s / 1e9,
            "efficiency": KernelClass::ALL
                .into_iter()
                .map(|c| {
                    let e = p.efficiency(c);
                    (c.name().to_string(), json!({"compute": round(e.compute, 4), "memory": round(e.memory, 4)}))
                })
                .collect::<serde_json::Map<String, Value>>(),
            "kernel_fixed_us": round(p.kernel_fixed_s * 1e6, 3),
            "dependent_fixed_us": round(p.dependent_fixed_s * 1e6, 3),
            "l2_gb_s": p.l2_bytes_per_s / 1e9,
            "grid_barrier_us": round(p.grid_barrier_s * 1e6, 3),
            "head_handoff_us": round(p.head_handoff_s * 1e6, 3),
            "host_launch_us": round(p.host_launch_s * 1e6, 3),
        },
    })
}

/// The breakdown as a human table on stderr.
pub fn print_breakdown(set: &str, ledger: &Ledger, passes: usize) {
    let total = ledger.kernel_seconds();
    let rows: Vec<Vec<String>> = KernelClass::ALL
        .into_iter()
        .filter(|c| ledger.classes[c.index()].launches > 0)
        .map(|c| {
            let t = ledger.classes[c.index()];
            let per_pass = passes.max(1) as f64;
            vec![
                c.name().to_string(),
                format!("{}", t.launches as f64 / per_pass),
                format!("{:.3}", t.flops / per_pass / 1e12),
                format!("{:.2}", (t.param_bytes + t.activation_bytes) / per_pass / 1e9),
                format!("{:.1}", t.seconds / per_pass * 1e3),
                format!("{:.2}", t.seconds * 1e6 / t.launches as f64),
                format!("{:.1}%", 100.0 * t.seconds / total.max(f64::MIN_POSITIVE)),
            ]
        })
        .collect();
    eprintln!("# {set}: predicted per pass (cost model, not measured)");
    super::print_table(
        &[
            "class",
            "launches",
            "TFLOP",
            "GB",
            "pred. ms",
            "pred. µs/launch",
            "share",
        ],
        &rows,
    );
}
