//! Cases for cuda/attention.cu and cuda/attention_sm90.cu (one contract, two kernels), shared by
//! the kernel tests (kernels-tests/tests/attention.rs, attention_sm90.rs) and the microbenchmarks.
//! A case is a packed varlen batch (sequence lengths, optional key lengths), a head count, a
//! window, grid capacities that may exceed the batch (as a CUDA graph bucket would), rows of qkv
//! past the batch holding NaN (stale rows of a larger earlier batch: no kernel may let them reach
//! an output), and the kernel it runs on. The element type is chosen by the caller (every case
//! runs in bf16 and fp16 unless `dtypes` says otherwise). [`check_case`] is the test of one case:
//! the kernel against the f32 reference under the tolerance rule, the naive same-precision
//! computation as its yardstick.

use std::time::Instant;

use super::{Inputs, Prepared, E};
use crate::{check, download, poison, round, set_order, upload_batch, upload_u32, DeviceBuffer, Rng};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{AttentionParams, MB_ATTENTION_HEAD_DIM};
use modernbert::kernels::{attention_sm90, ops, Dtype, KernelError};
use modernbert::reference::ops::{attention as reference_attention, AttentionWindow};

/// ModernBERT's local layers: `local_attention = 128`, radius 64.
pub const MODERNBERT_RADIUS: usize = 64;
/// The only head size the kernel supports.
pub const HEAD_DIM: usize = MB_ATTENTION_HEAD_DIM as usize;

/// Which kernel runs a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// cuda/attention.cu (mma.sync, every arch).
    Sm80,
    /// cuda/attention_sm90.cu (wgmma and TMA, sm_90a).
    Sm90,
}

#[derive(Clone, Debug)]
pub struct AttentionCase {
    pub name: String,
    pub seqlens: Vec<u32>,
    /// Leading tokens of each sequence that are keys (`None`: all of them).
    pub key_lens: Option<Vec<u32>>,
    pub heads: usize,
    /// `None`: global; `Some(r)`: keys with |i - j| <= r.
    pub radius: Option<usize>,
    /// Grid capacities (>= the batch's real counts: the extra blocks must exit early).
    pub max_seqlen: usize,
    pub max_sequences: usize,
    /// Element types this case runs in.
    pub dtypes: &'static [Dtype],
    /// Rows of the qkv buffer past the batch's tokens, all NaN.
    pub stale_rows: usize,
    pub kernel: AttentionKernel,
}

const BOTH: &[Dtype] = &[Dtype::Bf16, Dtype::F16];

impl AttentionCase {
    pub fn new(name: &str, seqlens: &[u32], heads: usize, radius: Option<usize>) -> Self {
        let max = *seqlens.iter().max().unwrap_or(&1) as usize;
        Self {
            name: name.to_string(),
            seqlens: seqlens.to_vec(),
            key_lens: None,
            heads,
            radius,
            max_seqlen: max,
            max_sequences: seqlens.len(),
            dtypes: BOTH,
            stale_rows: 0,
            kernel: AttentionKernel::Sm80,
        }
    }
    /// The same case on `kernel`.
    pub fn on(mut self, kernel: AttentionKernel) -> Self {
        self.kernel = kernel;
        self
    }
    /// `rows` NaN rows of qkv after the batch's.
    fn stale_rows(mut self, rows: usize) -> Self {
        self.stale_rows = rows;
        self
    }
    fn key_lens(mut self, k: &[u32]) -> Self {
        assert_eq!(k.len(), self.seqlens.len());
        self.key_lens = Some(k.to_vec());
        self
    }
    /// Grid capacities larger than the batch (graph-bucket style).
    fn capacity(mut self, max_seqlen: usize, max_sequences: usize) -> Self {
        self.max_seqlen = max_seqlen;
        self.max_sequences = max_sequences;
        self
    }
    fn dtypes(mut self, d: &'static [Dtype]) -> Self {
        self.dtypes = d;
        self
    }
    pub fn tokens(&self) -> usize {
        self.seqlens.iter().map(|&l| l as usize).sum()
    }
    pub fn cu_seqlens(&self) -> Vec<u32> {
        let mut cu = vec![0u32];
        for &l in &self.seqlens {
            cu.push(cu.last().unwrap() + l);
        }
        cu
    }
    /// Useful FLOPs (QK^T and PV, 2 per MAC) of the batch, for the benchmarks.
    pub fn flops(&self) -> f64 {
        let mut macs = 0f64;
        for (b, &len) in self.seqlens.iter().enumerate() {
            let len = len as usize;
            let n_keys = self.key_lens.as_ref().map_or(len, |k| (k[b] as usize).min(len));
            for i in 0..len {
                let (lo, hi) = match self.radius {
                    None => (0, n_keys),
                    Some(r) => (i.saturating_sub(r), (i + r + 1).min(n_keys)),
                };
                macs += hi.saturating_sub(lo) as f64 * 2.0 * HEAD_DIM as f64;
            }
        }
        2.0 * macs * self.heads as f64
    }
}

