//! cuda/gemm_sm90.cu (sm_90a): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{
    activation, download, download_f32, poisoned, round, round_vec, upload, upload_batch, upload_f32, upload_u32,
    DeviceBuffer, Dtype,
};
use modernbert::kernels::device::Device;
use modernbert::kernels::ops::{self, GemmSm90, RowNorm, Sm90Epilogue};
use modernbert::kernels::params::{
    GemmSm90Params, MB_ACT_GELU_ERF, MB_ACT_GELU_TANH, MB_ACT_SILU, MB_GEMM90_BN, MB_GEMM90_ROPE_HEAD_DIM,
};
use modernbert::kernels::KernelError;

#[derive(Clone, Copy, Debug)]
pub struct GemmSm90Case {
    pub m: u32,
    /// The GEMM's N (with the GeGLU epilogue, 2 x the intermediate size).
    pub n: u32,
    pub k: u32,
    /// With [`Sm90Epilogue::Rope`] and [`Sm90Epilogue::Residual`], the device addresses in it are
    /// zero: the run fills them with its own buffers.
    pub epilogue: Sm90Epilogue,
    /// Rope: the packed batch's sequence lengths (summing to at most `m`: the rows past them
    /// are padding, as in a captured forward's capacity); else empty.
    pub seqlens: &'static [u32],
    /// Residual: `r` is `c` itself (in place, as the residual stream is updated); else its own buffer.
    pub in_place: bool,
    /// The LayerNorm between two GEMMs (ops::RowNorm), on rows of large and varied means with
    /// outlier columns ([`shifted_rows`]): with the residual epilogue, the row statistics it
    /// writes; with another, `a`'s rows normalised by statistics and column sums from the host.
    pub row_norm: bool,
}

/// The LayerNorm case's epsilon (ModernBERT's `norm_eps`).
pub const NORM_EPS: f32 = 1e-5;

/// `rows x width` values: row `i` is N(mean_i, 1) with every 97th column (from 5) N(mean_i, 30²),
/// mean_i cycling through 0, 3, −30, 300, −1000: means far from zero against the spread, as a
/// residual stream can hold, where a variance taken as E[x²] − E[x]² would cancel.
pub fn shifted_rows(inputs: &mut Inputs, rows: usize, width: usize) -> Vec<f32> {
    const MEANS: [f32; 5] = [0.0, 3.0, -30.0, 300.0, -1000.0];
    let mut v = Vec::with_capacity(rows * width);
    for i in 0..rows {
        let mean = MEANS[i % MEANS.len()];
        let mut row = inputs.normal(width, mean, 1.0);
        for c in (5..width).step_by(97) {
            row[c] = inputs.normal(1, mean, 30.0)[0];
        }
        v.extend(row);
    }
    v
}

/// Each row's (mean, sum of squared deviations) per `MB_GEMM90_BN` columns, in f64, as the
/// kernels' `MbRowStats [rows, width / BN]` (flattened pairs); `x` is `[rows, width]`.
pub fn tile_stats(x: &[f32]) -> Vec<f32> {
    let bn = MB_GEMM90_BN as usize;
    x.chunks(bn)
        .flat_map(|tile| {
            let mean = tile.iter().map(|&v| v as f64).sum::<f64>() / bn as f64;
            let m2: f64 = tile.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            [mean as f32, m2 as f32]
        })
        .collect()
}

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

/// Tile edges (M of 1, 64, 130: partial row tiles, which TMA fills and clips), several k-blocks
/// (more than the 4 stages, so every stage is refilled), and the ModernBERT base shapes at a small M.
pub fn cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k| case(m, n, k, Sm90Epilogue::Store);
    vec![
        c(1, 128, 64),
        c(64, 128, 128),
        c(130, 256, 512),
        c(200, 768, 768),  // attention output projection
        c(96, 2304, 768),  // Wqkv, and Wi (2 x 1152)
        c(129, 768, 1152), // MLP output projection
    ]
}

