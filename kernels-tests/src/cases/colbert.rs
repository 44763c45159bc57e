//! cuda/colbert.cu: the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download_f32, poisoned, upload, upload_batch, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::RowNormalizeParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct ColbertCase {
    pub rows: u32,
    pub capacity: u32,
    pub dim: u32,
}

pub fn cases() -> Vec<ColbertCase> {
    let mut v: Vec<ColbertCase> = super::SEQ_LENS
        .iter()
        .enumerate()
        .map(|(i, &r)| ColbertCase {
            rows: r,
            capacity: r + (i as u32 % 3),
            dim: [128, 96, 1024, 2056][i % 4],
        })
        .collect();
    v.push(ColbertCase {
        rows: 130,
        capacity: 131,
        dim: 100,
    }); // scalar path
    v.push(ColbertCase {
        rows: 5,
        capacity: 5,
        dim: 1,
    });
    v
}

/// A case on a device: `x` `[capacity, dim]`; the output is f32.
pub struct ColbertRun {
    pub case: ColbertCase,
    pub dt: Dtype,
    pub x: Vec<f32>,
    pub params: RowNormalizeParams,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 2],
}

impl ColbertRun {
    pub fn new(dev: &dyn Device, case: &ColbertCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (cap, d) = (case.capacity as usize, case.dim as usize);
        let x = inputs.normal(cap * d, 0.0, 1.0);
        let d_x = upload(dev, dt, &x, "x");
        let d_out = poisoned(dev, cap * d * 4, "out");
        let d_batch = upload_batch(dev, case.rows, 1, case.rows);
        let params = RowNormalizeParams {
            x: d_x.addr(),
            out: d_out.addr(),
            batch: d_batch.addr(),
            max_rows: case.capacity,
            dim: case.dim,
        };
        ColbertRun {
            case: case.clone(),
            dt,
            x,
            params,
            d_out,
            _inputs: [d_x, d_batch],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::colbert_normalize(dev, self.dt, &self.params)
    }
    /// `out` (f32), `[capacity, dim]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download_f32(dev, &self.d_out)
    }
}

impl Prepared for ColbertRun {
    fn name(&self, _kernel: usize) -> String {
        format!("r{}_d{}", self.case.rows, self.case.dim)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["colbert_normalize"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        ColbertRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Rows in use: read in the dtype, written in f32.
        (self.case.rows as usize * self.case.dim as usize * (E + 4)) as f64
    }
}