/// Every sequence length the issue asks for.
pub const EDGE_LENGTHS: &[u32] = &[1, 2, 63, 64, 65, 127, 128, 129, 130, 255, 257, 1000];

/// The test cases (the 8192-token ones are listed by [`long_cases`]: they dominate emulator time).
pub fn cases() -> Vec<AttentionCase> {
    let r = MODERNBERT_RADIUS;
    let mut v = Vec::new();
    for &len in EDGE_LENGTHS {
        let heads = if len >= 1000 { 2 } else { 3 };
        v.push(AttentionCase::new(&format!("global_len{len}"), &[len], heads, None));
        v.push(AttentionCase::new(&format!("local64_len{len}"), &[len], heads, Some(r)));
    }
    let mix1: &[u32] = &[1, 64, 130, 2, 257, 63];
    let mix2: &[u32] = &[1000, 129, 65, 1, 128, 127, 255];
    v.push(AttentionCase::new("global_varlen_a", mix1, 2, None).capacity(320, 8));
    v.push(AttentionCase::new("local64_varlen_a", mix1, 2, Some(r)).capacity(320, 8));
    v.push(AttentionCase::new("global_varlen_b", mix2, 2, None));
    v.push(AttentionCase::new("local64_varlen_b", mix2, 2, Some(r)).capacity(1024, 9));
    v.push(AttentionCase::new("local8_varlen_a", mix1, 2, Some(8)));
    v.push(AttentionCase::new("local8_varlen_b", mix2, 2, Some(8)));
    v.push(AttentionCase::new("local0_varlen_a", mix1, 1, Some(0)));
    // Radius >= the sequence: the same as global.
    v.push(AttentionCase::new("local300_varlen_a", mix1, 1, Some(300)));
    // key_lens < length: padded keys are skipped; a sequence with no key at all outputs zeros; with a
    // window, queries far past the last key have no visible key (zeros, never NaN).
    v.push(AttentionCase::new("global_keylens_a", mix1, 2, None).key_lens(&[1, 40, 100, 0, 200, 63]));
    v.push(AttentionCase::new("local64_keylens_b", mix2, 2, Some(r)).key_lens(&[700, 129, 3, 1, 64, 100, 250]));
    v.push(AttentionCase::new("local8_keylens_a", mix1, 2, Some(8)).key_lens(&[1, 5, 129, 2, 190, 0]));
    // NaN rows after the batch (a graph bucket's stale tail): the last sequence's tiles reach them.
    v.push(AttentionCase::new("global_stale_tail", &[64, 130], 2, None).stale_rows(300));
    v.push(AttentionCase::new("local64_stale_tail", &[200, 65], 2, Some(r)).stale_rows(300));
    v
}

