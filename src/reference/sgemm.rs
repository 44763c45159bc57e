//! The CPU's f32 GEMM for PyTorch-`Linear`-shaped products, `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias)`,
//! with the weight packed once: an AVX-512 microkernel and an AVX2 + FMA one.
//!
//! Plain f32 FMAs with f32 accumulators: the same arithmetic as any f32 BLAS, only the order of
//! the k-sum differs (results agree with the `gemm` crate to f32 rounding).
//!
//! Layout: the weight is packed once into [`PackedWeight`] — panels of `nr` output columns, k-major
//! inside a panel (`panel[kk][c] = w[p·nr + c, kk]`, zero past `n`), 64-byte aligned — so that the
//! microkernel loads two vectors of weights per k step. Rows of `a` are packed per task into
//! micro-panels of `mr` rows (`[kk][r]`, zero past `m`) and broadcast. The microkernel holds an
//! `mr × nr` tile of `out` in 2·`mr` vector accumulators: 12 × 32 in 24 zmm (AVX-512), 6 × 16 in
//! 12 ymm (AVX2; 16 registers in all, so 2 weight vectors and 1 broadcast fit beside them).
//!
//! Blocking: a task is a block of rows × a range of weight panels. Inside a task, for each k-slice
//! (at most `KC_MAX`, so usually all of k and `out` is written once), the task's rows are packed
//! (≤ `MC_PANELS` micro-panels, L2-resident) and, for every weight panel of the range, all row
//! micro-panels of the task are multiplied by it, so each weight byte is read from memory once per
//! row block. Measured on Sapphire Rapids (2 cores): full-k slices beat L1-sized ones (KC =
//! 128..384) by ~25 %, the cost of re-reading/writing `out`.
//!
//! Threads: many rows are split into row blocks (each thread streams all of `w`, mostly from the
//! shared L3); few rows — one row block, the small-batch case, where streaming the weights is the
//! whole cost — are split by weight panels instead, so that the threads share the weight stream
//! rather than each reading all of it.
//!
//! Dispatch: [`Isa::detect`] picks the best microkernel this CPU has; callers fall back to the
//! `gemm` crate when there is none ([`available`] is false).

use rayon::prelude::*;

/// Longest k-slice: k up to this is done in one pass (ModernBERT-base: 768 and 1152).
const KC_MAX: usize = 1152;
/// Row micro-panels per row block: `MC_PANELS · mr · kc` floats of packed rows stay in L2
/// (AVX-512: 192 rows, 590 KB at k = 768; AVX2: 96 rows, 295 KB).
const MC_PANELS: usize = 16;

/// The instruction sets with a microkernel here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12 × 32 tiles.
    Avx512,
    /// AVX2 + FMA: 6 × 16 tiles.
    Avx2,
}

impl Isa {
    /// The best microkernel this CPU can run (checked once, cached by std), if any.
    pub fn detect() -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2].into_iter().find(|isa| isa.supported())
    }

    /// Whether this CPU can run `self`'s microkernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `(mr, nr)`: rows of `a` per microkernel tile, output columns per weight panel.
    pub const fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (12, 32),
            Isa::Avx2 => (6, 16),
        }
    }
}

/// Whether some microkernel can run on this CPU.
pub fn available() -> bool {
    Isa::detect().is_some()
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

/// A `[n, k]` (PyTorch `[out, in]`) weight in one microkernel's panel layout; built once per weight.
pub struct PackedWeight {
    buf: AlignedBuf,
    n: usize,
    k: usize,
    isa: Isa,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedWeight {{ n: {}, k: {}, isa: {:?} }}",
            self.n, self.k, self.isa
        )
    }
}

