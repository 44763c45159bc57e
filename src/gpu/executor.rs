//! The GPU executor: the ModernBERT forward pass as a sequence of kernel launches and GEMMs on a
//! [`Device`] — a real GPU or the host emulator, the same code either way.
//!
//! Per batch: one host-to-device copy of the inputs (BatchDesc, ids, cu_seqlens, key_lens) into
//! the arena, the launches below, one device-to-host copy of the result. No allocation, no host
//! synchronisation in between; kernels read the actual token/sequence counts from the BatchDesc,
//! so a launch sequence recorded for a capacity bucket replays for any batch that fits it.

use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use half::{bf16, f16};

use crate::batch::PackedBatch;
use crate::config::{AttentionWindow, LayerKind, ModelConfig, Pooling};
use crate::error::{Error, Result};
use crate::gpu::arena::{Arena, ArenaPlan};
use crate::gpu::heads::{activation_code, DeviceHeads, Heads};
use crate::gpu::path::{self, GpuPath, GpuPathChoice};
use crate::gpu::weights::{DeviceLayer, DeviceLinear, DeviceNorm, DeviceWeights};
use crate::kernels::device::{Device, GemmDesc};
use crate::kernels::forward_small::{forward_small_grid, ForwardSmall, ForwardSmallGrid, ForwardSmallProgram};
use crate::kernels::ops::{GemmSm90, RowNorm, Sm90Epilogue};
use crate::kernels::params::*;
use crate::kernels::{attention_sm90, gemm_stream, graph, nvtx, ops, Dtype, KernelError};
use crate::limits::{bytes_of, check_fits, host_memory_limit, sum_of, zeroed};
use crate::model::BackboneWeights;

/// Capacities one launch sequence is built for (the actual counts are ≤ these and live on device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchShape {
    pub tokens: u32,
    pub sequences: u32,
    pub max_seqlen: u32,
}

impl LaunchShape {
    /// The exact shape of a batch.
    pub fn of(batch: &PackedBatch) -> Self {
        LaunchShape {
            tokens: batch.tokens() as u32,
            sequences: batch.sequences() as u32,
            max_seqlen: batch.max_seqlen() as u32,
        }
    }
}

struct State {
    arena: Arena,
    /// Host image of the arena's input region (fixed capacity: never reallocated).
    inputs: Vec<u8>,
    /// Host landing buffer for downloads (fixed capacity).
    download: Vec<u8>,
}

pub struct GpuExecutor {
    dev: Arc<dyn Device>,
    dtype: Dtype,
    config: ModelConfig,
    weights: DeviceWeights,
    heads: DeviceHeads,
    /// `MB_ACT_*` of the GeGLU's `hidden_activation`.
    hidden_activation: u32,
    /// The launch list of each layer.
    path: GpuPath,
    /// On [`GpuPath::Hopper`], launches of at most this many tokens (capacity) run their GEMMs
    /// as `gemm_stream_sm90` ([`path::small_batch_tokens`]); 0 elsewhere.
    small_batch_tokens: u32,
    /// On [`GpuPath::Hopper`], launches of at most `rows` tokens (and `small_batch_cap`) run
    /// every layer as one co-scheduled launch of this program ([`path::persistent_tokens`]);
    /// `None`: off.
    persistent: Option<ForwardSmall>,
    /// [`Self::with_small_batch_tokens`]' cap on both small-batch forwards (u32::MAX: none).
    small_batch_cap: u32,
    /// Replay recorded launch sequences (CUDA graphs) for batches that fit a graph bucket.
    graphs: bool,
    state: Mutex<State>,
}

/// One step of a layer on [`GpuPath::Hopper`]: a GEMM (with its range's name) or attention.
enum HopperStep {
    Gemm(GemmSm90, &'static CStr),
    Attention(AttentionParams),
}

fn dev_err(e: KernelError) -> Error {
    Error::Device(e.to_string())
}

impl GpuExecutor {
    /// The activation dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The backbone alone: upload the weights (converted to `dtype` once) and size the arena for
    /// batches of up to `max_tokens` tokens and `max_sequences` sequences; the path
    /// [`GpuPathChoice::Auto`] picks.
    pub fn new(
        dev: Arc<dyn Device>,
        dtype: Dtype,
        config: &ModelConfig,
        weights: &BackboneWeights,
        max_tokens: usize,
        max_sequences: usize,
    ) -> Result<Self> {
        Self::on_path(
            dev,
            dtype,
            config,
            weights,
            max_tokens,
            max_sequences,
            GpuPathChoice::Auto,
        )
    }

    /// As [`new`](Self::new), on the path `path` chooses.
    pub fn on_path(
        dev: Arc<dyn Device>,
        dtype: Dtype,
        config: &ModelConfig,
        weights: &BackboneWeights,
        max_tokens: usize,
        max_sequences: usize,
        path: GpuPathChoice,
    ) -> Result<Self> {
        let heads = Heads::default();
        Self::build(
            dev,
            dtype,
            config,
            Some(weights),
            &heads,
            (max_tokens, max_sequences),
            path,
        )
    }

