//! An AVX-512 f32 GEMM for PyTorch-`Linear`-shaped products, `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias)`.
//!
//! Plain f32 FMAs with f32 accumulators: the same arithmetic as any f32 BLAS, only the order of
//! the k-sum differs (results agree with the `gemm` crate to f32 rounding).
//!
//! Layout: the weight is packed once into [`PackedWeight`] — panels of [`NR`] = 32 output columns,
//! k-major inside a panel (`panel[kk][c] = w[p·32 + c, kk]`, zero past `n`), 64-byte aligned — so
//! that the microkernel loads two zmm of weights per k step. Rows of `a` are packed per task into
//! micro-panels of [`MR`] rows (`[kk][r]`, zero past `m`) and broadcast. The microkernel holds an
//! `MR × NR` = 12 × 32 tile of `out` in 24 zmm accumulators.
//!
//! Blocking: rows are split into tasks (rayon) of whole micro-panels; inside a task, for each
//! k-slice (at most `KC_MAX`, so usually all of k and `out` is written once), the task's rows are
//! packed (≤ 0.9 MB, L2-resident) and, for every weight panel (`kc × 32`, ≤ 147 KB, L2), all row
//! micro-panels of the task are multiplied by it. Measured on Sapphire Rapids (2 cores): full-k
//! slices beat L1-sized ones (KC = 128..384) by ~25 %, the cost of re-reading/writing `out`.
//!
//! Dispatch: [`available`] tells whether this CPU has AVX-512F; callers fall back otherwise.

use rayon::prelude::*;

/// Rows of `a` per microkernel tile.
pub const MR: usize = 12;
/// Output columns per weight panel (two zmm).
pub const NR: usize = 32;
/// Longest k-slice: k up to this is done in one pass (ModernBERT-base: 768 and 1152).
const KC_MAX: usize = 1152;
/// Rows (in micro-panels) a task aims at: `MC_PANELS · MR · kc` floats of packed rows (L2).
const MC_PANELS: usize = 16;

/// Whether the AVX-512 kernel can run on this CPU (checked once, cached by std).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A 64-byte aligned, zero-initialised f32 buffer.
struct AlignedBuf {
    data: Vec<f32>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> Self {
        let data = vec![0f32; len + 16];
        // The heap block never moves (the Vec is never grown), so the offset stays valid.
        let offset = (64 - data.as_ptr() as usize % 64) % 64 / 4;
        AlignedBuf { data, offset, len }
    }
    fn as_slice(&self) -> &[f32] {
        &self.data[self.offset..self.offset + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data[self.offset..self.offset + self.len]
    }
}

/// A `[n, k]` (PyTorch `[out, in]`) weight in the kernel's panel layout; built once per weight.
pub struct PackedWeight {
    buf: AlignedBuf,
    n: usize,
    k: usize,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight {{ n: {}, k: {} }}", self.n, self.k)
    }
}

impl PackedWeight {
    /// Pack `w` (`[n, k]` row-major).
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "PackedWeight: weight is not [n, k]");
        let panels = n.div_ceil(NR);
        let mut buf = AlignedBuf::zeroed(panels * k * NR);
        if k > 0 {
            buf.as_mut_slice()
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    for c in 0..NR.min(n - p * NR) {
                        let row = &w[(p * NR + c) * k..][..k];
                        for (kk, &v) in row.iter().enumerate() {
                            panel[kk * NR + c] = v;
                        }
                    }
                });
        }
        PackedWeight { buf, n, k }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.buf.as_slice()[p * self.k * NR..][..self.k * NR]
    }
}

/// `out[m, n] = a[m, k] · wᵀ (+ bias[n])` with the AVX-512 kernel, rayon-parallel over rows.
///
/// Panics when [`available`] is false or when a shape does not match.
pub fn linear_packed(a: &[f32], w: &PackedWeight, bias: Option<&[f32]>, m: usize, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert!(available(), "sgemm: this CPU has no AVX-512F");
    assert_eq!(a.len(), m * k, "sgemm: input is not [m, k]");
    assert_eq!(out.len(), m * n, "sgemm: output is not [m, n]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "sgemm: bias is not [n]");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out.chunks_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return;
    }
    // Split the row micro-panels into a multiple of the thread count of near-equal tasks.
    let panels = m.div_ceil(MR);
    let threads = rayon::current_num_threads().max(1);
    let serial = threads == 1 || m * n * k < 1 << 18;
    let tasks = if serial {
        panels.div_ceil(MC_PANELS)
    } else {
        panels.div_ceil(threads * MC_PANELS) * threads
    };
    let tasks = tasks.clamp(1, panels);
    let bounds: Vec<usize> = (0..=tasks).map(|t| (t * panels / tasks * MR).min(m)).collect();
    // Cut `out` into the tasks' row ranges.
    let mut pieces: Vec<(usize, &mut [f32])> = Vec::with_capacity(tasks);
    let mut rest = out;
    for t in 0..tasks {
        let (mine, tail) = rest.split_at_mut((bounds[t + 1] - bounds[t]) * n);
        pieces.push((bounds[t], mine));
        rest = tail;
    }
    let run = |(r0, piece): (usize, &mut [f32])| {
        let rows = piece.len() / n;
        task(&a[r0 * k..(r0 + rows) * k], w, bias, rows, piece);
    };
    if serial {
        pieces.into_iter().for_each(run);
    } else {
        pieces.into_par_iter().for_each(run);
    }
}

