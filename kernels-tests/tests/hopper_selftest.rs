//! Self-test of the sm_90a instructions (cuda/selftest_sm90.cu → hopper.cuh): wgmma over random
//! matrix descriptors (every swizzle mode, random leading/stride byte offsets and start
//! addresses, A from shared memory or registers, B K-major or MN-major (imm-trans-b, attention's
//! V), N = 64/128/256, bf16 and fp16), TMA tiled loads
//! over random 2-D, 3-D and 5-D boxes (every swizzle, out-of-bounds boxes with zero or NaN fill,
//! 2- and 4-byte elements), TMA stores of clipped boxes, programmatic dependent launch, and the
//! emulator's reports of protocol errors.
//!
//! On the emulator: against this file's host model, which *places* each logical element where the
//! PTX ISA's canonical layouts say it lives (the emulator *decodes* descriptors the other way), on
//! small-integer values whose sums are exact. On a Hopper GPU (`MODERNBERT_TEST_DEVICE=cuda`,
//! compute capability 9.0): additionally the same inputs through the emulator, bit for bit — the
//! hardware's verdict on the emulator's reading of the ISA, run on every GPU contact.
use kernels_tests::*;
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::ops::{self, GemmSm90, Sm90Epilogue};
use modernbert::kernels::params::*;
use modernbert::kernels::tensor_map;
use modernbert::kernels::{KernelParam, LaunchAttrs};

const IMAGE: usize = MB_SELFTEST90_IMAGE_BYTES as usize;

/// Runs `kernel` with `p` (its `in`/`out` filled in here) and returns `out`'s bytes.
fn run(
    dev: &dyn Device,
    kernel: &str,
    mut p: SelftestSm90Params,
    input: &[u8],
    out_bytes: usize,
    block: u32,
) -> Result<Vec<u8>, KernelError> {
    let d_in = dev.upload_new(input, "in")?;
    let d_out = dev.upload_new(&vec![0xffu8; out_bytes], "out")?;
    p.in_ = d_in.addr();
    p.out = d_out.addr();
    dev.launch(kernel, [1, 1, 1], [block, 1, 1], MB_SELFTEST90_SMEM_BYTES, &p)?;
    dev.synchronize()?;
    dev.download_vec(&d_out)
}

fn params() -> SelftestSm90Params {
    SelftestSm90Params::default()
}

// ---- wgmma ----------------------------------------------------------------------------------------
/// An operand's layout: what a matrix descriptor encodes, and which of the two major modes the
/// instruction reads it in (`mn`: imm-trans-b = 1, B only).
#[derive(Clone, Copy, Debug)]
struct Layout {
    start: u32,
    lbo: u32,
    sbo: u32,
    span: u32,
    mn: bool,
}

