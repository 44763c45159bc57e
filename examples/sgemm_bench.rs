//! The CPU GEMM at ModernBERT-base's shapes: the packed microkernel (`reference::sgemm`) beside the
//! `gemm` crate (which packs the weight on every call), interleaved, best of N per shape. Prints
//! GFLOP/s and the weight-streaming rate (GB/s of f32 weights per call).
//!
//! `--stream N` multiplies by N distinct copies of each weight in turn, so that (for N·bytes beyond
//! the L3) the weights come from DRAM as in a forward, where each weight is read once per call.
//!
//! The first line is the machine's read bandwidth (a 512 MiB f32 sum on all threads), the floor
//! of a small-batch forward that must stream every weight once.
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

/// GB/s of a parallel f32 sum over `bytes` (best of `runs`).
fn read_bandwidth(bytes: usize, runs: usize) -> f64 {
    use rayon::prelude::*;
    let v: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
    let s = best_of(runs, || {
        // 16 independent lanes, so the adds vectorise and the loads, not the add latency, bound it.
        let lanes = |c: &[f32]| {
            let mut acc = [0f32; 16];
            for x in c.chunks_exact(16) {
                acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
            }
            acc.iter().sum::<f32>()
        };
        let sum: f32 = v.par_chunks(1 << 16).map(lanes).sum();
        std::hint::black_box(sum);
    });
    bytes as f64 / s / 1e9
}

fn main() {
    let (rows, runs, copies) = (arg("--rows", 32), arg("--runs", 20), arg("--stream", 1).max(1));
    // Wqkv / Wi (768 → 2304), Wo (768 → 768), MLP Wo (1152 → 768).
    println!(
        "{{\"read_gbps\":{:.1},\"threads\":{}}}",
        read_bandwidth(512 << 20, 5),
        rayon::current_num_threads()
    );
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
