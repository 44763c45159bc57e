//! Cases for cuda/attention.cu, shared by the kernel tests (kernels-tests/tests/attention.rs) and the
//! microbenchmarks. A case is a packed varlen batch (sequence lengths, optional key lengths), a head
//! count, a window, and grid capacities that may exceed the batch (as a CUDA graph bucket would).
//! The element type is chosen by the caller (every case runs in bf16 and fp16 unless `dtypes` says
//! otherwise).

use super::{Inputs, Prepared, E};
use crate::{download, poison, upload, upload_batch, upload_u32, DeviceBuffer};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{AttentionParams, MB_ATTENTION_HEAD_DIM};
use modernbert::kernels::{ops, Dtype, KernelError};

/// ModernBERT's local layers: `local_attention = 128`, radius 64.
pub const MODERNBERT_RADIUS: usize = 64;
/// The only head size the kernel supports.
pub const HEAD_DIM: usize = MB_ATTENTION_HEAD_DIM as usize;

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
        }
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

/// A case on a device: `qkv` `[tokens, 3, heads, HEAD_DIM]` uniform in [-2, 2) (scores of std ~1.3:
/// peaked but not one-hot softmax rows), `out` `[tokens, heads * HEAD_DIM]` poisoned.
pub struct AttentionRun {
    pub case: AttentionCase,
    pub dt: Dtype,
    pub qkv: Vec<f32>,
    pub cu_seqlens: Vec<u32>,
    pub params: AttentionParams,
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
        let d_qkv = upload(dev, dt, &qkv, "qkv");
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
            d_out,
            inputs: [Some(d_qkv), Some(d_cu), d_kl, Some(d_batch)],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::attention(dev, self.dt, &self.params, false)
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
        &["attention"]
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