impl PackedWeight {
    /// Pack `w` (`[n, k]` row-major) for the best microkernel of this CPU.
    ///
    /// Panics when there is none ([`available`] is false).
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        Self::for_isa(
            w,
            n,
            k,
            Isa::detect().expect("sgemm: this CPU has neither AVX-512F nor AVX2 + FMA"),
        )
    }

    /// Pack `w` for `isa`'s microkernel (tests run every kernel the CPU has).
    pub fn for_isa(w: &[f32], n: usize, k: usize, isa: Isa) -> Self {
        assert_eq!(w.len(), n * k, "PackedWeight: weight is not [n, k]");
        let nr = isa.tile().1;
        let panels = n.div_ceil(nr);
        let mut buf = AlignedBuf::zeroed(panels * k * nr);
        if k > 0 {
            buf.as_mut_slice()
                .par_chunks_mut(k * nr)
                .enumerate()
                .for_each(|(p, panel)| {
                    for c in 0..nr.min(n - p * nr) {
                        let row = &w[(p * nr + c) * k..][..k];
                        for (kk, &v) in row.iter().enumerate() {
                            panel[kk * nr + c] = v;
                        }
                    }
                });
        }
        PackedWeight { buf, n, k, isa }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes held (the panels, padding included).
    pub fn bytes(&self) -> usize {
        self.buf.data.len() * std::mem::size_of::<f32>()
    }

    fn panel(&self, p: usize) -> &[f32] {
        let nr = self.isa.tile().1;
        &self.buf.as_slice()[p * self.k * nr..][..self.k * nr]
    }
}

/// One task: rows `[r0, r0 + rows)` of `out` × weight panels `[p0, p1)`.
#[derive(Clone, Copy, Debug)]
struct Task {
    r0: usize,
    rows: usize,
    p0: usize,
    p1: usize,
}

/// The tasks of an `m`-row product with `col_panels` weight panels on `threads` threads: disjoint
/// rectangles that cover `out` (see the module comment for the rule).
fn plan(m: usize, mr: usize, col_panels: usize, threads: usize, serial: bool) -> Vec<Task> {
    let row_panels = m.div_ceil(mr);
    let row_blocks = if serial || row_panels <= MC_PANELS {
        row_panels.div_ceil(MC_PANELS)
    } else {
        // A multiple of the thread count of near-equal blocks.
        row_panels.div_ceil(threads * MC_PANELS) * threads
    }
    .clamp(1, row_panels);
    let col_blocks = if serial || row_blocks > 1 {
        1
    } else {
        threads.clamp(1, col_panels)
    };
    let mut tasks = Vec::with_capacity(row_blocks * col_blocks);
    for rb in 0..row_blocks {
        let (r0, r1) = (
            (rb * row_panels / row_blocks * mr).min(m),
            ((rb + 1) * row_panels / row_blocks * mr).min(m),
        );
        for cb in 0..col_blocks {
            let (p0, p1) = (cb * col_panels / col_blocks, (cb + 1) * col_panels / col_blocks);
            tasks.push(Task {
                r0,
                rows: r1 - r0,
                p0,
                p1,
            });
        }
    }
    tasks
}

/// `out` shared by the tasks, each writing only its own rectangle.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks of one `linear_packed` write disjoint rectangles of `out` (see `plan`), and
// `out`'s borrow outlives them (rayon joins before `linear_packed` returns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[m, n] = a[m, k] · wᵀ (+ bias[n])` with `w`'s microkernel, rayon-parallel.
///
/// Panics when the CPU lacks `w`'s instruction set or when a shape does not match.
pub fn linear_packed(a: &[f32], w: &PackedWeight, bias: Option<&[f32]>, m: usize, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert!(w.isa.supported(), "sgemm: this CPU cannot run the {:?} kernel", w.isa);
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
    let (mr, nr) = w.isa.tile();
    let threads = rayon::current_num_threads().max(1);
    let serial = threads == 1 || m * n * k < 1 << 18;
    let tasks = plan(m, mr, n.div_ceil(nr), threads, serial);
    let out = OutPtr(out.as_mut_ptr());
    let run = |t: &Task| task(a, w, bias, *t, out);
    if serial || tasks.len() == 1 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
}

/// One task, single-threaded, with this thread's packed-rows buffer.
fn task(a: &[f32], w: &PackedWeight, bias: Option<&[f32]>, t: Task, out: OutPtr) {
    let mr = w.isa.tile().0;
    // Equal k-slices of at most KC_MAX (ModernBERT-base: one slice, so `out` is written once).
    let kc_step = w.k.div_ceil(w.k.div_ceil(KC_MAX));
    let need = t.rows.div_ceil(mr) * mr * kc_step;
    // The packed-rows buffer is kept per thread: a fresh ~1 MB allocation per task costs page faults.
    thread_local! {
        static APACK: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::zeroed(0));
    }
    APACK.with_borrow_mut(|apack| {
        if apack.len < need {
            *apack = AlignedBuf::zeroed(need);
        }
        task_blocks(a, w, bias, t, out, kc_step, apack);
    });
}

