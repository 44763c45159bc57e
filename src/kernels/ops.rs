//! One typed launcher per op: checks what the kernel cannot check, picks the launch geometry
//! (documented in each `cuda/<op>.cu` header), and launches `<kernel>_<dtype>` on any [`Device`].
//! The GPU executor, the kernel tests and the microbenchmarks call these and nothing else, so the
//! checks and the geometry the tests exercise are the ones the product ships.
//!
//! Pointers are device addresses (`u64`) inside the param structs; `batch` points at a
//! [`BatchDesc`] in device memory (actual token and sequence counts; `max_*` are capacities that
//! size the grid, so one launch configuration serves every batch of a CUDA-graph bucket).
use super::device::Device;
use super::params::*;
use super::{Dtype, KernelError, KernelParam};

/// Widest row the register-resident row kernels (LayerNorm, embeddings, MLM head) accept
/// (`MB_MAX_NORM_WIDTH` of params.h, kept under this name for existing callers).
pub const MAX_NORM_WIDTH: u32 = MB_MAX_NORM_WIDTH;

/// Threads per block of the row kernels of `norm.cuh`: one per `MB_NORM_PER_THREAD` elements,
/// whole warps.
pub fn norm_threads(hidden: u32) -> u32 {
    hidden.div_ceil(MB_NORM_PER_THREAD).div_ceil(WARP).max(1) * WARP
}

const WARP: u32 = 32;

/// The vector width a row of `width` elements gets: `MB_VEC` when it divides the width, else 1
/// (what the element-wise kernels decide the same way on the device).
fn vec_width(width: u32) -> u32 {
    if width.is_multiple_of(MB_VEC) {
        MB_VEC
    } else {
        1
    }
}

fn unsupported(kernel: &str, message: impl Into<String>) -> KernelError {
    KernelError::Unsupported {
        kernel: kernel.to_string(),
        message: message.into(),
    }
}

fn need(kernel: &str, what: &str, ptr: u64) -> Result<(), KernelError> {
    if ptr == 0 {
        Err(unsupported(
            kernel,
            format!("`{what}` is required (got a null pointer)"),
        ))
    } else {
        Ok(())
    }
}

/// `layernorm.cu`'s contract (also a step of the persistent forward's program): hidden in
/// 1..=8192, the buffers it reads and writes.
pub fn check_layernorm(name: &str, p: &LayerNormParams) -> Result<(), KernelError> {
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    for (what, ptr) in [
        ("residual", p.residual),
        ("weight", p.weight),
        ("out", p.out),
        ("batch", p.batch),
    ] {
        need(name, what, ptr)?;
    }
    Ok(())
}

/// `layernorm.cu`: `if delta { residual += delta }; out = LayerNorm(residual)`; hidden in 1..=8192.
pub fn layernorm(dev: &dyn Device, dt: Dtype, p: &LayerNormParams) -> Result<(), KernelError> {
    let name = dt.pick("layernorm_bf16", "layernorm_f16");
    check_layernorm(name, p)?;
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(
        name,
        [p.max_tokens.min(MB_MAX_GRID), 1, 1],
        [norm_threads(p.hidden), 1, 1],
        0,
        p,
    )
}

/// `embeddings.cu`'s contract (also the persistent forward's first step): hidden in 1..=8192, a
/// vocabulary, the buffers it reads and writes.
pub fn check_embeddings(name: &str, p: &EmbeddingLayerNormParams) -> Result<(), KernelError> {
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    if p.vocab == 0 {
        return Err(unsupported(name, "empty vocabulary"));
    }
    for (what, ptr) in [
        ("ids", p.ids),
        ("table", p.table),
        ("weight", p.weight),
        ("out", p.out),
        ("batch", p.batch),
    ] {
        need(name, what, ptr)?;
    }
    Ok(())
}

/// `embeddings.cu`: `out[t] = LayerNorm(table[ids[t]])`; hidden in 1..=8192.
pub fn embeddings(dev: &dyn Device, dt: Dtype, p: &EmbeddingLayerNormParams) -> Result<(), KernelError> {
    let name = dt.pick("embeddings_bf16", "embeddings_f16");
    check_embeddings(name, p)?;
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(
        name,
        [p.max_tokens.min(MB_MAX_GRID), 1, 1],
        [norm_threads(p.hidden), 1, 1],
        0,
        p,
    )
}

