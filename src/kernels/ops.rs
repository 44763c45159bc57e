//! One typed launcher per op: checks what the kernel cannot check, picks the launch geometry
//! (documented in each `cuda/<op>.cu` header), and launches `<kernel>_<dtype>` on any [`Device`].
//! The GPU executor and the kernel tests call these; the attention launcher belongs to
//! `cuda/attention.cu`'s owner.
//!
//! Pointers are device addresses (`u64`) inside the param structs; `batch` points at a
//! [`BatchDesc`] in device memory (actual token and sequence counts; `max_*` are capacities that
//! size the grid, so one launch configuration serves every batch of a CUDA-graph bucket).
use super::device::Device;
use super::params::*;
use super::{Dtype, KernelError};

/// Widest row the register-resident row kernels (LayerNorm, embeddings, MLM head) accept.
pub const MAX_NORM_WIDTH: u32 = 4096;
/// Widest row `colbert_normalize` accepts.
pub const MAX_COLBERT_DIM: u32 = 1024;
/// Grid-stride kernels never launch more blocks than this.
const MAX_GRID: u32 = 1 << 20;

fn unsupported(kernel: &str, message: impl Into<String>) -> KernelError {
    KernelError::Unsupported { kernel: kernel.to_string(), message: message.into() }
}

fn need(kernel: &str, what: &str, ptr: u64) -> Result<(), KernelError> {
    if ptr == 0 {
        Err(unsupported(kernel, format!("`{what}` is required (got a null pointer)")))
    } else {
        Ok(())
    }
}

/// `layernorm.cu`: `if delta { residual += delta }; out = LayerNorm(residual)`; hidden in 1..=4096.
pub fn layernorm(dev: &dyn Device, dt: Dtype, p: &LayerNormParams) -> Result<(), KernelError> {
    let name = format!("layernorm{}", dt.suffix());
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(&name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    for (what, ptr) in [("residual", p.residual), ("weight", p.weight), ("out", p.out), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_tokens.min(MAX_GRID), 1, 1], [128, 1, 1], 0, p)
}

/// `embeddings.cu`: `out[t] = LayerNorm(table[ids[t]])`; hidden in 1..=4096.
pub fn embeddings(dev: &dyn Device, dt: Dtype, p: &EmbeddingLayerNormParams) -> Result<(), KernelError> {
    let name = format!("embeddings{}", dt.suffix());
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(&name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    if p.vocab == 0 {
        return Err(unsupported(&name, "empty vocabulary"));
    }
    for (what, ptr) in [("ids", p.ids), ("table", p.table), ("weight", p.weight), ("out", p.out), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_tokens.min(MAX_GRID), 1, 1], [128, 1, 1], 0, p)
}

/// `rope.cu`: RoPE in place on the Q and K heads of `qkv`; even head_dim.
pub fn rope(dev: &dyn Device, dt: Dtype, p: &RopeParams) -> Result<(), KernelError> {
    let name = format!("rope{}", dt.suffix());
    if p.head_dim == 0 || p.head_dim % 2 != 0 || p.heads == 0 {
        return Err(unsupported(&name, format!("heads {} head_dim {} (even head_dim needed)", p.heads, p.head_dim)));
    }
    if !(p.theta > 0.0 && p.theta.is_finite()) {
        return Err(unsupported(&name, format!("theta {}", p.theta)));
    }
    for (what, ptr) in [("qkv", p.qkv), ("cu_seqlens", p.cu_seqlens), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_tokens.min(MAX_GRID), 1, 1], [128, 1, 1], 0, p)
}