    /// As [`on_path`](Self::on_path), with the task `heads` uploaded too and room for them in the
    /// arena.
    pub fn with_heads(
        dev: Arc<dyn Device>,
        dtype: Dtype,
        config: &ModelConfig,
        weights: &BackboneWeights,
        heads: &Heads,
        (max_tokens, max_sequences): (usize, usize),
        path: GpuPathChoice,
    ) -> Result<Self> {
        Self::build(
            dev,
            dtype,
            config,
            Some(weights),
            heads,
            (max_tokens, max_sequences),
            path,
        )
    }

    /// The backbone with its weight buffer allocated but never written, on the cost model only:
    /// a model device computes nothing, and a launch's cost depends on shapes, not values, so
    /// predicting a forward needs no weights (base: ~600 MB of f32 to generate otherwise).
    pub fn without_weights(
        dev: Arc<dyn Device>,
        dtype: Dtype,
        config: &ModelConfig,
        max_tokens: usize,
        max_sequences: usize,
        path: GpuPathChoice,
    ) -> Result<Self> {
        if dev.as_model().is_none() {
            return Err(Error::Unsupported(format!(
                "an executor without weights runs only on the cost model, not on {}",
                dev.name()
            )));
        }
        let heads = Heads::default();
        Self::build(dev, dtype, config, None, &heads, (max_tokens, max_sequences), path)
    }

    fn build(
        dev: Arc<dyn Device>,
        dtype: Dtype,
        config: &ModelConfig,
        weights: Option<&BackboneWeights>,
        heads: &Heads,
        (max_tokens, max_sequences): (usize, usize),
        path: GpuPathChoice,
    ) -> Result<Self> {
        if config.head_dim() != 64 {
            return Err(Error::Unsupported(format!(
                "the GPU attention kernel needs head_dim 64; this model has {} (use --device cpu)",
                config.head_dim()
            )));
        }
        if !config.hidden_size.is_multiple_of(8) || !config.intermediate_size.is_multiple_of(8) {
            return Err(Error::Unsupported(
                "hidden and intermediate sizes must be multiples of 8 on the GPU".into(),
            ));
        }
        if max_tokens == 0 || max_sequences == 0 || max_sequences > 65535 {
            return Err(Error::Input(format!(
                "arena capacity {max_tokens} tokens / {max_sequences} sequences"
            )));
        }
        let hidden_activation = activation_code(config.hidden_activation);
        let has_biases = match weights {
            Some(w) => w
                .layers
                .iter()
                .any(|l| [&l.wqkv, &l.wo, &l.wi, &l.mlp_wo].iter().any(|lin| lin.bias.is_some())),
            None => config.attention_bias || config.mlp_bias,
        };
        let path = GpuPath::resolve(path, dev.as_ref(), config, has_biases)?;
        // Every size first, checked, against what the device and the host can hold; then allocate.
        let plan = ArenaPlan::new(config, max_tokens, max_sequences, heads.shapes(config))?;
        let max_tokens = plan.max_tokens; // rounded up to its graph bucket
        let what = format!("the weights and an arena for {max_tokens} tokens");
        let device_bytes = sum_of(
            &what,
            &[
                DeviceWeights::planned_bytes(config, path)?,
                DeviceHeads::planned_bytes(heads)?,
                plan.bytes,
                crate::kernels::cublaslt::MAX_WORKSPACE_BYTES,
            ],
        )?;
        check_fits(&what, device_bytes, dev.memory_available(), &dev.name())?;
        // The largest download: the hidden states (f32 room, widened in place), ColBERT's f32
        // vectors, or one launch's top-k picks.
        let download_bytes = bytes_of(
            "the host's copy of the hidden states",
            &[
                max_tokens,
                config.hidden_size.max(heads.dense.map_or(0, |d| d.out_features)),
                4,
            ],
        )?
        .max(plan.topk_bytes);
        let host_bytes = sum_of(&what, &[plan.inputs.bytes, download_bytes])?;
        check_fits(
            "the host buffers of the arena",
            host_bytes,
            host_memory_limit(),
            "the host",
        )?;
        let inputs = zeroed::<u8>(plan.inputs.bytes, "the arena's input image")?;
        let download = zeroed::<u8>(download_bytes, "the host's copy of the hidden states")?;
        let weights = match weights {
            Some(w) => DeviceWeights::upload(dev.as_ref(), dtype, w, path)?,
            None => DeviceWeights::reserve(dev.as_ref(), config, path)?,
        };
        let heads = DeviceHeads::upload(dev.as_ref(), dtype, config, heads, weights.tok_embeddings)?;
        let arena = Arena::new(dev.as_ref(), &plan)?;
        let mut exec = GpuExecutor {
            dev,
            dtype,
            config: config.clone(),
            weights,
            heads,
            hidden_activation,
            path,
            small_batch_tokens: match path {
                GpuPath::Hopper => path::small_batch_tokens(config),
                GpuPath::Portable => 0,
            },
            persistent: None,
            small_batch_cap: u32::MAX,
            graphs: false,
            state: Mutex::new(State {
                arena,
                inputs,
                download,
            }),
        };
        exec.persistent = exec.persistent_program(0)?;
        Ok(exec)
    }

