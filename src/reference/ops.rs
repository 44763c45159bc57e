//! The per-op f32 reference: the exact math of transformers' ModernBERT, one function per op,
//! on the packed (unpadded) layout the GPU kernels use.
//!
//! Packed layout: the tokens of all sequences of a batch are rows of one `[total_tokens, width]`
//! row-major matrix; sequence `b` owns rows `cu_seqlens[b] .. cu_seqlens[b + 1]` and its tokens
//! sit at positions `0 .. len` (RoPE restarts at 0 for every sequence).
//!
//! These functions are the oracle of the CUDA kernel tests (kernels-tests/) and the building blocks
//! of the CPU executor (`reference::executor`). They favour clarity over speed except where the cost
//! is real: the GEMM (`sgemm`, our AVX-512 or AVX2 kernel, else the `gemm` crate; all cores) and
//! attention (rayon over sequences × heads).

use rayon::prelude::*;

pub use crate::config::{Activation, AttentionWindow, Pooling};

/// `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])`: a PyTorch `Linear` with `w` as `[out, in]`.
pub fn linear(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert_eq!(a.len(), m * k, "linear: input is not [m, k]");
    assert_eq!(w.len(), n * k, "linear: weight is not [n, k]");
    assert_eq!(out.len(), m * n, "linear: output is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    // The packed microkernel where the CPU has one and enough rows amortise packing `w` here (callers with a
    // constant weight should cache a `sgemm::PackedWeight`, as the executor does).
    if m >= 128 && super::sgemm::available() {
        let packed = super::sgemm::PackedWeight::new(w, n, k);
        super::sgemm::linear_packed(a, &packed, bias, m, out);
        return;
    }
    crate::matmul::linear_f32(a, w, bias, m, k, n, out);
}

/// LayerNorm over rows of width `w.len()`: `(x − mean) / sqrt(var + eps) · w (+ b)`, biased variance.
/// Statistics in f64 so that the reference is at least as exact as PyTorch's f32 kernel.
pub fn layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let dim = w.len();
    assert!(
        dim > 0 && x.len().is_multiple_of(dim) && out.len() == x.len(),
        "layer_norm: shape mismatch"
    );
    out.par_chunks_mut(dim).zip(x.par_chunks(dim)).for_each(|(o, row)| {
        let mean = sum_f64(row, |v| v) / dim as f64;
        let var = sum_f64(row, |v| (v - mean) * (v - mean)) / dim as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..dim {
            let mut y = ((row[j] as f64 - mean) * rstd) as f32 * w[j];
            if let Some(b) = b {
                y += b[j];
            }
            o[j] = y;
        }
    });
}

/// `Σ f(v as f64)` over `row`, in 8 interleaved f64 partial sums (vectorisable; the order
/// changes only f64 rounding, far below the f32 results').
fn sum_f64(row: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `x += y` elementwise (the residual add).
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_inplace: length mismatch");
    x.par_iter_mut().zip(y.par_iter()).for_each(|(a, b)| *a += b);
}

/// Exact GELU, `0.5 · x · (1 + erf(x / √2))` (transformers' `"gelu"`), in f32 like PyTorch
/// (`erff` is correctly rounded to within 1 ulp).
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// tanh-approximated GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`), for checkpoints that ask for it.
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::GeluErf => gelu_erf(x),
            Self::GeluTanh => gelu_tanh(x),
            Self::Relu => x.max(0.0),
            Self::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// Apply an activation to every element in place.
pub fn activate_inplace(x: &mut [f32], act: Activation) {
    x.par_iter_mut().for_each(|v| *v = act.apply(*v));
}

/// GeGLU: `h` is `[tokens, 2I]`; `out[t, j] = act(h[t, j]) · h[t, I + j]` — the activation goes on
/// the FIRST half (transformers' `input, gate = h.chunk(2)`; the "gate" is the linear half).
pub fn geglu(h: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
    assert!(
        inter > 0 && h.len().is_multiple_of(2 * inter),
        "geglu: input is not [tokens, 2I]"
    );
    assert_eq!(out.len() * 2, h.len(), "geglu: output is not [tokens, I]");
    out.par_chunks_mut(inter)
        .zip(h.par_chunks(2 * inter))
        .for_each(|(o, row)| {
            let (input, gate) = row.split_at(inter);
            for j in 0..inter {
                o[j] = act.apply(input[j]) * gate[j];
            }
        });
}

