//! `modernbert bench`: the ModernBERT paper's efficiency protocol (arXiv 2412.13663, Table 2, and
//! its authors' efficiency notebooks) and a small-batch latency mode, on the CPU executor, the
//! emulated device or a CUDA GPU.
//!
//! # Throughput protocol (what the paper's notebooks did, and what we do)
//! - Four synthetic sets of 8192 sequences of random ids uniform in [100, 16000):
//!   `short-fixed` (every sequence 512 tokens), `short-variable` (lengths ~ Normal(256, 64)),
//!   `long-fixed` (8192), `long-variable` (Normal(4096, 1024)); lengths truncated to an integer and
//!   clamped to [32, max]; seed 42. `--sequences N` takes the first N sequences of the same set.
//! - Batches of 512 sequences (short sets) and 32 (long sets), in order, no sorting by length.
//! - One warm-up batch (the set's first), then `--passes` (10) timed passes over the whole set.
//! - Throughput = real (non-padding) tokens / wall time. We never compute padding at all.
//! - Every batch is built on the host before timing starts (the paper pre-copies the dataset to the
//!   GPU). The executor's API uploads each batch's inputs itself, so the timed region contains one
//!   small host→device copy per batch: 4 bytes per token (ids) + 8 bytes per sequence
//!   (cu_seqlens, key_lens) — about 1 MiB per 262,144-token batch, ~40 µs over PCIe 4/5 against
//!   ~100 ms of compute: negligible, and stated in every JSON line (`h2d_bytes_per_batch`).
//! - Output: by default (`--output cls`) the CLS vector of every sequence is pooled on the device
//!   and only those `[sequences, hidden]` f32 values come back (what an embedding user receives;
//!   the paper's model returns `last_hidden_state` and leaves it on the GPU). `--output hidden`
//!   downloads the whole `last_hidden_state` instead (2 bytes × hidden per token of D2H in the
//!   timed region). The download synchronises, so each batch ends with a host sync (the paper syncs
//!   once per pass); the host work between batches is a few µs per batch.
//!
//! # The random sets, exactly (so scripts/bench_transformers.py regenerates them bit for bit)
//! SplitMix64 with random access: `key(seed, stream) = mix64(seed·G ^ stream)`,
//! `draw(key, i) = mix64(key + (i + 1)·G)` (wrapping u64, `G = 0x9E3779B97F4A7C15`, `mix64` the
//! SplitMix64 finaliser). Streams per set `k` (0..4 in the order above): lengths `16k + 1`, ids
//! `16k + 2`. Length of sequence `s`: Box-Muller `z = sqrt(-2 ln u1)·cos(2π u2)` with
//! `u1 = unit(draw(len_key, 2s))`, `u2 = unit(draw(len_key, 2s + 1))`, `unit(x) = ((x >> 11) + 1) / 2^53`
//! ∈ (0, 1]; `len = clamp(trunc(mean + sd·z), 32, max)`. Token `j` of the set (all sequences back
//! to back): `100 + (((draw(ids_key, j) >> 32) · 15900) >> 32)`. This is not numpy's stream, so
//! the totals differ slightly from the paper's Table 10 (same distribution, same seed number);
//! each JSON line carries the length statistics and a checksum of the ids.
//!
//! # FLOPs and MFU
//! 2 FLOPs per MAC, forward only: linear `2·L·(4d² + 3dI)` per token; attention `4·d·(keys)` per
//! query per layer, keys = S on global layers and `|i − j| ≤ radius` (edge-clipped) on local ones,
//! computed exactly for the actual lengths. MFU = achieved FLOP/s / the card's dense bf16/fp16
//! tensor peak (table in [`peak_tflops`], or `--peak-tflops`). The CPU has no such vendor figure
//! here: `mfu` is null and `cpu_gemm_tflops` gives the measured f32 GEMM rate of this machine.
//!
//! # Memory (the paper's BS column)
//! `max_batch` = the largest number of full-length sequences whose weights + activation arena fit
//! `--memory-budget-gb`, from the GPU arena's sizing formula ([`weight_bytes`], [`arena_bytes`],
//! checked against `GpuExecutor::device_bytes()` in the tests) plus the cuBLASLt workspace; the
//! CUDA context itself (~0.5 GB) is not counted.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::batch::PackedBatch;
use crate::config::ModelConfig;
use crate::engine::{Backbone, DeviceChoice, Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::gpu::{GpuExecutor, GpuPathChoice};
use crate::kernels::device::Device;
use crate::kernels::Dtype;
use crate::model::{BackboneWeights, LayerWeights, Linear, Norm};
use crate::reference::ops::Pooling;
use crate::reference::CpuExecutor;

mod model_errors;
mod predicted;
mod workload;
pub use workload::*;

// ---------------------------------------------------------------------------------------------
// Command-line arguments

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShapeArg {
    Base,
    Large,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SetArg {
    ShortFixed,
    ShortVariable,
    LongFixed,
    LongVariable,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDtype {
    Bf16,
    Fp16,
}

/// What comes back to the host per batch (GPU/emulated; the CPU executor has no transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    /// The CLS vector of each sequence, pooled on the device (`[sequences, hidden]` f32).
    Cls,
    /// The whole `last_hidden_state` (`[tokens, hidden]`).
    Hidden,
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// A checkpoint directory or Hugging Face repo id: its config (and weights) are used.
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<String>,
    /// Random weights at ModernBERT-base or -large's shape (default base when --model is not given).
    #[arg(long, value_enum)]
    pub shape: Option<ShapeArg>,
    /// Override the layer count of --shape (for quick CI runs; not the paper's model).
    #[arg(long, requires = "shape")]
    pub layers: Option<usize>,
    /// Which synthetic set(s) to run (comma-separated list allowed).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![SetArg::All])]
    pub set: Vec<SetArg>,
    /// CI only, NOT the paper's protocol: cap every sequence at this many tokens (recorded in the
    /// JSON as `max_len_cap`) so the long sets run in seconds on a CPU.
    #[arg(long)]
    pub max_len: Option<u32>,
    /// Sequences per set (the first N of the paper's 8192).
    #[arg(long, default_value_t = PAPER_SEQUENCES)]
    pub sequences: usize,
    /// auto, cpu, cuda, emulated[:sm80|:sm90], or model:<card>[:sm80|:sm90] — the cost model
    /// (cards h100, h200): it computes nothing and prints predictions, labelled as such.
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Activation dtype on the GPU / emulated device (the CPU executor is f32).
    #[arg(long, value_enum, default_value_t = BenchDtype::Bf16)]
    pub dtype: BenchDtype,
    /// The GPU launch list: auto, portable or hopper (see `modernbert embed --help`).
    #[arg(long, default_value = "auto", value_parser = GpuPathChoice::parse)]
    pub gpu_path: GpuPathChoice,
    /// On the Hopper path, run small batches' layers as a launch per step (programmatic
    /// dependents) instead of the persistent forward (one launch), to compare the two.
    #[arg(long)]
    pub no_persistent: bool,
    /// Timed passes over each set.
    #[arg(long, default_value_t = 10)]
    pub passes: usize,
    /// Device memory budget for the max-batch column (GB = 10^9 bytes).
    #[arg(long, default_value_t = 80.0)]
    pub memory_budget_gb: f64,
    /// Dense bf16/fp16 peak of the card in TFLOP/s (default: a table of known cards).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// GPU output per batch: pooled CLS vectors (default) or the whole last_hidden_state.
    #[arg(long, value_enum, default_value_t = OutputArg::Cls)]
    pub output: OutputArg,
    /// Latency mode instead of throughput: p50/p99 of single forwards at small shapes.
    #[arg(long)]
    pub latency: bool,
    /// Latency: runs per configuration (default 1000 on CUDA, 30 on the CPU, 5 emulated).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Latency: sequences per batch.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8])]
    pub batches: Vec<usize>,
    /// Latency: tokens per sequence.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8usize, 32, 128, 512])]
    pub lengths: Vec<usize>,
    /// Latency: also run with CUDA graphs off (on by default: both on and off are measured).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub compare_graphs: bool,
    /// With a model:h100 device: reproduce every committed H100 measurement the cost model can
    /// and print its error, calibration rows and held-out rows in two lists.
    #[arg(long)]
    pub model_errors: bool,
}

// ---------------------------------------------------------------------------------------------
// The executor under test

enum Runner {
    Cpu(CpuExecutor),
    Gpu {
        exec: GpuExecutor,
        dev_name: String,
        is_cuda: bool,
    },
}

/// A forward pass of one batch, ending with its result on the host (GPU: a synchronising download).
fn forward(
    runner: &Runner,
    batch: &PackedBatch,
    output: OutputArg,
    hidden: usize,
    scratch: &mut Vec<f32>,
) -> Result<()> {
    match runner {
        Runner::Cpu(e) => {
            std::hint::black_box(e.forward(batch)?);
        }
        Runner::Gpu { exec, .. } => match output {
            OutputArg::Cls => {
                scratch.resize(batch.sequences() * hidden, 0.0);
                exec.pooled_into(batch, Pooling::Cls, false, hidden, false, scratch)?;
            }
            OutputArg::Hidden => {
                scratch.resize(batch.tokens() * hidden, 0.0);
                exec.forward_into(batch, scratch)?;
            }
        },
    }
    Ok(())
}

struct ModelSource {
    label: String,
    config: ModelConfig,
    /// `Some` for `--model`: the checkpoint directory (real weights through the engine).
    dir: Option<std::path::PathBuf>,
}

fn model_source(args: &BenchArgs) -> Result<ModelSource> {
    if let Some(m) = &args.model {
        let dir = crate::hub::resolve_model(m)?;
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        return Ok(ModelSource {
            label: m.clone(),
            config,
            dir: Some(dir),
        });
    }
    let shape = args.shape.unwrap_or(ShapeArg::Base);
    let config = shape_config(shape, args.layers)?;
    let base = match shape {
        ShapeArg::Base => "modernbert-base-shape (random weights)",
        ShapeArg::Large => "modernbert-large-shape (random weights)",
    };
    let label = match args.layers {
        Some(l) => format!("{base}, {l} layers"),
        None => base.to_string(),
    };
    Ok(ModelSource {
        label,
        config,
        dir: None,
    })
}

/// The device of `--device`, opened as the engine opens it (`None`: the CPU), and whether it is a
/// real GPU.
fn open_device(choice: DeviceChoice) -> Result<Option<(Arc<dyn Device>, bool)>> {
    Ok(crate::engine::open_device(choice)?.map(|d| {
        let is_cuda = d.as_emulator().is_none() && d.as_model().is_none();
        (d, is_cuda)
    }))
}

fn dtype_of(d: BenchDtype) -> Dtype {
    match d {
        BenchDtype::Bf16 => Dtype::Bf16,
        BenchDtype::Fp16 => Dtype::F16,
    }
}

/// Builds executors, generating the random weights once (the CPU executor is built once and reused:
/// it has no arena; a GPU executor is rebuilt per set so that its arena fits the set's batches).
struct Builder<'a> {
    src: &'a ModelSource,
    args: &'a BenchArgs,
    weights: Option<BackboneWeights>,
    cpu: Option<Runner>,
}

impl<'a> Builder<'a> {
    fn new(src: &'a ModelSource, args: &'a BenchArgs) -> Self {
        Builder {
            src,
            args,
            weights: None,
            cpu: None,
        }
    }

    /// The executor for batches of up to `max_tokens` tokens / `max_sequences` sequences (a
    /// previously returned one must have been given back with [`Builder::give_back`] or dropped).
    fn get(&mut self, max_tokens: usize, max_sequences: usize, graphs: bool) -> Result<Runner> {
        if let Some(r) = self.cpu.take() {
            return Ok(r);
        }
        if self.src.dir.is_some() {
            return build_runner(self.src, self.args, None, max_tokens, max_sequences, graphs);
        }
        if self.args.device.is_model() {
            // The cost model reads shapes, never values: no weights to generate.
            let (dev, _) = open_device(self.args.device)?.ok_or_else(|| Error::Device("no model device".into()))?;
            let dtype = dtype_of(self.args.dtype);
            let config = &self.src.config;
            let path = self.args.gpu_path;
            let exec =
                GpuExecutor::without_weights(dev, dtype, config, max_tokens, max_sequences, path)?.with_graphs(graphs);
            let exec = if self.args.no_persistent {
                exec.without_persistent()
            } else {
                exec
            };
            return Ok(Runner::Gpu {
                dev_name: exec.device_name(),
                exec,
                is_cuda: false,
            });
        }
        if self.weights.is_none() {
            self.weights = Some(random_weights(&self.src.config, 0x9E37_79B9_7F4A_7C15));
        }
        let dev = open_device(self.args.device)?;
        if dev.is_none() {
            let w = self.weights.take().expect("generated above");
            return Ok(Runner::Cpu(CpuExecutor::new(self.src.config.clone(), w)));
        }
        build_runner(
            self.src,
            self.args,
            self.weights.as_ref(),
            max_tokens,
            max_sequences,
            graphs,
        )
    }

    fn give_back(&mut self, r: Runner) {
        if let Runner::Cpu(_) = r {
            self.cpu = Some(r);
        }
    }
}

/// Build the executor for batches of up to `max_tokens` tokens / `max_sequences` sequences.
fn build_runner(
    src: &ModelSource,
    args: &BenchArgs,
    weights: Option<&BackboneWeights>,
    max_tokens: usize,
    max_sequences: usize,
    graphs: bool,
) -> Result<Runner> {
    let dev = open_device(args.device)?;
    let dtype = dtype_of(args.dtype);
    if let Some(dir) = &src.dir {
        // Real weights through the engine (tokenizer and heads are loaded but not used).
        let options = EngineOptions {
            device: match (args.device, &dev) {
                (DeviceChoice::Auto, None) => DeviceChoice::Cpu,
                (DeviceChoice::Auto, Some(_)) => DeviceChoice::Cuda(0),
                (choice, _) => choice,
            },
            dtype,
            max_batch_tokens: max_tokens,
            graphs,
            gpu_path: args.gpu_path,
            overlong: crate::tokenize::OverlongPolicy::Truncate,
            coalesce: true,
        };
        let is_cuda = matches!(options.device, DeviceChoice::Cuda(_));
        drop(dev);
        let engine = Engine::new(dir, &options)?;
        if max_sequences > max_tokens.max(engine.config.max_position_embeddings).min(4096) {
            return Err(Error::Input(format!(
                "{max_sequences} sequences per batch exceed the engine's arena"
            )));
        }
        return Ok(match engine.backbone {
            Backbone::Cpu(e) => Runner::Cpu(e),
            Backbone::Gpu(exec) => Runner::Gpu {
                dev_name: exec.device_name(),
                exec,
                is_cuda,
            },
        });
    }
    let generated;
    let weights = match weights {
        Some(w) => w,
        None => {
            generated = random_weights(&src.config, 0x9E37_79B9_7F4A_7C15);
            &generated
        }
    };
    Ok(match dev {
        None => Runner::Cpu(CpuExecutor::new(src.config.clone(), clone_weights(weights))),
        Some((dev, is_cuda)) => {
            let (config, path) = (&src.config, args.gpu_path);
            let exec =
                GpuExecutor::on_path(dev, dtype, config, weights, max_tokens, max_sequences, path)?.with_graphs(graphs);
            let exec = if args.no_persistent {
                exec.without_persistent()
            } else {
                exec
            };
            Runner::Gpu {
                dev_name: exec.device_name(),
                exec,
                is_cuda,
            }
        }
    })
}

fn clone_weights(w: &BackboneWeights) -> BackboneWeights {
    let lin = |l: &Linear| Linear {
        weight: l.weight.clone(),
        bias: l.bias.clone(),
        out_features: l.out_features,
        in_features: l.in_features,
    };
    let norm = |n: &Norm| Norm {
        weight: n.weight.clone(),
        bias: n.bias.clone(),
    };
    BackboneWeights {
        tok_embeddings: w.tok_embeddings.clone(),
        emb_norm: norm(&w.emb_norm),
        layers: w
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: l.attn_norm.as_ref().map(norm),
                wqkv: lin(&l.wqkv),
                wo: lin(&l.wo),
                mlp_norm: norm(&l.mlp_norm),
                wi: lin(&l.wi),
                mlp_wo: lin(&l.mlp_wo),
            })
            .collect(),
        final_norm: norm(&w.final_norm),
    }
}

