//! One device allocation for every activation of a forward pass, sized at engine creation from
//! (max batch tokens, max sequences, model shape). Nothing is allocated afterwards, which is what
//! makes the forward pass CUDA-graph capturable: every kernel sees the same addresses every time.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::heads::HeadShapes;
use crate::kernels::device::{Device, DeviceBuffer};
use crate::kernels::graph;
use crate::kernels::params::{
    BatchDesc, ForwardSmallStep, MbRowStats, MB_FSMALL_MAX_BLOCKS, MB_FSMALL_MAX_HEADS, MB_GEMM90_BN,
};
use crate::limits::{bytes_of, sum_of};

/// The per-batch inputs, uploaded in one host-to-device copy: `BatchDesc`, then `ids [tokens]`,
/// `cu_seqlens [sequences + 1]`, `key_lens [sequences]` (u32), at the offsets below.
#[derive(Clone, Copy, Debug)]
pub struct InputLayout {
    pub ids: usize,
    pub cu_seqlens: usize,
    pub key_lens: usize,
    pub bytes: usize,
}

impl InputLayout {
    /// Checked: capacities come from options and config.json.
    pub fn new(max_tokens: usize, max_sequences: usize) -> Result<Self> {
        let what = "the arena's input region (--max-batch-tokens)";
        let ids = std::mem::size_of::<BatchDesc>();
        let cu_seqlens = sum_of(what, &[ids, bytes_of(what, &[4, max_tokens])?])?;
        let key_lens = sum_of(what, &[cu_seqlens, bytes_of(what, &[4, max_sequences, 1])?, 4])?;
        Ok(InputLayout {
            ids,
            cu_seqlens,
            key_lens,
            bytes: sum_of(what, &[key_lens, bytes_of(what, &[4, max_sequences])?])?,
        })
    }
}

/// Byte offsets of every arena buffer for a capacity, computed with checked arithmetic and
/// allocated nowhere: the one plan `Arena::new` allocates and the engine checks against the
/// device's memory before anything is allocated.
#[derive(Clone, Copy, Debug)]
pub struct ArenaPlan {
    pub max_tokens: usize,
    pub max_sequences: usize,
    pub inputs: InputLayout,
    pub inputs_at: usize,
    pub x: usize,
    pub normed: usize,
    pub qkv: usize,
    pub attn: usize,
    pub proj: usize,
    pub wide: usize,
    pub gated: usize,
    pub row_stats: usize,
    pub last_hidden: usize,
    pub pooled: usize,
    /// The task heads' buffers (0 bytes each when the head is absent).
    pub head_rows: usize,
    pub logits: usize,
    pub topk: usize,
    pub projected: usize,
    pub projected_f32: usize,
    /// The persistent small-batch forward's program (5 steps a layer, 2 more), its flags and its
    /// heads' counters.
    pub program: usize,
    pub flags: usize,
    pub head_counts: usize,
    /// Masked rows the MLM head takes per launch (the logits buffer's rows).
    pub mlm_rows: usize,
    /// Bytes of the top-k buffer (ids then probabilities, 8 bytes per pick).
    pub topk_bytes: usize,
    /// Total bytes (every buffer 256-byte aligned).
    pub bytes: usize,
}

/// Masked rows per MLM-head launch. The decoder GEMM reads its whole weight (vocab x hidden,
/// 77 MB at base) once per launch, so more rows amortise it; at 128 rows of a 50,368 vocabulary
/// the logits take 13 MB, and the GEMM (2 x 128 x 768 x 50,368 = 9.9 GFLOP) is about as long as
/// the weight read on an H100/H200 (predicted, ~16 µs each).
pub const MLM_ROWS_PER_LAUNCH: usize = 128;

