//! `cuda/gemm_stream_sm90.cu`, the small-batch GEMM: the launcher (validation, geometry) of the
//! same products and epilogues as [`ops::gemm_sm90`] at up to `MB_STREAM_MAX_M` rows, each block
//! streaming 16 weight rows over all of K (issue 14: weight streaming at a batch of one text).
use super::device::Device;
use super::ops::{GemmSm90, Sm90Epilogue};
use super::params::{
    GemmStreamParams, MB_ACT_SILU, MB_GEMM90_BN, MB_GEMM90_ROPE_HEAD_DIM, MB_STREAM_BN, MB_STREAM_CLUSTER,
    MB_STREAM_GEGLU, MB_STREAM_MAX_M, MB_STREAM_MAX_SMEM, MB_STREAM_RESIDUAL, MB_STREAM_ROPE, MB_STREAM_ROW_PAD,
    MB_STREAM_STORE, MB_STREAM_THREADS, MB_STREAM_WARPS,
};
use super::{Dtype, KernelError, KernelParam, LaunchAttrs};

#[cfg(doc)]
use super::ops;

/// K must be a multiple of this: whole 32-wide warp chunks, and shared rows 64 mod 128 bytes apart.
pub const STREAM_K_MULTIPLE: u32 = 64;

/// Dynamic shared memory of a launch of `m` capacity rows and width `k`
/// (`MB_STREAM_SMEM_BYTES` of params.h, which is a macro bindgen does not export).
pub fn stream_smem_bytes(m: u32, k: u32) -> u32 {
    let mr = m.div_ceil(16) * 16;
    (MB_STREAM_BN + mr) * (2 * k + MB_STREAM_ROW_PAD) + MB_STREAM_WARPS * mr * MB_STREAM_BN * 4 + mr * 8 + 8
}

/// Blocks per cluster for a launch of width `n`: the largest power of two up to
/// `MB_STREAM_CLUSTER` that divides the grid (`n / MB_STREAM_BN` blocks), so each cluster's blocks
/// share one L2 read of x.
pub fn stream_cluster(n: u32) -> u32 {
    let blocks = n / MB_STREAM_BN;
    let mut c = MB_STREAM_CLUSTER;
    while c > 1 && !blocks.is_multiple_of(c) {
        c /= 2;
    }
    c
}

/// The most rows a launch of width `k` can take: `MB_STREAM_MAX_M`, or fewer where its shared
/// memory would pass the block's limit (0: none fit).
pub fn stream_max_rows(k: u32) -> u32 {
    (1..=MB_STREAM_MAX_M / 16)
        .rev()
        .map(|t| 16 * t)
        .find(|&m| stream_smem_bytes(m, k) <= MB_STREAM_MAX_SMEM)
        .unwrap_or(0)
}

fn unsupported(kernel: &str, message: String) -> KernelError {
    KernelError::Unsupported {
        kernel: kernel.to_string(),
        message,
    }
}

fn kernel_name(dt: Dtype) -> &'static str {
    dt.pick("gemm_stream_sm90_bf16", "gemm_stream_sm90_f16")
}

/// The parameters of `gemm_stream_sm90` for `g` (its `norm.stats` is not read: the kernel takes
/// each row's statistics from the rows themselves; a residual epilogue writes none). `batch`: the
/// `BatchDesc` whose token count is the rows in use (the others are neither read nor written), or 0
/// for all `g.m`; with [`Sm90Epilogue::Rope`], the epilogue's own `batch` (which `batch` must then
/// be, or 0).
pub fn gemm_stream_params(dt: Dtype, g: &GemmSm90, batch: u64) -> Result<GemmStreamParams, KernelError> {
    let p = stream_tile_params(kernel_name(dt), g, batch, MB_STREAM_MAX_M)?;
    let smem = stream_smem_bytes(g.m, g.k);
    if smem > MB_STREAM_MAX_SMEM {
        return Err(unsupported(
            kernel_name(dt),
            format!(
                "m {} at k {}: {smem} bytes of shared memory, more than a block's {MB_STREAM_MAX_SMEM} (at most {} \
                 rows)",
                g.m,
                g.k,
                stream_max_rows(g.k)
            ),
        ));
    }
    Ok(p)
}