struct DeviceInfo {
    name: String,
    kind: &'static str,
    dtype: &'static str,
    peak: Option<(f64, String)>,
    cpu_gemm_tflops: Option<f64>,
    peak_device_bytes: Option<usize>,
    /// `smNN` of the GPU device and the executor path it gets (`None` on the CPU).
    capability: Option<(String, &'static str)>,
}

fn device_info(runner: &Runner, args: &BenchArgs) -> DeviceInfo {
    let dtype = match args.dtype {
        BenchDtype::Bf16 => "bf16",
        BenchDtype::Fp16 => "fp16",
    };
    match runner {
        Runner::Cpu(_) => DeviceInfo {
            name: cpu_name(),
            kind: "cpu",
            dtype: "f32",
            peak: None,
            cpu_gemm_tflops: Some(cpu_gemm_tflops()),
            peak_device_bytes: None,
            capability: None,
        },
        Runner::Gpu {
            exec,
            dev_name,
            is_cuda,
        } => {
            let peak = match (args.peak_tflops, is_cuda) {
                (Some(p), _) => Some((p, "--peak-tflops".to_string())),
                (None, true) => peak_tflops(dev_name).map(|(p, s)| (p, s.to_string())),
                (None, false) => None,
            };
            let model = exec.device().as_model();
            let peak = match (&peak, model) {
                (None, Some(m)) => peak_tflops(m.card().product_name()).map(|(p, s)| (p, s.to_string())),
                _ => peak,
            };
            DeviceInfo {
                name: dev_name.clone(),
                kind: match (is_cuda, model) {
                    (true, _) => "cuda",
                    (false, Some(_)) => "model",
                    (false, None) => "emulated",
                },
                dtype,
                peak,
                cpu_gemm_tflops: None,
                peak_device_bytes: Some(exec.device_bytes()),
                capability: {
                    let (major, minor) = exec.device().compute_capability();
                    Some((format!("sm{major}{minor}"), exec.path().name()))
                },
            }
        }
    }
}

fn stats(lengths: &[u32]) -> Value {
    let n = lengths.len().max(1) as f64;
    let total: u64 = lengths.iter().map(|&l| l as u64).sum();
    let mean = total as f64 / n;
    let var = lengths.iter().map(|&l| (l as f64 - mean).powi(2)).sum::<f64>() / n;
    json!({
        "total": total,
        "mean": (mean * 10.0).round() / 10.0,
        "std": (var.sqrt() * 10.0).round() / 10.0,
        "min": lengths.iter().min(),
        "max": lengths.iter().max(),
    })
}

fn round_to(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

// ---------------------------------------------------------------------------------------------
// The command

/// Run `modernbert bench`: JSON lines through `emit`, the human table on stderr.
pub fn run(args: &BenchArgs, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    if args.passes == 0 || args.sequences == 0 {
        return Err(Error::Input("--passes and --sequences must be positive".into()));
    }
    if !(args.memory_budget_gb > 0.0) {
        return Err(Error::Input("--memory-budget-gb must be positive".into()));
    }
    let src = model_source(args)?;
    if args.model_errors {
        return model_errors::run(args, emit);
    }
    if args.latency {
        return run_latency(args, &src, emit);
    }
    run_throughput(args, &src, emit)
}

fn run_throughput(args: &BenchArgs, src: &ModelSource, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    let c = &src.config;
    let sets = sets_of(&args.set);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut builder = Builder::new(src, args);
    if args.max_len.is_some_and(|m| m < MIN_LEN) {
        return Err(Error::Input(format!("--max-len must be at least {MIN_LEN}")));
    }
    for set in sets {
        if set.max_len() as usize > c.max_position_embeddings {
            return Err(Error::Unsupported(format!(
                "{}: sequences of {} tokens exceed the model's max_position_embeddings ({})",
                set.name(),
                set.max_len(),
                c.max_position_embeddings
            )));
        }
        let t_gen = Instant::now();
        let mut lengths = set_lengths(set, args.sequences, SEED);
        if let Some(cap) = args.max_len {
            lengths.iter_mut().for_each(|l| *l = (*l).min(cap));
        }
        let ids = set_ids(set, &lengths, SEED);
        let checksum = ids_checksum(&ids);
        let per_batch = set.batch_sequences();
        let batches: Vec<PackedBatch> = ids
            .chunks(per_batch)
            .map(PackedBatch::from_sequences)
            .collect::<Result<_>>()?;
        drop(ids);
        let max_tokens = batches.iter().map(PackedBatch::tokens).max().unwrap_or(1);
        let max_seqs = batches.iter().map(PackedBatch::sequences).max().unwrap_or(1);
        let gen_s = t_gen.elapsed().as_secs_f64();

        // Large batches never use graphs (buckets stop at 2048 tokens); off for every throughput run.
        let runner = builder.get(max_tokens, max_seqs, false)?;
        let info = device_info(&runner, args);
        let mut scratch = Vec::new();
        let model = runner_model(&runner);
        let clock = predicted::Clock::new(model);
        let t_warm = clock.now_s();
        forward(&runner, &batches[0], args.output, c.hidden_size, &mut scratch)?;
        let warmup_s = clock.now_s() - t_warm;
        if let Some(m) = model {
            m.reset_ledger();
        }
        let mut pass_s = Vec::with_capacity(args.passes);
        for _ in 0..args.passes {
            let t = clock.now_s();
            for b in &batches {
                forward(&runner, b, args.output, c.hidden_size, &mut scratch)?;
            }
            pass_s.push(clock.now_s() - t);
        }
        let tokens: u64 = lengths.iter().map(|&l| l as u64).sum();
        let total_s: f64 = pass_s.iter().sum();
        let tokens_per_s = tokens as f64 * args.passes as f64 / total_s;
        let best_s = pass_s.iter().cloned().fold(f64::INFINITY, f64::min);
        let flops = set_flops(c, &lengths);
        let achieved_tflops = flops * args.passes as f64 / total_s / 1e12;
        let mfu = info.peak.as_ref().map(|(p, _)| achieved_tflops / p);
        let budget = args.memory_budget_gb * 1e9;
        let mb = max_batch(c, set.max_len() as usize, budget);
        let h2d = 16 + 4 * max_tokens + 8 * max_seqs + 4;
        let d2h = match (&runner, args.output) {
            (Runner::Cpu(_), _) => 0,
            (_, OutputArg::Cls) => max_seqs * c.hidden_size * 4,
            (_, OutputArg::Hidden) => max_tokens * c.hidden_size * 2,
        };
        let line = json!({
            "bench": "throughput",
            "set": set.name(),
            "model": src.label,
            "layers": c.num_hidden_layers,
            "hidden_size": c.hidden_size,
            "device": info.name,
            "device_kind": info.kind,
            "dtype": info.dtype,
            "threads": rayon::current_num_threads(),
            "seed": SEED,
            "sequences": lengths.len(),
            "batch_sequences": per_batch,
            "batches": batches.len(),
            "passes": args.passes,
            "tokens_per_pass": tokens,
            "lengths": stats(&lengths),
            "paper_total_tokens_8192": set.paper_total_tokens(),
            "ids_checksum": checksum.to_string(),
            "warmup_s": round_to(warmup_s, 6),
            "pass_s": pass_s.iter().map(|&s| round_to(s, 6)).collect::<Vec<_>>(),
            "tokens_per_s": round_to(tokens_per_s, 1),
            "tokens_per_s_best_pass": round_to(tokens as f64 / best_s, 1),
            "model_flops_per_pass": flops,
            "flops_per_token": round_to(flops / tokens as f64, 0),
            "achieved_tflops": round_to(achieved_tflops, 4),
        });
        let more = json!({
            "peak_tflops": info.peak.as_ref().map(|p| p.0),
            "peak_source": info.peak.as_ref().map(|p| p.1.clone()),
            "mfu": mfu.map(|m| round_to(m, 4)),
            "cpu_gemm_tflops": info.cpu_gemm_tflops.map(|t| round_to(t, 4)),
            "util_vs_cpu_gemm": info.cpu_gemm_tflops.map(|t| round_to(achieved_tflops / t, 4)),
            "peak_device_bytes": info.peak_device_bytes,
            "compute_capability": info.capability.as_ref().map(|c| c.0.clone()),
            "path": info.capability.as_ref().map(|c| c.1),
            "memory_budget_gb": args.memory_budget_gb,
            "max_batch": mb,
            "max_batch_len": set.max_len(),
            "max_batch_formula": "weights (the Hopper path's, the larger) + arena(B*len tokens, B seqs) + 32 MiB cuBLASLt workspace (bf16/fp16 GPU arena; CUDA context not counted)",
            "weight_bytes_formula": weight_bytes(c, crate::gpu::GpuPath::Hopper),
            "output": match (&runner, args.output) {
                (Runner::Cpu(_), _) => "host (cpu executor: last_hidden_state in host memory)",
                (_, OutputArg::Cls) => "cls-pooled on device, [sequences, hidden] f32 to host",
                (_, OutputArg::Hidden) => "last_hidden_state to host",
            },
            "h2d_bytes_per_batch_max": h2d,
            "d2h_bytes_per_batch_max": d2h,
            "graphs": false,
            "host_setup_s": round_to(gen_s, 3),
            "max_len_cap": args.max_len,
            "protocol": if args.max_len.is_some() || lengths.len() != PAPER_SEQUENCES || args.passes != 10 || args.layers.is_some() {
                "reduced (CI/smoke: see sequences, passes, layers, max_len_cap)"
            } else {
                "paper (8192 sequences, 10 passes)"
            },
        });
        let mut line = line;
        if let (Value::Object(m), Value::Object(extra)) = (&mut line, more) {
            m.extend(extra);
        }
        if let Some(m) = model {
            let ledger = m.ledger();
            let forwards = (batches.len() * args.passes) as u64;
            predicted::relabel(
                &mut line,
                &[
                    "tokens_per_s",
                    "tokens_per_s_best_pass",
                    "pass_s",
                    "warmup_s",
                    "achieved_tflops",
                    "mfu",
                ],
            );
            let extra = predicted::fields(m, &ledger, forwards, tokens * args.passes as u64);
            if let (Value::Object(l), Value::Object(extra)) = (&mut line, extra) {
                l.extend(extra);
            }
            predicted::print_breakdown(set.name(), &ledger, args.passes);
        }
        rows.push(vec![
            set.name().to_string(),
            lengths.len().to_string(),
            tokens.to_string(),
            format!("{:.1}", tokens_per_s / 1e3),
            format!("{:.3}", achieved_tflops),
            mfu.map_or("n/a".into(), |m| format!("{:.1}%", 100.0 * m)),
            info.peak_device_bytes
                .map_or("n/a".into(), |b| format!("{:.2}", b as f64 / 1e9)),
            mb.to_string(),
        ]);
        emit(line)?;
        builder.give_back(runner);
        let dev_line = format!(
            "{} [{}], {}, {}",
            info.name,
            info.dtype,
            src.label,
            match info.cpu_gemm_tflops {
                Some(t) => format!("CPU f32 GEMM measured {:.3} TFLOP/s (no vendor peak: mfu n/a)", t),
                None => match &info.peak {
                    Some((p, s)) => format!("peak {p} TFLOP/s ({s})"),
                    None => "peak unknown (pass --peak-tflops)".to_string(),
                },
            }
        );
        if rows.len() == 1 {
            eprintln!("# {dev_line}");
            if info.kind == "model" {
                eprintln!("# tok/s, TFLOP/s and MFU below are predictions of the cost model, not measurements");
            }
        }
    }
    print_table(
        &[
            "set",
            "seqs",
            "tokens/pass",
            "K tok/s",
            "TFLOP/s",
            "MFU",
            "dev GB",
            &format!("BS@{}GB", args.memory_budget_gb),
        ],
        &rows,
    );
    Ok(())
}

/// The cost model behind a runner, if it runs on one.
fn runner_model(runner: &Runner) -> Option<&crate::kernels::model::ModelDevice> {
    match runner {
        Runner::Gpu { exec, .. } => exec.device().as_model(),
        Runner::Cpu(_) => None,
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line(header.to_vec()));
    let _ = writeln!(
        err,
        "{}",
        widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-")
    );
    for r in rows {
        let _ = writeln!(err, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// Percentile `q` (0..=1) of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run_latency(args: &BenchArgs, src: &ModelSource, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    let c = &src.config;
    if args.batches.is_empty() || args.lengths.is_empty() || args.batches.contains(&0) || args.lengths.contains(&0) {
        return Err(Error::Input("--batches and --lengths must be positive".into()));
    }
    if let Some(&l) = args.lengths.iter().find(|&&l| l > c.max_position_embeddings) {
        return Err(Error::Input(format!(
            "--lengths {l} exceeds max_position_embeddings {}",
            c.max_position_embeddings
        )));
    }
    let max_tokens = args.batches.iter().max().unwrap() * args.lengths.iter().max().unwrap();
    let max_seqs = *args.batches.iter().max().unwrap();
    let mut runner = Builder::new(src, args).get(max_tokens, max_seqs, true)?;
    let info = device_info(&runner, args);
    let is_gpu = matches!(runner, Runner::Gpu { .. });
    let is_model = runner_model(&runner).is_some();
    let runs = args.runs.unwrap_or(match &runner {
        // The model is deterministic: one timed call is its p50.
        Runner::Gpu { .. } if is_model => 1,
        Runner::Gpu { is_cuda: true, .. } => 1000,
        Runner::Gpu { .. } => 5,
        Runner::Cpu(_) => 30,
    });
    if runs == 0 {
        return Err(Error::Input("--runs must be positive".into()));
    }
    let graph_modes: Vec<Option<bool>> = if is_gpu {
        if args.compare_graphs {
            vec![Some(true), Some(false)]
        } else {
            vec![Some(true)]
        }
    } else {
        vec![None]
    };
    let key = stream_key(SEED, 100);
    let mut rows = Vec::new();
    let mut scratch = Vec::new();
    for graphs in graph_modes {
        if let (Some(g), Runner::Gpu { .. }) = (graphs, &runner) {
            runner = match runner {
                Runner::Gpu {
                    exec,
                    dev_name,
                    is_cuda,
                } => Runner::Gpu {
                    exec: exec.with_graphs(g),
                    dev_name,
                    is_cuda,
                },
                other => other,
            };
        }
        for &b in &args.batches {
            for &len in &args.lengths {
                let seqs: Vec<Vec<u32>> = (0..b)
                    .map(|s| (0..len).map(|t| token_id(draw(key, (s * len + t) as u64))).collect())
                    .collect();
                let batch = PackedBatch::from_sequences(&seqs)?;
                let bucket = crate::kernels::graph::bucket(batch.tokens(), batch.sequences(), batch.max_seqlen());
                // Warm-up: plans, lazy module loads, graph capture.
                let warm = if runs >= 100 { 10 } else { 2 };
                for _ in 0..warm {
                    forward(&runner, &batch, args.output, c.hidden_size, &mut scratch)?;
                }
                let model = runner_model(&runner);
                if let Some(m) = model {
                    m.reset_ledger();
                }
                let clock = predicted::Clock::new(model);
                let mut us: Vec<f64> = (0..runs)
                    .map(|_| {
                        let t = clock.now_s();
                        forward(&runner, &batch, args.output, c.hidden_size, &mut scratch)
                            .map(|()| (clock.now_s() - t) * 1e6)
                    })
                    .collect::<Result<_>>()?;
                us.sort_by(f64::total_cmp);
                let (p50, p99) = (percentile(&us, 0.5), percentile(&us, 0.99));
                let mean = us.iter().sum::<f64>() / us.len() as f64;
                let graph_used = graphs == Some(true) && bucket.is_some();
                let mut line = json!({
                    "bench": "latency",
                    "model": src.label,
                    "layers": c.num_hidden_layers,
                    "device": info.name,
                    "device_kind": info.kind,
                    "dtype": info.dtype,
                    "threads": rayon::current_num_threads(),
                    "batch": b,
                    "seq_len": len,
                    "tokens": b * len,
                    "graphs": graphs,
                    "graph_used": graph_used,
                    "runs": runs,
                    "p50_us": round_to(p50, 2),
                    "p99_us": round_to(p99, 2),
                    "mean_us": round_to(mean, 2),
                    "min_us": round_to(us[0], 2),
                    "max_us": round_to(*us.last().unwrap(), 2),
                    "output": if is_gpu { match args.output { OutputArg::Cls => "cls", OutputArg::Hidden => "hidden" } } else { "host" },
                    "peak_device_bytes": info.peak_device_bytes,
                    "compute_capability": info.capability.as_ref().map(|c| c.0.clone()),
                    "path": info.capability.as_ref().map(|c| c.1),
                    "timing": if is_model {
                        "predicted by the cost model per call: input upload + forward + output download (synchronising)"
                    } else {
                        "wall clock per call: input upload + forward + output download (synchronising)"
                    },
                });
                if let Runner::Cpu(e) = &runner {
                    // The host's memory: the process's peak so far (load and every run) beside
                    // the backbone's f32 size and what the executor holds.
                    line["peak_host_bytes"] = json!(peak_host_bytes());
                    line["f32_weight_bytes"] = json!(4 * e.parameter_count());
                    line["held_weight_bytes"] = json!(e.weight_bytes());
                }
                if let Some(m) = model {
                    predicted::relabel(&mut line, &["p50_us", "p99_us", "mean_us", "min_us", "max_us"]);
                    let ledger = m.ledger();
                    let extra = predicted::fields(m, &ledger, runs as u64, (runs * b * len) as u64);
                    if let (Value::Object(l), Value::Object(extra)) = (&mut line, extra) {
                        l.extend(extra);
                    }
                }
                emit(line)?;
                rows.push(vec![
                    b.to_string(),
                    len.to_string(),
                    match graphs {
                        None => "n/a".into(),
                        Some(g) => format!(
                            "{}{}",
                            if g { "on" } else { "off" },
                            if g && !graph_used { " (no bucket)" } else { "" }
                        ),
                    },
                    runs.to_string(),
                    format!("{p50:.1}"),
                    format!("{p99:.1}"),
                ]);
            }
        }
    }
    eprintln!("# latency: {} [{}], {}", info.name, info.dtype, src.label);
    if is_model {
        eprintln!("# p50/p99 below are predictions of the cost model, not measurements");
    }
    print_table(&["batch", "len", "graphs", "runs", "p50 µs", "p99 µs"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::kernels::emu::Emulator;

    fn base() -> ModelConfig {
        shape_config(ShapeArg::Base, None).unwrap()
    }

    #[test]
    fn flops_match_anchors_section_6() {
        let b = base();
        let l = shape_config(ShapeArg::Large, None).unwrap();
        let m = |c: &ModelConfig, s: u64| sequence_flops(c, s) / s as f64 / 1e6;
        assert!((linear_flops_per_token(&b) / 1e6 - 220.6).abs() < 0.1);
        assert!((linear_flops_per_token(&l) / 1e6 - 686.3).abs() < 0.1);
        assert!((m(&b, 512) - 238.4).abs() < 0.1, "{}", m(&b, 512));
        assert!((m(&b, 8192) - 427.4).abs() < 0.1, "{}", m(&b, 8192));
        assert!((m(&b, 128) - 227.9).abs() < 0.1, "{}", m(&b, 128));
        assert!((m(&l, 512) - 716.2).abs() < 0.1, "{}", m(&l, 512));
        assert!((m(&l, 8192) - 1031.3).abs() < 0.1, "{}", m(&l, 8192));
        // anchors: average local keys 120.9 at S=512, 128.5 at S=8192.
        assert!((local_pairs(512, 64) as f64 / 512.0 - 120.875).abs() < 1e-9);
        assert!((local_pairs(8192, 64) as f64 / 8192.0 - 128.49).abs() < 0.01);
        assert_eq!(local_pairs(1, 64), 1);
        assert_eq!(local_pairs(10, 64), 100);
    }

    #[test]
    fn sets_follow_the_protocol() {
        for set in SetName::ALL {
            let lens = set_lengths(set, 2000, SEED);
            assert!(lens.iter().all(|&l| l >= MIN_LEN && l <= set.max_len()));
            if let Some((mean, sd)) = set.normal() {
                let n = lens.len() as f64;
                let m = lens.iter().map(|&l| l as f64).sum::<f64>() / n;
                let s = (lens.iter().map(|&l| (l as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
                assert!((m - mean).abs() < 0.05 * mean, "{set:?} mean {m}");
                assert!((s - sd).abs() < 0.1 * sd, "{set:?} sd {s}");
            } else {
                assert!(lens.iter().all(|&l| l == set.max_len()));
            }
            // A prefix of the set is the same whatever --sequences is.
            assert_eq!(&set_lengths(set, 10, SEED)[..], &lens[..10]);
        }
        let lens = set_lengths(SetName::ShortVariable, 50, SEED);
        let ids = set_ids(SetName::ShortVariable, &lens, SEED);
        assert!(ids.iter().flatten().all(|&id| (ID_LO..ID_HI).contains(&id)));
        assert_eq!(
            ids.iter().map(Vec::len).collect::<Vec<_>>(),
            lens.iter().map(|&l| l as usize).collect::<Vec<_>>()
        );
        // Golden values shared with scripts/bench_transformers.py (--self-test prints them).
        assert_eq!(mix64(0), 0);
        assert_eq!(token_id(0), ID_LO);
        assert_eq!(token_id(u64::MAX), ID_HI - 1);
    }

    #[test]
    fn full_short_variable_set_is_close_to_the_papers_table_10() {
        let lens = set_lengths(SetName::ShortVariable, PAPER_SEQUENCES, SEED);
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        let paper = SetName::ShortVariable.paper_total_tokens() as f64;
        assert!((total as f64 - paper).abs() / paper < 0.01, "{total} vs {paper}");
    }

    #[test]
    fn memory_formula_matches_the_gpu_executor() {
        let cfg = ModelConfig::from_json_str(
            r#"{"model_type":"modernbert","hidden_size":128,"intermediate_size":96,"num_hidden_layers":4,"num_attention_heads":2,"vocab_size":300}"#,
            Path::new("tiny"),
        )
        .unwrap();
        let w = random_weights(&cfg, 7);
        for (tokens, seqs) in [(17usize, 3usize), (512, 512), (1000, 7)] {
            let exec = GpuExecutor::new(Arc::new(Emulator::new()), Dtype::Bf16, &cfg, &w, tokens, seqs).unwrap();
            assert_eq!(
                exec.device_bytes(),
                weight_bytes(&cfg, exec.path()) + arena_bytes(&cfg, tokens, seqs),
                "{tokens}/{seqs}"
            );
        }
        let b = base();
        let mb = max_batch(&b, 512, 80e9);
        let fits =
            |n: usize| weight_bytes(&b, crate::gpu::GpuPath::Hopper) + arena_bytes(&b, n * 512, n) + CUBLASLT_WORKSPACE;
        assert!(fits(mb) as f64 <= 80e9 && fits(mb + 1) as f64 > 80e9);
        assert_eq!(max_batch(&b, 512, 1e6), 0);
    }

    #[test]
    fn peaks_and_percentiles() {
        assert_eq!(peak_tflops("cuda:0 NVIDIA H100 80GB HBM3").unwrap().0, 989.4);
        assert_eq!(peak_tflops("cuda:0 NVIDIA H100 PCIe").unwrap().0, 756.0);
        assert!(peak_tflops("emulator").is_none());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }
}
