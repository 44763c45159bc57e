//! One device allocation for every activation of a forward pass, sized at engine creation from
//! (max batch tokens, max sequences, model shape). Nothing is allocated afterwards, which is what
//! makes the forward pass CUDA-graph capturable: every kernel sees the same addresses every time.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::device::{Device, DeviceBuffer};
use crate::kernels::params::BatchDesc;

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
    pub fn new(max_tokens: usize, max_sequences: usize) -> Self {
        let ids = std::mem::size_of::<BatchDesc>();
        let cu_seqlens = ids + 4 * max_tokens;
        let key_lens = cu_seqlens + 4 * (max_sequences + 1);
        InputLayout {
            ids,
            cu_seqlens,
            key_lens,
            bytes: key_lens + 4 * max_sequences,
        }
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
    /// `last_hidden_state` `[T, H]`.
    pub last_hidden: u64,
    /// Pooled embeddings `[S, H]` in f32.
    pub pooled: u64,
    pub bytes: usize,
}

impl Arena {
    pub fn new(dev: &dyn Device, config: &ModelConfig, max_tokens: usize, max_sequences: usize) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let inputs = InputLayout::new(max_tokens, max_sequences);
        let elem = 2; // bf16 / fp16
        let mut offset = 0usize;
        let mut take = |bytes: usize| {
            let at = offset;
            offset = (offset + bytes).next_multiple_of(256);
            at
        };
        let o_inputs = take(inputs.bytes);
        let o_x = take(max_tokens * h * elem);
        let o_normed = take(max_tokens * h * elem);
        let o_qkv = take(max_tokens * 3 * h * elem);
        let o_attn = take(max_tokens * h * elem);
        let o_proj = take(max_tokens * h * elem);
        let o_wide = take(max_tokens * 2 * i * elem);
        let o_gated = take(max_tokens * i * elem);
        let o_last = take(max_tokens * h * elem);
        let o_pooled = take(max_sequences * h * 4);
        let bytes = offset;
        let storage = dev.alloc(bytes, "arena").map_err(|e| Error::Device(e.to_string()))?;
        let base = storage.addr();
        let at = |o: usize| base + o as u64;
        Ok(Arena {
            max_tokens,
            max_sequences,
            inputs,
            batch: at(o_inputs),
            ids: at(o_inputs + inputs.ids),
            cu_seqlens: at(o_inputs + inputs.cu_seqlens),
            key_lens: at(o_inputs + inputs.key_lens),
            x: at(o_x),
            normed: at(o_normed),
            qkv: at(o_qkv),
            attn: at(o_attn),
            proj: at(o_proj),
            wide: at(o_wide),
            gated: at(o_gated),
            last_hidden: at(o_last),
            pooled: at(o_pooled),
            bytes,
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