/// One task: `rows` rows of `a` against the whole packed weight, single-threaded.
fn task(a: &[f32], w: &PackedWeight, bias: Option<&[f32]>, rows: usize, out: &mut [f32]) {
    let k = w.k;
    let row_panels = rows.div_ceil(MR);
    // Equal k-slices of at most KC_MAX (ModernBERT-base: one slice, so `out` is written once).
    let kc_step = k.div_ceil(k.div_ceil(KC_MAX));
    // The packed-rows buffer is kept per thread: a fresh ~1 MB allocation per task costs page faults.
    thread_local! {
        static APACK: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::zeroed(0));
    }
    APACK.with_borrow_mut(|apack| {
        if apack.len < row_panels * MR * kc_step {
            *apack = AlignedBuf::zeroed(row_panels * MR * kc_step);
        }
        task_blocks(a, w, bias, rows, out, kc_step, apack);
    });
}

/// [`task`]'s body, with its packed-rows buffer (≥ `⌈rows / MR⌉ · MR · kc_step` floats).
fn task_blocks(
    a: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    rows: usize,
    out: &mut [f32],
    kc_step: usize,
    apack: &mut AlignedBuf,
) {
    let (n, k) = (w.n, w.k);
    let row_panels = rows.div_ceil(MR);
    for k0 in (0..k).step_by(kc_step) {
        let kc = kc_step.min(k - k0);
        let (first, last) = (k0 == 0, k0 + kc == k);
        // Pack rows into [panel][kk][r], zero past `rows`.
        let ap = &mut apack.as_mut_slice()[..row_panels * MR * kc];
        for (i, panel) in ap.chunks_mut(MR * kc).enumerate() {
            let valid = MR.min(rows - i * MR);
            for r in 0..MR {
                if r < valid {
                    let src = &a[(i * MR + r) * k + k0..][..kc];
                    for (kk, &v) in src.iter().enumerate() {
                        panel[kk * MR + r] = v;
                    }
                } else {
                    (0..kc).for_each(|kk| panel[kk * MR + r] = 0.0);
                }
            }
        }
        let ap = &apack.as_slice()[..row_panels * MR * kc];
        for p in 0..n.div_ceil(NR) {
            let wp = &w.panel(p)[k0 * NR..][..kc * NR];
            let cols = NR.min(n - p * NR);
            let bias_p = if last { bias.map(|b| &b[p * NR..][..cols]) } else { None };
            for i in 0..row_panels {
                let r = MR.min(rows - i * MR);
                let tile = &mut out[i * MR * n + p * NR..];
                // The last row of the tile ends `cols` floats after its start.
                assert!(tile.len() >= (r - 1) * n + cols);
                // SAFETY: `available()` was asserted by the caller (AVX-512F present); `ap`/`wp`
                // hold `MR·kc` / `NR·kc` floats; the tile writes touch rows `< r` and columns
                // `< cols` of `tile` at stride `n`, in bounds by the assert above; `bias_p` has
                // `cols` floats.
                unsafe {
                    kernel_12x32(
                        kc,
                        &ap[i * MR * kc..][..MR * kc],
                        wp,
                        tile.as_mut_ptr(),
                        n,
                        r,
                        cols,
                        first,
                        bias_p,
                    );
                }
            }
        }
    }
}