/// The GeGLU epilogue (Wi + GeGLU): tile edges, and base's Wi (intermediate 1152) at a small M.
pub fn geglu_cases() -> Vec<GemmSm90Case> {
    let c = |m, inter: u32, k, act| case(m, 2 * inter, k, Sm90Epilogue::Geglu { act });
    vec![
        c(1, 64, 64, MB_ACT_GELU_ERF),
        c(130, 192, 256, MB_ACT_GELU_ERF),
        c(96, 1152, 768, MB_ACT_GELU_ERF),
        c(65, 128, 128, MB_ACT_GELU_TANH),
        c(64, 64, 128, MB_ACT_SILU),
    ]
}

/// The RoPE epilogue (Wqkv + RoPE): `heads` heads of `MB_GEMM90_ROPE_HEAD_DIM`, so `n = 3 · heads
/// · 64` and the first `2 · heads · 64` columns rotated; packed varlen batches (positions restart
/// per sequence, inside a row tile too), a partial last row tile, V's tiles left alone, both of
/// ModernBERT's thetas, padding rows past the batch (left unrotated), base's Wqkv at a small M.
pub fn rope_cases() -> Vec<GemmSm90Case> {
    let c = |heads: u32, k, theta, seqlens: &'static [u32], padding: u32| {
        let n = 3 * heads * MB_GEMM90_ROPE_HEAD_DIM;
        let rope = Sm90Epilogue::Rope {
            theta,
            head_dim: MB_GEMM90_ROPE_HEAD_DIM,
            rotated: 2 * heads * MB_GEMM90_ROPE_HEAD_DIM,
            cu_seqlens: 0,
            batch: 0,
        };
        GemmSm90Case {
            seqlens,
            ..case(seqlens.iter().sum::<u32>() + padding, n, k, rope)
        }
    };
    vec![
        c(2, 64, 10_000.0, &[1], 0),
        c(2, 128, 160_000.0, &[5, 60, 65], 0),
        c(2, 128, 10_000.0, &[130, 127, 1], 0),
        c(2, 128, 10_000.0, &[40, 30], 50),
        c(12, 768, 160_000.0, &[33, 63], 0),
    ]
}

/// The residual epilogue (Wo, Wo2 into the residual stream): in place (`r` = `c`) and from another
/// buffer, a partial row tile, and base's Wo and Wo2 at a small M.
pub fn residual_cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k, in_place| GemmSm90Case {
        in_place,
        ..case(m, n, k, Sm90Epilogue::Residual { r: 0, stats: 0 })
    };
    vec![
        c(1, 128, 64, false),
        c(130, 256, 128, true),
        c(65, 128, 320, false),
        c(96, 768, 768, true),
        c(129, 768, 1152, true),
    ]
}

/// The residual epilogue writing row statistics: in place and not, a partial row tile, several
/// column tiles (statistics per tile), base's Wo and Wo2 at a small M.
pub fn residual_stats_cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k, in_place| GemmSm90Case {
        in_place,
        row_norm: true,
        ..case(m, n, k, Sm90Epilogue::Residual { r: 0, stats: 0 })
    };
    vec![
        c(1, 128, 64, false),
        c(130, 384, 128, true),
        c(96, 768, 768, true),
        c(65, 768, 1152, false),
    ]
}

/// The epilogues that read a LayerNorm's output (Store, GeGLU for Wi, RoPE for Wqkv) with the
/// LayerNorm inside: `a`'s rows normalised by their statistics (the k / 128 tiles combined),
/// a partial row tile, base's Wqkv and Wi at a small M.
pub fn row_norm_cases() -> Vec<GemmSm90Case> {
    let normed = |c: GemmSm90Case| GemmSm90Case { row_norm: true, ..c };
    let mut rope = rope_cases();
    vec![
        normed(case(1, 128, 128, Sm90Epilogue::Store)),
        normed(case(130, 256, 384, Sm90Epilogue::Store)),
        normed(case(96, 2304, 768, Sm90Epilogue::Geglu { act: MB_ACT_GELU_ERF })),
        normed(GemmSm90Case {
            k: 256,
            ..rope.remove(2)
        }),
        normed(rope.pop().unwrap()), // base's Wqkv
    ]
}

