//! The benchmark's workload and its costs, pure functions of (model shape, set): the paper's
//! synthetic sets exactly as documented in `bench.rs`, FLOPs, the device memory of the GPU
//! executor's plans, the cards' peaks, and seeded random weights.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::bench::{SetArg, ShapeArg};
use crate::config::{LayerKind, ModelConfig};
use crate::error::Result;
use crate::model::{BackboneWeights, LayerWeights, Linear, Norm};

/// The seed of the paper's synthetic sets.
pub const SEED: u64 = 42;
/// Sequences per set in the paper.
pub const PAPER_SEQUENCES: usize = 8192;
/// Token ids are uniform in [ID_LO, ID_HI).
pub const ID_LO: u32 = 100;
pub const ID_HI: u32 = 16000;
/// Shortest sequence of the variable sets.
pub const MIN_LEN: u32 = 32;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

// ---------------------------------------------------------------------------------------------
// The synthetic sets

/// One of the paper's four sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetName {
    ShortFixed,
    ShortVariable,
    LongFixed,
    LongVariable,
}

impl SetName {
    pub const ALL: [SetName; 4] = [
        SetName::ShortFixed,
        SetName::ShortVariable,
        SetName::LongFixed,
        SetName::LongVariable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SetName::ShortFixed => "short-fixed",
            SetName::ShortVariable => "short-variable",
            SetName::LongFixed => "long-fixed",
            SetName::LongVariable => "long-variable",
        }
    }
    pub fn index(self) -> u64 {
        self as u64
    }
    /// The padded length of the set (512 or 8192).
    pub fn max_len(self) -> u32 {
        match self {
            SetName::ShortFixed | SetName::ShortVariable => 512,
            SetName::LongFixed | SetName::LongVariable => 8192,
        }
    }
    /// `None` for fixed sets, else (mean, sd) of the length distribution.
    pub fn normal(self) -> Option<(f64, f64)> {
        match self {
            SetName::ShortVariable => Some((256.0, 64.0)),
            SetName::LongVariable => Some((4096.0, 1024.0)),
            _ => None,
        }
    }
    /// Sequences per batch in the paper's DataLoader.
    pub fn batch_sequences(self) -> usize {
        match self {
            SetName::ShortFixed | SetName::ShortVariable => 512,
            SetName::LongFixed | SetName::LongVariable => 32,
        }
    }
    /// The paper's Table 10 total tokens of all 8192 sequences (for comparison only).
    pub fn paper_total_tokens(self) -> u64 {
        match self {
            SetName::ShortFixed => 4_194_304,
            SetName::ShortVariable => 2_096_510,
            SetName::LongFixed => 67_108_864,
            SetName::LongVariable => 33_604_913,
        }
    }
}

pub(super) fn sets_of(args: &[SetArg]) -> Vec<SetName> {
    let mut v = Vec::new();
    for a in args {
        let add: Vec<SetName> = match a {
            SetArg::ShortFixed => vec![SetName::ShortFixed],
            SetArg::ShortVariable => vec![SetName::ShortVariable],
            SetArg::LongFixed => vec![SetName::LongFixed],
            SetArg::LongVariable => vec![SetName::LongVariable],
            SetArg::All => SetName::ALL.to_vec(),
        };
        for s in add {
            if !v.contains(&s) {
                v.push(s);
            }
        }
    }
    v
}

/// The SplitMix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one random stream.
pub fn stream_key(seed: u64, stream: u64) -> u64 {
    mix64(seed.wrapping_mul(GOLDEN) ^ stream)
}