/// The `MR × NR` microkernel: `tile[r, c] (= or +=) Σ_kk ap[kk, r] · wp[kk, c]` (+ bias[c]).
///
/// # Safety
/// AVX-512F must be available; `ap.len() ≥ MR·kc`, `wp.len() ≥ NR·kc`; `c` must be valid for
/// writes (and reads unless `first`) at `r·ldc + j` for `r < rows ≤ MR`, `j < cols ≤ NR`;
/// `bias.len() ≥ cols` when given.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32(
    kc: usize,
    ap: &[f32],
    wp: &[f32],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    debug_assert!(ap.len() >= MR * kc && wp.len() >= NR * kc && rows <= MR && cols <= NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut pa, mut pw) = (ap.as_ptr(), wp.as_ptr());
    for _ in 0..kc {
        // SAFETY: `pa`/`pw` advance MR / NR floats per step for kc steps: within `ap`/`wp`.
        unsafe {
            let w0 = _mm512_loadu_ps(pw);
            let w1 = _mm512_loadu_ps(pw.add(16));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*pa.add(r));
                acc_r[0] = _mm512_fmadd_ps(x, w0, acc_r[0]);
                acc_r[1] = _mm512_fmadd_ps(x, w1, acc_r[1]);
            }
            pa = pa.add(MR);
            pw = pw.add(NR);
        }
    }
    let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { (1u32 << cols) as u16 - 1 };
    let m1: __mmask16 = if cols >= 32 {
        0xFFFF
    } else if cols > 16 {
        (1u32 << (cols - 16)) as u16 - 1
    } else {
        0
    };
    // SAFETY: masked loads/stores touch only columns `< cols` of rows `< rows` (caller contract).
    unsafe {
        let (b0, b1) = match bias {
            Some(b) => (
                _mm512_maskz_loadu_ps(m0, b.as_ptr()),
                _mm512_maskz_loadu_ps(m1, b.as_ptr().add(16)),
            ),
            None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
        };
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let dst = c.add(r * ldc);
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if !first {
                v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, dst), v0);
                v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, dst.add(16)), v1);
            }
            if bias.is_some() {
                v0 = _mm512_add_ps(v0, b0);
                v1 = _mm512_add_ps(v1, b1);
            }
            _mm512_mask_storeu_ps(dst, m0, v0);
            _mm512_mask_storeu_ps(dst.add(16), m1, v1);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32(
    _kc: usize,
    _ap: &[f32],
    _wp: &[f32],
    _c: *mut f32,
    _ldc: usize,
    _rows: usize,
    _cols: usize,
    _first: bool,
    _bias: Option<&[f32]>,
) {
    unreachable!("sgemm: AVX-512 kernel on a non-x86_64 target")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// f64 reference; returns the result and Σ|a·w| per element (the scale of rounding error).
    fn naive(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut g) = (0f64, 0f64);
                for kk in 0..k {
                    let p = a[i * k + kk] as f64 * w[j * k + kk] as f64;
                    s += p;
                    g += p.abs();
                }
                if let Some(b) = bias {
                    s += b[j] as f64;
                    g += (b[j] as f64).abs();
                }
                out[i * n + j] = s;
                mag[i * n + j] = g;
            }
        }
        (out, mag)
    }

    fn check(m: usize, k: usize, n: usize, with_bias: bool) {
        let a = pseudo_random(m * k, (m * 31 + k) as u32);
        let w = pseudo_random(n * k, (n * 17 + k) as u32 + 5);
        let b = pseudo_random(n, 9);
        let bias = with_bias.then_some(b.as_slice());
        let packed = PackedWeight::new(&w, n, k);
        let mut out = vec![f32::NAN; m * n];
        linear_packed(&a, &packed, bias, m, &mut out);
        let (want, mag) = naive(&a, &w, bias, m, k, n);
        for (idx, ((&x, &y), &g)) in out.iter().zip(&want).zip(&mag).enumerate() {
            // f32 accumulation: error ≲ k·ε·Σ|terms|; 1e-5 relative to the magnitude of the sum.
            assert!(
                (x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()).max(g * 1e-1),
                "{m}x{k}x{n} bias={with_bias} at {idx}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn sgemm_matches_naive_on_odd_shapes() {
        if !available() {
            eprintln!("skipping: no AVX-512F");
            return;
        }
        let sizes = [1, 3, 15, 16, 17, 31, 33, 100, 257];
        for &m in &sizes {
            for &k in &sizes {
                for &n in &sizes {
                    check(m, k, n, (m + k + n) % 2 == 0);
                }
            }
        }
        check(5, 0, 7, true);
        check(5, 0, 7, false);
    }

    #[test]
    fn sgemm_matches_naive_on_model_shapes() {
        if !available() {
            eprintln!("skipping: no AVX-512F");
            return;
        }
        // ModernBERT-base: Wqkv 768→2304, Wo 768→768, Wi 768→2304, MLP Wo 1152→768 (rows cut short).
        for &(m, k, n) in &[(37, 768, 2304), (100, 768, 768), (13, 1152, 768), (600, 768, 96)] {
            check(m, k, n, true);
            check(m, k, n, false);
        }
    }
}
