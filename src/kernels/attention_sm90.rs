//! `cuda/attention_sm90.cu`, attention on Hopper (wgmma, TMA, a producer warpgroup and two
//! consumers): the launcher (validation, the qkv tensor map, geometry) of the same contract as
//! [`ops::attention`] — the same [`AttentionParams`], the same results up to rounding order.
use super::device::Device;
use super::ops;
use super::params::{
    AttentionParams, AttentionSm90Params, MB_ATT90_BM, MB_ATT90_BN_GLOBAL, MB_ATT90_BN_LOCAL, MB_ATT90_BOX_ROWS,
    MB_ATT90_HEAD_DIM, MB_ATT90_STAGES, MB_ATT90_THREADS,
};
use super::tensor_map::{encode, matrix_2d};
use super::{Dtype, KernelError};

/// Keys per tile: a window's 128-row block needs 128 + 2r keys, so narrower tiles waste less
/// work outside it; a global layer takes the wider tile (twice the work per barrier round trip).
pub fn key_tile(window_radius: i32) -> u32 {
    if window_radius < 0 {
        MB_ATT90_BN_GLOBAL
    } else {
        MB_ATT90_BN_LOCAL
    }
}

/// Dynamic shared memory of a launch with key tiles of `bn` (`MB_ATT90_SMEM_BYTES(bn)` of params.h,
/// a macro bindgen does not export): Q, the stages of K and V, the barriers, the alignment slack.
pub fn smem_bytes(bn: u32) -> u32 {
    MB_ATT90_BM * 128 + 2 * MB_ATT90_STAGES * bn * 128 + 256 + 1024
}

fn kernel_name(dt: Dtype, window_radius: i32) -> &'static str {
    if window_radius < 0 {
        dt.pick("attention_sm90_bf16", "attention_sm90_f16")
    } else {
        dt.pick("attention_sm90_local_bf16", "attention_sm90_local_f16")
    }
}

/// The parameters of `attention_sm90` for `p`: its qkv read through a tensor map over the
/// `[qkv_rows, 3 · heads · 64]` matrix at `p.qkv` (64 x 64 boxes, 128-byte swizzle; rows past
/// `qkv_rows` read as zeros). `qkv_rows`: the rows of that buffer, at least the batch's tokens.
/// Encoded by `dev` once, outside a timed or captured region.
pub fn attention_sm90_params(
    dev: &dyn Device,
    dt: Dtype,
    p: &AttentionParams,
    qkv_rows: u32,
) -> Result<AttentionSm90Params, KernelError> {
    let name = kernel_name(dt, p.window_radius);
    ops::check_attention(name, p)?;
    if qkv_rows == 0 {
        return Err(KernelError::Unsupported {
            kernel: name.to_string(),
            message: "qkv_rows 0 (the qkv buffer's rows, at least the batch's tokens)".into(),
        });
    }
    let width = 3 * p.heads as u64 * MB_ATT90_HEAD_DIM as u64;
    let map = matrix_2d(
        dt,
        p.qkv,
        qkv_rows as u64,
        width,
        MB_ATT90_BOX_ROWS,
        MB_ATT90_HEAD_DIM,
        MB_ATT90_HEAD_DIM * 2,
    );
    Ok(AttentionSm90Params {
        qkv: encode(dev, &map)?,
        attn: *p,
        pad: [0; 16],
    })
}

/// Launch geometry: (grid, block, dynamic shared memory bytes) — a block per 128 query rows of
/// every (sequence, head) the capacities allow; the blocks past the batch exit at once.
pub fn attention_sm90_geometry(p: &AttentionParams) -> ([u32; 3], [u32; 3], u32) {
    (
        [p.max_seqlen.div_ceil(MB_ATT90_BM).max(1), p.heads, p.max_sequences],
        [MB_ATT90_THREADS, 1, 1],
        smem_bytes(key_tile(p.window_radius)),
    )
}

/// Launch `attention_sm90` with parameters made by [`attention_sm90_params`] (which checked
/// them); a zero capacity launches nothing.
pub fn launch_attention_sm90(dev: &dyn Device, dt: Dtype, prm: &AttentionSm90Params) -> Result<(), KernelError> {
    let p = &prm.attn;
    if p.max_seqlen == 0 || p.max_sequences == 0 {
        return Ok(());
    }
    let (grid, block, smem) = attention_sm90_geometry(p);
    dev.launch(kernel_name(dt, p.window_radius), grid, block, smem, prm)
}

/// [`attention_sm90_params`], then [`launch_attention_sm90`].
pub fn attention_sm90(dev: &dyn Device, dt: Dtype, p: &AttentionParams, qkv_rows: u32) -> Result<(), KernelError> {
    launch_attention_sm90(dev, dt, &attention_sm90_params(dev, dt, p, qkv_rows)?)
}
