//! cuda/layernorm.cu (residual add + LayerNorm): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_batch, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{LayerNormParams, MB_MAX_NORM_WIDTH};
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct LayerNormCase {
    /// Rows in use (BatchDesc.tokens).
    pub tokens: u32,
    /// Rows of capacity (grid size; rows past `tokens` must stay untouched).
    pub capacity: u32,
    pub hidden: u32,
    /// Fused residual add.
    pub residual: bool,
    pub bias: bool,
}

pub fn cases() -> Vec<LayerNormCase> {
    let mut v = Vec::new();
    let c = |tokens, capacity, hidden, residual, bias| LayerNormCase {
        tokens,
        capacity,
        hidden,
        residual,
        bias,
    };
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        // hidden 768 (ModernBERT-base, 16-byte vectors); alternate the fused add and the bias.
        let hidden = if t == 8192 { 256 } else { 768 };
        v.push(c(t, t, hidden, i % 2 == 0, i % 3 == 0));
    }
    for lens in super::varlen_batches() {
        let t: u32 = lens.iter().sum();
        if t < 4000 {
            v.push(c(t, t + 37, 1024, true, false)); // capacity > tokens: the extra rows are left alone
        }
    }
    // Rows that do not allow 16-byte vectors (scalar path), odd sizes, the maximum width.
    v.push(c(130, 130, 100, true, true));
    v.push(c(65, 70, 1, false, false));
    v.push(c(33, 33, MB_MAX_NORM_WIDTH, true, true));
    v.push(c(7, 7, MB_MAX_NORM_WIDTH / 2 - 8, false, true));
    v.push(c(9, 9, MB_MAX_NORM_WIDTH - 2, true, false));
    v
}

/// A case on a device. Host inputs cover the whole capacity: `residual`, `delta` are
/// `[capacity, hidden]`; `weight`, `bias` are `[hidden]`.
pub struct LayerNormRun {
    pub case: LayerNormCase,
    pub dt: Dtype,
    pub residual: Vec<f32>,
    pub delta: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub params: LayerNormParams,
    d_residual: DeviceBuffer,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 4],
}

impl LayerNormRun {
    pub fn new(dev: &dyn Device, case: &LayerNormCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (cap, h) = (case.capacity as usize, case.hidden as usize);
        let residual = inputs.normal(cap * h, 0.5, 2.0);
        let delta = inputs.normal(cap * h, 0.0, 1.0);
        let weight = inputs.normal(h, 1.0, 0.3);
        let bias = inputs.normal(h, 0.0, 0.5);
        let d_residual = upload(dev, dt, &residual, "residual");
        let d_delta = upload(dev, dt, &delta, "delta");
        let d_w = upload(dev, dt, &weight, "weight");
        let d_b = upload(dev, dt, &bias, "bias");
        let d_out = poisoned(dev, cap * h * E, "out");
        let d_batch = upload_batch(dev, case.tokens, 1, case.tokens);
        let params = LayerNormParams {
            residual: d_residual.addr(),
            delta: if case.residual { d_delta.addr() } else { 0 },
            weight: d_w.addr(),
            bias: if case.bias { d_b.addr() } else { 0 },
            out: d_out.addr(),
            batch: d_batch.addr(),
            max_tokens: case.capacity,
            hidden: case.hidden,
            eps: 1e-5,
            _pad0: 0,
        };
        LayerNormRun {
            case: case.clone(),
            dt,
            residual,
            delta,
            weight,
            bias,
            params,
            d_residual,
            d_out,
            _inputs: [d_delta, d_w, d_b, d_batch],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::layernorm(dev, self.dt, &self.params)
    }
    /// `out`, `[capacity, hidden]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
    /// The residual stream after the launch (updated in place by the fused add).
    pub fn residual_out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_residual)
    }
}

impl Prepared for LayerNormRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        format!(
            "t{}_h{}{}{}",
            c.tokens,
            c.hidden,
            if c.residual { "_res" } else { "" },
            if c.bias { "_bias" } else { "" }
        )
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["layernorm"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        LayerNormRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Rows in use: x read and out written, plus delta read and x written back when fused.
        let rows = if self.case.residual { 4 } else { 2 };
        (self.case.tokens as usize * self.case.hidden as usize * E * rows) as f64
    }
}