/// RoPE inverse frequencies, computed as transformers does in f32:
/// `inv_freq[k] = 1 / theta ^ ((2k) / d)`, k = 0 .. d/2.
pub fn rope_inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|k| 1.0 / theta.powf((2 * k) as f32 / head_dim as f32))
        .collect()
}

/// Position of every packed token inside its own sequence (0 .. len−1 per sequence).
pub fn positions_from_cu_seqlens(cu_seqlens: &[u32]) -> Vec<u32> {
    let mut pos = Vec::with_capacity(*cu_seqlens.last().unwrap_or(&0) as usize);
    for w in cu_seqlens.windows(2) {
        pos.extend(0..w[1] - w[0]);
    }
    pos
}

/// Rotate-half (GPT-NeoX) RoPE applied in place to the Q and K parts of a packed QKV matrix
/// `[tokens, 3 · heads · d]` (Q heads first, then K, then V; V untouched). For j < d/2 and angle
/// `a = pos · inv_freq[j]` (f32, like transformers): `x'[j] = x[j]·cos a − x[j+d/2]·sin a`,
/// `x'[j+d/2] = x[j+d/2]·cos a + x[j]·sin a`.
pub fn rope_qk_inplace(qkv: &mut [f32], positions: &[u32], heads: usize, head_dim: usize, theta: f32) {
    let hidden = heads * head_dim;
    assert_eq!(qkv.len(), positions.len() * 3 * hidden, "rope: qkv is not [tokens, 3H]");
    assert!(head_dim.is_multiple_of(2), "rope: odd head_dim");
    let half = head_dim / 2;
    let inv_freq = rope_inv_freq(theta, head_dim);
    qkv.par_chunks_mut(3 * hidden)
        .zip(positions.par_iter())
        .for_each(|(row, &p)| {
            let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
                .iter()
                .map(|&f| {
                    let a = p as f32 * f;
                    (a.cos(), a.sin())
                })
                .unzip();
            for head in row[..2 * hidden].chunks_mut(head_dim) {
                for j in 0..half {
                    let (x0, x1) = (head[j], head[j + half]);
                    head[j] = x0 * cos[j] - x1 * sin[j];
                    head[j + half] = x1 * cos[j] + x0 * sin[j];
                }
            }
        });
}