impl Layout {
    /// Where element (row, k) lives: `row` is M or N, k < 16.
    /// PTX ISA canonical K-major layouts: without swizzle, 8x8 core matrices of 8 rows x 16
    /// contiguous bytes, core matrix (row / 8, k / 8) at start + (row / 8) sbo + (k / 8) lbo; with a
    /// swizzle, rows of `span` bytes in groups of 8, `sbo` apart, then within every 8 x 128-byte
    /// repeat the 16-byte chunk index XOR (address bits 7.. masked to the span).
    /// MN-major (CUTLASS's canonical GMMA layouts, in 16-byte units with T = 8 elements: swizzled
    /// ((T, span/16, m), (8, k)) : ((1, T, lbo), (span/16·T, sbo)), unswizzled ((T, 1, m), (8, k)) :
    /// ((1, T, sbo), (1·T, lbo))): swizzled, one `span`-byte row per k with span / 2 consecutive n,
    /// 8-k groups `sbo` apart, the next span / 2 n at `lbo`, then the same XOR; unswizzled, core
    /// matrices of 8 k-rows x 8 n (16 bytes), core matrix (row / 8, k / 8) at start + (row / 8) sbo
    /// + (k / 8) lbo.
    fn place(&self, row: u32, k: u32) -> u32 {
        let a = match (self.mn, self.span) {
            (false, 0) => {
                return self.start + (row / 8) * self.sbo + (k / 8) * self.lbo + (row % 8) * 16 + (k % 8) * 2;
            }
            (true, 0) => {
                return self.start + (row / 8) * self.sbo + (k / 8) * self.lbo + (k % 8) * 16 + (row % 8) * 2;
            }
            (false, _) => self.start + (row / 8) * self.sbo + (row % 8) * self.span + k * 2,
            (true, _) => {
                let per_row = self.span / 2;
                self.start + (row / per_row) * self.lbo + (k / 8) * self.sbo + (k % 8) * self.span + (row % per_row) * 2
            }
        };
        a ^ (((a >> 7) & (self.span / 16 - 1)) << 4)
    }
    /// Bytes from `start` the layout can touch, rows of `rows`.
    fn extent(&self, rows: u32) -> u32 {
        let groups = rows / 8;
        match (self.mn, self.span) {
            (false, 0) => (groups - 1) * self.sbo + self.lbo + 128,
            (false, _) => (groups - 1) * self.sbo + 8 * self.span,
            (true, 0) => (groups - 1) * self.sbo + self.lbo + 128,
            (true, span) => (rows.div_ceil(span / 2) - 1) * self.lbo + self.sbo + 8 * span,
        }
    }
    fn desc(&self) -> u64 {
        let mode: u64 = match self.span {
            128 => 1,
            64 => 2,
            32 => 3,
            _ => 0,
        };
        ((self.start as u64 >> 4) & 0x3fff)
            | ((self.lbo as u64 >> 4) & 0x3fff) << 16
            | ((self.sbo as u64 >> 4) & 0x3fff) << 32
            | mode << 62
    }
    /// A random layout of `rows` x 16 elements inside [lo, hi) whose elements do not collide.
    fn random(rng: &mut Rng, rows: u32, lo: u32, hi: u32, mn: bool) -> Layout {
        let groups = rows / 8;
        loop {
            let span = [0, 32, 64, 128][rng.below(4) as usize];
            let (lbo, sbo) = match (mn, span) {
                (false, 0) => {
                    if rng.below(2) == 0 {
                        (128, 256 + 128 * rng.below(3))
                    } else {
                        (128 * groups * (1 + rng.below(2)), 128 + 128 * rng.below(2))
                    }
                }
                (false, _) => (16, 8 * span * (1 + rng.below(2))),
                // The core matrices of consecutive n adjacent and k's two groups far apart, or
                // the other way round.
                (true, 0) => {
                    if rng.below(2) == 0 {
                        (128 * groups * (1 + rng.below(2)), 128 + 128 * rng.below(2))
                    } else {
                        (128 + 128 * rng.below(2), 256 + 128 * rng.below(3))
                    }
                }
                // Whole 8-row swizzle repeats: k's second group right after the first (or one
                // repeat later), the next span / 2 n after both (or interleaved the other way).
                (true, _) => {
                    let atom = 8 * span;
                    if rng.below(2) == 0 {
                        (2 * atom * (1 + rng.below(2)), atom)
                    } else {
                        (atom, atom * (rows.div_ceil(span / 2) + rng.below(2)))
                    }
                }
            };
            let mut l = Layout {
                start: 0,
                lbo,
                sbo,
                span,
                mn,
            };
            let extent = l.extent(rows) + 32 * 3;
            if extent + 1024 > hi - lo {
                continue;
            }
            // Swizzled tiles start on a 1024-byte repeat, plus (K-major) the +32-byte steps of K
            // inside a row; MN-major ones step K by whole 8-row groups (the start stays aligned).
            let room = hi - lo - extent;
            l.start = match (span, mn) {
                (0, _) => lo + 16 * rng.below(room / 16),
                (_, false) => lo + 1024 * rng.below(room / 1024) + 32 * rng.below(span / 32),
                (_, true) => lo + 1024 * rng.below(room / 1024),
            };
            let mut seen = std::collections::HashSet::new();
            if (0..rows).all(|r| (0..16).all(|k| seen.insert(l.place(r, k) / 2))) {
                return l;
            }
        }
    }
}