/// ModernBERT's four GEMM shapes (base) at a microbenchmark's token count, and Wi with GeGLU fused.
pub fn bench_cases(tokens: u32) -> Vec<GemmSm90Case> {
    let c = |n, k, epilogue| case(tokens, n, k, epilogue);
    let store = Sm90Epilogue::Store;
    vec![
        c(2304, 768, store),
        c(768, 768, store),
        c(2304, 768, store),
        c(768, 1152, store),
        c(2304, 768, Sm90Epilogue::Geglu { act: MB_ACT_GELU_ERF }),
    ]
}

/// A case on a device: `a [m, k]`, `b [n, k]` (with GeGLU: already in `ops::geglu_weight_rows`'
/// order; `b` holds it as drawn, i.e. in Wi's own order), `c [m + 1, width]` (the extra row must
/// stay poisoned; in place, it holds the residual's `m` rows before the launch), and per epilogue
/// `r [m, n]` or the batch's cu_seqlens and BatchDesc.
pub struct GemmSm90Run {
    pub case: GemmSm90Case,
    pub dt: Dtype,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// Residual: R's values (rounded to the dtype); else empty.
    pub r: Vec<f32>,
    /// Rope: `[0, l0, l0 + l1, ...]` of the case's sequence lengths; else empty.
    pub cu_seqlens: Vec<u32>,
    /// Row norm (not residual): the statistics of `a`'s rows the kernel reads ([`tile_stats`]).
    pub stats_in: Vec<f32>,
    pub gemm: GemmSm90,
    /// The parameters with their tensor maps, encoded once (none when the shape is refused).
    params: Option<GemmSm90Params>,
    d_c: DeviceBuffer,
    /// Residual with row norm: the statistics the kernel writes, `[m + 1, n / BN]` pairs (poisoned).
    d_stats: Option<DeviceBuffer>,
    _inputs: Vec<DeviceBuffer>,
}

