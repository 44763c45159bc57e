//! cuda/gemm_stream_sm90.cu (the small-batch GEMM): its case tables. A case is a
//! [`GemmSm90Case`] — the same products and epilogues as gemm_sm90, prepared by the same
//! [`GemmSm90Run`] and checked against the same [`expected`](super::gemm_sm90::expected) — at the
//! row counts of a small batch (m ≤ `MB_STREAM_MAX_M`).
use super::gemm_sm90::{GemmSm90Case, GemmSm90Run};
use modernbert::kernels::device::Device;
use modernbert::kernels::gemm_stream;
use modernbert::kernels::ops::Sm90Epilogue;
use modernbert::kernels::params::{MB_ACT_GELU_ERF, MB_ACT_GELU_TANH, MB_ACT_SILU, MB_GEMM90_ROPE_HEAD_DIM};
use modernbert::kernels::KernelError;

fn case(m: u32, n: u32, k: u32, epilogue: Sm90Epilogue) -> GemmSm90Case {
    GemmSm90Case {
        m,
        n,
        k,
        epilogue,
        seqlens: &[],
        in_place: false,
        row_norm: false,
    }
}

/// One row, a partial m16 tile, several column blocks, every m16 tile (64 rows), and base's four
/// shapes at a batch of one or two texts (K's chunks not a multiple of the 8 warps: 1152 / 32 = 36);
/// clusters of 1, 2 and 4 blocks sharing x (`gemm_stream::stream_cluster`).
pub fn store_cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k| case(m, n, k, Sm90Epilogue::Store);
    vec![
        c(1, 16, 64),   // one block: a cluster of 1 (a plain bulk copy of x)
        c(17, 48, 128), // three blocks: clusters of 1
        c(5, 96, 64),   // six blocks: clusters of 2
        c(64, 64, 320),
        c(32, 2304, 768), // Wqkv (and Wi's width)
        c(64, 768, 768),  // attention output projection
        c(33, 768, 1152), // MLP output projection
    ]
}

/// GeGLU (Wi's rows in ops::geglu_weight_rows' order): one 128-row block, several, base's Wi.
pub fn geglu_cases() -> Vec<GemmSm90Case> {
    let c = |m, inter: u32, k, act| case(m, 2 * inter, k, Sm90Epilogue::Geglu { act });
    vec![
        c(1, 64, 64, MB_ACT_GELU_ERF),
        c(20, 128, 128, MB_ACT_GELU_TANH),
        c(9, 192, 64, MB_ACT_SILU),
        c(40, 1152, 768, MB_ACT_GELU_ERF),
    ]
}

/// RoPE: packed batches (positions restarting per sequence), padding rows past the batch (left
/// alone: not rows in use), both thetas, base's Wqkv of 12 heads.
pub fn rope_cases() -> Vec<GemmSm90Case> {
    let c = |heads: u32, k, theta, seqlens: &'static [u32], padding: u32| {
        let rope = Sm90Epilogue::Rope {
            theta,
            head_dim: MB_GEMM90_ROPE_HEAD_DIM,
            rotated: 2 * heads * MB_GEMM90_ROPE_HEAD_DIM,
            cu_seqlens: 0,
            batch: 0,
        };
        GemmSm90Case {
            seqlens,
            ..case(
                seqlens.iter().sum::<u32>() + padding,
                3 * heads * MB_GEMM90_ROPE_HEAD_DIM,
                k,
                rope,
            )
        }
    };
    vec![
        c(1, 64, 10_000.0, &[1], 0),
        c(2, 128, 160_000.0, &[5, 20, 7], 0),
        c(2, 64, 10_000.0, &[30, 30], 4),
        c(12, 768, 160_000.0, &[20, 12], 0),
    ]
}

/// The residual: in place and from another buffer, base's Wo and Wo2.
pub fn residual_cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k, in_place| GemmSm90Case {
        in_place,
        ..case(m, n, k, Sm90Epilogue::Residual { r: 0, stats: 0 })
    };
    vec![
        c(1, 16, 64, false),
        c(33, 64, 320, true),
        c(64, 768, 768, true),
        c(32, 768, 1152, false),
    ]
}

/// The LayerNorm inside (rows of means up to 1000 with outlier columns): Store, GeGLU for Wi,
/// RoPE for Wqkv, at base's widths.
pub fn row_norm_cases() -> Vec<GemmSm90Case> {
    let normed = |c: GemmSm90Case| GemmSm90Case { row_norm: true, ..c };
    vec![
        normed(case(1, 16, 128, Sm90Epilogue::Store)),
        normed(case(40, 48, 384, Sm90Epilogue::Store)),
        normed(geglu_cases().pop().unwrap()),
        normed(rope_cases().pop().unwrap()),
    ]
}

/// The rows a run's kernel computes: the batch's tokens with RoPE (the rows past are padding),
/// else all `m` (its BatchDesc, none, stands for the capacity).
pub fn rows_in_use(c: &GemmSm90Case) -> u32 {
    match c.epilogue {
        Sm90Epilogue::Rope { .. } => c.seqlens.iter().sum(),
        _ => c.m,
    }
}

/// Launch the run's product with gemm_stream_sm90 (`batch` 0: the rows of [`rows_in_use`]).
pub fn launch(dev: &dyn Device, run: &GemmSm90Run, batch: u64, dependent: bool) -> Result<(), KernelError> {
    gemm_stream::gemm_stream(dev, run.dt, &run.gemm, batch, dependent)
}