/// [`task`]'s body, with its packed-rows buffer (≥ `⌈rows / mr⌉ · mr · kc_step` floats).
fn task_blocks(
    a: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    t: Task,
    out: OutPtr,
    kc_step: usize,
    apack: &mut AlignedBuf,
) {
    let (n, k) = (w.n, w.k);
    let (mr, nr) = w.isa.tile();
    let a = &a[t.r0 * k..(t.r0 + t.rows) * k];
    let row_panels = t.rows.div_ceil(mr);
    for k0 in (0..k).step_by(kc_step) {
        let kc = kc_step.min(k - k0);
        let (first, last) = (k0 == 0, k0 + kc == k);
        // Pack rows into [panel][kk][r], zero past `rows`.
        let ap = &mut apack.as_mut_slice()[..row_panels * mr * kc];
        for (i, panel) in ap.chunks_mut(mr * kc).enumerate() {
            let valid = mr.min(t.rows - i * mr);
            for r in 0..mr {
                if r < valid {
                    let src = &a[(i * mr + r) * k + k0..][..kc];
                    for (kk, &v) in src.iter().enumerate() {
                        panel[kk * mr + r] = v;
                    }
                } else {
                    (0..kc).for_each(|kk| panel[kk * mr + r] = 0.0);
                }
            }
        }
        let ap = &apack.as_slice()[..row_panels * mr * kc];
        for p in t.p0..t.p1 {
            let wp = &w.panel(p)[k0 * nr..][..kc * nr];
            let cols = nr.min(n - p * nr);
            let bias_p = if last { bias.map(|b| &b[p * nr..][..cols]) } else { None };
            // The next panel's k-slice, prefetched into L2 during the second row micro-panel
            // (the first, when there is one): the current panel is then already cached, so the
            // weight stream overlaps the FMAs instead of stalling the first pass of each panel.
            let next = (p + 1 < t.p1).then(|| w.panel(p + 1)[k0 * nr..].as_ptr());
            let prefetch_at = 1.min(row_panels - 1);
            for i in 0..row_panels {
                let rows = mr.min(t.rows - i * mr);
                let api = &ap[i * mr * kc..][..mr * kc];
                let prefetch = if i == prefetch_at { next } else { None };
                // SAFETY: the tile starts at row `r0 + i·mr`, column `p·nr` of the `[m, n]` `out`
                // and spans `rows` rows (< m − that row) and `cols` columns (≤ n − p·nr): inside
                // `out` and inside this task's rectangle, which no other task writes. `w.isa` was
                // checked supported by `linear_packed`; `api` / `wp` hold `mr·kc` / `nr·kc` floats;
                // `bias_p` has `cols` floats.
                unsafe {
                    let tile = out.0.add((t.r0 + i * mr) * n + p * nr);
                    match w.isa {
                        Isa::Avx512 => kernel_avx512_12x32(kc, api, wp, prefetch, tile, n, rows, cols, first, bias_p),
                        Isa::Avx2 => kernel_avx2_6x16(kc, api, wp, prefetch, tile, n, rows, cols, first, bias_p),
                    }
                }
            }
        }
    }
}