    /// The persistent small-batch forward's program over this executor's arena, for batches of at
    /// most [`path::persistent_tokens`] tokens (and the arena's tokens and sequences): the
    /// capacities are the bound's, the counts each launch's `BatchDesc`, so one program serves
    /// every such batch. `chunk`: x's rows in shared memory at once (0: the most that fit).
    /// `None` off the Hopper path, or where the bound is 0.
    fn persistent_program(&self, chunk: u32) -> Result<Option<ForwardSmall>> {
        let bound = match self.path {
            GpuPath::Hopper => path::persistent_tokens(&self.config).min(self.lock().arena.max_tokens as u32),
            GpuPath::Portable => 0,
        };
        if bound == 0 || self.weights.layers.is_empty() {
            return Ok(None);
        }
        let mut st = self.lock();
        let a = &mut st.arena;
        let shape = LaunchShape {
            tokens: bound,
            sequences: bound.min(a.max_sequences as u32),
            max_seqlen: bound,
        };
        let mut program = ForwardSmallProgram::default();
        program.set_chunk(chunk);
        program.embeddings(&self.embedding_params(a, shape)).map_err(dev_err)?;
        for (l, layer) in self.weights.layers.iter().enumerate() {
            for step in self.hopper_layer_steps(a, l, layer, shape, true) {
                match step {
                    HopperStep::Gemm(g, _) => program.gemm(self.dtype, &g, a.batch),
                    HopperStep::Attention(p) => program.attention(&p),
                }
                .map_err(dev_err)?;
            }
        }
        let final_norm = self.norm_params(a, 0, self.weights.final_norm, a.last_hidden, shape);
        program.norm(&final_norm).map_err(dev_err)?;
        let grid = forward_small_grid(self.dev.as_ref(), self.dtype, &program).map_err(dev_err)?;
        let placed = program
            .launch_at(a.program, a.flags, a.head_counts, grid)
            .map_err(dev_err)?;
        let (program_at, flags_at) = (a.offset_of(a.program), a.offset_of(a.flags));
        let counts_at = a.offset_of(a.head_counts);
        self.dev
            .upload(a.storage_mut(), program_at, &program.bytes())
            .map_err(dev_err)?;
        let flags: Vec<u8> = (0..grid.blocks)
            .flat_map(|_| MB_FSMALL_FLAGS_START.to_le_bytes())
            .collect();
        self.dev.upload(a.storage_mut(), flags_at, &flags).map_err(dev_err)?;
        let counts = vec![0u8; 4 * MB_FSMALL_MAX_HEADS as usize];
        self.dev.upload(a.storage_mut(), counts_at, &counts).map_err(dev_err)?;
        Ok(Some(placed))
    }

    /// Turn the persistent small-batch forward off (on by default where it fits): small batches
    /// then launch each step as a programmatic dependent.
    pub fn without_persistent(mut self) -> Self {
        self.persistent = None;
        self
    }

    /// Rebuild the persistent forward's program to pass x through shared memory `rows` at a
    /// time (a multiple of 16, at most the most that fit): every chunk's rows are computed as in
    /// one chunk, so a test can make small batches take several chunks and compare their bits.
    pub fn with_persistent_chunk(mut self, rows: u32) -> Result<Self> {
        if self.persistent.is_some() {
            self.persistent = self.persistent_program(rows)?;
        }
        Ok(self)
    }

    /// The most tokens (a launch's capacity) the persistent forward takes; 0: off.
    pub fn persistent_tokens(&self) -> u32 {
        self.persistent.as_ref().map_or(0, |f| f.rows.min(self.small_batch_cap))
    }

    /// Whether a launch of these capacities runs as the persistent forward: at most its tokens,
    /// and tokens × the longest sequence at most [`path::PERSISTENT_TOKENS_X_SEQLEN`].
    pub fn persistent_takes(&self, tokens: u32, max_seqlen: u32) -> bool {
        tokens <= self.persistent_tokens()
            && tokens as u64 * max_seqlen as u64 <= path::PERSISTENT_TOKENS_X_SEQLEN as u64
    }

    /// The rows of x the persistent forward holds in shared memory at once; 0: off.
    pub fn persistent_chunk(&self) -> u32 {
        self.persistent.as_ref().map_or(0, |f| f.params.m)
    }

    /// The persistent forward's grid (blocks, and blocks per cluster); `None`: off.
    pub fn persistent_grid(&self) -> Option<ForwardSmallGrid> {
        self.persistent.as_ref().map(|f| ForwardSmallGrid {
            blocks: f.params.blocks,
            cluster: f.params.cluster,
        })
    }

    /// Turn graph replay for small batches on or off (off by default).
    pub fn with_graphs(mut self, on: bool) -> Self {
        self.graphs = on;
        self
    }

    /// The launch list the forward issues.
    pub fn path(&self) -> GpuPath {
        self.path
    }

    /// Cap the small-batch bounds at `tokens` — the stream GEMMs' and the persistent forward's
    /// (0: both off) — never raising them.
    pub fn with_small_batch_tokens(mut self, tokens: u32) -> Self {
        self.small_batch_tokens = self.small_batch_tokens.min(tokens);
        self.small_batch_cap = self.small_batch_cap.min(tokens);
        self
    }

    /// The most tokens (a launch's capacity) for which the GEMMs are the small-batch ones.
    pub fn small_batch_tokens(&self) -> u32 {
        self.small_batch_tokens
    }

    pub fn device_name(&self) -> String {
        self.dev.name()
    }