/// Accumulator element `i` of thread `t` of an m64nN fragment: (row, column) of D.
fn frag_pos(t: u32, i: u32) -> (u32, u32) {
    let (w, g, tt, j, q) = (t / 32, (t % 32) / 4, t % 4, i / 4, i % 4);
    (16 * w + g + if q >= 2 { 8 } else { 0 }, 8 * j + 2 * tt + (q & 1))
}

struct WgmmaCase {
    n: u32,
    dt: Dtype,
    a_regs: bool,
    /// scale-d = 0: D = A·B, the initial accumulators ignored.
    overwrite: bool,
    a: Layout,
    b: Layout,
    input: Vec<u8>,
    want: Vec<f32>,
}

fn wgmma_case(rng: &mut Rng) -> WgmmaCase {
    let n = [64, 128, 256][rng.below(3) as usize];
    let dt = if rng.below(2) == 0 { Dtype::Bf16 } else { Dtype::F16 };
    let a_regs = rng.below(3) == 0;
    let overwrite = rng.below(4) == 0;
    let b_mn = rng.below(2) == 0;
    let small = |rng: &mut Rng| rng.below(7) as f32 - 3.0;
    // The image: small integers everywhere (a misdecoded address still reads a number), then A
    // and B where their layouts put them. A in [0, 16 KiB) (rows of 32 bytes at 0 when it comes
    // from registers), B in [16, 64) KiB.
    let mut image: Vec<u16> = (0..IMAGE / 2).map(|_| bits(dt, small(rng))).collect();
    let a_layout = if a_regs {
        Layout {
            start: 0,
            lbo: 0,
            sbo: 0,
            span: 0,
            mn: false,
        }
    } else {
        Layout::random(rng, 64, 0, 16 * 1024, false)
    };
    let b_layout = Layout::random(rng, n, 16 * 1024, IMAGE as u32, b_mn);
    let a: Vec<f32> = (0..64 * 16).map(|_| small(rng)).collect();
    let b: Vec<f32> = (0..n * 16).map(|_| small(rng)).collect();
    for r in 0..64 {
        for k in 0..16 {
            let off = if a_regs { r * 32 + k * 2 } else { a_layout.place(r, k) };
            image[off as usize / 2] = bits(dt, a[(r * 16 + k) as usize]);
        }
    }
    for r in 0..n {
        for k in 0..16 {
            image[b_layout.place(r, k) as usize / 2] = bits(dt, b[(r * 16 + k) as usize]);
        }
    }
    let per = n / 2;
    let c: Vec<f32> = (0..128 * per).map(|_| small(rng) * 4.0).collect();
    let want = (0..128 * per)
        .map(|x| {
            let (row, col) = frag_pos(x / per, x % per);
            let c_in = if overwrite { 0.0 } else { c[x as usize] };
            c_in + (0..16)
                .map(|k| a[(row * 16 + k) as usize] * b[(col * 16 + k) as usize])
                .sum::<f32>()
        })
        .collect();
    let mut input: Vec<u8> = image.iter().flat_map(|h| h.to_le_bytes()).collect();
    input.extend(c.iter().flat_map(|v| v.to_le_bytes()));
    WgmmaCase {
        n,
        dt,
        a_regs,
        overwrite,
        a: a_layout,
        b: b_layout,
        input,
        want,
    }
}

fn bits(dt: Dtype, v: f32) -> u16 {
    let b = to_bytes(dt, &[v]);
    u16::from_le_bytes([b[0], b[1]])
}

fn run_wgmma(dev: &dyn Device, c: &WgmmaCase) -> Result<Vec<u8>, KernelError> {
    let mut p = params();
    p.desc_a = c.a.desc();
    p.desc_b = c.b.desc();
    p.n = c.n;
    p.mode = (c.dt == Dtype::F16) as u32 | (c.a_regs as u32) << 1 | (c.overwrite as u32) << 2 | (c.b.mn as u32) << 3;
    run(
        dev,
        "selftest_wgmma",
        p,
        &c.input,
        128 * c.n as usize / 2 * 4,
        MB_SELFTEST90_THREADS,
    )
}