/// `rope.cu`: RoPE in place on the Q and K heads of `qkv`; even head_dim.
pub fn rope(dev: &dyn Device, dt: Dtype, p: &RopeParams) -> Result<(), KernelError> {
    let name = dt.pick("rope_bf16", "rope_f16");
    // rope.cu's shared angle table holds head_dim / 2 angles.
    if p.head_dim == 0 || !p.head_dim.is_multiple_of(2) || p.head_dim > MB_ROPE_MAX_HEAD_DIM || p.heads == 0 {
        return Err(unsupported(
            name,
            format!(
                "heads {} head_dim {} (an even head_dim <= {MB_ROPE_MAX_HEAD_DIM} is needed)",
                p.heads, p.head_dim
            ),
        ));
    }
    if !(p.theta > 0.0 && p.theta.is_finite()) {
        return Err(unsupported(name, format!("theta {}", p.theta)));
    }
    for (what, ptr) in [("qkv", p.qkv), ("cu_seqlens", p.cu_seqlens), ("batch", p.batch)] {
        need(name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(
        name,
        [p.max_tokens.min(MB_MAX_GRID), 1, 1],
        [MB_ROPE_THREADS, 1, 1],
        0,
        p,
    )
}

/// `geglu.cu`: `out[t, j] = act(h[t, j]) * h[t, I + j]`.
pub fn geglu(dev: &dyn Device, dt: Dtype, p: &GegluParams) -> Result<(), KernelError> {
    let name = dt.pick("geglu_bf16", "geglu_f16");
    if p.inter == 0 {
        return Err(unsupported(name, "inter = 0"));
    }
    if p.activation > MB_ACT_SILU {
        return Err(unsupported(name, format!("activation code {}", p.activation)));
    }
    for (what, ptr) in [("h", p.h), ("out", p.out), ("batch", p.batch)] {
        need(name, what, ptr)?;
    }
    let items = p.max_tokens as u64 * (p.inter / vec_width(p.inter)) as u64;
    if items == 0 {
        return Ok(());
    }
    let blocks = items
        .div_ceil(MB_GEGLU_THREADS as u64)
        .min(MB_ELEMENTWISE_MAX_GRID as u64) as u32;
    dev.launch(name, [blocks, 1, 1], [MB_GEGLU_THREADS, 1, 1], 0, p)
}

/// Dynamic shared memory of `pool_*` for `out_dim` columns — the one statement of this formula
/// (cuda/pooling.cu's header cites it). The kernel splits the columns into `nvec` vectors of VEC
/// elements (`MB_VEC` or 1, decided on the device from the alignment) and its `MB_POOL_THREADS`
/// threads into `G = max(1, MB_POOL_THREADS / nvec)` groups, whose partial sums meet in a
/// `[G][out_dim]` f32 array; the host does not know which VEC the kernel takes, so it sizes for
/// the larger of the two.
pub fn pool_smem_bytes(out_dim: u32) -> u32 {
    let groups = |vec: u32| {
        let nvec = out_dim.div_ceil(vec);
        if nvec >= MB_POOL_THREADS {
            1
        } else {
            MB_POOL_THREADS / nvec
        }
    };
    4 * (groups(MB_VEC) * out_dim).max(groups(1) * out_dim)
}

/// `pooling.cu`: CLS or masked mean per sequence, truncated to out_dim, optionally L2-normalised.
pub fn pool(dev: &dyn Device, dt: Dtype, p: &PoolParams) -> Result<(), KernelError> {
    let name = dt.pick("pool_bf16", "pool_f16");
    if p.out_dim == 0 || p.out_dim > p.hidden_dim {
        return Err(unsupported(
            name,
            format!("out_dim {} of hidden_dim {}", p.out_dim, p.hidden_dim),
        ));
    }
    if p.pooling > MB_POOL_MEAN || p.normalize > 1 {
        return Err(unsupported(
            name,
            format!("pooling code {} normalize {}", p.pooling, p.normalize),
        ));
    }
    let smem = pool_smem_bytes(p.out_dim);
    if smem > MB_DEFAULT_MAX_DYNAMIC_SMEM {
        return Err(unsupported(
            name,
            format!("out_dim {} needs {smem} bytes of shared memory", p.out_dim),
        ));
    }
    for (what, ptr) in [
        ("hidden", p.hidden),
        ("out", p.out),
        ("cu_seqlens", p.cu_seqlens),
        ("batch", p.batch),
    ] {
        need(name, what, ptr)?;
    }
    if p.max_sequences == 0 {
        return Ok(());
    }
    dev.launch(name, [p.max_sequences, 1, 1], [MB_POOL_THREADS, 1, 1], smem, p)
}

/// `mlm_head.cu`: `out = LayerNorm(act(x + dense_bias))`; hidden in 1..=8192.
pub fn head_act_norm(dev: &dyn Device, dt: Dtype, p: &HeadActNormParams) -> Result<(), KernelError> {
    let name = dt.pick("head_act_norm_bf16", "head_act_norm_f16");
    if p.hidden == 0 || p.hidden > MAX_NORM_WIDTH {
        return Err(unsupported(name, format!("hidden {} (1..={MAX_NORM_WIDTH})", p.hidden)));
    }
    if p.activation > MB_ACT_SILU {
        return Err(unsupported(name, format!("activation code {}", p.activation)));
    }
    for (what, ptr) in [("x", p.x), ("weight", p.weight), ("out", p.out)] {
        need(name, what, ptr)?;
    }
    if p.max_tokens == 0 {
        return Ok(());
    }
    dev.launch(
        name,
        [p.max_tokens.min(MB_MAX_GRID), 1, 1],
        [norm_threads(p.hidden), 1, 1],
        0,
        p,
    )
}

/// `colbert.cu`: fp32 `out[t] = x[t] / max(‖x[t]‖, 1e-12)`.
pub fn colbert_normalize(dev: &dyn Device, dt: Dtype, p: &RowNormalizeParams) -> Result<(), KernelError> {
    let name = dt.pick("colbert_normalize_bf16", "colbert_normalize_f16");
    if p.dim == 0 {
        return Err(unsupported(name, "dim = 0"));
    }
    for (what, ptr) in [("x", p.x), ("out", p.out)] {
        need(name, what, ptr)?;
    }
    if p.max_rows == 0 {
        return Ok(());
    }
    dev.launch(
        name,
        [p.max_rows.div_ceil(MB_COLBERT_ROWS_PER_BLOCK).min(MB_MAX_GRID), 1, 1],
        [MB_COLBERT_THREADS, 1, 1],
        0,
        p,
    )
}

/// `attention.cu` grid: (query tiles of the longest sequence, heads, sequences) — capacities only;
/// blocks past the actual counts (read from the BatchDesc) exit at once.
pub fn attention_grid(max_seqlen: u32, heads: u32, max_sequences: u32) -> ([u32; 3], [u32; 3]) {
    (
        [max_seqlen.div_ceil(MB_ATTENTION_BLOCK_M).max(1), heads, max_sequences],
        [MB_ATTENTION_THREADS, 1, 1],
    )
}

/// `attention.cu`: checks what the kernel cannot — head_dim 64 only (the kernel would write
/// nothing otherwise), grid limits, 16-byte alignment of qkv and out (cp.async, 16-byte stores).
/// `dependent`: as a programmatic dependent of the previous launch (the kernel waits for it
/// before reading qkv), on sm_90 and later only.
pub fn attention(dev: &dyn Device, dt: Dtype, p: &AttentionParams, dependent: bool) -> Result<(), KernelError> {
    let name = match dt {
        Dtype::Bf16 => "attention_bf16",
        Dtype::F16 => "attention_f16",
    };
    if dependent && dev.compute_capability() < (9, 0) {
        let (major, minor) = dev.compute_capability();
        return Err(unsupported(
            name,
            format!("a programmatic dependent launch needs sm_90 or later (this device: sm_{major}{minor})"),
        ));
    }
    if !check_attention(name, p)? {
        return Ok(());
    }
    let (grid, block) = attention_grid(p.max_seqlen, p.heads, p.max_sequences);
    if dependent {
        dev.launch_dependent_raw(name, grid, block, 0, p.as_bytes())
    } else {
        dev.launch(name, grid, block, 0, p)
    }
}

/// The rules every attention kernel's parameters obey (attention.cu, attention_sm90.cu): head_dim
/// 64, a grid that fits (heads and sequences ≤ 65,535), 16-byte aligned qkv and out, a positive
/// finite scale, the pointers present. `Ok(false)`: nothing to launch (a zero capacity).
pub fn check_attention(name: &str, p: &AttentionParams) -> Result<bool, KernelError> {
    if p.head_dim != MB_ATTENTION_HEAD_DIM {
        return Err(unsupported(
            name,
            format!(
                "head_dim {} (the kernel supports {MB_ATTENTION_HEAD_DIM} only)",
                p.head_dim
            ),
        ));
    }
    if p.heads == 0 || p.heads > 65535 {
        return Err(unsupported(name, format!("heads {} (1..=65535)", p.heads)));
    }
    if p.max_sequences > 65535 {
        return Err(unsupported(
            name,
            format!("max_sequences {} (<= 65535, the grid's z limit)", p.max_sequences),
        ));
    }
    if !p.qkv.is_multiple_of(16) || !p.out.is_multiple_of(16) {
        return Err(unsupported(name, "qkv and out must be 16-byte aligned"));
    }
    if !(p.softmax_scale.is_finite() && p.softmax_scale > 0.0) {
        return Err(unsupported(name, format!("softmax_scale {}", p.softmax_scale)));
    }
    for (what, ptr) in [
        ("qkv", p.qkv),
        ("out", p.out),
        ("cu_seqlens", p.cu_seqlens),
        ("batch", p.batch),
    ] {
        need(name, what, ptr)?;
    }
    Ok(p.max_seqlen != 0 && p.max_sequences != 0)
}

/// `gather.cu`: `out[r] = x[rows[r]]` for `r < n_rows`. The caller guarantees every index is a row
/// of `x` (the kernel cannot check it).
pub fn gather_rows(dev: &dyn Device, dt: Dtype, p: &GatherRowsParams) -> Result<(), KernelError> {
    let name = dt.pick("gather_rows_bf16", "gather_rows_f16");
    if p.width == 0 {
        return Err(unsupported(name, "width = 0"));
    }
    for (what, ptr) in [("x", p.x), ("rows", p.rows), ("out", p.out)] {
        need(name, what, ptr)?;
    }
    if p.n_rows == 0 {
        return Ok(());
    }
    dev.launch(name, [p.n_rows.min(MB_MAX_GRID), 1, 1], [MB_GATHER_THREADS, 1, 1], 0, p)
}

/// `topk.cu`: per row, softmax over `cols` and the `k` most probable columns (k in 1..=cols).
pub fn softmax_topk(dev: &dyn Device, dt: Dtype, p: &SoftmaxTopkParams) -> Result<(), KernelError> {
    let name = dt.pick("softmax_topk_bf16", "softmax_topk_f16");
    if p.cols == 0 || p.k == 0 || p.k > p.cols {
        return Err(unsupported(name, format!("k {} of cols {}", p.k, p.cols)));
    }
    for (what, ptr) in [("logits", p.logits), ("ids", p.ids), ("probs", p.probs)] {
        need(name, what, ptr)?;
    }
    if p.rows == 0 {
        return Ok(());
    }
    dev.launch(name, [p.rows.min(MB_MAX_GRID), 1, 1], [MB_TOPK_THREADS, 1, 1], 0, p)
}

/// What `gemm_sm90.cu`'s consumers do with their accumulator tile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sm90Epilogue {
    /// `c[m, n]`: the product.
    Store,
    /// `c[m, n / 2] = act(x) * gate`, ModernBERT's Wi + GeGLU: `b`'s rows in the order of
    /// [`geglu_weight_rows`], `act` an `MB_ACT_*` code.
    Geglu { act: u32 },
    /// `c[m, n]`: Wqkv's product with RoPE applied to its first `rotated` columns (Q and K,
    /// heads of `head_dim`, which must be `MB_GEMM90_ROPE_HEAD_DIM`), a row's position taken from
    /// `cu_seqlens` (u32 `[sequences + 1]`) and the `BatchDesc` at `batch`, as `rope.cu` does;
    /// rows past the batch's tokens are not rotated.
    Rope {
        theta: f32,
        head_dim: u32,
        rotated: u32,
        cu_seqlens: u64,
        batch: u64,
    },
    /// `c[m, n] = r[m, n] + the product` (Wo and Wo2 adding into the residual stream); `r` is
    /// `c` itself or a buffer that does not overlap it. `stats`: where to write each row's
    /// [`MbRowStats`] per `MB_GEMM90_BN`-column tile of `c` (`[m, n / MB_GEMM90_BN]`), for the
    /// next GEMM's [`RowNorm`]; 0 for none.
    Residual { r: u64, stats: u64 },
}

/// LayerNorm of `a`'s rows inside the GEMM (gemm_sm90.cu, "Row statistics"): the epilogue
/// computes `LayerNorm(a) · bᵀ` as `rstd · (a · bᵀ − mean · colsum)`, the LayerNorm's weight (γ)
/// already folded into `b`'s columns. Not with [`Sm90Epilogue::Residual`].
#[derive(Clone, Copy, Debug)]
pub struct RowNorm {
    /// `[m, k / MB_GEMM90_BN]` [`MbRowStats`] of `a`'s rows, written by the residual epilogue
    /// that produced `a`.
    pub stats: u64,
    /// f32 `[n]`: `Σ_k b[n, k]`, of `b`'s stored (rounded) values.
    pub colsum: u64,
    pub eps: f32,
}

/// One GEMM of `gemm_sm90.cu` (sm_90a only): `c[m, n] = a[m, k] · b[n, k]ᵀ`, row-major 16-bit
/// buffers at device addresses (with [`Sm90Epilogue::Geglu`], `c` is `[m, n / 2]`).
#[derive(Clone, Copy, Debug)]
pub struct GemmSm90 {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub epilogue: Sm90Epilogue,
    /// `a`'s rows normalised on the way (the LayerNorm before Wqkv or Wi); `None`: `a` as it is.
    pub norm: Option<RowNorm>,
}

impl GemmSm90 {
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
    /// Minimum DRAM bytes: every operand read once (the residual too), the output written once.
    pub fn min_bytes(&self) -> u64 {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        let stats_bytes = std::mem::size_of::<MbRowStats>() as u64;
        let (residual, stats_out) = match self.epilogue {
            Sm90Epilogue::Residual { stats, .. } => (
                m * n,
                if stats != 0 {
                    m * (n / MB_GEMM90_BN as u64) * stats_bytes
                } else {
                    0
                },
            ),
            _ => (0, 0),
        };
        // A row's statistics and the column sums, read once.
        let norm_in = self
            .norm
            .map_or(0, |_| m * (k / MB_GEMM90_BN as u64) * stats_bytes + 4 * n);
        2 * (m * k + n * k + m * self.out_width() as u64 + residual) + stats_out + norm_in
    }
    /// Columns of `c`.
    pub fn out_width(&self) -> u32 {
        match self.epilogue {
            Sm90Epilogue::Geglu { .. } => self.n / 2,
            _ => self.n,
        }
    }
}

/// The order of Wi's `2 · intermediate` rows for [`Sm90Epilogue::Geglu`]: row `r` of the ordered
/// weight is row `geglu_weight_rows(i)[r]` of Wi. Each block of `MB_GEMM90_BN` rows holds 64
/// rows of Wi's first (activated) half and the matching 64 of its second (gate) half, so that one
/// output tile has both operands of each GeGLU product. `intermediate` must be a multiple of 64.
pub fn geglu_weight_rows(intermediate: u32) -> Vec<u32> {
    let half = MB_GEMM90_BN / 2;
    (0..2 * intermediate)
        .map(|r| {
            let (block, within) = (r / MB_GEMM90_BN, r % MB_GEMM90_BN);
            if within < half {
                block * half + within
            } else {
                intermediate + block * half + within - half
            }
        })
        .collect()
}

fn gemm_sm90_name(dt: Dtype, epilogue: Sm90Epilogue) -> &'static str {
    match epilogue {
        Sm90Epilogue::Store => dt.pick("gemm_sm90_bf16", "gemm_sm90_f16"),
        Sm90Epilogue::Geglu { .. } => dt.pick("gemm_sm90_geglu_bf16", "gemm_sm90_geglu_f16"),
        Sm90Epilogue::Rope { .. } => dt.pick("gemm_sm90_rope_bf16", "gemm_sm90_rope_f16"),
        Sm90Epilogue::Residual { .. } => dt.pick("gemm_sm90_residual_bf16", "gemm_sm90_residual_f16"),
    }
}