/// Value `i` of a stream (SplitMix64's `i + 1`-th output, by random access).
pub fn draw(key: u64, i: u64) -> u64 {
    mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform in (0, 1] with 53 random bits.
pub fn unit(x: u64) -> f64 {
    ((x >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// A token id uniform in [ID_LO, ID_HI) (multiply-high, no modulo).
pub fn token_id(x: u64) -> u32 {
    ID_LO + (((x >> 32) * (ID_HI - ID_LO) as u64) >> 32) as u32
}

/// The lengths of the first `n` sequences of a set.
pub fn set_lengths(set: SetName, n: usize, seed: u64) -> Vec<u32> {
    let max = set.max_len();
    match set.normal() {
        None => vec![max; n],
        Some((mean, sd)) => {
            let key = stream_key(seed, 16 * set.index() + 1);
            (0..n as u64)
                .map(|s| {
                    let u1 = unit(draw(key, 2 * s));
                    let u2 = unit(draw(key, 2 * s + 1));
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    let len = (mean + sd * z).trunc();
                    len.clamp(MIN_LEN as f64, max as f64) as u32
                })
                .collect()
        }
    }
}

/// The token ids of a set, sequence after sequence (token `j` of the set is `draw(ids_key, j)`).
pub fn set_ids(set: SetName, lengths: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let key = stream_key(seed, 16 * set.index() + 2);
    let mut j = 0u64;
    lengths
        .iter()
        .map(|&len| {
            let seq: Vec<u32> = (j..j + len as u64).map(|i| token_id(draw(key, i))).collect();
            j += len as u64;
            seq
        })
        .collect()
}

/// `Σ_j (j + 1)·id_j` over the set's tokens (wrapping u64): a checksum the Python side recomputes.
pub fn ids_checksum(ids: &[Vec<u32>]) -> u64 {
    let mut j = 0u64;
    let mut sum = 0u64;
    for seq in ids {
        for &id in seq {
            j += 1;
            sum = sum.wrapping_add(j.wrapping_mul(id as u64));
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// FLOPs: 2 per MAC; linears 2·L·(4d² + 3dI) per token, attention 4·d·(keys attended) per layer

/// Query-key pairs with |i − j| ≤ radius in a sequence of `s` tokens (edge-clipped window).
pub fn local_pairs(s: u64, radius: u64) -> u64 {
    if s == 0 {
        return 0;
    }
    let m = radius.min(s - 1);
    s + 2 * (m * s - m * (m + 1) / 2)
}

/// Linear-layer FLOPs per token: `2·L·(4d² + 3dI)` (QKV, O, Wi of width 2I, Wo).
pub fn linear_flops_per_token(c: &ModelConfig) -> f64 {
    let (d, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    2.0 * c.num_hidden_layers as f64 * (4.0 * d * d + 3.0 * d * i)
}

/// Model FLOPs of one sequence of `s` tokens: linear + attention (QKᵀ and PV, `4·d` per pair).
pub fn sequence_flops(c: &ModelConfig, s: u64) -> f64 {
    let d = c.hidden_size as f64;
    let radius = (c.local_attention / 2) as u64;
    let attn: f64 = c
        .layer_kinds
        .iter()
        .map(|k| match k {
            LayerKind::Global => (s * s) as f64,
            LayerKind::Local => local_pairs(s, radius) as f64,
        })
        .sum::<f64>()
        * 4.0
        * d;
    s as f64 * linear_flops_per_token(c) + attn
}

/// Model FLOPs of a set of sequences.
pub fn set_flops(c: &ModelConfig, lengths: &[u32]) -> f64 {
    lengths.iter().map(|&s| sequence_flops(c, s as u64)).sum()
}

// ---------------------------------------------------------------------------------------------
// Device memory: the plans the GPU executor allocates (src/gpu/{weights,arena}.rs); a size that
// overflows counts as not fitting.

/// Bytes of the device weight buffer on `path` (the Hopper path's is the larger, by its f32
/// column sums: the bound the batch sizing takes before a path is chosen).
pub fn weight_bytes(c: &ModelConfig, path: crate::gpu::GpuPath) -> usize {
    crate::gpu::weights::DeviceWeights::planned_bytes(c, path).unwrap_or(usize::MAX)
}

/// Bytes of the activation arena for `tokens` tokens and `sequences` sequences.
pub fn arena_bytes(c: &ModelConfig, tokens: usize, sequences: usize) -> usize {
    crate::gpu::arena::ArenaPlan::new(c, tokens, sequences, Default::default()).map_or(usize::MAX, |p| p.bytes)
}

/// The cuBLASLt workspace on Hopper and newer (src/kernels/cublaslt.rs).
pub const CUBLASLT_WORKSPACE: usize = crate::kernels::cublaslt::MAX_WORKSPACE_BYTES;

/// The largest number of `len`-token sequences whose weights + arena + cuBLASLt workspace fit.
pub fn max_batch(c: &ModelConfig, len: usize, budget_bytes: f64) -> usize {
    let fits = |b: usize| {
        let total = weight_bytes(c, crate::gpu::GpuPath::Hopper)
            .saturating_add(arena_bytes(c, b.saturating_mul(len), b))
            .saturating_add(CUBLASLT_WORKSPACE);
        total as f64 <= budget_bytes
    };
    if !fits(1) {
        return 0;
    }
    let (mut lo, mut hi) = (1usize, 2usize);
    while fits(hi) {
        lo = hi;
        hi *= 2;
        if hi > 1 << 30 {
            return lo;
        }
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

// ---------------------------------------------------------------------------------------------
// Peaks

/// Dense bf16/fp16 tensor-core peak (TFLOP/s, FP32 accumulate) of known cards, by device name,
/// with its source. Unknown cards: `None` (pass `--peak-tflops`).
pub fn peak_tflops(device_name: &str) -> Option<(f64, &'static str)> {
    let n = device_name.to_ascii_uppercase();
    if n.contains("H100") && n.contains("PCIE") {
        Some((756.0, "H100 PCIe dense bf16 (vendor specification)"))
    } else if n.contains("H100") && !n.contains("NVL") {
        Some((989.4, "H100 SXM5 dense bf16 (vendor specification)"))
    } else if n.contains("H200") {
        Some((
            989.4,
            "H200: same GH100 tensor peak as H100 SXM5, dense bf16 (NVIDIA datasheet)",
        ))
    } else if n.contains("A100") {
        Some((312.0, "A100 dense bf16 (vendor specification)"))
    } else if n.contains("4090") {
        Some((165.2, "RTX 4090 bf16 with FP32 accumulate (vendor specification)"))
    } else {
        None
    }
}

/// The f32 GEMM rate of this CPU (TFLOP/s) with the CPU executor's own GEMM, best of 3 at
/// 1024×1024×1024 — an achievable rate, not a vendor peak.
pub fn cpu_gemm_tflops() -> f64 {
    static MEASURED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *MEASURED.get_or_init(measure_cpu_gemm)
}

fn measure_cpu_gemm() -> f64 {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let w: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut out = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        crate::reference::ops::linear(&a, &w, None, n, n, n, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    2.0 * (n * n * n) as f64 / best / 1e12
}

/// This process's peak resident memory so far (Linux `VmHWM`), in bytes; `None` elsewhere.
pub(super) fn peak_host_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub(super) fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("cpu {model} ({} threads)", rayon::current_num_threads())
}

// ---------------------------------------------------------------------------------------------
// Random weights

/// xorshift64 weights in [-scale, scale); LayerNorm weights around 1.
struct WeightRng(u64);

impl WeightRng {
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
    fn linear(&mut self, out: usize, inp: usize, bias: bool) -> Linear {
        Linear {
            weight: self.vec(out * inp, 1.0 / (inp as f32).sqrt()),
            bias: bias.then(|| self.vec(out, 0.02)),
            out_features: out,
            in_features: inp,
        }
    }
    fn norm(&mut self, h: usize, bias: bool) -> Norm {
        Norm {
            weight: self.vec(h, 0.5).iter().map(|v| 1.0 + v).collect(),
            bias: bias.then(|| self.vec(h, 0.02)),
        }
    }
}

/// Random backbone weights at the config's shape (speed does not depend on the values).
pub fn random_weights(c: &ModelConfig, seed: u64) -> BackboneWeights {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut rng = WeightRng(seed | 1);
    BackboneWeights {
        tok_embeddings: rng.vec(c.vocab_size * h, 1.0),
        emb_norm: rng.norm(h, c.norm_bias),
        layers: (0..c.num_hidden_layers)
            .map(|l| LayerWeights {
                attn_norm: (l > 0).then(|| rng.norm(h, c.norm_bias)),
                wqkv: rng.linear(3 * h, h, c.attention_bias),
                wo: rng.linear(h, h, c.attention_bias),
                mlp_norm: rng.norm(h, c.norm_bias),
                wi: rng.linear(2 * i, h, c.mlp_bias),
                mlp_wo: rng.linear(h, i, c.mlp_bias),
            })
            .collect(),
        final_norm: rng.norm(h, c.norm_bias),
    }
}

/// The config of ModernBERT-base or -large (transformers' defaults are base), `layers` overridden.
pub fn shape_config(shape: ShapeArg, layers: Option<usize>) -> Result<ModelConfig> {
    let mut fields = serde_json::Map::new();
    fields.insert("model_type".into(), json!("modernbert"));
    if shape == ShapeArg::Large {
        for (k, v) in [
            ("hidden_size", 1024),
            ("intermediate_size", 2624),
            ("num_hidden_layers", 28),
            ("num_attention_heads", 16),
        ] {
            fields.insert(k.into(), json!(v));
        }
    }
    if let Some(l) = layers {
        fields.insert("num_hidden_layers".into(), json!(l));
    }
    let name = match shape {
        ShapeArg::Base => "<modernbert-base shape>",
        ShapeArg::Large => "<modernbert-large shape>",
    };
    ModelConfig::from_json_str(&Value::Object(fields).to_string(), Path::new(name))
}