#[test]
fn wgmma_decodes_every_descriptor_as_the_isa_lays_it_out() {
    let dev = device();
    let mut rng = Rng::for_test("selftest_wgmma");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for i in 0..32 {
            let c = wgmma_case(&mut rng);
            let what = format!(
                "wgmma #{i} {order} n{} {:?} a_regs {} scale-d {} A {:?} B {:?}",
                c.n, c.dt, c.a_regs, !c.overwrite as u32, c.a, c.b
            );
            let got = run_wgmma(&*dev, &c);
            if skipped_without_hopper(&*dev, &got) {
                return;
            }
            let got = match got {
                Ok(g) => bytes_f32(&g),
                Err(e) => {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
            };
            let same = got.iter().zip(&c.want).all(|(a, b)| a.to_bits() == b.to_bits());
            f.push(if same {
                Ok(())
            } else {
                Err(format!("{what}: differs from the ISA's layout"))
            });
            if is_gpu(&*dev) {
                let emu = run_wgmma(&Emulator::new(), &c).map(|b| bytes_f32(&b));
                f.push(match emu {
                    Ok(e) if e.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()) => Ok(()),
                    Ok(_) => Err(format!("{what}: GPU and emulator differ")),
                    Err(e) => Err(format!("{what}: emulator: {e}")),
                });
            }
        }
    }
    f.finish();
}

// ---- TMA --------------------------------------------------------------------------------------
struct TmaCase {
    desc: MbTensorMapDesc,
    coords: [i32; 5],
    global: Vec<u8>,
    /// The box's bytes as shared memory holds them after the load.
    want: Vec<u8>,
    /// Byte offsets (in `want`) of elements that must be NaN (out of bounds with NaN fill).
    nan_at: Vec<usize>,
    bytes: u32,
}

fn swizzle(off: u32, span: u32) -> u32 {
    if span == 0 {
        off
    } else {
        off ^ (((off >> 7) & (span / 16 - 1)) << 4)
    }
}

/// Visits every element of the box: (index per dimension, linear index).
fn for_box(rank: usize, b: &[u32; 5], mut f: impl FnMut(&[u32; 5], usize)) {
    let total: u32 = b[..rank].iter().product();
    for lin in 0..total {
        let mut idx = [0u32; 5];
        let mut rest = lin;
        for d in 0..rank {
            idx[d] = rest % b[d];
            rest /= b[d];
        }
        f(&idx, lin as usize);
    }
}

