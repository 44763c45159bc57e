//! CPU executor throughput on a random ModernBERT-base (speed does not depend on weight values):
//! 8 sequences × 512 tokens, one warm-up, median of 5 runs. Prints one JSON line, comparable with
//! `scripts/bench_cpu_torch.py` (transformers, sdpa, same machine and threads).
//!
//! Run: cargo run --release --example cpu_bench [-- --sequences 8 --tokens 512 --runs 5]

use std::time::Instant;

use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::reference::CpuExecutor;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (sequences, tokens, runs) = (arg("--sequences", 8), arg("--tokens", 512), arg("--runs", 5));
    let config = ModelConfig::from_json_str(r#"{"model_type": "modernbert"}"#, "base".as_ref()).unwrap();
    let weights = modernbert::bench::random_weights(&config, 0x9E37_79B9_7F4A_7C15);
    let exec = CpuExecutor::new(config, weights);
    let ids: Vec<Vec<u32>> = (0..sequences)
        .map(|s| {
            (0..tokens)
                .map(|t| 100 + ((s * 7919 + t * 104729) % 15900) as u32)
                .collect()
        })
        .collect();
    let batch = PackedBatch::from_sequences(&ids).unwrap();
    exec.forward(&batch).unwrap(); // warm-up
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(exec.forward(&batch).unwrap());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\":\"modernbert-cpu\",\"threads\":{},\"tokens\":{},\"seconds\":{:.4},\"tokens_per_s\":{:.1}}}",
        rayon::current_num_threads(),
        batch.tokens(),
        median,
        batch.tokens() as f64 / median
    );
}