    pub fn max_tokens(&self) -> usize {
        self.lock().arena.max_tokens
    }

    pub fn max_sequences(&self) -> usize {
        self.lock().arena.max_sequences
    }

    /// The device the executor runs on.
    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    /// Bytes of device memory held: weights (backbone and heads) + arena.
    pub fn device_bytes(&self) -> usize {
        self.weights.bytes + self.heads.bytes + self.lock().arena.bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `last_hidden_state` of every token, `[tokens, hidden]`, converted to f32 into `out`.
    pub fn forward_into(&self, batch: &PackedBatch, out: &mut [f32]) -> Result<()> {
        let h = self.config.hidden_size;
        if out.len() != batch.tokens() * h {
            return Err(Error::Input(format!(
                "output holds {} values, expected {}",
                out.len(),
                batch.tokens() * h
            )));
        }
        let mut guard = self.forward_locked(batch)?;
        let st = &mut *guard;
        let bytes = batch.tokens() * h * 2;
        let last_hidden = st.arena.offset_of(st.arena.last_hidden);
        self.dev
            .download(st.arena.storage(), last_hidden, &mut st.download[..bytes])
            .map_err(dev_err)?;
        widen(self.dtype, &st.download[..bytes], out);
        Ok(())
    }

    /// Pooled embeddings `[sequences, dim]` into `out`: pooling, (the Dense projection when
    /// `project`), truncation to `dim`, optional L2 normalisation — all on the device; only the
    /// `[sequences, dim]` f32 result comes back.
    ///
    /// With `project`, the Dense layer runs on every token and the pooling after it: CLS and mean
    /// pooling are linear, so `pool(Dense(h)) = Dense(pool(h))` (sentence-transformers' order) up
    /// to rounding, and the pooling kernel then does truncation and normalisation as it does
    /// without a projection. Its price, a `[tokens, hidden] x [hidden, out]` GEMM where
    /// `[sequences, …]` would do, is under 1 % of a base forward's FLOPs.
    pub fn pooled_into(
        &self,
        batch: &PackedBatch,
        pooling: Pooling,
        normalize: bool,
        dim: usize,
        project: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let s = batch.sequences();
        let dense = if project { Some(self.dense()?) } else { None };
        let width = dense.map_or(self.config.hidden_size, |d| d.out_features as usize);
        if dim == 0 || dim > width || out.len() != s * dim {
            return Err(Error::Input(format!(
                "pooled output of {} values for {s} × {dim} (width {width})",
                out.len()
            )));
        }
        let mut guard = self.forward_locked(batch)?;
        let st = &mut *guard;
        let shape = LaunchShape::of(batch);
        let a = &st.arena;
        let pooled_from = match dense {
            None => a.last_hidden,
            Some(d) => {
                self.linear(a.last_hidden, d, a.projected, shape.tokens, c"dense")
                    .map_err(dev_err)?;
                a.projected
            }
        };
        let params = PoolParams {
            hidden: pooled_from,
            out: a.pooled,
            cu_seqlens: a.cu_seqlens,
            key_lens: a.key_lens,
            batch: a.batch,
            max_sequences: shape.sequences,
            hidden_dim: width as u32,
            out_dim: dim as u32,
            pooling: match pooling {
                Pooling::Cls => MB_POOL_CLS,
                Pooling::Mean => MB_POOL_MEAN,
            },
            normalize: normalize as u32,
            _pad0: 0,
        };
        ops::pool(self.dev.as_ref(), self.dtype, &params).map_err(dev_err)?;
        self.download_f32(st, st.arena.pooled, out)
    }

    /// ColBERT vectors of every token, `normalize(Dense(h))` `[tokens, dense_out]` in f32, into
    /// `out` (PyLate's per-token projection; the caller drops skiplist tokens).
    pub fn colbert_into(&self, batch: &PackedBatch, out: &mut [f32]) -> Result<()> {
        let d = self.dense()?;
        if !self.heads.colbert {
            return Err(Error::Unsupported(
                "this executor's Dense is a sentence-transformers one, not ColBERT's".into(),
            ));
        }
        let dim = d.out_features as usize;
        if out.len() != batch.tokens() * dim {
            return Err(Error::Input(format!(
                "ColBERT output of {} values for {} × {dim}",
                out.len(),
                batch.tokens()
            )));
        }
        let mut guard = self.forward_locked(batch)?;
        let st = &mut *guard;
        let shape = LaunchShape::of(batch);
        let a = &st.arena;
        self.linear(a.last_hidden, d, a.projected, shape.tokens, c"dense")
            .map_err(dev_err)?;
        let p = RowNormalizeParams {
            x: a.projected,
            out: a.projected_f32,
            batch: a.batch,
            max_rows: shape.tokens,
            dim: dim as u32,
        };
        ops::colbert_normalize(self.dev.as_ref(), self.dtype, &p).map_err(dev_err)?;
        self.download_f32(st, st.arena.projected_f32, out)
    }

    /// Fill-mask on the device: the MLM head on the packed rows `rows` of `batch` (its mask
    /// positions), then softmax and the `k` most probable tokens per row. Only the picks come
    /// back: `ids[r * k + j]`, `probs[r * k + j]` (descending; an id ≥ vocab means no candidate,
    /// i.e. NaN logits).
    pub fn mlm_topk_into(
        &self,
        batch: &PackedBatch,
        rows: &[u32],
        k: usize,
        ids: &mut [u32],
        probs: &mut [f32],
    ) -> Result<()> {
        let head = self
            .heads
            .mlm
            .ok_or_else(|| Error::Unsupported("this executor has no MLM head".into()))?;
        let v = self.config.vocab_size;
        if k == 0 || k > v || ids.len() != rows.len() * k || probs.len() != rows.len() * k {
            return Err(Error::Input(format!("top-{k} of {} rows", rows.len())));
        }
        if rows.len() > batch.tokens() {
            return Err(Error::Input(format!(
                "{} rows of a batch of {} tokens",
                rows.len(),
                batch.tokens()
            )));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= batch.tokens()) {
            return Err(Error::Input(format!(
                "row {bad} of a batch of {} tokens",
                batch.tokens()
            )));
        }
        let mut guard = self.forward_locked(batch)?;
        let st = &mut *guard;
        let row_bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).collect();
        let at = st.arena.offset_of(st.arena.head_rows);
        self.dev
            .upload(st.arena.storage_mut(), at, &row_bytes)
            .map_err(dev_err)?;
        let a = &st.arena;
        // Rows per launch: the logits buffer's rows, fewer when k picks per row overflow `topk`.
        let per_launch = a.mlm_rows.min(a.topk_bytes / (8 * k)).max(1);
        let h = self.config.hidden_size as u32;
        let dt = self.dtype;
        for first in (0..rows.len()).step_by(per_launch) {
            let _range = nvtx::range(c"mlm_head");
            let n = per_launch.min(rows.len() - first);
            let n32 = n as u32;
            let gather = GatherRowsParams {
                x: a.last_hidden,
                rows: a.head_rows + 4 * first as u64,
                out: a.normed,
                n_rows: n32,
                width: h,
            };
            ops::gather_rows(self.dev.as_ref(), dt, &gather).map_err(dev_err)?;
            let dense_no_bias = DeviceLinear { bias: 0, ..head.dense };
            self.linear(a.normed, &dense_no_bias, a.proj, n32, c"mlm_dense")
                .map_err(dev_err)?;
            let act_norm = HeadActNormParams {
                x: a.proj,
                dense_bias: head.dense.bias,
                weight: head.norm.weight,
                bias: head.norm.bias,
                out: a.attn,
                batch: 0,
                max_tokens: n32,
                hidden: h,
                activation: head.activation,
                eps: self.config.norm_eps,
            };
            ops::head_act_norm(self.dev.as_ref(), dt, &act_norm).map_err(dev_err)?;
            self.linear(a.attn, &head.decoder, a.logits, n32, c"mlm_decoder")
                .map_err(dev_err)?;
            let picks = n * k;
            let topk = SoftmaxTopkParams {
                logits: a.logits,
                ids: a.topk,
                probs: a.topk + 4 * picks as u64,
                rows: n32,
                cols: v as u32,
                k: k as u32,
                _pad0: 0,
            };
            ops::softmax_topk(self.dev.as_ref(), dt, &topk).map_err(dev_err)?;
            let bytes = 8 * picks;
            let from = a.offset_of(a.topk);
            self.dev
                .download(a.storage(), from, &mut st.download[..bytes])
                .map_err(dev_err)?;
            let (id_bytes, prob_bytes) = st.download[..bytes].split_at(4 * picks);
            let word = |c: &[u8]| [c[0], c[1], c[2], c[3]];
            for (j, (i, p)) in id_bytes.chunks_exact(4).zip(prob_bytes.chunks_exact(4)).enumerate() {
                ids[first * k + j] = u32::from_le_bytes(word(i));
                probs[first * k + j] = f32::from_le_bytes(word(p));
            }
        }
        Ok(())
    }