/// The parameter struct of `gemm_sm90[_<epilogue>]_<dtype>`: its tensor maps (A and B in 128-byte
/// swizzled 64-element K rows, C and the residual R in unswizzled 64-row boxes), encoded by `dev`.
pub fn gemm_sm90_params(dev: &dyn Device, dt: Dtype, g: &GemmSm90) -> Result<GemmSm90Params, KernelError> {
    use super::tensor_map::{encode, matrix_2d};
    let name = gemm_sm90_name(dt, g.epilogue);
    if g.m == 0 || g.n == 0 || !g.n.is_multiple_of(MB_GEMM90_BN) || g.k == 0 || !g.k.is_multiple_of(MB_GEMM90_BK) {
        return Err(unsupported(
            name,
            format!(
                "m {} n {} k {}: needs m ≥ 1, n a multiple of {MB_GEMM90_BN}, k a multiple of {MB_GEMM90_BK}",
                g.m, g.n, g.k
            ),
        ));
    }
    for (what, ptr) in [("a", g.a), ("b", g.b), ("c", g.c)] {
        need(name, what, ptr)?;
    }
    let (m, n, k) = (g.m as u64, g.n as u64, g.k as u64);
    // One consumer's 64 rows of the tile's output columns.
    let c_box = match g.epilogue {
        Sm90Epilogue::Geglu { .. } => MB_GEMM90_BN / 2,
        _ => MB_GEMM90_BN,
    };
    let c_map = matrix_2d(dt, g.c, m, g.out_width() as u64, 64, c_box, 0);
    let (mut act, mut theta, mut rotated, mut cu_seqlens, mut batch, mut stats_out) = (0, 0.0, 0, 0, 0, 0);
    let (mut stats_in, mut colsum, mut eps) = (0, 0, 0.0);
    if let Some(norm) = g.norm {
        if matches!(g.epilogue, Sm90Epilogue::Residual { .. }) {
            return Err(unsupported(
                name,
                "a row norm on the residual epilogue's input".to_string(),
            ));
        }
        if !g.k.is_multiple_of(MB_GEMM90_BN) || !(norm.eps.is_finite() && norm.eps >= 0.0) {
            return Err(unsupported(
                name,
                format!(
                    "row norm with k {} and eps {}: needs k a multiple of {MB_GEMM90_BN} (whole statistics tiles) \
                     and a finite eps ≥ 0",
                    g.k, norm.eps
                ),
            ));
        }
        need(name, "norm.stats", norm.stats)?;
        need(name, "norm.colsum", norm.colsum)?;
        (stats_in, colsum, eps) = (norm.stats, norm.colsum, norm.eps);
    }
    // Only the residual epilogue reads R; the others get C's map in its place (one host encode
    // fewer per launch: each is a driver call on a GPU).
    let mut r_map = None;
    match g.epilogue {
        Sm90Epilogue::Store => {}
        Sm90Epilogue::Geglu { act: a } if a <= MB_ACT_SILU => act = a,
        Sm90Epilogue::Geglu { act } => return Err(unsupported(name, format!("activation code {act}"))),
        Sm90Epilogue::Rope {
            theta: th,
            head_dim,
            rotated: rot,
            cu_seqlens: cu,
            batch: b,
        } => {
            // Whole tiles of whole heads; the heads' width is the kernel's compile-time one.
            if head_dim != MB_GEMM90_ROPE_HEAD_DIM
                || rot % MB_GEMM90_BN != 0
                || rot > g.n
                || !(th.is_finite() && th > 0.0)
            {
                return Err(unsupported(
                    name,
                    format!(
                        "head_dim {head_dim}, rotated {rot} of n {}, theta {th}: needs heads of \
                         {MB_GEMM90_ROPE_HEAD_DIM}, a multiple of {MB_GEMM90_BN} within n and a positive theta",
                        g.n
                    ),
                ));
            }
            need(name, "cu_seqlens", cu)?;
            need(name, "batch", b)?;
            (theta, rotated, cu_seqlens, batch) = (th, rot, cu, b);
        }
        Sm90Epilogue::Residual { r, stats } => {
            need(name, "r", r)?;
            stats_out = stats;
            // In place, each block reads and writes only its own tile; a partial overlap would
            // let one block's store reach another's R before it was read.
            let bytes = m * n * 2;
            if r != g.c && r < g.c + bytes && g.c < r + bytes {
                return Err(unsupported(name, "`r` overlaps `c` without being `c`".to_string()));
            }
            r_map = Some(matrix_2d(dt, r, m, n, 64, MB_GEMM90_BN, 0));
        }
    }
    let c = encode(dev, &c_map)?;
    let r = match r_map {
        Some(map) => encode(dev, &map)?,
        None => c,
    };
    Ok(GemmSm90Params {
        // A K-block of MB_GEMM90_BK 16-bit elements is one swizzle row.
        a: encode(
            dev,
            &matrix_2d(dt, g.a, m, k, MB_GEMM90_BM, MB_GEMM90_BK, MB_GEMM90_BK * 2),
        )?,
        b: encode(
            dev,
            &matrix_2d(dt, g.b, n, k, MB_GEMM90_BN, MB_GEMM90_BK, MB_GEMM90_BK * 2),
        )?,
        c,
        r,
        cu_seqlens,
        batch,
        m: g.m,
        n: g.n,
        k: g.k,
        stats_out,
        stats_in,
        colsum,
        act,
        theta,
        rotated,
        eps,
        pad: [0; 15],
    })
}