fn tma_case(rng: &mut Rng, rank: usize) -> TmaCase {
    let f32_elems = rng.below(3) == 0;
    let elem: u32 = if f32_elems { 4 } else { 2 };
    let span = [0, 32, 64, 128][rng.below(4) as usize];
    let mut b = [1u32; 5];
    b[0] = if span == 0 {
        (16 / elem) * (1 + rng.below(6))
    } else {
        span / elem
    };
    for extent in b.iter_mut().take(rank).skip(1) {
        *extent = 1 + rng.below(if rank == 5 { 3 } else { 9 });
    }
    // Swizzled: whole 128-byte rows of the swizzle pattern.
    if let Some(rows_per_128) = 128u32.checked_div(span) {
        b[1] = b[1].div_ceil(rows_per_128) * rows_per_128;
    }
    let mut dims = [1u64; 5];
    let mut strides = [0u64; 5];
    strides[0] = elem as u64;
    for d in 0..rank {
        dims[d] = b[d] as u64 + rng.below(6) as u64;
    }
    // Row pitches: multiples of 16 bytes, of 128 for a swizzled map (tensor_map.rs's rules).
    let pitch = if span == 0 { 16 } else { 128 };
    strides[1] = (dims[0] * elem as u64).div_ceil(pitch) * pitch + pitch * rng.below(3) as u64;
    for d in 2..rank {
        strides[d] = (strides[d - 1] * dims[d - 1]).div_ceil(pitch) * pitch + pitch * rng.below(2) as u64;
    }
    let total = strides[rank - 1] * dims[rank - 1];
    let global: Vec<u8> = (0..total).map(|_| rng.below(256) as u8).collect();
    let mut coords = [0i32; 5];
    for d in 0..rank {
        coords[d] = rng.below(dims[d] as u32 + b[d]) as i32 - b[d] as i32 / 2;
    }
    let oob_nan = rng.below(2) == 1;
    let dtype = if f32_elems { MB_TMAP_F32 } else { MB_TMAP_BF16 };
    let bytes = b[..rank].iter().product::<u32>() * elem;
    let mut want = vec![0u8; bytes as usize];
    let mut nan_at = Vec::new();
    for_box(rank, &b, |idx, lin| {
        let dst = swizzle(lin as u32 * elem, span) as usize;
        let mut addr = 0u64;
        let mut inside = true;
        for d in 0..rank {
            let g = coords[d] as i64 + idx[d] as i64;
            inside &= g >= 0 && (g as u64) < dims[d];
            addr += (g.max(0) as u64) * strides[d];
        }
        if inside {
            want[dst..dst + elem as usize].copy_from_slice(&global[addr as usize..][..elem as usize]);
        } else if oob_nan {
            nan_at.push(dst);
        }
    });
    let desc = MbTensorMapDesc {
        global_address: 0,
        dims,
        strides,
        box_: b,
        rank: rank as u32,
        dtype,
        swizzle: span,
        oob_nan: oob_nan as u32,
        pad: 0,
    };
    TmaCase {
        desc,
        coords,
        global,
        want,
        nan_at,
        bytes,
    }
}

fn run_tma_load(dev: &dyn Device, c: &TmaCase) -> Result<Vec<u8>, KernelError> {
    let g = dev.upload_new(&c.global, "global")?;
    let mut desc = c.desc;
    desc.global_address = g.addr();
    let mut p = params();
    p.map = tensor_map::encode(dev, &desc)?;
    p.coords = c.coords;
    p.n = c.desc.rank;
    p.bytes = c.bytes;
    run(
        dev,
        "selftest_tma_load",
        p,
        &[0u8; 16],
        c.bytes as usize,
        MB_SELFTEST90_THREADS,
    )
}

fn same_box(c: &TmaCase, got: &[u8]) -> bool {
    let elem = if c.desc.dtype == MB_TMAP_F32 { 4 } else { 2 };
    let is_nan = |at: usize| {
        if elem == 4 {
            f32::from_le_bytes(got[at..at + 4].try_into().unwrap()).is_nan()
        } else {
            let h = u16::from_le_bytes([got[at], got[at + 1]]);
            h & 0x7f80 == 0x7f80 && h & 0x7f != 0
        }
    };
    let mut want = c.want.clone();
    for &at in &c.nan_at {
        if !is_nan(at) {
            return false;
        }
        want[at..at + elem].copy_from_slice(&got[at..at + elem]);
    }
    want == got
}

#[test]
fn tma_loads_boxes_as_the_isa_lays_them_out() {
    let dev = device();
    let mut rng = Rng::for_test("selftest_tma_load");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for i in 0..36 {
            let rank = [2, 3, 5][i % 3];
            let c = tma_case(&mut rng, rank);
            let what = format!("tma load #{i} {order} {:?} at {:?}", c.desc, &c.coords[..rank]);
            let got = run_tma_load(&*dev, &c);
            if skipped_without_hopper(&*dev, &got) {
                return;
            }
            match got {
                Ok(g) => f.push(if same_box(&c, &g) {
                    Ok(())
                } else {
                    Err(format!("{what}: wrong bytes"))
                }),
                Err(e) => f.fail(format!("{what}: {e}")),
            }
        }
    }
    f.finish();
}