    fn dense(&self) -> Result<&DeviceLinear> {
        self.heads
            .dense
            .as_ref()
            .ok_or_else(|| Error::Unsupported("this executor has no Dense projection".into()))
    }

    /// Download `out.len()` f32 values from the arena address `from`.
    fn download_f32(&self, st: &mut State, from: u64, out: &mut [f32]) -> Result<()> {
        let bytes = out.len() * 4;
        let offset = st.arena.offset_of(from);
        self.dev
            .download(st.arena.storage(), offset, &mut st.download[..bytes])
            .map_err(dev_err)?;
        for (o, c) in out.iter_mut().zip(st.download[..bytes].chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// Take the arena, copy the batch's inputs to it and run the forward pass: `last_hidden` then
    /// holds the batch's hidden states, and the other activation buffers are free for the heads.
    fn forward_locked(&self, batch: &PackedBatch) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut guard = self.lock();
        self.upload_inputs(&mut guard, batch)?;
        self.run_forward(&guard.arena, batch)?;
        Ok(guard)
    }

    /// Check the batch against the arena and copy its inputs to the device in one transfer.
    fn upload_inputs(&self, st: &mut State, batch: &PackedBatch) -> Result<()> {
        let a = &st.arena;
        if batch.tokens() > a.max_tokens || batch.sequences() > a.max_sequences {
            return Err(Error::Input(format!(
                "batch of {} tokens / {} sequences exceeds the arena ({} / {})",
                batch.tokens(),
                batch.sequences(),
                a.max_tokens,
                a.max_sequences
            )));
        }
        if let Some(&bad) = batch.ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        let lay = a.inputs;
        let desc = BatchDesc {
            tokens: batch.tokens() as u32,
            sequences: batch.sequences() as u32,
            max_seqlen: batch.max_seqlen() as u32,
            _pad0: 0,
        };
        let img = &mut st.inputs;
        for (i, v) in [desc.tokens, desc.sequences, desc.max_seqlen, 0].iter().enumerate() {
            img[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let put = |img: &mut [u8], at: usize, values: &[u32]| {
            for (i, v) in values.iter().enumerate() {
                img[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        };
        put(img, lay.ids, &batch.ids);
        put(img, lay.cu_seqlens, &batch.cu_seqlens);
        put(img, lay.key_lens, &batch.key_lens);
        let used = lay.key_lens + 4 * batch.sequences();
        let (arena, inputs) = (&mut st.arena, &st.inputs);
        // The input region is uploaded whole up to the key_lens of this batch (ids past the batch's
        // tokens are stale but never read: kernels stop at BatchDesc.tokens).
        self.dev
            .upload(arena.storage_mut(), 0, &inputs[..used])
            .map_err(dev_err)
    }

    /// Run the forward pass for a batch whose inputs are in the arena: replayed from a graph
    /// for small batches when graphs are on (the launch sequence of the batch's capacity bucket),
    /// launched directly otherwise.
    fn run_forward(&self, a: &Arena, batch: &PackedBatch) -> Result<()> {
        let _range = nvtx::range(c"modernbert.forward");
        // A batch the persistent forward takes keeps it: where its bucket, rounded up, would pass
        // the persistent bounds, it launches directly (the persistent forward is one launch; a
        // graph would replay the per-launch path).
        let takes = self.persistent_takes(batch.tokens() as u32, batch.max_seqlen() as u32);
        let bucket = graph::bucket(batch.tokens(), batch.sequences(), batch.max_seqlen())
            .filter(|&(t, _, l)| !takes || self.persistent_takes(t, l))
            .filter(|&(t, s, _)| self.graphs && t as usize <= a.max_tokens && s as usize <= a.max_sequences);
        match bucket {
            Some((tokens, sequences, max_seqlen)) => {
                let shape = LaunchShape {
                    tokens,
                    sequences,
                    max_seqlen,
                };
                self.dev
                    .run_graph([tokens, sequences, max_seqlen], &mut || self.forward(a, shape))
                    .map_err(dev_err)
            }
            None => self.forward(a, LaunchShape::of(batch)).map_err(dev_err),
        }
    }

    /// The forward pass on the arena's inputs: `last_hidden = final_norm(layers(LN_emb(E[ids])))`,
    /// launched for the capacities of `shape`.
    fn forward(&self, a: &Arena, shape: LaunchShape) -> Result<(), KernelError> {
        let w = &self.weights;
        let small = shape.tokens <= self.small_batch_tokens;
        if let Some(program) = self
            .persistent
            .as_ref()
            .filter(|_| self.persistent_takes(shape.tokens, shape.max_seqlen))
        {
            // The embeddings, every layer's steps and the final norm in one launch, on the arena
            // the program was built over.
            let _forward = nvtx::range(c"forward.persistent");
            return program.launch(self.dev.as_ref(), self.dtype);
        }
        self.embeddings(a, shape)?; // x = LN_emb(E[ids])
        for (l, layer) in w.layers.iter().enumerate() {
            let _layer = nvtx::range(match self.config.layer_kind(l) {
                LayerKind::Global => c"layer.global",
                LayerKind::Local => c"layer.local",
            });
            match self.path {
                GpuPath::Portable => self.layer_portable(a, l, layer, shape)?,
                GpuPath::Hopper => self.layer_hopper(a, l, layer, shape, small)?,
            }
        }
        // The portable layer leaves its MLP output in `proj` for the next norm to add.
        let last_delta = match self.path {
            GpuPath::Portable if !w.layers.is_empty() => a.proj,
            _ => 0,
        };
        self.add_and_norm(a, last_delta, w.final_norm, a.last_hidden, shape, c"final_norm")
    }

    /// One layer on [`GpuPath::Portable`]: on entry `x` holds the residual stream up to the
    /// previous layer's attention output and `proj` that layer's MLP output (layer 0: `x` is the
    /// stream and `proj` unused); on exit `proj` holds this layer's MLP output.
    fn layer_portable(&self, a: &Arena, l: usize, layer: &DeviceLayer, s: LaunchShape) -> Result<(), KernelError> {
        // Attention block. Layer 0 reads x itself (no attn_norm); later layers first add the
        // previous MLP output to x, fused into their attn_norm.
        let attn_in = match layer.attn_norm {
            None => a.x,
            Some(norm) => {
                self.add_and_norm(a, a.proj, norm, a.normed, s, c"attn_norm")?;
                a.normed
            }
        };
        self.linear(attn_in, &layer.wqkv, a.qkv, s.tokens, c"qkv")?;
        self.rope(a, l, s)?;
        self.attention(a, l, s, false)?;
        self.linear(a.attn, &layer.wo, a.proj, s.tokens, c"attn_out")?;
        // MLP block (GeGLU): x += attention output, fused into mlp_norm.
        self.add_and_norm(a, a.proj, layer.mlp_norm, a.normed, s, c"mlp_norm")?;
        self.linear(a.normed, &layer.wi, a.wide, s.tokens, c"mlp_in")?;
        self.geglu(a, s)?;
        self.linear(a.gated, &layer.mlp_wo, a.proj, s.tokens, c"mlp_out")
    }

    /// One layer on [`GpuPath::Hopper`]: `x` is the whole residual stream on entry and on exit
    /// (Wo and Wo2 add into it in their epilogues). `small`: the GEMMs are `gemm_stream_sm90`
    /// (their weights in flight before they wait) and attention is attention.cu, all five launches
    /// programmatic dependents of the launch before them; else `gemm_sm90` and `attention_sm90`.
    fn layer_hopper(
        &self,
        a: &Arena,
        l: usize,
        layer: &DeviceLayer,
        s: LaunchShape,
        small: bool,
    ) -> Result<(), KernelError> {
        for step in self.hopper_layer_steps(a, l, layer, s, small) {
            match step {
                HopperStep::Gemm(g, name) => self.linear_sm90(&g, small, a.batch, name)?,
                HopperStep::Attention(p) => {
                    let _range = nvtx::range(c"attention");
                    // Small batches: attention.cu as a dependent (a few µs of fixed cost is all it
                    // is there); large ones: attention_sm90 (wgmma, TMA), ordinary launches.
                    if small {
                        ops::attention(self.dev.as_ref(), self.dtype, &p, true)?;
                    } else {
                        attention_sm90::attention_sm90(self.dev.as_ref(), self.dtype, &p, s.tokens)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The five steps of layer `l` on [`GpuPath::Hopper`], for the launches above or the
    /// persistent program: `small` (the stream GEMMs) takes each row's LayerNorm statistics from x
    /// itself, the large GEMMs from `row_stats`.
    fn hopper_layer_steps(
        &self,
        a: &Arena,
        l: usize,
        layer: &DeviceLayer,
        s: LaunchShape,
        small: bool,
    ) -> [HopperStep; 5] {
        // LayerNorm has no pass here: the GEMM that reads x next (Wi, the next layer's Wqkv)
        // normalises its rows on the way, γ folded into its weight (ops::RowNorm), with the row
        // statistics the GEMM that wrote x (Wo, Wo2) recorded in `row_stats` — or, small, its
        // own. The final norm is a pass.
        let norm = |colsum: u64| RowNorm {
            stats: if small { 0 } else { a.row_stats },
            colsum,
            eps: self.config.norm_eps,
        };
        let last = l + 1 == self.weights.layers.len();
        let gemm = |input, lin: &DeviceLinear, norm, out, epilogue, name| {
            let g = GemmSm90 {
                m: s.tokens,
                n: lin.out_features,
                k: lin.in_features,
                a: input,
                b: lin.weight,
                c: out,
                epilogue,
                norm,
            };
            HopperStep::Gemm(g, name)
        };
        // Attention block: x += Wo · attention(RoPE(Wqkv · LN(x))), layer 0 without the LN.
        let rope = Sm90Epilogue::Rope {
            theta: self.config.rope_theta(l),
            head_dim: self.config.head_dim() as u32,
            rotated: 2 * self.config.hidden_size as u32, // Q and K
            cu_seqlens: a.cu_seqlens,
            batch: a.batch,
        };
        let attn_norm = layer.attn_norm.map(|_| norm(layer.wqkv_colsum));
        // Statistics for the next norm; the last layer's would go unread (the final norm is a
        // pass), and the small-batch GEMMs make their own.
        let add_and_record = |last| Sm90Epilogue::Residual {
            r: a.x,
            stats: if small || last { 0 } else { a.row_stats },
        };
        // MLP block: x += Wo2 · GeGLU(Wi · LN(x)), Wi's rows in the epilogue's order.
        let geglu = Sm90Epilogue::Geglu {
            act: self.hidden_activation,
        };
        [
            gemm(a.x, &layer.wqkv, attn_norm, a.qkv, rope, c"attn_norm_qkv_rope"),
            HopperStep::Attention(self.attention_params(a, l, s)),
            gemm(a.attn, &layer.wo, None, a.x, add_and_record(false), c"attn_out_add"),
            gemm(
                a.x,
                &layer.wi,
                Some(norm(layer.wi_colsum)),
                a.gated,
                geglu,
                c"mlp_norm_in_geglu",
            ),
            gemm(a.gated, &layer.mlp_wo, None, a.x, add_and_record(last), c"mlp_out_add"),
        ]
    }

    fn embeddings(&self, a: &Arena, s: LaunchShape) -> Result<(), KernelError> {
        let _range = nvtx::range(c"embeddings");
        ops::embeddings(self.dev.as_ref(), self.dtype, &self.embedding_params(a, s))
    }

    /// `x = LN_emb(E[ids])` for the capacities of `s`.
    fn embedding_params(&self, a: &Arena, s: LaunchShape) -> EmbeddingLayerNormParams {
        EmbeddingLayerNormParams {
            ids: a.ids,
            table: self.weights.tok_embeddings,
            weight: self.weights.emb_norm.weight,
            bias: self.weights.emb_norm.bias,
            out: a.x,
            batch: a.batch,
            max_tokens: s.tokens,
            hidden: self.config.hidden_size as u32,
            vocab: self.config.vocab_size as u32,
            eps: self.config.norm_eps,
        }
    }

    /// `x += delta` (when `delta` ≠ 0), then `out = LayerNorm(x)`.
    fn add_and_norm(
        &self,
        a: &Arena,
        delta: u64,
        norm: DeviceNorm,
        out: u64,
        s: LaunchShape,
        name: &'static CStr,
    ) -> Result<(), KernelError> {
        let _range = nvtx::range(name);
        ops::layernorm(self.dev.as_ref(), self.dtype, &self.norm_params(a, delta, norm, out, s))
    }

    /// `x += delta` (when `delta` ≠ 0), then `out = LayerNorm(x)`, for the capacities of `s`.
    fn norm_params(&self, a: &Arena, delta: u64, norm: DeviceNorm, out: u64, s: LaunchShape) -> LayerNormParams {
        LayerNormParams {
            residual: a.x,
            delta,
            weight: norm.weight,
            bias: norm.bias,
            out,
            batch: a.batch,
            max_tokens: s.tokens,
            hidden: self.config.hidden_size as u32,
            eps: self.config.norm_eps,
            _pad0: 0,
        }
    }

    /// `out[m, out_features] = input · Wᵀ (+ b)` (cuBLASLt on a GPU, the CPU on the emulator).
    fn linear(&self, input: u64, l: &DeviceLinear, out: u64, m: u32, name: &'static CStr) -> Result<(), KernelError> {
        let _range = nvtx::range(name);
        let g = GemmDesc {
            a: input,
            w: l.weight,
            bias: l.bias,
            out,
            m,
            n: l.out_features,
            k: l.in_features,
        };
        self.dev.gemm(self.dtype, &g)
    }

    /// `g` (no bias: [`GpuPath::resolve`] refuses checkpoints with one) with `gemm_sm90`, its
    /// tensor maps encoded for this launch's capacity rows, or, `small`, with `gemm_stream_sm90`
    /// on the rows in use of the `BatchDesc` at `batch`, as a programmatic dependent launch.
    fn linear_sm90(&self, g: &GemmSm90, small: bool, batch: u64, name: &'static CStr) -> Result<(), KernelError> {
        let _range = nvtx::range(name);
        if small {
            gemm_stream::gemm_stream(self.dev.as_ref(), self.dtype, g, batch, true)
        } else {
            ops::gemm_sm90(self.dev.as_ref(), self.dtype, g, false)
        }
    }

    fn rope(&self, a: &Arena, layer: usize, s: LaunchShape) -> Result<(), KernelError> {
        let _range = nvtx::range(c"rope");
        let p = RopeParams {
            qkv: a.qkv,
            cu_seqlens: a.cu_seqlens,
            batch: a.batch,
            max_tokens: s.tokens,
            heads: self.config.num_attention_heads as u32,
            head_dim: self.config.head_dim() as u32,
            theta: self.config.rope_theta(layer),
        };
        ops::rope(self.dev.as_ref(), self.dtype, &p)
    }

    /// `dependent`: as a programmatic dependent of the GEMM that wrote qkv (the small-batch path,
    /// where every launch of a layer is one: the fixed cost of each launch is the forward's).
    fn attention(&self, a: &Arena, layer: usize, s: LaunchShape, dependent: bool) -> Result<(), KernelError> {
        let _range = nvtx::range(c"attention");
        ops::attention(
            self.dev.as_ref(),
            self.dtype,
            &self.attention_params(a, layer, s),
            dependent,
        )
    }

    fn attention_params(&self, a: &Arena, layer: usize, s: LaunchShape) -> AttentionParams {
        let window_radius = match self.config.window(layer) {
            AttentionWindow::Global => -1,
            AttentionWindow::Local { radius } => radius.min(i32::MAX as usize) as i32,
        };
        AttentionParams {
            qkv: a.qkv,
            out: a.attn,
            cu_seqlens: a.cu_seqlens,
            key_lens: a.key_lens,
            batch: a.batch,
            max_sequences: s.sequences,
            max_seqlen: s.max_seqlen,
            heads: self.config.num_attention_heads as u32,
            head_dim: self.config.head_dim() as u32,
            window_radius,
            softmax_scale: 1.0 / (self.config.head_dim() as f32).sqrt(),
        }
    }

    fn geglu(&self, a: &Arena, s: LaunchShape) -> Result<(), KernelError> {
        let _range = nvtx::range(c"geglu");
        let p = GegluParams {
            h: a.wide,
            out: a.gated,
            batch: a.batch,
            max_tokens: s.tokens,
            inter: self.config.intermediate_size as u32,
            activation: self.hidden_activation,
            _pad0: 0,
        };
        ops::geglu(self.dev.as_ref(), self.dtype, &p)
    }
}

/// bf16/fp16 little-endian bytes → f32.
fn widen(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    let pairs = bytes.chunks_exact(2).zip(out.iter_mut());
    match dtype {
        Dtype::Bf16 => pairs.for_each(|(c, o)| *o = bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        Dtype::F16 => pairs.for_each(|(c, o)| *o = f16::from_le_bytes([c[0], c[1]]).to_f32()),
    }
}