/// How the output tiles of a `gemm_sm90` launch are spread over its blocks: block b computes
/// tiles b, b + grid, b + 2·grid, ... (the kernel is persistent either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileSchedule {
    /// A block per multiprocessor (at most one per tile): each block's next tile loads while it
    /// computes the last, so only its first pipeline fill is exposed. What the product launches.
    Persistent,
    /// A block per tile: every tile pays its block's start and pipeline fill (kept to measure
    /// what the persistent schedule saves).
    OnePerTile,
}

/// Output tiles of an `m x n` product.
pub fn gemm_sm90_tiles(m: u32, n: u32) -> u32 {
    (n / MB_GEMM90_BN) * m.div_ceil(MB_GEMM90_BM)
}

/// Launch geometry of `gemm_sm90` for an `m x n` product on `multiprocessors` SMs: (grid, block,
/// dynamic shared memory bytes).
pub fn gemm_sm90_geometry(m: u32, n: u32, schedule: TileSchedule, multiprocessors: u32) -> ([u32; 3], [u32; 3], u32) {
    let tiles = gemm_sm90_tiles(m, n).max(1);
    let blocks = match schedule {
        TileSchedule::Persistent => tiles.min(multiprocessors.max(1)),
        TileSchedule::OnePerTile => tiles,
    };
    ([blocks, 1, 1], [MB_GEMM90_THREADS, 1, 1], MB_GEMM90_SMEM_BYTES)
}