#[test]
fn tma_stores_clip_the_box_and_read_through_the_swizzle() {
    let dev = device();
    let mut rng = Rng::for_test("selftest_tma_store");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for i in 0..16 {
            let c = tma_case(&mut rng, 2);
            let (b0, b1) = (c.desc.box_[0], c.desc.box_[1]);
            let elem = if c.desc.dtype == MB_TMAP_F32 { 4usize } else { 2 };
            let source: Vec<u8> = (0..c.bytes).map(|_| rng.below(256) as u8).collect();
            let mut want = vec![0xffu8; c.global.len()];
            for_box(2, &c.desc.box_, |idx, lin| {
                let (x, y) = (c.coords[0] as i64 + idx[0] as i64, c.coords[1] as i64 + idx[1] as i64);
                if x >= 0 && y >= 0 && (x as u64) < c.desc.dims[0] && (y as u64) < c.desc.dims[1] {
                    let at = (y as u64 * c.desc.strides[1]) as usize + x as usize * elem;
                    let src = swizzle((lin * elem) as u32, c.desc.swizzle) as usize;
                    want[at..at + elem].copy_from_slice(&source[src..src + elem]);
                }
            });
            let what = format!(
                "tma store #{i} {order} box {b0}x{b1} {:?} at {:?}",
                c.desc,
                &c.coords[..2]
            );
            let got = (|| {
                let g = dev.upload_new(&vec![0xffu8; c.global.len()], "global")?;
                let mut desc = c.desc;
                desc.global_address = g.addr();
                let mut p = params();
                p.map = tensor_map::encode(&*dev, &desc)?;
                p.coords = c.coords;
                p.bytes = c.bytes;
                run(&*dev, "selftest_tma_store", p, &source, 16, MB_SELFTEST90_THREADS)?;
                dev.download_vec(&g)
            })();
            if skipped_without_hopper(&*dev, &got) {
                return;
            }
            match got {
                Ok(g) => f.push(if g == want {
                    Ok(())
                } else {
                    Err(format!("{what}: wrong bytes"))
                }),
                Err(e) => f.fail(format!("{what}: {e}")),
            }
        }
    }
    f.finish();
}

// ---- programmatic dependent launch --------------------------------------------------------------
fn pdl_copy(dev: &dyn Device, src: u64, dst: u64, n: u32, dependent: bool) -> Result<(), KernelError> {
    let mut p = params();
    p.in_ = src;
    p.out = dst;
    p.n = n;
    let kernel = "selftest_pdl_copy";
    if dependent {
        dev.launch_dependent_raw(
            kernel,
            [4, 1, 1],
            [128, 1, 1],
            0,
            modernbert::kernels::KernelParam::as_bytes(&p),
        )
    } else {
        dev.launch(kernel, [4, 1, 1], [128, 1, 1], 0, &p)
    }
}