impl ArenaPlan {
    /// The backbone's buffers and room for the `heads`.
    /// A capacity of at most `graph::MAX_GRAPH_TOKENS` tokens is rounded up to its CUDA-graph
    /// bucket ([`graph::bucket`]): a batch replays the graph of its bucket only when that bucket
    /// fits the arena, so an arena for 8 tokens (bucket 16) would never replay one.
    pub fn new(config: &ModelConfig, max_tokens: usize, max_sequences: usize, heads: HeadShapes) -> Result<Self> {
        let (max_tokens, max_sequences) = match graph::bucket(max_tokens, max_sequences, max_tokens) {
            Some((t, s, _)) => (max_tokens.max(t as usize), max_sequences.max(s as usize)),
            None => (max_tokens, max_sequences),
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let vocab = heads.mlm_vocab.unwrap_or(0);
        let mlm_rows = if heads.mlm_vocab.is_some() {
            MLM_ROWS_PER_LAUNCH.min(max_tokens)
        } else {
            0
        };
        let dense_out = heads.dense_out.unwrap_or(0);
        let pooled_width = h.max(dense_out);
        let inputs = InputLayout::new(max_tokens, max_sequences)?;
        let what = format!("an arena for {max_tokens} tokens (--max-batch-tokens / the model's maximum length)");
        let elem = 2; // bf16 / fp16
        let mut offset = 0usize;
        let mut take = |bytes: usize| -> Result<usize> {
            let at = offset;
            offset = sum_of(&what, &[offset, bytes, 255])? / 256 * 256;
            Ok(at)
        };
        let rows = |width: &[usize]| bytes_of(&what, &[&[max_tokens, elem][..], width].concat());
        let topk_bytes = if mlm_rows > 0 {
            bytes_of(&what, &[mlm_rows, vocab, elem])?.max(bytes_of(&what, &[vocab, 8])?)
        } else {
            0
        };
        Ok(ArenaPlan {
            max_tokens,
            max_sequences,
            inputs,
            inputs_at: take(inputs.bytes)?,
            x: take(rows(&[h])?)?,
            normed: take(rows(&[h])?)?,
            qkv: take(rows(&[3, h])?)?,
            attn: take(rows(&[h])?)?,
            proj: take(rows(&[h])?)?,
            wide: take(rows(&[2, i])?)?,
            gated: take(rows(&[i])?)?,
            row_stats: take(bytes_of(
                &what,
                &[
                    max_tokens,
                    h.div_ceil(MB_GEMM90_BN as usize),
                    std::mem::size_of::<MbRowStats>(),
                ],
            )?)?,
            last_hidden: take(rows(&[h])?)?,
            pooled: take(bytes_of(&what, &[max_sequences, pooled_width, 4])?)?,
            head_rows: take(if mlm_rows > 0 {
                bytes_of(&what, &[max_tokens, 4])?
            } else {
                0
            })?,
            logits: take(bytes_of(&what, &[mlm_rows, vocab, elem])?)?,
            // At least one row of k = vocab picks, so every k fits some rows per launch.
            topk: take(topk_bytes)?,
            projected: take(rows(&[dense_out])?)?,
            projected_f32: take(if heads.colbert {
                bytes_of(&what, &[max_tokens, dense_out, 4])?
            } else {
                0
            })?,
            program: take(bytes_of(
                &what,
                &[
                    5 * config.num_hidden_layers + 2,
                    std::mem::size_of::<ForwardSmallStep>(),
                ],
            )?)?,
            flags: take(4 * MB_FSMALL_MAX_BLOCKS as usize)?,
            head_counts: take(4 * MB_FSMALL_MAX_HEADS as usize)?,
            mlm_rows,
            topk_bytes,
            bytes: offset,
        })
    }
}

/// Device addresses of every activation buffer (all `[tokens, width]` row-major in the activation
/// dtype unless said otherwise).
pub struct Arena {
    _storage: DeviceBuffer,
    pub max_tokens: usize,
    pub max_sequences: usize,
    pub inputs: InputLayout,
    /// Start of the input region; `BatchDesc` lives here.
    pub batch: u64,
    pub ids: u64,
    pub cu_seqlens: u64,
    pub key_lens: u64,
    /// The residual stream `[T, H]`.
    pub x: u64,
    /// LayerNorm outputs `[T, H]` (attention or MLP input).
    pub normed: u64,
    pub qkv: u64,
    pub attn: u64,
    /// Output of the O and MLP-Wo GEMMs `[T, H]`, added to `x` by the next LayerNorm.
    pub proj: u64,
    pub wide: u64,
    pub gated: u64,
    /// The Hopper path's LayerNorm statistics of the residual stream, `MbRowStats [T, H / 128]`
    /// (one per 128-column tile): written by Wo and Wo2, read by Wi and the next layer's Wqkv.
    pub row_stats: u64,
    /// `last_hidden_state` `[T, H]`.
    pub last_hidden: u64,
    /// Pooled embeddings `[S, max(H, dense_out)]` in f32.
    pub pooled: u64,
    // The heads run after the forward and reuse its dead buffers (`normed`, `proj`, `attn`) as
    // `[rows ≤ T, H]` scratch; these are their own:
    /// MLM: the masked rows' indices `[T]` u32.
    pub head_rows: u64,
    /// MLM: decoder logits `[mlm_rows, vocab]`.
    pub logits: u64,
    /// MLM: top-k picks, ids `[rows, k]` u32 then probabilities `[rows, k]` f32 (`topk_bytes`).
    pub topk: u64,
    /// Dense: the projection `[T, dense_out]`.
    pub projected: u64,
    /// ColBERT: normalised projection `[T, dense_out]` in f32.
    pub projected_f32: u64,
    /// The persistent small-batch forward: its program, `ForwardSmallStep [5 · layers + 2]` (the
    /// embeddings, 5 steps a layer, the final norm), written
    /// once when the executor is made; its grid barrier's flags, `u32 [MB_FSMALL_MAX_BLOCKS]`
    /// (MB_FSMALL_FLAGS_START then; each forward raises them further); and each head's count of
    /// its Wqkv tiles done, `u32 [MB_FSMALL_MAX_HEADS]` (zeroed then; back to 0 after each layer).
    pub program: u64,
    pub flags: u64,
    pub head_counts: u64,
    pub mlm_rows: usize,
    pub topk_bytes: usize,
    pub bytes: usize,
}

impl Arena {
    /// Allocate `plan` on `dev` (the caller has checked it against the device's memory).
    pub fn new(dev: &dyn Device, plan: &ArenaPlan) -> Result<Self> {
        let storage = dev
            .alloc(plan.bytes, "arena")
            .map_err(|e| Error::Device(e.to_string()))?;
        let base = storage.addr();
        let at = |o: usize| base + o as u64;
        let p = plan;
        Ok(Arena {
            max_tokens: p.max_tokens,
            max_sequences: p.max_sequences,
            inputs: p.inputs,
            batch: at(p.inputs_at),
            ids: at(p.inputs_at + p.inputs.ids),
            cu_seqlens: at(p.inputs_at + p.inputs.cu_seqlens),
            key_lens: at(p.inputs_at + p.inputs.key_lens),
            x: at(p.x),
            normed: at(p.normed),
            qkv: at(p.qkv),
            attn: at(p.attn),
            proj: at(p.proj),
            wide: at(p.wide),
            gated: at(p.gated),
            row_stats: at(p.row_stats),
            last_hidden: at(p.last_hidden),
            pooled: at(p.pooled),
            head_rows: at(p.head_rows),
            logits: at(p.logits),
            topk: at(p.topk),
            projected: at(p.projected),
            projected_f32: at(p.projected_f32),
            program: at(p.program),
            flags: at(p.flags),
            head_counts: at(p.head_counts),
            mlm_rows: p.mlm_rows,
            topk_bytes: p.topk_bytes,
            bytes: p.bytes,
            _storage: storage,
        })
    }

    /// The arena's own buffer (for the per-batch input upload).
    pub fn storage_mut(&mut self) -> &mut DeviceBuffer {
        &mut self._storage
    }

    pub fn storage(&self) -> &DeviceBuffer {
        &self._storage
    }

    /// Byte offset of a device address inside the arena.
    pub fn offset_of(&self, addr: u64) -> usize {
        (addr - self._storage.addr()) as usize
    }
}
