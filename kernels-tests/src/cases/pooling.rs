//! cuda/pooling.cu: the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download_f32, poisoned, upload, upload_batch, upload_u32, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{PoolParams, MB_POOL_CLS};
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct PoolCase {
    pub seqlens: Vec<u32>,
    /// Leading tokens that count for the mean (None: all).
    pub key_lens: Option<Vec<u32>>,
    pub max_sequences: u32,
    pub hidden: u32,
    pub out_dim: u32,
    /// MB_POOL_* code.
    pub pooling: u32,
    pub normalize: bool,
}

pub fn cases() -> Vec<PoolCase> {
    let mut v = Vec::new();
    let mut i = 0u32;
    let mut batches: Vec<Vec<u32>> = super::SEQ_LENS.chunks(4).map(|c| c.to_vec()).collect();
    batches.extend(super::varlen_batches());
    for lens in batches {
        for pooling in [0u32, 1] {
            i += 1;
            let key_lens = (i.rem_euclid(3) == 0).then(|| lens.iter().map(|&l| (l * 3).div_ceil(4)).collect());
            let (hidden, out_dim) = match i % 4 {
                0 => (768, 768),
                1 => (768, 256), // Matryoshka truncation
                2 => (100, 60),  // scalar path
                _ => (1024, 1024),
            };
            v.push(PoolCase {
                max_sequences: lens.len() as u32 + i % 2,
                seqlens: lens.clone(),
                key_lens,
                hidden,
                out_dim,
                pooling,
                normalize: i % 2 == 1,
            });
        }
    }
    v
}

impl PoolCase {
    pub fn tokens(&self) -> usize {
        self.seqlens.iter().map(|&l| l as usize).sum()
    }
}

/// A case on a device: `hidden` `[tokens, hidden]` in; the output is f32
/// `[max_sequences, out_dim]`.
pub struct PoolRun {
    pub case: PoolCase,
    pub dt: Dtype,
    pub hidden: Vec<f32>,
    pub cu_seqlens: Vec<u32>,
    pub params: PoolParams,
    d_out: DeviceBuffer,
    _inputs: [Option<DeviceBuffer>; 4],
}

impl PoolRun {
    pub fn new(dev: &dyn Device, case: &PoolCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let cu_seqlens = super::cu_seqlens(&case.seqlens);
        let t = case.tokens();
        let (h, od, ms) = (case.hidden as usize, case.out_dim as usize, case.max_sequences as usize);
        let hidden = inputs.normal(t * h, 0.3, 1.0);
        let d_hidden = upload(dev, dt, &hidden, "hidden");
        let d_out = poisoned(dev, ms * od * 4, "out");
        let d_cu = upload_u32(dev, &cu_seqlens, "cu_seqlens");
        let d_kl = case.key_lens.as_ref().map(|k| upload_u32(dev, k, "key_lens"));
        let max_len = *case.seqlens.iter().max().unwrap_or(&1);
        let d_batch = upload_batch(dev, t as u32, case.seqlens.len() as u32, max_len);
        let params = PoolParams {
            hidden: d_hidden.addr(),
            out: d_out.addr(),
            cu_seqlens: d_cu.addr(),
            key_lens: d_kl.as_ref().map_or(0, |b| b.addr()),
            batch: d_batch.addr(),
            max_sequences: case.max_sequences,
            hidden_dim: case.hidden,
            out_dim: case.out_dim,
            pooling: case.pooling,
            normalize: case.normalize as u32,
            _pad0: 0,
        };
        PoolRun {
            case: case.clone(),
            dt,
            hidden,
            cu_seqlens,
            params,
            d_out,
            _inputs: [Some(d_hidden), Some(d_cu), d_kl, Some(d_batch)],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::pool(dev, self.dt, &self.params)
    }
    /// `out` (f32), `[max_sequences, out_dim]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download_f32(dev, &self.d_out)
    }
}

impl Prepared for PoolRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        let how = if c.pooling == MB_POOL_CLS { "cls" } else { "mean" };
        format!(
            "t{}_s{}_h{}_d{}_{how}",
            c.tokens(),
            c.seqlens.len(),
            c.hidden,
            c.out_dim
        )
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["pool"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        PoolRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // The kept columns of the rows pooled (one per sequence for CLS), one f32 vector written.
        let c = &self.case;
        let (n, od) = (c.seqlens.len(), c.out_dim as usize);
        let rows = if c.pooling == MB_POOL_CLS { n } else { c.tokens() };
        (rows * od * E + n * od * 4) as f64
    }
}