/// A GEMM launched as the dependent of a primary that writes one of its inputs: A (`residual`
/// false), or R, the residual stream in place in C (`residual` true, K = 64: one k-block). The
/// GEMM must read that input only after griddepcontrol.wait; on the emulator, before it, the
/// reads see the poison.
fn dependent_gemm_reads_its_primarys_output(residual: bool) {
    let dev = device();
    let mut rng = Rng::for_test(if residual {
        "selftest_pdl_residual"
    } else {
        "selftest_pdl"
    });
    for reverse in orders(&*dev) {
        set_order(&*dev, reverse);
        let (m, n, k) = (70usize, 128usize, if residual { 64 } else { 128usize });
        let a = rng.normal_vec(Dtype::Bf16, m * k, 0.0, 1.0);
        let b = rng.normal_vec(Dtype::Bf16, n * k, 0.0, 0.1);
        let r = if residual {
            rng.normal_vec(Dtype::Bf16, m * n, 0.0, 1.0)
        } else {
            vec![0.0; m * n]
        };
        let d_b = upload(&*dev, Dtype::Bf16, &b, "b");
        let d_c = poisoned(&*dev, m * n * 2, "c");
        let (d_a, src) = if residual {
            (
                upload(&*dev, Dtype::Bf16, &a, "a"),
                upload(&*dev, Dtype::Bf16, &r, "r source"),
            )
        } else {
            (
                poisoned(&*dev, m * k * 2, "a"),
                upload(&*dev, Dtype::Bf16, &a, "a source"),
            )
        };
        let (dst, words) = if residual {
            (d_c.addr(), m * n / 2)
        } else {
            (d_a.addr(), m * k / 2)
        };
        pdl_copy(&*dev, src.addr(), dst, words as u32, false).unwrap();
        let g = GemmSm90 {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a: d_a.addr(),
            b: d_b.addr(),
            c: d_c.addr(),
            epilogue: if residual {
                Sm90Epilogue::Residual {
                    r: d_c.addr(),
                    stats: 0,
                }
            } else {
                Sm90Epilogue::Store
            },
            norm: None,
        };
        let launched = ops::gemm_sm90(&*dev, Dtype::Bf16, &g, true).and_then(|_| dev.synchronize());
        if skipped_without_hopper(&*dev, &launched) {
            return;
        }
        launched.unwrap();
        let c = download(&*dev, Dtype::Bf16, &d_c);
        for (i, j) in [(0, 0), (m - 1, n - 1), (35, 64)] {
            let want = r[i * n + j] + (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum::<f32>();
            let got = c[i * n + j];
            assert!(
                (got - want).abs() <= 0.02 * want.abs().max(1.0),
                "c[{i}][{j}] = {got}, want {want}"
            );
        }
    }
}

#[test]
fn a_dependent_gemm_waits_for_its_primary() {
    dependent_gemm_reads_its_primarys_output(false);
}

#[test]
fn a_dependent_residual_gemm_reads_r_after_its_primary() {
    dependent_gemm_reads_its_primarys_output(true);
}

#[test]
fn the_emulator_runs_a_dependent_before_its_primary_finishes() {
    // On a GPU this order is one of many (a race the test would lose by chance): emulator only.
    let dev = device();
    if is_gpu(&*dev) {
        eprintln!(
            "SKIPPED on {}: the emulator's schedule of a dependent launch is what is tested",
            dev.name()
        );
        return;
    }
    let n = 1000u32;
    let words: Vec<u32> = (0..n).collect();
    let src = upload_u32(&*dev, &words, "src");
    let x = poisoned(&*dev, n as usize * 4, "x");
    let y = poisoned(&*dev, n as usize * 4, "y");
    pdl_copy(&*dev, src.addr(), x.addr(), n, false).unwrap();
    // No griddepcontrol.wait in the dependent: it copies x before the primary has written it.
    pdl_copy(&*dev, x.addr(), y.addr(), n, true).unwrap();
    dev.synchronize().unwrap();
    assert!(
        bytes_u32(&dev.download_vec(&y).unwrap()).iter().all(|&w| w == u32::MAX),
        "y must be x's poison"
    );
    assert_eq!(
        bytes_u32(&dev.download_vec(&x).unwrap()),
        words,
        "the primary still ran"
    );
    // Launched without the attribute, the second copy follows the first.
    pdl_copy(&*dev, src.addr(), x.addr(), n, false).unwrap();
    pdl_copy(&*dev, x.addr(), y.addr(), n, false).unwrap();
    assert_eq!(bytes_u32(&dev.download_vec(&y).unwrap()), words);
}

// ---- thread block clusters -------------------------------------------------------------------------
/// `selftest_cluster_multicast` on `clusters` clusters of `size` blocks: every block's copy of
/// `input` and its rank, [grid][bytes + 16].
fn run_multicast(dev: &dyn Device, size: u32, clusters: u32, input: &[u8], mode: u32) -> Result<Vec<u8>, KernelError> {
    let grid = size * clusters;
    let d_in = dev.upload_new(input, "in")?;
    let d_out = dev.upload_new(&vec![0xffu8; grid as usize * (input.len() + 16)], "out")?;
    let mut p = params();
    (p.in_, p.out, p.n, p.mode, p.bytes) = (d_in.addr(), d_out.addr(), size, mode, input.len() as u32);
    let attrs = LaunchAttrs {
        cluster: size,
        ..LaunchAttrs::default()
    };
    dev.launch_ex_raw(
        "selftest_cluster_multicast",
        [grid, 1, 1],
        [MB_SELFTEST90_THREADS, 1, 1],
        MB_SELFTEST90_SMEM_BYTES,
        p.as_bytes(),
        attrs,
    )?;
    dev.synchronize()?;
    dev.download_vec(&d_out)
}

#[test]
fn a_multicast_copy_lands_in_every_block_of_the_cluster() {
    // Slices of 256 bytes that the ranks share unevenly (19 of them), 2 and 4 blocks a cluster,
    // three clusters: each block holds all of the input, whoever copied each slice, and reports
    // its rank in the cluster.
    let dev = device();
    let mut rng = Rng::for_test("selftest_cluster_multicast");
    let mut f = Failures::default();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for size in [2u32, 4] {
            let input: Vec<u8> = (0..19 * 256).map(|_| rng.next_u64() as u8).collect();
            let got = run_multicast(&*dev, size, 3, &input, 0);
            if skipped_without_hopper(&*dev, &got) {
                return;
            }
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    f.fail(format!("clusters of {size} {order}: {e}"));
                    continue;
                }
            };
            for (block, rec) in got.chunks(input.len() + 16).enumerate() {
                let rank = u32::from_le_bytes(rec[input.len()..input.len() + 4].try_into().unwrap());
                if rec[..input.len()] != input[..] || rank != block as u32 % size {
                    f.fail(format!(
                        "clusters of {size} {order}: block {block} holds a different copy or reports rank {rank}"
                    ));
                }
            }
        }
    }
    f.finish();
}