/// The 8192-token cases: one head, one case per element type (global bf16, global fp16 would double
/// the emulator time; the fp16 long case is a local layer, cheap).
pub fn long_cases() -> Vec<AttentionCase> {
    vec![
        AttentionCase::new("global_len8192", &[8192], 1, None).dtypes(&[Dtype::Bf16]),
        AttentionCase::new("local64_len8192", &[8192], 1, Some(MODERNBERT_RADIUS)).dtypes(&[Dtype::F16]),
    ]
}

/// The benchmarks' ModernBERT-base launches: the paper's short (128 x 512) and long (8 x 8192)
/// batches, 12 heads, global and a ±64 window.
pub fn model_cases() -> Vec<AttentionCase> {
    vec![
        AttentionCase::new("global_128x512", &[512; 128], 12, None),
        AttentionCase::new("local64_128x512", &[512; 128], 12, Some(MODERNBERT_RADIUS)),
        AttentionCase::new("global_8x8192", &[8192; 8], 12, None),
        AttentionCase::new("local64_8x8192", &[8192; 8], 12, Some(MODERNBERT_RADIUS)),
    ]
}

/// A case on a device: `qkv` `[tokens, 3, heads, HEAD_DIM]` uniform in [-2, 2) (scores of std ~1.3:
/// peaked but not one-hot softmax rows), then `stale_rows` rows of NaN; `out`
/// `[tokens, heads * HEAD_DIM]` poisoned.
pub struct AttentionRun {
    pub case: AttentionCase,
    pub dt: Dtype,
    pub qkv: Vec<f32>,
    pub cu_seqlens: Vec<u32>,
    pub params: AttentionParams,
    /// Rows of the qkv buffer (the batch's and the stale ones).
    pub qkv_rows: u32,
    d_out: DeviceBuffer,
    /// The params' buffers, alive as long as the run: qkv, cu_seqlens, key_lens (if any), batch.
    inputs: [Option<DeviceBuffer>; 4],
}

impl AttentionRun {
    pub fn new(dev: &dyn Device, case: &AttentionCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let tokens = case.tokens();
        let hidden = case.heads * HEAD_DIM;
        let qkv = inputs.uniform(tokens * 3 * hidden, -2.0, 2.0);
        let cu_seqlens = case.cu_seqlens();
        let mut stored = qkv.clone();
        stored.resize((tokens + case.stale_rows) * 3 * hidden, f32::NAN);
        let d_qkv = crate::upload(dev, dt, &stored, "qkv");
        let d_cu = upload_u32(dev, &cu_seqlens, "cu_seqlens");
        let d_kl = case.key_lens.as_ref().map(|k| upload_u32(dev, k, "key_lens"));
        let max_len = *case.seqlens.iter().max().unwrap_or(&0);
        let d_batch = upload_batch(dev, tokens as u32, case.seqlens.len() as u32, max_len);
        let d_out = crate::poisoned(dev, (tokens * hidden * E).max(E), "out");
        let params = AttentionParams {
            qkv: d_qkv.addr(),
            out: d_out.addr(),
            cu_seqlens: d_cu.addr(),
            key_lens: d_kl.as_ref().map_or(0, |b| b.addr()),
            batch: d_batch.addr(),
            max_sequences: case.max_sequences as u32,
            max_seqlen: case.max_seqlen as u32,
            heads: case.heads as u32,
            head_dim: HEAD_DIM as u32,
            window_radius: case.radius.map_or(-1, |r| r as i32),
            softmax_scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        };
        AttentionRun {
            case: case.clone(),
            dt,
            qkv,
            cu_seqlens,
            params,
            qkv_rows: (tokens + case.stale_rows) as u32,
            d_out,
            inputs: [Some(d_qkv), Some(d_cu), d_kl, Some(d_batch)],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        match self.case.kernel {
            AttentionKernel::Sm80 => ops::attention(dev, self.dt, &self.params, false),
            AttentionKernel::Sm90 => attention_sm90::attention_sm90(dev, self.dt, &self.params, self.qkv_rows),
        }
    }
    /// Poison `out` again (before another launch of the same inputs).
    pub fn poison_out(&mut self, dev: &dyn Device) {
        poison(dev, &mut self.d_out);
    }
    /// Poison `qkv` (for a test whose launch before this one writes it).
    pub fn poison_qkv(&mut self, dev: &dyn Device) {
        poison(dev, self.inputs[0].as_mut().expect("qkv"));
    }
    /// `out`, `[tokens, heads * HEAD_DIM]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        let mut out = download(dev, self.dt, &self.d_out);
        out.truncate(self.case.tokens() * self.case.heads * HEAD_DIM);
        out
    }
}

