//! One module per op, shared by the kernel tests (`tests/<op>.rs`) and the microbenchmarks: the
//! case table, and each case prepared on a device — its host inputs, its device buffers (outputs
//! poisoned with NaN), its parameter struct, its launch through the `ops::*` launcher (the one the
//! product ships), its minimum DRAM traffic and useful FLOPs, and the download of its outputs.
//! The tests add the f32 reference, the naive same-precision computation and the check; the
//! microbenchmarks time [`Prepared::launch`].

pub mod attention;
pub mod colbert;
pub mod embeddings;
pub mod gather;
pub mod geglu;
pub mod gemm_sm90;
pub mod gemm_stream;
pub mod layernorm;
pub mod mlm_head;
pub mod pooling;
pub mod rope;
pub mod topk;

use crate::{Dtype, Rng};
use modernbert::kernels::device::Device;
use modernbert::kernels::KernelError;

/// Bytes per bf16/fp16 element.
pub const E: usize = 2;

/// The sequence lengths every op is tested at (tile edges around 64 and 128, and long ones).
pub const SEQ_LENS: &[u32] = &[1, 2, 63, 64, 65, 127, 128, 129, 130, 255, 257, 1000, 8192];

/// Varlen batches mixing the lengths above (token totals that are no multiple of any tile).
pub fn varlen_batches() -> Vec<Vec<u32>> {
    vec![
        vec![1, 2, 63, 64, 65],
        vec![127, 128, 129, 130, 1],
        vec![255, 257, 2, 1000],
        vec![65, 8192, 1, 129],
        vec![130, 127, 64, 63, 2, 1, 257],
    ]
}

/// cu_seqlens of a batch: [0, l0, l0 + l1, ...].
pub fn cu_seqlens(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// A case prepared on a device, as the microbenchmarks see it: the kernels it launches (in
/// order; most ops have one), and per kernel the launch, the minimum DRAM traffic (bytes read +
/// written) and the useful FLOPs.
pub trait Prepared {
    fn name(&self, kernel: usize) -> String;
    fn kernels(&self) -> &'static [&'static str];
    fn launch(&self, dev: &dyn Device, kernel: usize) -> Result<(), KernelError>;
    fn bytes(&self, kernel: usize) -> f64;
    fn flops(&self, kernel: usize) -> f64 {
        let _ = kernel;
        0.0
    }
}

/// Where a case's random inputs come from. Every value is rounded to the element type, so the
/// inputs are exactly what the kernel reads.
pub struct Inputs<'a> {
    rng: &'a mut Rng,
    dt: Dtype,
    /// `Some(n)`: `n` values drawn and repeated (see [`Inputs::repeating`]).
    period: Option<usize>,
}

impl<'a> Inputs<'a> {
    /// Every value drawn: the kernel tests.
    pub fn drawn(rng: &'a mut Rng, dt: Dtype) -> Self {
        Inputs { rng, dt, period: None }
    }
    /// A drawn pattern of `period` values, repeated: the benchmarks, whose ModernBERT-sized
    /// buffers would take longer to draw than to time, and whose values do not change the timing.
    pub fn repeating(rng: &'a mut Rng, dt: Dtype, period: usize) -> Self {
        Inputs {
            rng,
            dt,
            period: Some(period.max(1)),
        }
    }
    pub fn dtype(&self) -> Dtype {
        self.dt
    }
    fn fill(&mut self, n: usize, mut draw: impl FnMut(&mut Rng) -> f32) -> Vec<f32> {
        let dt = self.dt;
        let drawn = self.period.map_or(n, |p| p.min(n));
        let pattern: Vec<f32> = (0..drawn).map(|_| crate::round(dt, draw(self.rng))).collect();
        if drawn == n {
            return pattern;
        }
        (0..n).map(|i| pattern[i % drawn]).collect()
    }
    /// `n` values N(mean, std²).
    pub fn normal(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        self.fill(n, |r| mean + std * r.normal())
    }
    /// `n` values uniform in [lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        self.fill(n, |r| r.uniform(lo, hi))
    }
    /// `n` indices below `bound` (always drawn: ids are small).
    pub fn below(&mut self, n: usize, bound: u32) -> Vec<u32> {
        (0..n).map(|_| self.rng.below(bound)).collect()
    }
}
