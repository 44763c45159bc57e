//! The CPU GEMM at ModernBERT-base's shapes: the packed microkernel (`reference::sgemm`) beside the
//! `gemm` crate (which packs the weight on every call), interleaved, best of N per shape. Prints
//! GFLOP/s and the weight-streaming rate (GB/s of f32 weights per call).
//!
//! `--stream N` multiplies by N distinct copies of each weight in turn, so that (for N·bytes beyond
//! the L3) the weights come from DRAM as in a forward, where each weight is read once per call.
//!
//! Run: cargo run --release --example sgemm_bench [-- --rows 32 --runs 20 --stream 64]

use std::time::Instant;

use modernbert::matmul::linear_f32;
use modernbert::reference::sgemm::{linear_packed, PackedWeight};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (rows, runs, copies) = (arg("--rows", 32), arg("--runs", 20), arg("--stream", 1).max(1));
    // Wqkv / Wi (768 → 2304), Wo (768 → 768), MLP Wo (1152 → 768).
    for (k, n) in [(768, 2304), (768, 768), (1152, 768)] {
        let a: Vec<f32> = (0..rows * k).map(|i| (i % 97) as f32 * 0.01 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 89) as f32 * 0.01 - 0.4).collect();
        let packed: Vec<PackedWeight> = (0..copies).map(|_| PackedWeight::new(&w, n, k)).collect();
        let plain: Vec<Vec<f32>> = (0..copies).map(|_| w.clone()).collect();
        let mut out = vec![0f32; rows * n];
        let (mut i, mut j) = (0, 0);
        let ours = best_of(runs, || {
            linear_packed(&a, &packed[i % copies], None, rows, &mut out);
            i += 1;
        });
        let crate_ = best_of(runs, || {
            linear_f32(&a, &plain[j % copies], None, rows, k, n, &mut out);
            j += 1;
        });
        let flop = 2.0 * (rows * k * n) as f64;
        let bytes = (n * k * 4) as f64;
        for (name, s) in [(format!("{:?}", packed[0].isa()), ours), ("gemm-crate".into(), crate_)] {
            println!(
                "{{\"kernel\":\"{name}\",\"m\":{rows},\"k\":{k},\"n\":{n},\"copies\":{copies},\"threads\":{},\"us\":{:.1},\"gflops\":{:.1},\"weight_gbps\":{:.1}}}",
                rayon::current_num_threads(),
                s * 1e6,
                flop / s / 1e9,
                bytes / s / 1e9
            );
        }
    }
}