/// `geglu.cu`: `out[t, j] = act(h[t, j]) * h[t, I + j]`.
pub fn geglu(dev: &dyn Device, dt: Dtype, p: &GegluParams) -> Result<(), KernelError> {
    let name = format!("geglu{}", dt.suffix());
    if p.inter == 0 {
        return Err(unsupported(&name, "inter = 0"));
    }
    if p.activation > MB_ACT_GELU_TANH {
        return Err(unsupported(&name, format!("activation code {}", p.activation)));
    }
    for (what, ptr) in [("h", p.h), ("out", p.out), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    let vec = if p.inter % 8 == 0 { 8 } else { 1 };
    let items = p.max_tokens as u64 * (p.inter / vec) as u64;
    if items == 0 {
        return Ok(());
    }
    let blocks = items.div_ceil(256).min(1 << 16) as u32;
    dev.launch(&name, [blocks, 1, 1], [256, 1, 1], 0, p)
}

fn pad_launch(dev: &dyn Device, name: String, p: &PadParams) -> Result<(), KernelError> {
    if p.width == 0 {
        return Err(unsupported(&name, "width = 0"));
    }
    for (what, ptr) in [("padded", p.padded), ("packed", p.packed), ("cu_seqlens", p.cu_seqlens), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    let rows = p.max_sequences as u64 * p.padded_len as u64;
    if rows == 0 {
        return Ok(());
    }
    dev.launch(&name, [rows.min(MAX_GRID as u64) as u32, 1, 1], [128, 1, 1], 0, p)
}

/// `unpad.cu`: padded `[max_sequences, padded_len, width]` → packed `[tokens, width]`.
pub fn unpad(dev: &dyn Device, dt: Dtype, p: &PadParams) -> Result<(), KernelError> {
    pad_launch(dev, format!("unpad{}", dt.suffix()), p)
}

/// `unpad.cu`: packed → padded, every padded element written (zeros past each sequence).
pub fn repad(dev: &dyn Device, dt: Dtype, p: &PadParams) -> Result<(), KernelError> {
    pad_launch(dev, format!("repad{}", dt.suffix()), p)
}

/// Dynamic shared memory of `pool_*` for `out_dim` columns (both vector widths covered).
pub fn pool_smem_bytes(out_dim: u32) -> u32 {
    let groups = |vec: u32| {
        let nvec = out_dim.div_ceil(vec);
        if nvec >= 256 {
            1
        } else {
            256 / nvec
        }
    };
    4 * (groups(8) * out_dim).max(groups(1) * out_dim)
}

/// `pooling.cu`: CLS or masked mean per sequence, truncated to out_dim, optionally L2-normalised.
pub fn pool(dev: &dyn Device, dt: Dtype, p: &PoolParams) -> Result<(), KernelError> {
    let name = format!("pool{}", dt.suffix());
    if p.out_dim == 0 || p.out_dim > p.hidden_dim {
        return Err(unsupported(&name, format!("out_dim {} of hidden_dim {}", p.out_dim, p.hidden_dim)));
    }
    if p.pooling > MB_POOL_MEAN || p.normalize > 1 {
        return Err(unsupported(&name, format!("pooling code {} normalize {}", p.pooling, p.normalize)));
    }
    let smem = pool_smem_bytes(p.out_dim);
    if smem > 48 * 1024 {
        return Err(unsupported(&name, format!("out_dim {} needs {smem} bytes of shared memory", p.out_dim)));
    }
    for (what, ptr) in [("hidden", p.hidden), ("out", p.out), ("cu_seqlens", p.cu_seqlens), ("batch", p.batch)] {
        need(&name, what, ptr)?;
    }
    if p.max_sequences == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_sequences, 1, 1], [256, 1, 1], smem, p)
}

/// `mlm_head.cu`: `out = LayerNorm(act(x + dense_bias))`; hidden in 1..=4096.
pub fn head_act_norm(dev: &dyn Device, dt: Dtype, p: &HeadActNormParams) -> Result<(), KernelError> {
    let name = format!("head_act_norm{}", dt.suffix());
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(&name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    if p.activation > MB_ACT_GELU_TANH {
        return Err(unsupported(&name, format!("activation code {}", p.activation)));
    }
    for (what, ptr) in [("x", p.x), ("weight", p.weight), ("out", p.out)] {
        need(&name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_tokens.min(MAX_GRID), 1, 1], [128, 1, 1], 0, p)
}

/// `mlm_head.cu`: fp32 `logits = x + bias` (the decoder bias).
pub fn bias_add(dev: &dyn Device, dt: Dtype, p: &BiasAddParams) -> Result<(), KernelError> {
    let name = format!("bias_add{}", dt.suffix());
    if p.cols == 0 {
        return Err(unsupported(&name, "cols = 0"));
    }
    for (what, ptr) in [("x", p.x), ("out", p.out)] {
        need(&name, what, ptr)?;
    }
    let vec = if p.cols % 8 == 0 { 8 } else { 1 };
    let items = p.max_rows as u64 * (p.cols / vec) as u64;
    if items == 0 {
        return Ok(());
    }
    dev.launch(&name, [items.div_ceil(256).min(1 << 16) as u32, 1, 1], [256, 1, 1], 0, p)
}

/// `colbert.cu`: fp32 `out[t] = x[t] / max(‖x[t]‖, 1e-12)`; dim in 1..=1024.
pub fn colbert_normalize(dev: &dyn Device, dt: Dtype, p: &RowNormalizeParams) -> Result<(), KernelError> {
    let name = format!("colbert_normalize{}", dt.suffix());
    if p.dim == 0 || p.dim > MAX_COLBERT_DIM {
        return Err(unsupported(&name, format!("dim {} (1..={MAX_COLBERT_DIM})", p.dim)));
    }
    for (what, ptr) in [("x", p.x), ("out", p.out)] {
        need(&name, what, ptr)?;
    }
    if p.max_rows == 0 {
        return Ok(());
    }
    dev.launch(&name, [p.max_rows.div_ceil(4).min(MAX_GRID), 1, 1], [128, 1, 1], 0, p)
}
