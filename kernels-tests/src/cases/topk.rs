//! cuda/topk.cu (softmax_topk): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{bytes_u32, download_f32, poisoned, upload, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::SoftmaxTopkParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct TopkCase {
    pub rows: u32,
    pub cols: u32,
    pub k: u32,
    /// Logits on a coarse grid (steps of 0.5), so that many are equal and the tie rule decides.
    pub ties: bool,
    /// Row 0 gets one NaN logit (its probabilities must all be NaN), row 1 (if any) only NaNs (no
    /// candidate: ids = cols).
    pub nans: bool,
}

pub fn cases() -> Vec<TopkCase> {
    let c = |rows, cols, k, ties, nans| TopkCase {
        rows,
        cols,
        k,
        ties,
        nans,
    };
    vec![
        c(1, 1, 1, false, false),
        c(3, 512, 5, false, false),
        c(2, 512, 512, true, false), // the whole order
        c(5, 1000, 17, true, false),
        c(4, 50368, 5, false, false), // ModernBERT's vocabulary
        c(2, 50368, 40, true, false),
        c(3, 300, 7, false, true),
        c(1, 33, 33, true, false), // fewer columns than threads
    ]
}

/// A case on a device: `logits` `[rows, cols]`; out: ids `[rows, k]` u32 then probabilities
/// `[rows, k]` f32, one buffer, each followed by one poisoned guard element.
pub struct TopkRun {
    pub case: TopkCase,
    pub dt: Dtype,
    pub logits: Vec<f32>,
    pub params: SoftmaxTopkParams,
    d_ids: DeviceBuffer,
    d_probs: DeviceBuffer,
    _inputs: [DeviceBuffer; 1],
}

impl TopkRun {
    pub fn new(dev: &dyn Device, case: &TopkCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (r, c, k) = (case.rows as usize, case.cols as usize, case.k as usize);
        let mut logits = inputs.normal(r * c, 0.0, 3.0);
        if case.ties {
            logits.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        if case.nans {
            logits[c / 2] = f32::NAN;
            if r > 1 {
                logits[c..2 * c].fill(f32::NAN);
            }
        }
        let d_logits = upload(dev, dt, &logits, "logits");
        let d_ids = poisoned(dev, (r * k + 1) * 4, "ids");
        let d_probs = poisoned(dev, (r * k + 1) * 4, "probs");
        let params = SoftmaxTopkParams {
            logits: d_logits.addr(),
            ids: d_ids.addr(),
            probs: d_probs.addr(),
            rows: case.rows,
            cols: case.cols,
            k: case.k,
            _pad0: 0,
        };
        TopkRun {
            case: case.clone(),
            dt,
            logits,
            params,
            d_ids,
            d_probs,
            _inputs: [d_logits],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::softmax_topk(dev, self.dt, &self.params)
    }
    /// `ids` `[rows, k]` and the guard element after them.
    pub fn ids(&self, dev: &dyn Device) -> Vec<u32> {
        bytes_u32(&dev.download_vec(&self.d_ids).expect("download ids"))
    }
    /// `probs` `[rows, k]` and the guard element after them.
    pub fn probs(&self, dev: &dyn Device) -> Vec<f32> {
        download_f32(dev, &self.d_probs)
    }
}

impl Prepared for TopkRun {
    fn name(&self, _kernel: usize) -> String {
        format!("r{}_c{}_k{}", self.case.rows, self.case.cols, self.case.k)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["softmax_topk"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        TopkRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // The logits read once from DRAM (the later passes hit L1/L2), the picks written.
        let (r, c, k) = (self.case.rows as usize, self.case.cols as usize, self.case.k as usize);
        (r * c * E + r * k * 8) as f64
    }
}