impl Prepared for AttentionRun {
    fn name(&self, _kernel: usize) -> String {
        format!("{}_heads{}", self.case.name, self.case.heads)
    }
    fn kernels(&self) -> &'static [&'static str] {
        match self.case.kernel {
            AttentionKernel::Sm80 => &["attention"],
            AttentionKernel::Sm90 => &["attention_sm90"],
        }
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        AttentionRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Q, K and V read once, out written.
        (self.case.tokens() * self.case.heads * HEAD_DIM * E * 4) as f64
    }
    fn flops(&self, _kernel: usize) -> f64 {
        self.case.flops()
    }
}

// ---- the naive same-precision computation (the tolerance's yardstick) -----------------------------

/// What PyTorch does in bf16/fp16: S = Q K^T accumulated in f32, scaled and rounded to the element
/// type; softmax in f32 of the rounded scores, P rounded; O = P V accumulated in f32, rounded.
pub fn naive_attention(dt: Dtype, qkv: &[f32], case: &AttentionCase, out: &mut [f32]) {
    let heads = case.heads;
    let hidden = heads * HEAD_DIM;
    let cu = case.cu_seqlens();
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..case.seqlens.len())
        .flat_map(|b| (0..heads).map(move |h| (b, h)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results: Vec<Vec<(usize, usize, Vec<f32>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let tasks = &tasks;
                let cu = &cu;
                sc.spawn(move || {
                    let mut res = Vec::new();
                    for &(b, h) in tasks.iter().skip(w).step_by(threads) {
                        let start = cu[b] as usize;
                        let len = cu[b + 1] as usize - start;
                        let n_keys = case.key_lens.as_ref().map_or(len, |k| (k[b] as usize).min(len));
                        let at = |t: usize, part: usize| {
                            &qkv[(start + t) * 3 * hidden + part * hidden + h * HEAD_DIM..][..HEAD_DIM]
                        };
                        let mut o = vec![0f32; len * HEAD_DIM];
                        let mut p = Vec::new();
                        for i in 0..len {
                            let (lo, hi) = match case.radius {
                                None => AttentionWindow::Global.key_range(i, n_keys),
                                Some(radius) => AttentionWindow::Local { radius }.key_range(i, n_keys),
                            };
                            let q = at(i, 0);
                            p.clear();
                            p.extend((lo..hi.max(lo)).map(|j| {
                                let s: f32 = q.iter().zip(at(j, 1)).map(|(a, b)| a * b).sum();
                                round(dt, s * scale)
                            }));
                            let mx = p.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let mut den = 0f32;
                            for s in p.iter_mut() {
                                *s = (*s - mx).exp();
                                den += *s;
                            }
                            for s in p.iter_mut() {
                                *s = round(dt, *s / den);
                            }
                            let row = &mut o[i * HEAD_DIM..][..HEAD_DIM];
                            for (j, &pj) in (lo..).zip(p.iter()) {
                                for (a, &v) in row.iter_mut().zip(at(j, 2)) {
                                    *a += pj * v;
                                }
                            }
                            for a in row.iter_mut() {
                                *a = round(dt, *a);
                            }
                        }
                        res.push((b, h, o));
                    }
                    res
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (b, h, o) in results.into_iter().flatten() {
        let start = cu[b] as usize;
        for (i, row) in o.chunks(HEAD_DIM).enumerate() {
            out[(start + i) * hidden + h * HEAD_DIM..][..HEAD_DIM].copy_from_slice(row);
        }
    }
}

// ---- one case, checked -------------------------------------------------------------------------------------

/// Runs `case` in `dt` on `dev` in each thread order (the emulator's forward and reverse, `orders`),
/// each launch on a freshly poisoned output: every output finite, and within the tolerance rule
/// (`crate::check`) of the f32 reference on the same rounded inputs, with [`naive_attention`] as
/// the yardstick. Returns the worst (kernel err, naive err).
pub fn check_case(
    dev: &dyn Device,
    rng: &mut Rng,
    case: &AttentionCase,
    dt: Dtype,
    orders: &[bool],
) -> Result<(f32, f32), String> {
    let tokens = case.tokens();
    let hidden = case.heads * HEAD_DIM;
    let mut run = AttentionRun::new(dev, case, &mut Inputs::drawn(rng, dt));

    let mut reference = vec![0f32; tokens * hidden];
    let window = case
        .radius
        .map_or(AttentionWindow::Global, |radius| AttentionWindow::Local { radius });
    reference_attention(
        &run.qkv,
        &run.cu_seqlens,
        case.key_lens.as_deref(),
        case.heads,
        HEAD_DIM,
        window,
        &mut reference,
    );
    let mut naive = vec![0f32; tokens * hidden];
    naive_attention(dt, &run.qkv, case, &mut naive);

    let e = |e: KernelError| format!("{} {dt:?}: {e}", case.name);
    let mut worst = (0f32, 0f32);
    for &reverse in orders {
        let order = set_order(dev, reverse);
        run.poison_out(dev);
        let t = Instant::now();
        run.launch(dev).map_err(e)?;
        dev.synchronize().map_err(e)?;
        let secs = t.elapsed().as_secs_f64();
        let out = run.out(dev);
        let what = format!("{} {dt:?} {order}", case.name);
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            let (t, c) = (i / hidden, i % hidden);
            return Err(format!(
                "{what}: output {} at token {t}, head {}, dim {} (unwritten, or NaN/inf)",
                out[i],
                c / HEAD_DIM,
                c % HEAD_DIM
            ));
        }
        let (ek, en) = check(&what, &out, &naive, &reference)?;
        eprintln!(
            "  {:<22} {dt:?} {order}: max err {ek:.3e}, naive {en:.3e} ({secs:.2}s)",
            case.name
        );
        worst = (worst.0.max(ek), en);
    }
    Ok(worst)
}

/// [`check_case`] for every case in each of its element types on `dev`, in both thread orders on
/// the emulator when `both_orders`; every failure reported, then the test fails. A Hopper case on
/// a GPU that is not sm_90 checks nothing and says so.
pub fn check_cases(dev: &dyn Device, test: &str, cases: &[AttentionCase], both_orders: bool) {
    let orders = if both_orders { crate::orders(dev) } else { vec![false] };
    let mut rng = Rng::for_test(test);
    eprintln!("[{test}] device {}", dev.name());
    if crate::is_gpu(dev)
        && cases.iter().any(|c| c.kernel == AttentionKernel::Sm90)
        && dev.compute_capability() != (9, 0)
    {
        eprintln!(
            "SKIPPED on {}: attention_sm90 is sm_90a code and this GPU is not compute capability 9.0",
            dev.name()
        );
        return;
    }
    let mut failures = crate::Failures::default();
    for case in cases {
        for &dt in case.dtypes {
            failures.push(check_case(dev, &mut rng, case, dt, &orders));
        }
    }
    failures.finish();
}
