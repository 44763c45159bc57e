//! cuda/gemm_sm90.cu (sm_90a): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::ops::{self, GemmSm90};
use modernbert::kernels::params::GemmSm90Params;
use modernbert::kernels::KernelError;

#[derive(Clone, Copy, Debug)]
pub struct GemmSm90Case {
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

/// Tile edges (M of 1, 64, 130: partial row tiles, which TMA fills and clips), several k-blocks
/// (more than the 4 stages, so every stage is refilled), and the ModernBERT base shapes at a small M.
pub fn cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k| GemmSm90Case { m, n, k };
    vec![
        c(1, 128, 64),
        c(64, 128, 128),
        c(130, 256, 512),
        c(200, 768, 768),  // attention output projection
        c(96, 2304, 768),  // Wqkv, and Wi (2 x 1152)
        c(129, 768, 1152), // MLP output projection
    ]
}

/// ModernBERT's four GEMM shapes (base) at a microbenchmark's token count.
pub fn bench_cases(tokens: u32) -> Vec<GemmSm90Case> {
    let c = |n, k| GemmSm90Case { m: tokens, n, k };
    vec![c(2304, 768), c(768, 768), c(2304, 768), c(768, 1152)]
}

/// A case on a device: `a [m, k]`, `b [n, k]`, `c [m + 1, n]` (the extra row must stay poisoned).
pub struct GemmSm90Run {
    pub case: GemmSm90Case,
    pub dt: Dtype,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub gemm: GemmSm90,
    /// The parameters with their tensor maps, encoded once (none when the shape is refused).
    params: Option<GemmSm90Params>,
    d_c: DeviceBuffer,
    _inputs: [DeviceBuffer; 2],
}

impl GemmSm90Run {
    pub fn new(dev: &dyn Device, case: &GemmSm90Case, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (m, n, k) = (case.m as usize, case.n as usize, case.k as usize);
        let a = inputs.normal(m * k, 0.0, 1.0);
        let b = inputs.normal(n * k, 0.0, 0.05);
        let d_a = upload(dev, dt, &a, "a");
        let d_b = upload(dev, dt, &b, "b");
        let d_c = poisoned(dev, (m + 1) * n * E, "c");
        let gemm = GemmSm90 {
            m: case.m,
            n: case.n,
            k: case.k,
            a: d_a.addr(),
            b: d_b.addr(),
            c: d_c.addr(),
        };
        GemmSm90Run {
            case: *case,
            dt,
            a,
            b,
            gemm,
            params: ops::gemm_sm90_params(dev, dt, &gemm).ok(),
            d_c,
            _inputs: [d_a, d_b],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        match &self.params {
            Some(p) => ops::launch_gemm_sm90(dev, self.dt, p, false),
            None => ops::gemm_sm90(dev, self.dt, &self.gemm, false),
        }
    }
    /// `c`, `[m + 1, n]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_c)
    }
}

impl Prepared for GemmSm90Run {
    fn name(&self, _kernel: usize) -> String {
        format!("m{}_n{}_k{}", self.case.m, self.case.n, self.case.k)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["gemm_sm90"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        GemmSm90Run::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        self.gemm.min_bytes() as f64
    }
    fn flops(&self, _kernel: usize) -> f64 {
        self.gemm.flops()
    }
}
