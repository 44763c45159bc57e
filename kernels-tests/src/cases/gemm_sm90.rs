//! cuda/gemm_sm90.cu (sm_90a): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::ops::{self, GemmSm90, Sm90Epilogue};
use modernbert::kernels::params::{GemmSm90Params, MB_ACT_GELU_ERF, MB_ACT_GELU_TANH, MB_ACT_SILU};
use modernbert::kernels::KernelError;

#[derive(Clone, Copy, Debug)]
pub struct GemmSm90Case {
    pub m: u32,
    /// The GEMM's N (with the GeGLU epilogue, 2 x the intermediate size).
    pub n: u32,
    pub k: u32,
    pub epilogue: Sm90Epilogue,
}

/// Tile edges (M of 1, 64, 130: partial row tiles, which TMA fills and clips), several k-blocks
/// (more than the 4 stages, so every stage is refilled), and the ModernBERT base shapes at a small M.
pub fn cases() -> Vec<GemmSm90Case> {
    let c = |m, n, k| GemmSm90Case {
        m,
        n,
        k,
        epilogue: Sm90Epilogue::Store,
    };
    vec![
        c(1, 128, 64),
        c(64, 128, 128),
        c(130, 256, 512),
        c(200, 768, 768),  // attention output projection
        c(96, 2304, 768),  // Wqkv, and Wi (2 x 1152)
        c(129, 768, 1152), // MLP output projection
    ]
}

/// The GeGLU epilogue (Wi + GeGLU): tile edges, and base's Wi (intermediate 1152) at a small M.
pub fn geglu_cases() -> Vec<GemmSm90Case> {
    let c = |m, inter: u32, k, act| GemmSm90Case {
        m,
        n: 2 * inter,
        k,
        epilogue: Sm90Epilogue::Geglu { act },
    };
    vec![
        c(1, 64, 64, MB_ACT_GELU_ERF),
        c(130, 192, 256, MB_ACT_GELU_ERF),
        c(96, 1152, 768, MB_ACT_GELU_ERF),
        c(65, 128, 128, MB_ACT_GELU_TANH),
        c(64, 64, 128, MB_ACT_SILU),
    ]
}

/// ModernBERT's four GEMM shapes (base) at a microbenchmark's token count, and Wi with GeGLU fused.
pub fn bench_cases(tokens: u32) -> Vec<GemmSm90Case> {
    let c = |n, k, epilogue| GemmSm90Case {
        m: tokens,
        n,
        k,
        epilogue,
    };
    let store = Sm90Epilogue::Store;
    vec![
        c(2304, 768, store),
        c(768, 768, store),
        c(2304, 768, store),
        c(768, 1152, store),
        c(2304, 768, Sm90Epilogue::Geglu { act: MB_ACT_GELU_ERF }),
    ]
}

/// A case on a device: `a [m, k]`, `b [n, k]` (with GeGLU: already in `ops::geglu_weight_rows`'
/// order; `b` holds it as drawn, i.e. in Wi's own order), `c [m + 1, width]` (the extra row must
/// stay poisoned).
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
        let ordered: Vec<f32> = match case.epilogue {
            Sm90Epilogue::Store => b.clone(),
            Sm90Epilogue::Geglu { .. } => ops::geglu_weight_rows(case.n / 2)
                .iter()
                .flat_map(|&r| b[r as usize * k..][..k].iter().copied())
                .collect(),
        };
        let d_b = upload(dev, dt, &ordered, "b");
        let mut gemm = GemmSm90 {
            m: case.m,
            n: case.n,
            k: case.k,
            a: d_a.addr(),
            b: d_b.addr(),
            c: 0,
            epilogue: case.epilogue,
        };
        let d_c = poisoned(dev, (m + 1) * gemm.out_width() as usize * E, "c");
        gemm.c = d_c.addr();
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
            Some(p) => ops::launch_gemm_sm90(dev, self.dt, self.gemm.epilogue, p, false),
            None => ops::gemm_sm90(dev, self.dt, &self.gemm, false),
        }
    }
    /// `c`, `[m + 1, width]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_c)
    }
}

impl Prepared for GemmSm90Run {
    fn name(&self, _kernel: usize) -> String {
        let tag = match self.case.epilogue {
            Sm90Epilogue::Store => "",
            Sm90Epilogue::Geglu { .. } => "_geglu",
        };
        format!("m{}_n{}_k{}{tag}", self.case.m, self.case.n, self.case.k)
    }
    fn kernels(&self) -> &'static [&'static str] {
        match self.case.epilogue {
            Sm90Epilogue::Store => &["gemm_sm90"],
            Sm90Epilogue::Geglu { .. } => &["gemm_sm90_geglu"],
        }
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