/// Launch `gemm_sm90`; `dependent`: with programmatic dependent launch (its TMA loads of `a` wait
/// at griddepcontrol.wait for the previous kernel; the first weight tile is fetched before).
pub fn gemm_sm90(dev: &dyn Device, dt: Dtype, g: &GemmSm90, dependent: bool) -> Result<(), KernelError> {
    launch_gemm_sm90(dev, dt, g.epilogue, &gemm_sm90_params(dev, dt, g)?, dependent)
}

/// Launch `gemm_sm90` with parameters made by [`gemm_sm90_params`] (its tensor maps encoded
/// once, outside a timed or captured region) for the same `epilogue`, persistent.
pub fn launch_gemm_sm90(
    dev: &dyn Device,
    dt: Dtype,
    epilogue: Sm90Epilogue,
    p: &GemmSm90Params,
    dependent: bool,
) -> Result<(), KernelError> {
    launch_gemm_sm90_scheduled(dev, dt, epilogue, p, dependent, TileSchedule::Persistent)
}

/// [`launch_gemm_sm90`] with its tiles spread by `schedule`.
pub fn launch_gemm_sm90_scheduled(
    dev: &dyn Device,
    dt: Dtype,
    epilogue: Sm90Epilogue,
    p: &GemmSm90Params,
    dependent: bool,
    schedule: TileSchedule,
) -> Result<(), KernelError> {
    let (grid, block, smem) = gemm_sm90_geometry(p.m, p.n, schedule, dev.multiprocessors());
    let name = gemm_sm90_name(dt, epilogue);
    if dependent {
        dev.launch_dependent_raw(name, grid, block, smem, p.as_bytes())
    } else {
        dev.launch(name, grid, block, smem, p)
    }
}
