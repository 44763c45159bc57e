//! cuda/gather.cu (gather_rows): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_u32, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::GatherRowsParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct GatherCase {
    /// Rows of `x`.
    pub tokens: u32,
    pub width: u32,
    /// The gathered row indices (repeats allowed, any order).
    pub rows: Vec<u32>,
}

pub fn cases() -> Vec<GatherCase> {
    let spread = |n: u32, tokens: u32| (0..n).map(|r| (r * 7919 + r / 3) % tokens).collect::<Vec<u32>>();
    vec![
        GatherCase {
            tokens: 1,
            width: 768,
            rows: vec![0],
        },
        GatherCase {
            tokens: 64,
            width: 128,
            rows: vec![63, 0, 5, 5, 62],
        },
        GatherCase {
            tokens: 300,
            width: 768,
            rows: spread(128, 300),
        },
        GatherCase {
            tokens: 1000,
            width: 1024,
            rows: spread(257, 1000),
        },
        GatherCase {
            tokens: 65,
            width: 100,
            rows: spread(33, 65),
        }, // scalar path
        GatherCase {
            tokens: 9,
            width: 1,
            rows: vec![8, 1, 2],
        },
    ]
}

/// A case on a device: `x` `[tokens, width]`, out `[rows + 1, width]` (the extra row must stay
/// poisoned).
pub struct GatherRun {
    pub case: GatherCase,
    pub dt: Dtype,
    pub x: Vec<f32>,
    pub params: GatherRowsParams,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 2],
}

impl GatherRun {
    pub fn new(dev: &dyn Device, case: &GatherCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (t, w, n) = (case.tokens as usize, case.width as usize, case.rows.len());
        let x = inputs.normal(t * w, 0.0, 1.0);
        let d_x = upload(dev, dt, &x, "x");
        let d_rows = upload_u32(dev, &case.rows, "rows");
        let d_out = poisoned(dev, (n + 1) * w * E, "out");
        let params = GatherRowsParams {
            x: d_x.addr(),
            rows: d_rows.addr(),
            out: d_out.addr(),
            n_rows: n as u32,
            width: case.width,
        };
        GatherRun {
            case: case.clone(),
            dt,
            x,
            params,
            d_out,
            _inputs: [d_x, d_rows],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::gather_rows(dev, self.dt, &self.params)
    }
    /// `out`, `[rows + 1, width]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
}

impl Prepared for GatherRun {
    fn name(&self, _kernel: usize) -> String {
        format!("r{}_w{}", self.case.rows.len(), self.case.width)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["gather_rows"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        GatherRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Each gathered row read and written, plus its index.
        (self.case.rows.len() * (self.case.width as usize * E * 2 + 4)) as f64
    }
}
