//! Cases for cuda/attention.cu, shared by the kernel tests (kernels-tests/tests/attention.rs) and the
//! microbenchmarks. A case is a packed varlen batch (sequence lengths, optional key lengths), a head
//! count, a window, and grid capacities that may exceed the batch (as a CUDA graph bucket would).
//! The element type is chosen by the caller (every case runs in bf16 and fp16 unless `dtypes` says
//! otherwise).

use modernbert::kernels::device::Device;
use modernbert::kernels::params::AttentionParams;
use modernbert::kernels::{Dtype, KernelError};

/// ModernBERT's local layers: `local_attention = 128`, radius 64.
pub const MODERNBERT_RADIUS: usize = 64;
/// The only head size the kernel supports.
pub const HEAD_DIM: usize = 64;
/// Query rows per block (the grid's x dimension is `ceil(max_seqlen / BLOCK_M)`).
pub const BLOCK_M: usize = 64;
/// Threads per block.
pub const THREADS: u32 = 128;

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
    fn new(name: &str, seqlens: &[u32], heads: usize, radius: Option<usize>) -> Self {
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
    /// Launch geometry of cuda/attention.cu: (grid, block). Shared memory is static (40 KiB).
    pub fn grid(&self) -> ([u32; 3], [u32; 3]) {
        attention_grid(self.max_seqlen, self.heads, self.max_sequences)
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

/// Grid and block of cuda/attention.cu for the given capacities.
pub fn attention_grid(max_seqlen: usize, heads: usize, max_sequences: usize) -> ([u32; 3], [u32; 3]) {
    let x = max_seqlen.div_ceil(BLOCK_M).max(1);
    ([x as u32, heads as u32, max_sequences as u32], [THREADS, 1, 1])
}

fn unsupported(kernel: &str, message: String) -> KernelError {
    KernelError::Unsupported {
        kernel: kernel.to_string(),
        message,
    }
}

/// The typed launcher of cuda/attention.cu (`attention_bf16` / `attention_f16`): checks what the kernel
/// cannot (head_dim 64 only — the kernel would silently write nothing —, grid limits, 16-byte
/// alignment of qkv and out for cp.async and the 16-byte stores), then launches with the graph-friendly
/// geometry (capacities only; the real counts are read from `p.batch` on the device).
/// (Belongs in src/kernels/ops.rs next to the other launchers; kept here until that file takes it.)
pub fn launch_attention(dev: &dyn Device, dt: Dtype, p: &AttentionParams) -> Result<(), KernelError> {
    let name = format!("attention{}", dt.suffix());
    if p.head_dim as usize != HEAD_DIM {
        return Err(unsupported(
            &name,
            format!("head_dim {} (the kernel supports 64 only)", p.head_dim),
        ));
    }
    if p.heads == 0 || p.heads > 65535 {
        return Err(unsupported(&name, format!("heads {} (1..=65535)", p.heads)));
    }
    if p.max_sequences > 65535 {
        return Err(unsupported(
            &name,
            format!("max_sequences {} (<= 65535, the grid's z limit)", p.max_sequences),
        ));
    }
    if p.qkv % 16 != 0 || p.out % 16 != 0 {
        return Err(unsupported(&name, "qkv and out must be 16-byte aligned".to_string()));
    }
    if !(p.softmax_scale.is_finite() && p.softmax_scale > 0.0) {
        return Err(unsupported(&name, format!("softmax_scale {}", p.softmax_scale)));
    }
    if p.max_seqlen == 0 || p.max_sequences == 0 {
        return Ok(());
    }
    let (grid, block) = attention_grid(p.max_seqlen as usize, p.heads as usize, p.max_sequences as usize);
    dev.launch(&name, grid, block, 0, p)
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
