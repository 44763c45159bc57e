//! What one launch costs: its class, its matmul FLOPs and its minimum DRAM bytes, computed from
//! the parameter struct (or the [`GemmDesc`]) and the actual counts of the `BatchDesc` it points
//! at, and the time a [`Profile`] predicts for it.
//!
//! Minimum bytes = every tensor the launch must read or write, once (no L2 reuse across
//! launches, no re-reads inside one), 2 bytes per bf16/fp16 element, 4 per f32 or id. They are
//! split into `param_bytes` (weights, biases, norm scales: read once per launch whatever the
//! batch) and `activation_bytes` (everything that scales with the batch: activations, outputs,
//! the token ids and the embedding rows they gather). Integer index arrays other than the ids
//! (cu_seqlens, key_lens, mask rows) are not counted: a few bytes per sequence. These are the
//! same traffic definitions the microbenchmarks use (profiles/README.md §2), so a microbenchmark's
//! GB/s and a class's bytes here describe the same work.
//!
//! FLOPs are the tensor-core (matmul) FLOPs only, 2 per MAC — GEMMs and attention's QKᵀ and PV —
//! the same count as the bench's `flops_per_token` (src/bench/workload.rs), so the two can be
//! checked against each other; the row kernels' few arithmetic operations per element are not
//! counted (they never bind: every row kernel is memory-bound).

use super::super::forward_small::gemm_slices;
use super::super::gemm::GemmDesc;
use super::super::params::*;
use super::super::{KernelError, KernelParam};
// The bench owns the local window's pair count (its FLOP formula uses it too): one rule.
use crate::bench::local_pairs;

/// Kernel classes the model gives their own efficiency. Attention is two classes: the local
/// window's tiles do about half the useful work per tile of the global ones (measured:
/// 79–80 vs 168–186 TFLOP/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelClass {
    Gemm,
    AttentionGlobal,
    AttentionLocal,
    LayerNorm,
    Embeddings,
    Rope,
    Geglu,
    Pool,
    HeadActNorm,
    ColbertNormalize,
    GatherRows,
    SoftmaxTopk,
    /// `gemm_stream_sm90`, the small-batch GEMM: bound by streaming its weights, not by FLOPs.
    GemmStream,
    /// `attention_sm90` (wgmma, TMA) on a global layer and on a window: never measured, their
    /// rates are assumptions of the calibration file.
    AttentionSm90Global,
    AttentionSm90Local,
    /// `forward_small_sm90`, every layer of a small batch in one co-scheduled launch: its time is
    /// its steps' ([`Profile::persistent_s`]), never this class's efficiency.
    ForwardSmall,
}

impl KernelClass {
    pub const COUNT: usize = 16;
    pub const ALL: [KernelClass; Self::COUNT] = [
        KernelClass::Gemm,
        KernelClass::AttentionGlobal,
        KernelClass::AttentionLocal,
        KernelClass::LayerNorm,
        KernelClass::Embeddings,
        KernelClass::Rope,
        KernelClass::Geglu,
        KernelClass::Pool,
        KernelClass::HeadActNorm,
        KernelClass::ColbertNormalize,
        KernelClass::GatherRows,
        KernelClass::SoftmaxTopk,
        KernelClass::GemmStream,
        KernelClass::AttentionSm90Global,
        KernelClass::AttentionSm90Local,
        KernelClass::ForwardSmall,
    ];