/// The stream tile's parameters for `g` at up to `max_m` capacity rows, with everything
/// [`gemm_stream_params`] checks but its shared memory (a launch holds all its rows at once; the
/// persistent forward passes them through in chunks, and sizes its own). `kernel`: for errors.
pub(crate) fn stream_tile_params(
    kernel: &str,
    g: &GemmSm90,
    batch: u64,
    max_m: u32,
) -> Result<GemmStreamParams, KernelError> {
    let refuse = |why: String| Err(unsupported(kernel, why));
    if g.m == 0
        || g.m > max_m
        || g.n == 0
        || !g.n.is_multiple_of(MB_STREAM_BN)
        || g.k == 0
        || !g.k.is_multiple_of(STREAM_K_MULTIPLE)
    {
        return refuse(format!(
            "m {} n {} k {}: needs 1 ≤ m ≤ {max_m}, n a multiple of {MB_STREAM_BN}, k a multiple of \
             {STREAM_K_MULTIPLE}",
            g.m, g.n, g.k
        ));
    }
    for (what, ptr) in [("a", g.a), ("b", g.b), ("c", g.c)] {
        if ptr == 0 {
            return refuse(format!("`{what}` is required (got a null pointer)"));
        }
    }
    let mut p = GemmStreamParams {
        x: g.a,
        w: g.b,
        out: g.c,
        r: 0,
        colsum: 0,
        cu_seqlens: 0,
        batch,
        m: g.m,
        n: g.n,
        k: g.k,
        epilogue: MB_STREAM_STORE,
        norm: 0,
        eps: 0.0,
        act: 0,
        theta: 0.0,
        rotated: 0,
        cluster: stream_cluster(g.n),
    };
    match g.epilogue {
        Sm90Epilogue::Store => {}
        Sm90Epilogue::Geglu { act } => {
            if act > MB_ACT_SILU || !g.n.is_multiple_of(MB_GEMM90_BN) {
                return refuse(format!(
                    "geglu with activation code {act} and n {}: needs an MB_ACT_* code and n a multiple of \
                     {MB_GEMM90_BN} (Wi's rows in 128-row blocks)",
                    g.n
                ));
            }
            (p.epilogue, p.act) = (MB_STREAM_GEGLU, act);
        }
        Sm90Epilogue::Rope {
            theta,
            head_dim,
            rotated,
            cu_seqlens,
            batch: rope_batch,
        } => {
            if head_dim != MB_GEMM90_ROPE_HEAD_DIM
                || rotated % head_dim != 0
                || rotated > g.n
                || !(theta.is_finite() && theta > 0.0)
            {
                return refuse(format!(
                    "head_dim {head_dim}, rotated {rotated} of n {}, theta {theta}: needs heads of \
                     {MB_GEMM90_ROPE_HEAD_DIM}, whole heads within n and a positive theta",
                    g.n
                ));
            }
            if cu_seqlens == 0 || rope_batch == 0 || (batch != 0 && batch != rope_batch) {
                return refuse("rope needs cu_seqlens and its batch (the rows' BatchDesc, if given, the same)".into());
            }
            (p.epilogue, p.theta, p.rotated, p.cu_seqlens, p.batch) =
                (MB_STREAM_ROPE, theta, rotated, cu_seqlens, rope_batch);
        }
        Sm90Epilogue::Residual { r, stats } => {
            if r == 0 || stats != 0 {
                return refuse("the residual epilogue needs `r` and writes no row statistics".into());
            }
            // Each element of `r` is read, then written, by one thread; a partial overlap would
            // let one block's store reach another block's elements before they were read.
            let bytes = g.m as u64 * g.n as u64 * 2;
            if r != g.c && r < g.c + bytes && g.c < r + bytes {
                return refuse("`r` overlaps `c` without being `c`".into());
            }
            (p.epilogue, p.r) = (MB_STREAM_RESIDUAL, r);
        }
    }
    if let Some(norm) = g.norm {
        if matches!(g.epilogue, Sm90Epilogue::Residual { .. }) {
            return refuse("a row norm on the residual epilogue's input".into());
        }
        if norm.colsum == 0 || !(norm.eps.is_finite() && norm.eps >= 0.0) {
            return refuse(format!(
                "row norm with colsum {:#x} and eps {}: needs both, eps finite ≥ 0",
                norm.colsum, norm.eps
            ));
        }
        (p.norm, p.colsum, p.eps) = (1, norm.colsum, norm.eps);
    }
    Ok(p)
}

/// Launch geometry: (grid, block, dynamic shared memory bytes); clusters of `p.cluster` blocks.
pub fn gemm_stream_geometry(p: &GemmStreamParams) -> ([u32; 3], [u32; 3], u32) {
    (
        [p.n / MB_STREAM_BN, 1, 1],
        [MB_STREAM_THREADS, 1, 1],
        stream_smem_bytes(p.m, p.k),
    )
}

/// Launch `gemm_stream_sm90` for `g` ([`gemm_stream_params`]); `dependent`: as a programmatic
/// dependent of the previous launch (its weight copies in flight before griddepcontrol.wait).
pub fn gemm_stream(dev: &dyn Device, dt: Dtype, g: &GemmSm90, batch: u64, dependent: bool) -> Result<(), KernelError> {
    launch_gemm_stream(dev, dt, &gemm_stream_params(dt, g, batch)?, dependent)
}

/// Launch `gemm_stream_sm90` with parameters made by [`gemm_stream_params`].
pub fn launch_gemm_stream(
    dev: &dyn Device,
    dt: Dtype,
    p: &GemmStreamParams,
    dependent: bool,
) -> Result<(), KernelError> {
    let (grid, block, smem) = gemm_stream_geometry(p);
    if p.cluster == 0 || p.cluster > MB_STREAM_CLUSTER || grid[0] % p.cluster != 0 {
        return Err(unsupported(
            kernel_name(dt),
            format!("a cluster of {} blocks on a grid of {}", p.cluster, grid[0]),
        ));
    }
    let attrs = LaunchAttrs {
        dependent,
        cluster: p.cluster,
        ..LaunchAttrs::default()
    };
    dev.launch_ex_raw(kernel_name(dt), grid, block, smem, p.as_bytes(), attrs)
}

/// Minimum bytes of one launch: the weights once (DRAM), x once per cluster (from L2: each
/// cluster's blocks share one read of all of it), the output written (residual: and read), the
/// column sums.
pub fn gemm_stream_bytes(g: &GemmSm90) -> (u64, u64) {
    let (m, n, k) = (g.m as u64, g.n as u64, g.k as u64);
    let residual = matches!(g.epilogue, Sm90Epilogue::Residual { .. }) as u64 * 2 * m * n;
    let dram = 2 * n * k + 2 * m * g.out_width() as u64 + residual + g.norm.map_or(0, |_| 4 * n);
    let l2_x = (n / (MB_STREAM_BN * stream_cluster(g.n)) as u64) * 2 * m * k;
    (dram, l2_x)
}