/// Bidirectional multi-head attention over a packed QKV matrix `[tokens, 3H]` (after RoPE).
/// `out` is `[tokens, H]`, heads merged head-major (channel `h·d + j`). Scores are scaled by
/// `1/√d`; softmax over the allowed keys (max-subtracted, sum in f64). `key_lens[b]` (≤ the
/// sequence length) is how many leading tokens of sequence `b` are keys: tokens past it (ColBERT
/// query-expansion `[MASK]`s with attention mask 0) are still queries, as in transformers' padded
/// path. `None` = every token is a key.
///
/// Computed per (sequence, head) in blocks of 64 queries: `S = Q Kᵀ` and `O = P V` are f32 GEMMs
/// over the keys the block can see (the whole sequence, or the block's window span), so the
/// reference stays fast enough for 8192-token tests without changing the math.
pub fn attention(
    qkv: &[f32],
    cu_seqlens: &[u32],
    key_lens: Option<&[u32]>,
    heads: usize,
    head_dim: usize,
    window: AttentionWindow,
    out: &mut [f32],
) {
    const QUERY_BLOCK: usize = 64;
    let hidden = heads * head_dim;
    let tokens = *cu_seqlens.last().unwrap_or(&0) as usize;
    assert_eq!(qkv.len(), tokens * 3 * hidden, "attention: qkv is not [tokens, 3H]");
    assert_eq!(out.len(), tokens * hidden, "attention: out is not [tokens, H]");
    let scale = 1.0 / (head_dim as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..cu_seqlens.len().saturating_sub(1))
        .flat_map(|b| (0..heads).map(move |h| (b, h)))
        .collect();
    // One task per (sequence, head); each returns its own [len, d] block, scattered afterwards.
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(b, h)| {
            let start = cu_seqlens[b] as usize;
            let len = cu_seqlens[b + 1] as usize - start;
            let n_keys = key_lens.map_or(len, |k| (k[b] as usize).min(len));
            let gather = |part: usize, rows: usize| -> Vec<f32> {
                let mut out = Vec::with_capacity(rows * head_dim);
                for i in 0..rows {
                    out.extend_from_slice(&qkv[(start + i) * 3 * hidden + part * hidden + h * head_dim..][..head_dim]);
                }
                out
            };
            let (q, k, v) = (gather(0, len), gather(1, n_keys), gather(2, n_keys));
            let mut o = vec![0f32; len * head_dim];
            let mut scores = Vec::new();
            for q0 in (0..len).step_by(QUERY_BLOCK) {
                let q1 = (q0 + QUERY_BLOCK).min(len);
                let (klo, khi) = (window.key_range(q0, n_keys).0, window.key_range(q1 - 1, n_keys).1);
                let nk = khi.saturating_sub(klo);
                if nk == 0 {
                    continue; // no key visible: output rows stay 0
                }
                let rows = q1 - q0;
                scores.clear();
                scores.resize(rows * nk, 0.0);
                // S[i, j] = q_i · k_j  (K rows are the "weight" of a Linear)
                gemm_serial(
                    rows,
                    nk,
                    head_dim,
                    &q[q0 * head_dim..],
                    head_dim,
                    1,
                    &k[klo * head_dim..],
                    1,
                    head_dim,
                    &mut scores,
                );
                for (r, row) in scores.chunks_mut(nk).enumerate() {
                    // Row r sees keys [lo, hi) ⊆ [klo, khi): softmax over that span, 0 elsewhere.
                    let (lo, hi) = window.key_range(q0 + r, n_keys);
                    // (A query-only token past the keys may see none: lo > hi, an empty span.)
                    let lo = lo.clamp(klo, khi) - klo;
                    let hi = (hi.clamp(klo, khi) - klo).max(lo);
                    let (head, rest) = row.split_at_mut(lo);
                    let (seen, tail) = rest.split_at_mut(hi - lo);
                    head.fill(0.0);
                    tail.fill(0.0);
                    seen.iter_mut().for_each(|s| *s *= scale);
                    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                    let mut sum = 0f64;
                    for s in seen.iter_mut() {
                        *s = if *s == f32::NEG_INFINITY { 0.0 } else { (*s - max).exp() };
                        sum += *s as f64;
                    }
                    let inv = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
                    seen.iter_mut().for_each(|p| *p *= inv);
                }
                // O[q0..q1] = P V
                gemm_serial(
                    rows,
                    head_dim,
                    nk,
                    &scores,
                    nk,
                    1,
                    &v[klo * head_dim..],
                    head_dim,
                    1,
                    &mut o[q0 * head_dim..q1 * head_dim],
                );
            }
            (b, h, o)
        })
        .collect();
    for (b, h, o) in results {
        let start = cu_seqlens[b] as usize;
        for (i, row) in o.chunks(head_dim).enumerate() {
            out[(start + i) * hidden + h * head_dim..][..head_dim].copy_from_slice(row);
        }
    }
}

