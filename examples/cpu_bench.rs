//! CPU executor throughput on a random ModernBERT-base (speed does not depend on weight values):
//! 8 sequences × 512 tokens, one warm-up, median of 5 runs. Prints one JSON line, comparable with
//! `scripts/bench_cpu_torch.py` (transformers, sdpa, same machine and threads).
//!
//! Run: cargo run --release --example cpu_bench [-- --sequences 8 --tokens 512 --runs 5]

use std::time::Instant;

use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::model::{BackboneWeights, LayerWeights, Linear, Norm};
use modernbert::reference::CpuExecutor;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
    fn linear(&mut self, out: usize, inp: usize) -> Linear {
        Linear {
            weight: self.vec(out * inp, 1.0 / (inp as f32).sqrt()),
            bias: None,
            out_features: out,
            in_features: inp,
            packed: Default::default(),
        }
    }
    fn norm(&mut self, h: usize) -> Norm {
        Norm {
            weight: self.vec(h, 0.5).iter().map(|v| 1.0 + v).collect(),
            bias: None,
        }
    }
}

fn main() {
    let (sequences, tokens, runs) = (arg("--sequences", 8), arg("--tokens", 512), arg("--runs", 5));
    let config = ModelConfig::from_json_str(r#"{"model_type": "modernbert"}"#, "base".as_ref()).unwrap();
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let weights = BackboneWeights {
        tok_embeddings: rng.vec(config.vocab_size * h, 1.0),
        emb_norm: rng.norm(h),
        layers: (0..config.num_hidden_layers)
            .map(|l| LayerWeights {
                attn_norm: (l > 0).then(|| rng.norm(h)),
                wqkv: rng.linear(3 * h, h),
                wo: rng.linear(h, h),
                mlp_norm: rng.norm(h),
                wi: rng.linear(2 * i, h),
                mlp_wo: rng.linear(h, i),
            })
            .collect(),
        final_norm: rng.norm(h),
    };
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
