//! cuda/geglu.cu: the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_batch, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::GegluParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct GegluCase {
    pub tokens: u32,
    pub capacity: u32,
    pub inter: u32,
    /// MB_ACT_* code.
    pub activation: u32,
}

pub fn cases() -> Vec<GegluCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let inter = if t >= 1000 { 64 } else { 1152 }; // 1152: ModernBERT-base's intermediate size
        v.push(GegluCase {
            tokens: t,
            capacity: t + (i as u32 % 3),
            inter,
            activation: (i % 4) as u32, // every MB_ACT_* code
        });
    }
    v.push(GegluCase {
        tokens: 129,
        capacity: 130,
        inter: 100,
        activation: 0,
    }); // scalar path
    v.push(GegluCase {
        tokens: 3,
        capacity: 3,
        inter: 1,
        activation: 0,
    });
    v
}

/// A case on a device: `h` `[capacity, 2 * inter]` (activation input, then gate).
pub struct GegluRun {
    pub case: GegluCase,
    pub dt: Dtype,
    pub h: Vec<f32>,
    pub params: GegluParams,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 2],
}

impl GegluRun {
    pub fn new(dev: &dyn Device, case: &GegluCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (cap, i) = (case.capacity as usize, case.inter as usize);
        let h = inputs.normal(cap * 2 * i, 0.0, 2.0);
        let d_h = upload(dev, dt, &h, "h");
        let d_out = poisoned(dev, cap * i * E, "out");
        let d_batch = upload_batch(dev, case.tokens, 1, case.tokens);
        let params = GegluParams {
            h: d_h.addr(),
            out: d_out.addr(),
            batch: d_batch.addr(),
            max_tokens: case.capacity,
            inter: case.inter,
            activation: case.activation,
            _pad0: 0,
        };
        GegluRun {
            case: case.clone(),
            dt,
            h,
            params,
            d_out,
            _inputs: [d_h, d_batch],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::geglu(dev, self.dt, &self.params)
    }
    /// `out`, `[capacity, inter]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
}

impl Prepared for GegluRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        format!("t{}_i{}_act{}", c.tokens, c.inter, c.activation)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["geglu"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        GegluRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Rows in use: 2 * inter read, inter written.
        (self.case.tokens as usize * 3 * self.case.inter as usize * E) as f64
    }
}