impl GemmSm90Run {
    pub fn new(dev: &dyn Device, case: &GemmSm90Case, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (m, n, k) = (case.m as usize, case.n as usize, case.k as usize);
        let normed_a = case.row_norm && !matches!(case.epilogue, Sm90Epilogue::Residual { .. });
        let a = if normed_a {
            shifted_rows(inputs, m, k)
        } else {
            inputs.normal(m * k, 0.0, 1.0)
        };
        let b = inputs.normal(n * k, 0.0, 0.05);
        let d_a = upload(dev, dt, &a, "a");
        let ordered: Vec<f32> = match case.epilogue {
            Sm90Epilogue::Geglu { .. } => ops::geglu_weight_rows(case.n / 2)
                .iter()
                .flat_map(|&r| b[r as usize * k..][..k].iter().copied())
                .collect(),
            _ => b.clone(),
        };
        let d_b = upload(dev, dt, &ordered, "b");
        let mut gemm = GemmSm90 {
            m: case.m,
            n: case.n,
            k: case.k,
            a: d_a.addr(),
            b: d_b.addr(),
            c: 0,
            epilogue: case.epilogue,
            norm: None,
        };
        let mut d_c = poisoned(dev, (m + 1) * gemm.out_width() as usize * E, "c");
        gemm.c = d_c.addr();
        let mut held = vec![d_a, d_b];
        let (mut r, mut cu_seqlens, mut stats_in, mut d_stats) = (Vec::new(), Vec::new(), Vec::new(), None);
        if normed_a {
            stats_in = tile_stats(&a);
            let colsum: Vec<f32> = ordered
                .chunks(k)
                .map(|row| row.iter().map(|&v| v as f64).sum::<f64>() as f32)
                .collect();
            let (d_stats_in, d_colsum) = (upload_f32(dev, &stats_in, "stats"), upload_f32(dev, &colsum, "colsum"));
            gemm.norm = Some(RowNorm {
                stats: d_stats_in.addr(),
                colsum: d_colsum.addr(),
                eps: NORM_EPS,
            });
            held.extend([d_stats_in, d_colsum]);
        }
        match &mut gemm.epilogue {
            Sm90Epilogue::Residual { r: r_addr, stats } => {
                // A residual stream of O(1) values, as the hidden states are after LayerNorm; with
                // statistics, of large means and outlier columns, as it may be before one.
                r = if case.row_norm {
                    shifted_rows(inputs, m, n)
                } else {
                    inputs.normal(m * n, 0.0, 1.0)
                };
                if case.row_norm {
                    // One row more than m, which must stay poisoned (as c's).
                    let d = poisoned(dev, (m + 1) * (n / MB_GEMM90_BN as usize) * 8, "stats");
                    *stats = d.addr();
                    d_stats = Some(d);
                }
                if case.in_place {
                    let bytes: Vec<u8> = crate::to_bytes(dt, &r);
                    dev.upload(&mut d_c, 0, &bytes).expect("the residual into c");
                    *r_addr = d_c.addr();
                } else {
                    let d_r = upload(dev, dt, &r, "r");
                    *r_addr = d_r.addr();
                    held.push(d_r);
                }
            }
            Sm90Epilogue::Rope {
                cu_seqlens: cu, batch, ..
            } => {
                cu_seqlens = super::cu_seqlens(case.seqlens);
                let max_len = case.seqlens.iter().copied().max().unwrap_or(0);
                let d_cu = upload_u32(dev, &cu_seqlens, "cu_seqlens");
                let tokens = case.seqlens.iter().sum();
                let d_batch = upload_batch(dev, tokens, case.seqlens.len() as u32, max_len);
                (*cu, *batch) = (d_cu.addr(), d_batch.addr());
                held.extend([d_cu, d_batch]);
            }
            _ => {}
        }
        GemmSm90Run {
            case: *case,
            dt,
            a,
            b,
            r,
            cu_seqlens,
            stats_in,
            gemm,
            params: ops::gemm_sm90_params(dev, dt, &gemm).ok(),
            d_c,
            d_stats,
            _inputs: held,
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        match &self.params {
            Some(p) => ops::launch_gemm_sm90(dev, self.dt, self.gemm.epilogue, p, false),
            None => ops::gemm_sm90(dev, self.dt, &self.gemm, false),
        }
    }
    /// [`GemmSm90Run::launch`] with its tiles spread by `schedule` (the product's launch is
    /// `Persistent`).
    pub fn launch_scheduled(&self, dev: &dyn Device, schedule: ops::TileSchedule) -> Result<(), KernelError> {
        let p = match self.params {
            Some(p) => p,
            None => ops::gemm_sm90_params(dev, self.dt, &self.gemm)?,
        };
        ops::launch_gemm_sm90_scheduled(dev, self.dt, self.gemm.epilogue, &p, false, schedule)
    }
    /// `c`, `[m + 1, width]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_c)
    }
    /// Residual with row norm: the statistics the kernel wrote, `[m + 1, n / BN]` (mean, m2) pairs.
    pub fn stats_out(&self, dev: &dyn Device) -> Option<Vec<f32>> {
        self.d_stats.as_ref().map(|d| download_f32(dev, d))
    }
}

impl Prepared for GemmSm90Run {
    fn name(&self, _kernel: usize) -> String {
        let tag = match self.case.epilogue {
            Sm90Epilogue::Store => "",
            Sm90Epilogue::Geglu { .. } => "_geglu",
            Sm90Epilogue::Rope { .. } => "_rope",
            Sm90Epilogue::Residual { .. } => "_residual",
        };
        let norm = if self.case.row_norm { "_rownorm" } else { "" };
        format!("m{}_n{}_k{}{tag}{norm}", self.case.m, self.case.n, self.case.k)
    }
    fn kernels(&self) -> &'static [&'static str] {
        match self.case.epilogue {
            Sm90Epilogue::Store => &["gemm_sm90"],
            Sm90Epilogue::Geglu { .. } => &["gemm_sm90_geglu"],
            Sm90Epilogue::Rope { .. } => &["gemm_sm90_rope"],
            Sm90Epilogue::Residual { .. } => &["gemm_sm90_residual"],
        }
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        GemmSm90Run::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        self.gemm.min_bytes() as f64
    }
    fn flops(&self, _kernel: usize) -> f64 {
        self.gemm.flops()
    }
}

