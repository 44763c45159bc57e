//! cuda/mlm_head.cu (head_act_norm): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_batch, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::HeadActNormParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct HeadCase {
    pub tokens: u32,
    pub capacity: u32,
    pub hidden: u32,
    pub dense_bias: bool,
    pub norm_bias: bool,
    pub activation: u32,
}

pub fn cases() -> Vec<HeadCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let hidden = if t >= 1000 { 64 } else { 768 };
        v.push(HeadCase {
            tokens: t,
            capacity: t + (i as u32 % 2),
            hidden,
            dense_bias: i % 2 == 0,
            norm_bias: i % 3 == 0,
            activation: (i % 4) as u32, // every MB_ACT_* code
        });
    }
    v.push(HeadCase {
        tokens: 65,
        capacity: 65,
        hidden: 100,
        dense_bias: true,
        norm_bias: true,
        activation: 0,
    });
    v
}

/// A case on a device: `x` `[capacity, hidden]`, `dense_bias`, `weight`, `bias` `[hidden]`, out in
/// the dtype.
pub struct HeadRun {
    pub case: HeadCase,
    pub dt: Dtype,
    pub x: Vec<f32>,
    pub dense_bias: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub head: HeadActNormParams,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 5],
}

impl HeadRun {
    pub fn new(dev: &dyn Device, case: &HeadCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (cap, h) = (case.capacity as usize, case.hidden as usize);
        let x = inputs.normal(cap * h, 0.0, 1.5);
        let dense_bias = inputs.normal(h, 0.0, 0.5);
        let weight = inputs.normal(h, 1.0, 0.2);
        let bias = inputs.normal(h, 0.0, 0.2);
        let d_x = upload(dev, dt, &x, "x");
        let d_db = upload(dev, dt, &dense_bias, "dense_bias");
        let d_w = upload(dev, dt, &weight, "weight");
        let d_b = upload(dev, dt, &bias, "bias");
        let d_out = poisoned(dev, cap * h * E, "out");
        let d_batch = upload_batch(dev, case.tokens, 1, case.tokens);
        let head = HeadActNormParams {
            x: d_x.addr(),
            dense_bias: if case.dense_bias { d_db.addr() } else { 0 },
            weight: d_w.addr(),
            bias: if case.norm_bias { d_b.addr() } else { 0 },
            out: d_out.addr(),
            batch: d_batch.addr(),
            max_tokens: case.capacity,
            hidden: case.hidden,
            activation: case.activation,
            eps: 1e-5,
        };
        HeadRun {
            case: case.clone(),
            dt,
            x,
            dense_bias,
            weight,
            bias,
            head,
            d_out,
            _inputs: [d_x, d_db, d_w, d_b, d_batch],
        }
    }
    pub fn launch_head(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::head_act_norm(dev, self.dt, &self.head)
    }
    /// head_act_norm's `out`, `[capacity, hidden]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
}

impl Prepared for HeadRun {
    fn name(&self, _kernel: usize) -> String {
        format!("t{}_h{}", self.case.tokens, self.case.hidden)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["head_act_norm"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        self.launch_head(dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Rows in use read and written in the dtype.
        (self.case.tokens as usize * self.case.hidden as usize * E * 2) as f64
    }
}