    /// The name in the JSON output and the calibration file.
    pub fn name(self) -> &'static str {
        match self {
            KernelClass::Gemm => "gemm",
            KernelClass::AttentionGlobal => "attention_global",
            KernelClass::AttentionLocal => "attention_local",
            KernelClass::LayerNorm => "layernorm",
            KernelClass::Embeddings => "embeddings",
            KernelClass::Rope => "rope",
            KernelClass::Geglu => "geglu",
            KernelClass::Pool => "pool",
            KernelClass::HeadActNorm => "head_act_norm",
            KernelClass::ColbertNormalize => "colbert_normalize",
            KernelClass::GatherRows => "gather_rows",
            KernelClass::SoftmaxTopk => "softmax_topk",
            KernelClass::GemmStream => "gemm_stream",
            KernelClass::AttentionSm90Global => "attention_sm90_global",
            KernelClass::AttentionSm90Local => "attention_sm90_local",
            KernelClass::ForwardSmall => "forward_small",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The work of one launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaunchCost {
    pub class: KernelClass,
    pub flops: f64,
    pub param_bytes: f64,
    pub activation_bytes: f64,
    /// Bytes the blocks read from L2 beyond the DRAM traffic above: an operand every block
    /// reads whole (`gemm_stream_sm90`'s x); 0 for the kernels whose re-reads never bind.
    pub l2_bytes: f64,
}

impl LaunchCost {
    pub fn bytes(&self) -> f64 {
        self.param_bytes + self.activation_bytes
    }
}

/// Reads the device memory a launch's pointers name (the model device's small, backed data).
pub trait DeviceMemory {
    /// The u32 at `addr` (0 where nothing was uploaded).
    fn read_u32(&self, addr: u64) -> u32;
}

/// `(tokens, sequences)` of the `BatchDesc` at `addr`.
fn batch_counts(mem: &dyn DeviceMemory, addr: u64) -> (u64, u64) {
    (mem.read_u32(addr) as u64, mem.read_u32(addr + 4) as u64)
}

/// Rows a row kernel processes: the BatchDesc's tokens, at most its capacity (a null `batch`
/// means "all of the capacity", as the MLM head's kernels take it).
fn rows(mem: &dyn DeviceMemory, batch: u64, capacity: u32) -> f64 {
    if batch == 0 {
        return capacity as f64;
    }
    batch_counts(mem, batch).0.min(capacity as u64) as f64
}

fn decode<P: KernelParam + Default>(kernel: &str, bytes: &[u8]) -> Result<P, KernelError> {
    if bytes.len() != std::mem::size_of::<P>() {
        return Err(KernelError::ParamSize {
            kernel: kernel.to_string(),
            message: format!("{} bytes, expected {}", bytes.len(), std::mem::size_of::<P>()),
        });
    }
    // SAFETY: the length matches, and every `KernelParam` is plain `#[repr(C)]` data of
    // integers and floats, for which every bit pattern is a valid value.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const P) })
}

const ELEM: f64 = 2.0;

/// The cost of kernel `name` (`<op>_bf16` / `<op>_f16`) launched with `params`.
pub fn kernel_cost(name: &str, params: &[u8], mem: &dyn DeviceMemory) -> Result<LaunchCost, KernelError> {
    let op = name
        .strip_suffix("_bf16")
        .or_else(|| name.strip_suffix("_f16"))
        .unwrap_or(name);
    let cost = |class, flops, param_bytes, activation_bytes| LaunchCost {
        class,
        flops,
        param_bytes,
        activation_bytes,
        l2_bytes: 0.0,
    };
    let norm_params = |h: f64, bias: u64| h * ELEM * if bias != 0 { 2.0 } else { 1.0 };
    Ok(match op {
        "layernorm" => {
            let p: LayerNormParams = decode(name, params)?;
            let (t, h) = (rows(mem, p.batch, p.max_tokens), p.hidden as f64);
            // read residual (+ delta), write residual (when delta) + out
            let passes = if p.delta != 0 { 4.0 } else { 2.0 };
            cost(
                KernelClass::LayerNorm,
                0.0,
                norm_params(h, p.bias),
                passes * t * h * ELEM,
            )
        }
        "embeddings" => {
            let p: EmbeddingLayerNormParams = decode(name, params)?;
            let (t, h) = (rows(mem, p.batch, p.max_tokens), p.hidden as f64);
            // ids, the gathered table rows, the output
            let act = t * (4.0 + 2.0 * h * ELEM);
            cost(KernelClass::Embeddings, 0.0, norm_params(h, p.bias), act)
        }
        "rope" => {
            let p: RopeParams = decode(name, params)?;
            let t = rows(mem, p.batch, p.max_tokens);
            let width = (p.heads as f64) * (p.head_dim as f64);
            // Q and K, read and written in place
            cost(KernelClass::Rope, 0.0, 0.0, 2.0 * 2.0 * t * width * ELEM)
        }
        "attention" => {
            let p: AttentionParams = decode(name, params)?;
            attention_cost(
                &p,
                mem,
                [KernelClass::AttentionGlobal, KernelClass::AttentionLocal],
                Window::GlobalWhenCovered,
            )
        }
        "attention_sm90" | "attention_sm90_local" => {
            let p: AttentionSm90Params = decode(name, params)?;
            let classes = [KernelClass::AttentionSm90Global, KernelClass::AttentionSm90Local];
            attention_cost(&p.attn, mem, classes, Window::AlwaysWindow)
        }
        "gemm_sm90" | "gemm_sm90_geglu" | "gemm_sm90_rope" | "gemm_sm90_residual" => {
            let p: GemmSm90Params = decode(name, params)?;
            gemm_sm90_cost(op, &p)
        }
        "gemm_stream_sm90" => {
            let p: GemmStreamParams = decode(name, params)?;
            gemm_stream_cost(&p, rows(mem, p.batch, p.m))
        }
        "forward_small_sm90" => {
            let steps = forward_small_steps(name, params, mem)?;
            let total = |f: fn(&LaunchCost) -> f64| steps.iter().map(f).sum::<f64>();
            LaunchCost {
                class: KernelClass::ForwardSmall,
                flops: total(|c| c.flops),
                param_bytes: total(|c| c.param_bytes),
                activation_bytes: total(|c| c.activation_bytes),
                l2_bytes: total(|c| c.l2_bytes),
            }
        }
        "geglu" => {
            let p: GegluParams = decode(name, params)?;
            let (t, i) = (rows(mem, p.batch, p.max_tokens), p.inter as f64);
            cost(KernelClass::Geglu, 0.0, 0.0, t * 3.0 * i * ELEM)
        }
        "pool" => {
            let p: PoolParams = decode(name, params)?;
            let (tokens, seqs) = batch_counts(mem, p.batch);
            let s = seqs.min(p.max_sequences as u64) as f64;
            let read_rows = if p.pooling == MB_POOL_CLS { s } else { tokens as f64 };
            let act = read_rows * p.hidden_dim as f64 * ELEM + s * p.out_dim as f64 * 4.0;
            cost(KernelClass::Pool, 0.0, 0.0, act)
        }
        "head_act_norm" => {
            let p: HeadActNormParams = decode(name, params)?;
            let (t, h) = (rows(mem, p.batch, p.max_tokens), p.hidden as f64);
            let params_b = norm_params(h, p.bias) + if p.dense_bias != 0 { h * ELEM } else { 0.0 };
            cost(KernelClass::HeadActNorm, 0.0, params_b, 2.0 * t * h * ELEM)
        }
        "colbert_normalize" => {
            let p: RowNormalizeParams = decode(name, params)?;
            let t = rows(mem, p.batch, p.max_rows);
            cost(KernelClass::ColbertNormalize, 0.0, 0.0, t * p.dim as f64 * (ELEM + 4.0))
        }
        "gather_rows" => {
            let p: GatherRowsParams = decode(name, params)?;
            let act = p.n_rows as f64 * p.width as f64 * 2.0 * ELEM;
            cost(KernelClass::GatherRows, 0.0, 0.0, act)
        }
        "softmax_topk" => {
            let p: SoftmaxTopkParams = decode(name, params)?;
            let r = p.rows as f64;
            let act = r * p.cols as f64 * ELEM + r * p.k as f64 * 8.0;
            cost(KernelClass::SoftmaxTopk, 0.0, 0.0, act)
        }
        _ => {
            return Err(KernelError::UnknownKernel(format!(
                "{name} (the cost model has no formula for it)"
            )))
        }
    })
}

/// How [`attention_cost`] classes a window launch whose window covers every sequence.
#[derive(Clone, Copy, PartialEq)]
enum Window {
    /// The kernel computes such sequences as global attention: the global class.
    GlobalWhenCovered,
    /// The window class whatever the lengths.
    AlwaysWindow,
}

/// Attention (either kernel; `classes`: its global and its window class): reads Q, K, V and
/// writes O once (`4·T·width` elements); useful FLOPs `4·head_dim·heads` per (query, key) pair,
/// pairs per sequence `s·keys` (global; keys = the sequence's key_lens, ≤ s) or the edge-clipped
/// window's (local).
///
/// `Window::GlobalWhenCovered`: attention.cu's block (attention_block.cuh, also the persistent
/// forward's) runs a sequence no longer than the radius as global attention — the same tiles,
/// no window mask — so a window launch none of whose sequences is longer is costed at the
/// global class: the window class's rate was measured at 512 tokens, where a block visits 3
/// key tiles for 129 useful keys a row, a waste such a launch does not have. (Past the radius a
/// short sequence still visits nearly all its tiles but is charged the window rate: the model
/// steps up there.) attention_sm90's window entry runs such sequences unmasked too, in its own
/// 64-key tiles; its window rate is an assumption that includes the window's waste, so it keeps
/// its class: conservative for them.
fn attention_cost(
    p: &AttentionParams,
    mem: &dyn DeviceMemory,
    classes: [KernelClass; 2],
    window: Window,
) -> LaunchCost {
    let (_, seqs) = batch_counts(mem, p.batch);
    let seqs = seqs.min(p.max_sequences as u64);
    let (mut tokens, mut pairs, mut windowed) = (0u64, 0u64, false);
    for b in 0..seqs {
        let start = mem.read_u32(p.cu_seqlens + 4 * b) as u64;
        let end = mem.read_u32(p.cu_seqlens + 4 * (b + 1)) as u64;
        let len = end.saturating_sub(start);
        let s = len.min(p.max_seqlen as u64);
        tokens += s;
        windowed |= p.window_radius >= 0 && len > p.window_radius as u64; // the kernel's test, on the whole length
        pairs += if p.window_radius < 0 {
            // No key_lens array: every token is a key.
            let keys = match p.key_lens {
                0 => s,
                at => (mem.read_u32(at + 4 * b) as u64).clamp(1, s.max(1)),
            };
            s * keys
        } else {
            local_pairs(s, p.window_radius as u64)
        };
    }
    let width = p.heads as f64 * p.head_dim as f64;
    LaunchCost {
        class: match window {
            _ if p.window_radius < 0 => classes[0],
            Window::GlobalWhenCovered if !windowed => classes[0],
            _ => classes[1],
        },
        flops: 4.0 * width * pairs as f64,
        param_bytes: 0.0,
        activation_bytes: 4.0 * tokens as f64 * width * ELEM,
        l2_bytes: 0.0,
    }
}

/// A GEMM: `2·m·n·k` FLOPs; reads A `[m, k]` and W `[n, k]` (+ bias), writes `[m, n]`.
pub fn gemm_cost(g: &GemmDesc) -> LaunchCost {
    let (m, n, k) = (g.m as f64, g.n as f64, g.k as f64);
    LaunchCost {
        class: KernelClass::Gemm,
        flops: 2.0 * m * n * k,
        param_bytes: n * k * ELEM + if g.bias != 0 { n * ELEM } else { 0.0 },
        activation_bytes: (m * k + m * n) * ELEM,
        l2_bytes: 0.0,
    }
}

/// `gemm_sm90[_<epilogue>]`: the GEMM's `2·m·n·k` FLOPs and operands, its output at the
/// epilogue's width (GeGLU: `n / 2`), plus the residual it reads (`residual`) and the row
/// statistics it writes (`stats_out`) or reads with the column sums (`stats_in`). Costed as the
/// [`KernelClass::Gemm`] class, i.e. at cuBLASLt's measured efficiency: an assumption until the
/// kernel is measured on a GPU (it has not been), and the one under which the Hopper path's
/// predictions are made. The epilogues' arithmetic (RoPE's sincos, GeGLU's erf) is not
/// counted, as the row kernels' is not.
fn gemm_sm90_cost(op: &str, p: &GemmSm90Params) -> LaunchCost {
    let (m, n, k) = (p.m as f64, p.n as f64, p.k as f64);
    let out = match op {
        "gemm_sm90_geglu" => m * n / 2.0,
        "gemm_sm90_residual" => 2.0 * m * n, // R read, C written
        _ => m * n,
    };
    let bn = MB_GEMM90_BN as f64;
    let stats = std::mem::size_of::<MbRowStats>() as f64;
    let stats_out = if p.stats_out != 0 { m * (n / bn) * stats } else { 0.0 };
    let (stats_in, colsum) = if p.stats_in != 0 {
        (m * (k / bn) * stats, 4.0 * n)
    } else {
        (0.0, 0.0)
    };
    LaunchCost {
        class: KernelClass::Gemm,
        flops: 2.0 * m * n * k,
        param_bytes: n * k * ELEM + colsum,
        activation_bytes: (m * k + out) * ELEM + stats_out + stats_in,
        l2_bytes: 0.0,
    }
}

/// `gemm_stream_sm90` on `rows` rows in use (its `BatchDesc`'s tokens): `2·rows·n·k` FLOPs; the
/// weights once (+ the column sums with a row norm); x's rows read once, the output at the
/// epilogue's width (GeGLU: `n / 2`) written, and with the residual epilogue `r` read. Each of
/// the `n / (16·cluster)` clusters also reads all of x from L2 once, multicast to its blocks
/// (`l2_bytes`, less the one read counted above): `rows / (16·cluster)` times the weights' bytes
/// (at 32 rows and clusters of 4, half of them; without clusters it was twice them, and the L2,
/// not DRAM, bounded the kernel).
fn gemm_stream_cost(p: &GemmStreamParams, rows: f64) -> LaunchCost {
    let (n, k) = (p.n as f64, p.k as f64);
    let out = match p.epilogue {
        MB_STREAM_GEGLU => rows * n / 2.0,
        MB_STREAM_RESIDUAL => 2.0 * rows * n,
        _ => rows * n,
    };
    let colsum = if p.norm != 0 { 4.0 * n } else { 0.0 };
    LaunchCost {
        class: KernelClass::GemmStream,
        flops: 2.0 * rows * n * k,
        param_bytes: n * k * ELEM + colsum,
        activation_bytes: (rows * k + out) * ELEM,
        l2_bytes: (n / (MB_STREAM_BN * p.cluster.max(1)) as f64 - 1.0) * rows * k * ELEM,
    }
}

/// The steps of a `forward_small_sm90` launch, each costed as its per-launch kernel: a GEMM step
/// as `gemm_stream_sm90`, except that x is read from L2 once by every cluster with a tile
/// (min(tiles, blocks) / cluster of them, multicast to its blocks; with x in several chunks,
/// once per group of tiles), and that its FLOPs are the busiest block's tiles times the blocks
/// (the time the step's math takes, not the work: the launch's own cost counts that), an
/// attention step as
/// attention.cu, the embeddings and the final norm as embeddings.cu and layernorm.cu. The
/// program is read from the model device's memory, where the executor uploaded it.
pub fn forward_small_steps(name: &str, params: &[u8], mem: &dyn DeviceMemory) -> Result<Vec<LaunchCost>, KernelError> {
    let p: ForwardSmallParams = decode(name, params)?;
    let size = std::mem::size_of::<ForwardSmallStep>();
    let program = (0..p.count as u64)
        .map(|i| {
            let at = p.steps + i * size as u64;
            let bytes: Vec<u8> = (0..size as u64 / 4)
                .flat_map(|w| mem.read_u32(at + 4 * w).to_le_bytes())
                .collect();
            decode::<ForwardSmallStep>(name, &bytes)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut steps = Vec::with_capacity(program.len());
    for (i, step) in program.iter().enumerate() {
        steps.push(match step.kind {
            MB_FSMALL_GEMM => {
                let g = &step.gemm;
                let rows = rows(mem, g.batch, g.m);
                let blocks = p.blocks.max(1);
                let (tiles, slices) = (g.n / MB_STREAM_BN, gemm_slices(&program, i, blocks));
                let units = tiles * slices;
                // The step's math ends with its busiest block's units (a block per SM), and the
                // shared-memory reads bound the tile loop: per chunk of x, a warp reads 1 KiB of
                // weights per unit and 1 KiB of x per 16 rows, once for a pair of units computed
                // together (stream_tile.cuh, accumulate). In those reads, relative to one tile
                // over all rows alone: Wqkv's and Wi's 144 tiles on 132 blocks are a pair on the
                // busiest block; Wo's and Wo2's 48 tiles, in two row slices, one half-rows unit.
                let chunk = p.m.max(16);
                let reads = |rows: u32, g: u32| {
                    (0..rows.div_ceil(chunk).max(1))
                        .map(|c| (g + (rows - c * chunk).min(chunk).div_ceil(16)) as f64)
                        .sum::<f64>()
                };
                let busiest = units.div_ceil(blocks);
                let block_rows = match slices {
                    1 => rows as u32,
                    _ => (rows as u32).div_ceil(32) * 16, // the first half, the larger
                };
                let busiest_time = ((busiest / 2) as f64 * reads(block_rows, 2)
                    + (busiest % 2) as f64 * reads(block_rows, 1))
                    / reads(rows as u32, 1);
                let waves = busiest_time * blocks as f64 / tiles as f64;
                // x passes through in chunks of p.m rows; with several, once per group of the
                // busiest block's units (MB_FSMALL_SLOTS a group), by every cluster with a unit
                // (with two slices, each cluster its half of the rows).
                let chunks = (block_rows).div_ceil(chunk).max(1);
                let groups = if chunks == 1 {
                    1
                } else {
                    busiest.div_ceil(MB_FSMALL_SLOTS)
                };
                let readers = (units.min(blocks) / p.cluster.max(1)).max(1) as f64;
                let cost = gemm_stream_cost(g, rows);
                LaunchCost {
                    flops: cost.flops * waves,
                    l2_bytes: (readers * groups as f64 / slices as f64 - 1.0).max(0.0) * rows * g.k as f64 * ELEM,
                    ..cost
                }
            }
            MB_FSMALL_EMBED => kernel_cost("embeddings", step.embed.as_bytes(), mem)?,
            MB_FSMALL_NORM => kernel_cost("layernorm", step.norm.as_bytes(), mem)?,
            MB_FSMALL_ATTENTION => {
                let a = &step.attention;
                let cost = attention_cost(
                    a,
                    mem,
                    [KernelClass::AttentionGlobal, KernelClass::AttentionLocal],
                    Window::GlobalWhenCovered,
                );
                // A head's units (its sequences × the longest's 64-query blocks) run on the one
                // block that took its last ticket, a unit on each half (128 threads) in turn:
                // the step lasts as long as that block's busier half, at half an SM's share of
                // the class's rate, not as long as the work spread over every SM.
                let (_, seqs) = batch_counts(mem, a.batch);
                let longest = mem.read_u32(a.batch + 8).min(a.max_seqlen) as u64;
                let per_head = seqs.min(a.max_sequences as u64) * longest.div_ceil(MB_ATTENTION_BLOCK_M as u64);
                let units = (a.heads as u64 * per_head).max(1) as f64;
                let busiest_half = per_head.div_ceil(2) as f64;
                LaunchCost {
                    flops: cost.flops * busiest_half * 2.0 * p.blocks.max(1) as f64 / units,
                    ..cost
                }
            }
            kind => {
                return Err(KernelError::ParamSize {
                    kernel: name.into(),
                    message: format!("step {i} of kind {kind}"),
                })
            }
        });
    }
    Ok(steps)
}

/// How fast one class runs, as fractions of the card's vendor peaks (dense bf16 tensor FLOP/s,
/// DRAM bytes/s). A class without a compute fraction is memory-bound by construction (its FLOPs
/// are 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ClassEfficiency {
    pub compute: f64,
    pub memory: f64,
}

/// Everything the model needs to turn costs into time on one card.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Profile {
    pub peak_flops: f64,
    pub dram_bytes_per_s: f64,
    /// Indexed by [`KernelClass::index`].
    pub efficiency: [ClassEfficiency; KernelClass::COUNT],
    /// GPU time every launch takes beyond its roofline time (ramp-up, tail, the gap to the next
    /// kernel), the same for a graph node and a direct launch.
    pub kernel_fixed_s: f64,
    /// The same for a launch made as a programmatic dependent of the one before (PDL: its blocks
    /// resident before that one ends, held at griddepcontrol.wait): the hand-off alone. Assumed
    /// (the calibration file's `assumptions`), until the hand-off microbenchmark is measured.
    pub dependent_fixed_s: f64,
    /// L2-to-SM bandwidth, for launches with [`LaunchCost::l2_bytes`] (assumed: the calibration
    /// file's `assumptions`; the same chip, so the same on an H200).
    pub l2_bytes_per_s: f64,
    /// The persistent forward's grid barrier between two steps: from a block's flag raised to
    /// every block seeing all flags (assumed: the calibration file's `assumptions`, until the
    /// hand-off microbenchmark's persistent way is measured).
    pub grid_barrier_s: f64,
    /// The persistent forward's attention step instead of a barrier: from the last Wqkv tile of a
    /// head written to the block that took its last ticket starting the head's attention (a
    /// release, an atomic's round trip to L2, an acquire; assumed: the calibration file's
    /// `assumptions`, never measured).
    pub head_handoff_s: f64,
    /// Host time to issue one direct launch, or one graph replay.
    pub host_launch_s: f64,
    /// Host↔device copies (assumed, not measured: see the calibration file).
    pub pcie_bytes_per_s: f64,
}

impl Profile {
    /// Every class at the card's vendor peaks, no fixed costs: the starting point of a fit.
    pub fn at_peaks(peak_flops: f64, dram_bytes_per_s: f64, pcie_bytes_per_s: f64) -> Self {
        Profile {
            peak_flops,
            dram_bytes_per_s,
            efficiency: [ClassEfficiency {
                compute: 1.0,
                memory: 1.0,
            }; KernelClass::COUNT],
            kernel_fixed_s: 0.0,
            dependent_fixed_s: 0.0,
            l2_bytes_per_s: f64::INFINITY,
            grid_barrier_s: 0.0,
            head_handoff_s: 0.0,
            host_launch_s: 0.0,
            pcie_bytes_per_s,
        }
    }

    pub fn efficiency(&self, class: KernelClass) -> ClassEfficiency {
        self.efficiency[class.index()]
    }

    /// The roofline time of a launch: the slower of its FLOPs and its bytes at the class's rates.
    pub fn roofline_s(&self, c: &LaunchCost) -> f64 {
        let e = self.efficiency(c.class);
        let compute = if c.flops > 0.0 {
            c.flops / (e.compute * self.peak_flops)
        } else {
            0.0
        };
        let dram = c.bytes() / (e.memory * self.dram_bytes_per_s);
        // Everything a launch reads passes through L2; only a broadcast makes that bind.
        let l2 = if c.l2_bytes > 0.0 {
            (c.bytes() + c.l2_bytes) / self.l2_bytes_per_s
        } else {
            0.0
        };
        compute.max(dram).max(l2)
    }

    /// GPU time of a launch: fixed cost + roofline.
    pub fn kernel_s(&self, c: &LaunchCost) -> f64 {
        self.kernel_fixed_s + self.roofline_s(c)
    }

    /// GPU time of a persistent launch of `steps` ([`forward_small_steps`]): its fixed cost, then
    /// each step in turn. A step's weights stream in ahead (under the previous step and the
    /// barrier: a block's next tile is in flight while it computes), so a step takes the longer of
    /// its weights' DRAM time and the barrier (none before the first; before an attention step,
    /// which runs inside the Wqkv step before it, the head's hand-off instead) + the rest of its
    /// roofline (x's reads from L2, its outputs, its math: the busiest block's tiles). What this
    /// leaves out: a step's own latency chain beyond the barrier (x's first bytes, the
    /// reduction, the epilogue's stores), and a head's attention units serialised on one block
    /// when a batch has several sequences.
    pub fn persistent_s(&self, steps: &[LaunchCost]) -> f64 {
        let step_s = |(i, c): (usize, &LaunchCost)| {
            let weights = c.param_bytes / (self.efficiency(c.class).memory * self.dram_bytes_per_s);
            let rest = LaunchCost { param_bytes: 0.0, ..*c };
            let barrier = match c.class {
                _ if i == 0 => 0.0,
                KernelClass::AttentionGlobal | KernelClass::AttentionLocal => self.head_handoff_s,
                _ => self.grid_barrier_s,
            };
            weights.max(barrier + self.roofline_s(&rest))
        };
        self.kernel_fixed_s + steps.iter().enumerate().map(step_s).sum::<f64>()
    }

    /// GPU time of a programmatic dependent launch: the hand-off + roofline (its weight
    /// prefetch before the wait is not credited as overlap: a conservative choice).
    pub fn dependent_kernel_s(&self, c: &LaunchCost) -> f64 {
        self.dependent_fixed_s + self.roofline_s(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Device memory holding a few u32 words.
    struct Words(HashMap<u64, u32>);

    impl DeviceMemory for Words {
        fn read_u32(&self, addr: u64) -> u32 {
            self.0.get(&addr).copied().unwrap_or(0)
        }
    }

    /// A batch of two sequences, 4 and 6 tokens — its BatchDesc's counts at `batch`, its
    /// cu_seqlens at `cu` — and global attention over it with one head of 64.
    fn two_sequences(batch: u64, cu: u64) -> (HashMap<u64, u32>, AttentionParams) {
        let mut words = HashMap::new();
        words.insert(batch, 10); // tokens
        words.insert(batch + 4, 2); // sequences
        for (i, v) in [0u32, 4, 10].into_iter().enumerate() {
            words.insert(cu + 4 * i as u64, v);
        }
        let p = AttentionParams {
            batch,
            cu_seqlens: cu,
            max_sequences: 2,
            max_seqlen: 6,
            heads: 1,
            head_dim: 64,
            window_radius: -1,
            ..Default::default()
        };
        (words, p)
    }

    /// Without a key_lens array every token of a global layer's sequence is a key (both
    /// attention kernels: one formula); with one, its counts; a window counts its own pairs.
    #[test]
    fn attention_pairs_follow_key_lens_and_the_window() {
        let (batch, cu, key_lens) = (0x100u64, 0x200u64, 0x300u64);
        let (mut words, p) = two_sequences(batch, cu);
        words.insert(key_lens, 2);
        words.insert(key_lens + 4, 6);
        let mem = Words(words);
        let per_pair = 4.0 * 64.0;
        let flops = |p: &AttentionParams, sm90: bool| {
            let c = if sm90 {
                let prm = AttentionSm90Params {
                    attn: *p,
                    ..Default::default()
                };
                kernel_cost("attention_sm90_bf16", prm.as_bytes(), &mem).unwrap()
            } else {
                kernel_cost("attention_bf16", p.as_bytes(), &mem).unwrap()
            };
            assert_eq!(c.activation_bytes, 4.0 * 10.0 * 64.0 * ELEM);
            c.flops
        };
        for sm90 in [false, true] {
            assert_eq!(flops(&p, sm90), per_pair * (16.0 + 36.0), "every token a key");
            let with_lens = AttentionParams { key_lens, ..p };
            assert_eq!(flops(&with_lens, sm90), per_pair * (4.0 * 2.0 + 36.0), "key_lens");
            let window = AttentionParams { window_radius: 1, ..p };
            let expected = (local_pairs(4, 1) + local_pairs(6, 1)) as f64;
            assert_eq!(flops(&window, sm90), per_pair * expected, "a window");
        }
    }

    /// attention.cu's block computes a sequence no longer than the radius as global attention:
    /// a window launch whose longest sequence is that short is costed at the global class, one
    /// token longer at the window class; attention_sm90's window entry always at its own.
    #[test]
    fn a_window_covering_every_sequence_is_costed_as_global() {
        let (batch, cu) = (0x100u64, 0x200u64);
        let (words, global) = two_sequences(batch, cu);
        let mem = Words(words);
        let class = |name: &str, radius: i32| {
            let attn = AttentionParams {
                window_radius: radius,
                ..global
            };
            let params = match name {
                "attention" => attn.as_bytes().to_vec(),
                _ => AttentionSm90Params {
                    attn,
                    ..Default::default()
                }
                .as_bytes()
                .to_vec(),
            };
            kernel_cost(name, &params, &mem).unwrap().class
        };
        assert_eq!(
            class("attention", 6),
            KernelClass::AttentionGlobal,
            "6 tokens, radius 6"
        );
        assert_eq!(class("attention", 5), KernelClass::AttentionLocal, "6 tokens, radius 5");
        assert_eq!(class("attention", -1), KernelClass::AttentionGlobal);
        assert_eq!(class("attention_sm90_local", 6), KernelClass::AttentionSm90Local);
    }
}