/// Single-threaded `out[m, n] = A[m, k] · B[k, n]` for strided row-major views
/// (`a[i, kk] = a[i·a_rs + kk·a_cs]`, `b[kk, j] = b[kk·b_rs + j·b_cs]`); used inside parallel tasks.
#[allow(clippy::too_many_arguments)]
fn gemm_serial(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    out: &mut [f32],
) {
    assert!(out.len() >= m * n);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above bound every element the strides can reach; `out` is distinct.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Pool each sequence of a packed `[tokens, dim]` matrix to one `[dim]` vector → `[batch, dim]`.
/// Mean pooling averages the first `key_lens[b]` tokens (the attention-mask-1 tokens; all when `None`).
pub fn pool(hidden: &[f32], dim: usize, cu_seqlens: &[u32], key_lens: Option<&[u32]>, pooling: Pooling) -> Vec<f32> {
    let batch = cu_seqlens.len().saturating_sub(1);
    let mut out = vec![0f32; batch * dim];
    for b in 0..batch {
        let start = cu_seqlens[b] as usize;
        let len = cu_seqlens[b + 1] as usize - start;
        let dst = &mut out[b * dim..][..dim];
        match pooling {
            Pooling::Cls => {
                if len > 0 {
                    dst.copy_from_slice(&hidden[start * dim..][..dim]);
                }
            }
            Pooling::Mean => {
                let n = key_lens.map_or(len, |k| (k[b] as usize).min(len));
                let mut acc = vec![0f64; dim];
                for t in start..start + n {
                    for (a, &v) in acc.iter_mut().zip(&hidden[t * dim..][..dim]) {
                        *a += v as f64;
                    }
                }
                let denom = (n as f64).max(1e-9);
                for (d, a) in dst.iter_mut().zip(acc) {
                    *d = (a / denom) as f32;
                }
            }
        }
    }
    out
}

/// L2-normalise each row of width `dim` in place: `x / max(‖x‖₂, 1e-12)` (sentence-transformers).
pub fn l2_normalize_rows(x: &mut [f32], dim: usize) {
    x.par_chunks_mut(dim).for_each(|row| {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
    });
}

/// Keep the first `keep` columns of every row of width `dim` (Matryoshka truncation).
pub fn truncate_rows(x: &[f32], dim: usize, keep: usize) -> Vec<f32> {
    assert!(keep <= dim, "truncate_rows: keep > dim");
    x.chunks(dim).flat_map(|row| row[..keep].iter().copied()).collect()
}

/// Softmax of one row, in f64.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Gather embedding rows: `out[t] = table[ids[t]]`. Ids must be `< table.len() / dim`.
pub fn embedding_gather(table: &[f32], dim: usize, ids: &[u32], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        ids.len() * dim,
        "embedding_gather: output is not [tokens, dim]"
    );
    out.par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(o, &id)| {
        o.copy_from_slice(&table[id as usize * dim..][..dim]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_linear(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| a[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn linear_matches_naive_on_odd_shapes() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 65), (130, 64, 96)] {
            let a = pseudo_random(m * k, 1);
            let w = pseudo_random(n * k, 2);
            let bias = pseudo_random(n, 3);
            let mut out = vec![f32::NAN; m * n];
            linear(&a, &w, Some(&bias), m, k, n, &mut out);
            let mut want = naive_linear(&a, &w, m, k, n);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bias[i % n];
            }
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y} at {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn layer_norm_normalises_and_scales() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let b = [0.0f32, 0.0, 0.5, 0.0];
        let mut out = [0f32; 4];
        layer_norm(&x, &w, Some(&b), 1e-5, &mut out);
        let rstd = 1.0 / (1.25f64 + 1e-5).sqrt();
        let want = [-1.5 * rstd, -0.5 * rstd * 2.0, 0.5 * rstd + 0.5, 1.5 * rstd];
        for (o, w) in out.iter().zip(want) {
            assert!((*o as f64 - w).abs() < 1e-6);
        }
    }

    #[test]
    fn gelu_is_the_erf_form() {
        // gelu_erf(1) = 0.5 (1 + erf(1/√2)) = 0.8413447460685429; tanh form gives 0.8411920.
        assert!((gelu_erf(1.0) - 0.841_344_8).abs() < 1e-7);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        assert!((gelu_erf(-3.0) - (-0.004_049_7)).abs() < 1e-6);
    }

    #[test]
    fn geglu_activates_the_first_half() {
        let h = [1.0f32, -1.0, 2.0, 3.0]; // I = 2: input [1, -1], gate [2, 3]
        let mut out = [0f32; 2];
        geglu(&h, 2, Activation::GeluErf, &mut out);
        assert_eq!(out, [gelu_erf(1.0) * 2.0, gelu_erf(-1.0) * 3.0]);
    }

    #[test]
    fn rope_rotates_half_split_pairs_and_leaves_v() {
        let (heads, d) = (1, 4);
        let mut qkv: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 + 1.0).collect();
        let orig = qkv.clone();
        rope_qk_inplace(&mut qkv, &[0, 1], heads, d, 10000.0);
        assert_eq!(&qkv[..12], &orig[..12], "position 0 must be the identity");
        let inv = rope_inv_freq(10000.0, d); // [1, 0.01]
        let row = &orig[12..];
        let (c0, s0, c1, s1) = (inv[0].cos(), inv[0].sin(), inv[1].cos(), inv[1].sin());
        let q = &qkv[12..16];
        // pairs are (0, 2) and (1, 3): half-split, not interleaved
        assert!((q[0] - (row[0] * c0 - row[2] * s0)).abs() < 1e-6);
        assert!((q[2] - (row[2] * c0 + row[0] * s0)).abs() < 1e-6);
        assert!((q[1] - (row[1] * c1 - row[3] * s1)).abs() < 1e-6);
        assert_eq!(&qkv[20..24], &orig[20..24], "V must not be rotated");
    }

    #[test]
    fn local_window_is_inclusive_radius() {
        let w = AttentionWindow::Local { radius: 64 };
        assert_eq!(w.key_range(0, 1000), (0, 65));
        assert_eq!(w.key_range(100, 1000), (36, 165)); // 129 keys: 64 left + self + 64 right
        assert_eq!(w.key_range(999, 1000), (935, 1000));
        assert_eq!(AttentionWindow::Global.key_range(5, 10), (0, 10));
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        // single token: softmax over one key = 1, output = v
        let qkv = [0.3f32, -0.2, 1.0, 2.0, 5.0, 6.0];
        let mut out = [0f32; 2];
        attention(&qkv, &[0, 1], None, 1, 2, AttentionWindow::Global, &mut out);
        assert_eq!(out, [5.0, 6.0]);
    }

    /// Direct f64 attention, one query at a time: the definition the blocked version must meet.
    fn naive_attention(qkv: &[f32], cu: &[u32], keys: &[u32], heads: usize, d: usize, w: AttentionWindow) -> Vec<f32> {
        let hidden = heads * d;
        let mut out = vec![0f32; *cu.last().unwrap() as usize * hidden];
        for b in 0..cu.len() - 1 {
            let (start, len) = (cu[b] as usize, (cu[b + 1] - cu[b]) as usize);
            for h in 0..heads {
                let at = |t: usize, part: usize| &qkv[(start + t) * 3 * hidden + part * hidden + h * d..][..d];
                for i in 0..len {
                    let (lo, hi) = w.key_range(i, keys[b] as usize);
                    if lo >= hi {
                        continue; // no visible key: defined as a zero output
                    }
                    let s: Vec<f64> = (lo..hi)
                        .map(|j| {
                            at(i, 0)
                                .iter()
                                .zip(at(j, 1))
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let v: f64 = (lo..hi).zip(&e).map(|(j, p)| p * at(j, 2)[c] as f64).sum();
                        out[(start + i) * hidden + h * d + c] = (v / z) as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocked_attention_matches_the_definition() {
        // The last sequence has 10 keys for 40 tokens: its late queries see no key in a window.
        let cu = [0u32, 1, 65, 195, 395, 435];
        let keys = [1u32, 60, 130, 200, 10];
        let (heads, d) = (2, 8);
        let qkv = pseudo_random(435 * 3 * heads * d, 7);
        for w in [
            AttentionWindow::Global,
            AttentionWindow::Local { radius: 64 },
            AttentionWindow::Local { radius: 3 },
        ] {
            let mut out = vec![f32::NAN; 435 * heads * d];
            attention(&qkv, &cu, Some(&keys), heads, d, w, &mut out);
            let want = naive_attention(&qkv, &cu, &keys, heads, d, w);
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{w:?}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn mean_pool_respects_key_lens_and_normalize() {
        let h = [1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0];
        let p = pool(&h, 2, &[0, 3], Some(&[2]), Pooling::Mean);
        assert_eq!(p, vec![2.0, 3.0]);
        let mut c = pool(&h, 2, &[0, 3], None, Pooling::Cls);
        assert_eq!(c, vec![1.0, 2.0]);
        l2_normalize_rows(&mut c, 2);
        assert!((c[0] - 1.0 / 5f32.sqrt()).abs() < 1e-7);
    }
}