/// `(naive, reference)` of a run's first `m · width` outputs, for every epilogue, with and without
/// the row norm — shared by gemm_sm90 and gemm_stream_sm90, which compute the same products.
///
/// The reference is f64 (`a · bᵀ`; with the row norm, the f64 LayerNorm of `a` first, γ being
/// folded into `b`), then the epilogue in f32 from it: GeGLU's `act(x) · gate`, RoPE by the
/// rows' positions (padding rows past the batch at position 0, unrotated), the residual's
/// `r + product`. Naive is the dtype's unfused path: the product (and the LayerNorm's rows)
/// rounded, then the epilogue's pass rounded again; a fused epilogue skips those roundings.
pub fn expected(dt: Dtype, run: &GemmSm90Run) -> (Vec<f32>, Vec<f32>) {
    use modernbert::reference::ops as reference;
    let c = &run.case;
    let m = c.m as usize;
    let normed_a = c.row_norm && !matches!(c.epilogue, Sm90Epilogue::Residual { .. });
    let (want, naive) = if normed_a {
        let exact = layer_norm_rows(&run.a, c.k as usize, |v| v);
        let passes = round_vec(dt, &layer_norm_rows(&run.a, c.k as usize, |v| v as f32 as f64));
        (product(&exact, &run.b, c), naive_product(dt, &passes, &run.b, c))
    } else {
        (product(&run.a, &run.b, c), naive_product(dt, &run.a, &run.b, c))
    };
    match c.epilogue {
        Sm90Epilogue::Store => (naive, want),
        Sm90Epilogue::Geglu { act } => {
            let (inter, a) = (c.n as usize / 2, activation(act));
            let (mut w, mut nv) = (vec![0f32; m * inter], vec![0f32; m * inter]);
            reference::geglu(&want, inter, a, &mut w);
            reference::geglu(&naive, inter, a, &mut nv);
            (round_vec(dt, &nv), w)
        }
        Sm90Epilogue::Rope { theta, rotated, .. } => {
            let heads = (rotated / 2 / MB_GEMM90_ROPE_HEAD_DIM) as usize;
            let mut positions = reference::positions_from_cu_seqlens(&run.cu_seqlens);
            positions.resize(m, 0);
            let (mut w, mut nv) = (want, naive);
            let d = MB_GEMM90_ROPE_HEAD_DIM as usize;
            reference::rope_qk_inplace(&mut w, &positions, heads, d, theta);
            reference::rope_qk_inplace(&mut nv, &positions, heads, d, theta);
            (round_vec(dt, &nv), w)
        }
        // Naive rounds the product before the add, as the GEMM then layernorm.cu's `x += delta`.
        Sm90Epilogue::Residual { .. } => {
            let w = want.iter().zip(&run.r).map(|(p, r)| r + p).collect();
            let nv = want
                .iter()
                .zip(&run.r)
                .map(|(p, r)| round(dt, r + round(dt, *p)))
                .collect();
            (nv, w)
        }
    }
}

/// `a · bᵀ` in f64, `a` `[m, k]`.
pub fn product(a: &[f32], b: &[f32], c: &GemmSm90Case) -> Vec<f32> {
    let (m, n, k) = (c.m as usize, c.n as usize, c.k as usize);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for l in 0..k {
                s += a[i * k + l] as f64 * b[j * k + l] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
    out
}

/// `a · bᵀ` as the dtype's GEMM gives it: an f32 dot product, rounded.
pub fn naive_product(dt: Dtype, a: &[f32], b: &[f32], c: &GemmSm90Case) -> Vec<f32> {
    let (m, n, k) = (c.m as usize, c.n as usize, c.k as usize);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for l in 0..k {
                s += a[i * k + l] * b[j * k + l];
            }
            out[i * n + j] = round(dt, s);
        }
    }
    out
}

/// `(x − mean) / sqrt(var + eps)` per row of `width`, two passes, in the precision `p` keeps
/// (f64: the reference; through f32: layernorm.cu's arithmetic).
fn layer_norm_rows(x: &[f32], width: usize, p: impl Fn(f64) -> f64) -> Vec<f32> {
    x.chunks(width)
        .flat_map(|row| {
            let mean = p(row.iter().map(|&v| p(v as f64)).sum::<f64>() / width as f64);
            let var = p(row.iter().map(|&v| p((v as f64 - mean).powi(2))).sum::<f64>() / width as f64);
            let rstd = p(1.0 / (var + NORM_EPS as f64).sqrt());
            row.iter()
                .map(|&v| p((v as f64 - mean) * rstd) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}