/// The 12 × 32 AVX-512 microkernel: `tile[r, c] (= or +=) Σ_kk ap[kk, r] · wp[kk, c]` (+ bias[c]).
///
/// # Safety
/// AVX-512F must be available; `ap.len() ≥ 12·kc`, `wp.len() ≥ 32·kc`; `c` must be valid for
/// writes (and reads unless `first`) at `r·ldc + j` for `r < rows ≤ 12`, `j < cols ≤ 32`;
/// `prefetch` (the next panel's slice) is only a hint and is never dereferenced;
/// `bias.len() ≥ cols` when given.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512_12x32(
    kc: usize,
    ap: &[f32],
    wp: &[f32],
    prefetch: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    const MR: usize = 12;
    const NR: usize = 32;
    debug_assert!(ap.len() >= MR * kc && wp.len() >= NR * kc && rows <= MR && cols <= NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut pa, mut pw) = (ap.as_ptr(), wp.as_ptr());
    for _ in 0..kc {
        // SAFETY: `pa`/`pw` advance MR / NR floats per step for kc steps: within `ap`/`wp`.
        unsafe {
            let w0 = _mm512_loadu_ps(pw);
            let w1 = _mm512_loadu_ps(pw.add(16));
            if let Some(pf) = prefetch {
                // A hint: never faults, whatever the address.
                let pf = pf.wrapping_add(pw.offset_from(wp.as_ptr()) as usize);
                _mm_prefetch::<_MM_HINT_T1>(pf as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(16) as *const i8);
            }
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

/// The 6 × 16 AVX2 + FMA microkernel: `tile[r, c] (= or +=) Σ_kk ap[kk, r] · wp[kk, c]` (+ bias[c]).
///
/// # Safety
/// AVX2 and FMA must be available; `ap.len() ≥ 6·kc`, `wp.len() ≥ 16·kc`; `c` must be valid for
/// writes (and reads unless `first`) at `r·ldc + j` for `r < rows ≤ 6`, `j < cols ≤ 16`;
/// `prefetch` (the next panel's slice) is only a hint and is never dereferenced;
/// `bias.len() ≥ cols` when given.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2_6x16(
    kc: usize,
    ap: &[f32],
    wp: &[f32],
    prefetch: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    const MR: usize = 6;
    const NR: usize = 16;
    debug_assert!(ap.len() >= MR * kc && wp.len() >= NR * kc && rows <= MR && cols <= NR);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut pa, mut pw) = (ap.as_ptr(), wp.as_ptr());
    for _ in 0..kc {
        // SAFETY: `pa`/`pw` advance MR / NR floats per step for kc steps: within `ap`/`wp`.
        unsafe {
            let w0 = _mm256_loadu_ps(pw);
            let w1 = _mm256_loadu_ps(pw.add(8));
            if let Some(pf) = prefetch {
                // A hint: never faults, whatever the address. One 64-byte line per k step.
                let pf = pf.wrapping_add(pw.offset_from(wp.as_ptr()) as usize);
                _mm_prefetch::<_MM_HINT_T1>(pf as *const i8);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*pa.add(r));
                acc_r[0] = _mm256_fmadd_ps(x, w0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(x, w1, acc_r[1]);
            }
            pa = pa.add(MR);
            pw = pw.add(NR);
        }
    }
    // SAFETY: the full-width path touches columns `< 16 = cols` of rows `< rows`; the edge path
    // masks lanes `≥ cols` off every load and store (caller contract).
    unsafe {
        if cols == NR {
            let (b0, b1) = match bias {
                Some(b) => (_mm256_loadu_ps(b.as_ptr()), _mm256_loadu_ps(b.as_ptr().add(8))),
                None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
            };
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = c.add(r * ldc);
                let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                if !first {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(dst), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), v1);
                }
                if bias.is_some() {
                    v0 = _mm256_add_ps(v0, b0);
                    v1 = _mm256_add_ps(v1, b1);
                }
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            }
        } else {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lane);
            let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32 - 8), lane);
            let (b0, b1) = match bias {
                Some(b) => (
                    _mm256_maskload_ps(b.as_ptr(), m0),
                    _mm256_maskload_ps(b.as_ptr().add(8), m1),
                ),
                None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
            };
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = c.add(r * ldc);
                let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                if !first {
                    v0 = _mm256_add_ps(_mm256_maskload_ps(dst, m0), v0);
                    v1 = _mm256_add_ps(_mm256_maskload_ps(dst.add(8), m1), v1);
                }
                if bias.is_some() {
                    v0 = _mm256_add_ps(v0, b0);
                    v1 = _mm256_add_ps(v1, b1);
                }
                _mm256_maskstore_ps(dst, m0, v0);
                _mm256_maskstore_ps(dst.add(8), m1, v1);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512_12x32(
    _kc: usize,
    _ap: &[f32],
    _wp: &[f32],
    _prefetch: Option<*const f32>,
    _c: *mut f32,
    _ldc: usize,
    _rows: usize,
    _cols: usize,
    _first: bool,
    _bias: Option<&[f32]>,
) {
    unreachable!("sgemm: AVX-512 kernel on a non-x86_64 target")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2_6x16(
    _kc: usize,
    _ap: &[f32],
    _wp: &[f32],
    _prefetch: Option<*const f32>,
    _c: *mut f32,
    _ldc: usize,
    _rows: usize,
    _cols: usize,
    _first: bool,
    _bias: Option<&[f32]>,
) {
    unreachable!("sgemm: AVX2 kernel on a non-x86_64 target")
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

    /// Every microkernel this CPU has; the test says so when it has none.
    fn isas() -> Vec<Isa> {
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2].into_iter().filter(|i| i.supported()).collect();
        if isas.is_empty() {
            eprintln!("skipping: this CPU has neither AVX-512F nor AVX2 + FMA");
        }
        isas
    }

    fn check(isa: Isa, m: usize, k: usize, n: usize, with_bias: bool) {
        let a = pseudo_random(m * k, (m * 31 + k) as u32);
        let w = pseudo_random(n * k, (n * 17 + k) as u32 + 5);
        let b = pseudo_random(n, 9);
        let bias = with_bias.then_some(b.as_slice());
        let packed = PackedWeight::for_isa(&w, n, k, isa);
        let mut out = vec![f32::NAN; m * n];
        linear_packed(&a, &packed, bias, m, &mut out);
        let (want, mag) = naive(&a, &w, bias, m, k, n);
        for (idx, ((&x, &y), &g)) in out.iter().zip(&want).zip(&mag).enumerate() {
            // f32 accumulation: error ≲ k·ε·Σ|terms|; 1e-5 relative to the magnitude of the sum.
            assert!(
                (x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()).max(g * 1e-1),
                "{isa:?} {m}x{k}x{n} bias={with_bias} at {idx}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn sgemm_matches_naive_on_odd_shapes() {
        for isa in isas() {
            let sizes = [1, 3, 5, 6, 7, 15, 16, 17, 31, 33, 100, 257];
            for &m in &sizes {
                for &k in &sizes {
                    for &n in &sizes {
                        check(isa, m, k, n, (m + k + n) % 2 == 0);
                    }
                }
            }
            check(isa, 5, 0, 7, true);
            check(isa, 5, 0, 7, false);
        }
    }

    #[test]
    fn sgemm_matches_naive_on_model_shapes() {
        // ModernBERT-base: Wqkv 768→2304, Wo 768→768, Wi 768→2304, MLP Wo 1152→768 (rows cut short):
        // one token, the small batches split by weight panels, and the large ones split by rows.
        for isa in isas() {
            for &(m, k, n) in &[
                (1, 768, 2304),
                (37, 768, 2304),
                (100, 768, 768),
                (13, 1152, 768),
                (600, 768, 96),
            ] {
                check(isa, m, k, n, true);
                check(isa, m, k, n, false);
            }
        }
    }

    /// The tasks cover every cell of `out` exactly once, for row and panel splits alike.
    #[test]
    fn plans_cover_out_once() {
        for (mr, nr) in [Isa::Avx512.tile(), Isa::Avx2.tile()] {
            for m in [1, 5, 6, 7, 32, 96, 97, 191, 192, 193, 600, 4096] {
                for n in [1usize, 16, 17, 768, 2304] {
                    for threads in [1, 2, 3, 8] {
                        for serial in [false, true] {
                            let panels = n.div_ceil(nr);
                            let mut seen = vec![0u8; m * panels];
                            for t in plan(m, mr, panels, threads, serial) {
                                assert!(t.rows > 0 && t.p1 > t.p0, "empty task {t:?}");
                                for r in t.r0..t.r0 + t.rows {
                                    (t.p0..t.p1).for_each(|p| seen[r * panels + p] += 1);
                                }
                            }
                            assert!(
                                seen.iter().all(|&s| s == 1),
                                "m {m} n {n} threads {threads} serial {serial}: a cell is not covered once"
                            );
                        }
                    }
                }
            }
        }
    }
}