// ---- protocol errors ------------------------------------------------------------------------------
#[test]
fn the_emulator_reports_hopper_protocol_errors() {
    let dev = device();
    if is_gpu(&*dev) {
        eprintln!(
            "SKIPPED on {}: protocol errors are undefined behaviour on a GPU",
            dev.name()
        );
        return;
    }
    let small = dev.upload_new(&vec![0u8; 64 * 64 * 2], "m").unwrap();
    let map = tensor_map::encode(
        &*dev,
        &tensor_map::matrix_2d(Dtype::Bf16, small.addr(), 64, 64, 8, 64, 0),
    )
    .unwrap();
    let misuse = |mode: u32| {
        let mut p = params();
        p.mode = mode;
        p.map = map;
        p.bytes = 8 * 64 * 2;
        run(
            &*dev,
            "selftest_sm90_misuse",
            p,
            &[0u8; 16],
            128 * 4,
            MB_SELFTEST90_THREADS,
        )
    };
    for (mode, words) in [
        (0, "wgmma.fence"),
        (1, "multiple of 8"),
        (2, "deadlock"),
        (3, "TMA store"),
        (4, "never retired"),
        (7, "fence.mbarrier_init"),
    ] {
        match misuse(mode) {
            Err(e) => assert!(e.to_string().contains(words), "mode {mode}: {e}"),
            Ok(_) => panic!("mode {mode}: the emulator accepted a protocol error (expected `{words}`)"),
        }
    }
    // A multicast into peers with no cluster barrier after their mbarriers' inits: in either
    // thread order some destination has not started, or not initialised its barrier, when a copy
    // is issued.
    for reverse in [false, true] {
        set_order(&*dev, reverse);
        match run_multicast(&*dev, 4, 1, &[7u8; 1024], 1) {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("has not started") || e.contains("before mbarrier.init"),
                    "no cluster barrier: {e}"
                )
            }
            Ok(_) => panic!("a multicast before the cluster barrier was accepted"),
        }
    }
    set_order(&*dev, false);
    // Reads too early see NaN: the accumulators between issue and wait, a TMA box before its wait.
    let early = bytes_f32(&misuse(5).unwrap());
    assert!(
        early.iter().all(|v| v.is_nan()),
        "accumulators read in flight must be NaN"
    );
    let early = bytes_f32(&misuse(6).unwrap());
    assert!(early[0].is_nan(), "a TMA destination read before the wait must be NaN");
}
