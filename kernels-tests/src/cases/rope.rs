//! cuda/rope.cu: a packed batch (sequence lengths), heads, head_dim, theta; the case table and one
//! case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, upload, upload_batch, upload_u32, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{RopeParams, MB_ROPE_MAX_HEAD_DIM};
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct RopeCase {
    pub seqlens: Vec<u32>,
    /// Rows of capacity (>= the batch's tokens; the extra rows must stay untouched).
    pub capacity: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub theta: f32,
}

pub fn cases() -> Vec<RopeCase> {
    let mut v = Vec::new();
    let c = |seqlens: Vec<u32>, heads, head_dim, theta| {
        let t: u32 = seqlens.iter().sum();
        RopeCase {
            seqlens,
            capacity: t + 5,
            heads,
            head_dim,
            theta,
        }
    };
    // Every single length (one sequence each), global theta 160k and local 10k alternating.
    for (i, &l) in super::SEQ_LENS.iter().enumerate() {
        let theta = if i % 2 == 0 { 160_000.0 } else { 10_000.0 };
        v.push(c(vec![l], if l > 1000 { 1 } else { 3 }, 64, theta));
    }
    for lens in super::varlen_batches() {
        v.push(c(lens, 2, 64, 160_000.0));
    }
    v.push(c(vec![3, 129, 64], 2, 24, 10_000.0)); // head_dim % 16 != 0: scalar path
    v.push(c(vec![65, 2], 1, 2, 10_000.0));
    v.push(c(vec![7, 70], 2, MB_ROPE_MAX_HEAD_DIM, 10_000.0)); // the largest head_dim the shared angle table holds
    v
}

impl RopeCase {
    pub fn tokens(&self) -> usize {
        self.seqlens.iter().map(|&l| l as usize).sum()
    }
    /// Elements of one token's row of qkv: `3 * heads * head_dim`.
    pub fn row(&self) -> usize {
        3 * self.heads as usize * self.head_dim as usize
    }
}

/// A case on a device: `qkv` `[capacity, 3, heads, head_dim]`, rotated in place; on the device
/// the rows past the batch are poisoned with NaN (they must stay so), on the host they hold the
/// drawn values.
pub struct RopeRun {
    pub case: RopeCase,
    pub dt: Dtype,
    pub qkv: Vec<f32>,
    pub cu_seqlens: Vec<u32>,
    pub params: RopeParams,
    d_qkv: DeviceBuffer,
    _inputs: [DeviceBuffer; 2],
}

impl RopeRun {
    pub fn new(dev: &dyn Device, case: &RopeCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let cu_seqlens = super::cu_seqlens(&case.seqlens);
        let (t, row, cap) = (case.tokens(), case.row(), case.capacity as usize);
        let qkv = inputs.normal(cap * row, 0.0, 1.0);
        let mut d_qkv = upload(dev, dt, &qkv, "qkv");
        dev.upload(&mut d_qkv, t * row * E, &vec![0xFF; (cap - t) * row * E])
            .expect("poison the rows past the batch");
        let d_cu = upload_u32(dev, &cu_seqlens, "cu_seqlens");
        let max_len = *case.seqlens.iter().max().unwrap_or(&1);
        let d_batch = upload_batch(dev, t as u32, case.seqlens.len() as u32, max_len);
        let params = RopeParams {
            qkv: d_qkv.addr(),
            cu_seqlens: d_cu.addr(),
            batch: d_batch.addr(),
            max_tokens: case.capacity,
            heads: case.heads,
            head_dim: case.head_dim,
            theta: case.theta,
        };
        RopeRun {
            case: case.clone(),
            dt,
            qkv,
            cu_seqlens,
            params,
            d_qkv,
            _inputs: [d_cu, d_batch],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::rope(dev, self.dt, &self.params)
    }
    /// `qkv` after the launch, `[capacity, 3, heads, head_dim]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_qkv)
    }
}

impl Prepared for RopeRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        format!("t{}_s{}_heads{}_hd{}", c.tokens(), c.seqlens.len(), c.heads, c.head_dim)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["rope"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        RopeRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Q and K of the rows in use, read and written; V is not touched.
        let c = &self.case;
        (c.tokens() * 2 * c.heads as usize * c.head_dim as usize * E * 2) as f64
    }
}
