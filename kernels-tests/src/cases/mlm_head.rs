//! cuda/mlm_head.cu (head_act_norm, bias_add): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, download_f32, poisoned, upload, upload_batch, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::{BiasAddParams, HeadActNormParams};
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct HeadCase {
    pub tokens: u32,
    pub capacity: u32,
    pub hidden: u32,
    /// Decoder width (vocabulary) for bias_add.
    pub vocab: u32,
    pub dense_bias: bool,
    pub norm_bias: bool,
    pub activation: u32,
}

pub fn cases() -> Vec<HeadCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let (hidden, vocab) = if t >= 1000 { (64, 136) } else { (768, 1000) };
        v.push(HeadCase {
            tokens: t,
            capacity: t + (i as u32 % 2),
            hidden,
            vocab,
            dense_bias: i % 2 == 0,
            norm_bias: i % 3 == 0,
            activation: (i % 5 == 4) as u32,
        });
    }
    v.push(HeadCase {
        tokens: 65,
        capacity: 65,
        hidden: 100,
        vocab: 1003,
        dense_bias: true,
        norm_bias: true,
        activation: 0,
    });
    v
}

/// A case on a device. head_act_norm: `x` `[capacity, hidden]`, `dense_bias`, `weight`, `bias`
/// `[hidden]`, out in the dtype; bias_add: `logits_in` `[capacity, vocab]`, `decoder_bias`
/// `[vocab]`, out in f32.
pub struct HeadRun {
    pub case: HeadCase,
    pub dt: Dtype,
    pub x: Vec<f32>,
    pub dense_bias: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub logits_in: Vec<f32>,
    pub decoder_bias: Vec<f32>,
    pub head: HeadActNormParams,
    pub bias_add: BiasAddParams,
    d_out: DeviceBuffer,
    d_logits: DeviceBuffer,
    _inputs: [DeviceBuffer; 7],
}

impl HeadRun {
    pub fn new(dev: &dyn Device, case: &HeadCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (cap, h, v) = (case.capacity as usize, case.hidden as usize, case.vocab as usize);
        let x = inputs.normal(cap * h, 0.0, 1.5);
        let dense_bias = inputs.normal(h, 0.0, 0.5);
        let weight = inputs.normal(h, 1.0, 0.2);
        let bias = inputs.normal(h, 0.0, 0.2);
        let logits_in = inputs.normal(cap * v, 0.0, 3.0);
        let decoder_bias = inputs.normal(v, 0.0, 1.0);
        let d_x = upload(dev, dt, &x, "x");
        let d_db = upload(dev, dt, &dense_bias, "dense_bias");
        let d_w = upload(dev, dt, &weight, "weight");
        let d_b = upload(dev, dt, &bias, "bias");
        let d_out = poisoned(dev, cap * h * E, "out");
        let d_batch = upload_batch(dev, case.tokens, 1, case.tokens);
        let d_in = upload(dev, dt, &logits_in, "logits_in");
        let d_vb = upload(dev, dt, &decoder_bias, "decoder_bias");
        let d_logits = poisoned(dev, cap * v * 4, "logits");
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
        let bias_add = BiasAddParams {
            x: d_in.addr(),
            bias: d_vb.addr(),
            out: d_logits.addr(),
            batch: d_batch.addr(),
            max_rows: case.capacity,
            cols: case.vocab,
        };
        HeadRun {
            case: case.clone(),
            dt,
            x,
            dense_bias,
            weight,
            bias,
            logits_in,
            decoder_bias,
            head,
            bias_add,
            d_out,
            d_logits,
            _inputs: [d_x, d_db, d_w, d_b, d_batch, d_in, d_vb],
        }
    }
    pub fn launch_head(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::head_act_norm(dev, self.dt, &self.head)
    }
    pub fn launch_bias_add(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::bias_add(dev, self.dt, &self.bias_add)
    }
    /// head_act_norm's `out`, `[capacity, hidden]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
    /// bias_add's `logits` (f32), `[capacity, vocab]`.
    pub fn logits(&self, dev: &dyn Device) -> Vec<f32> {
        download_f32(dev, &self.d_logits)
    }
}

impl Prepared for HeadRun {
    fn name(&self, kernel: usize) -> String {
        let c = &self.case;
        match kernel {
            0 => format!("t{}_h{}", c.tokens, c.hidden),
            _ => format!("t{}_v{}", c.tokens, c.vocab),
        }
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["head_act_norm", "bias_add"]
    }
    fn launch(&self, dev: &dyn Device, kernel: usize) -> Result<(), KernelError> {
        match kernel {
            0 => self.launch_head(dev),
            _ => self.launch_bias_add(dev),
        }
    }
    fn bytes(&self, kernel: usize) -> f64 {
        let (t, h, v) = (
            self.case.tokens as usize,
            self.case.hidden as usize,
            self.case.vocab as usize,
        );
        match kernel {
            // Rows in use read and written in the dtype.
            0 => (t * h * E * 2) as f64,
            // Logits read in the dtype, written in f32.
            _ => (t * v * (E + 4)) as f64,
        }
    }
}
