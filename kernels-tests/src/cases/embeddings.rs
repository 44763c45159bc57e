//! cuda/embeddings.cu (gather + LayerNorm): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_batch, upload_u32, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::EmbeddingLayerNormParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct EmbeddingCase {
    pub tokens: u32,
    pub capacity: u32,
    pub hidden: u32,
    pub vocab: u32,
    pub bias: bool,
}

pub fn cases() -> Vec<EmbeddingCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let hidden = if t == 8192 { 128 } else { 768 };
        v.push(EmbeddingCase {
            tokens: t,
            capacity: t + (i as u32 % 2) * 3,
            hidden,
            vocab: 1000,
            bias: i % 2 == 1,
        });
    }
    v.push(EmbeddingCase {
        tokens: 130,
        capacity: 130,
        hidden: 100,
        vocab: 77,
        bias: true,
    }); // scalar path
    v
}

/// A case on a device: `ids` `[capacity]` (one of them, at `tokens / 2`, out of range: the kernel
/// reads row 0 for it), `table` `[vocab, hidden]`, `weight` and `bias` `[hidden]`.
pub struct EmbeddingRun {
    pub case: EmbeddingCase,
    pub dt: Dtype,
    pub ids: Vec<u32>,
    pub table: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub params: EmbeddingLayerNormParams,
    d_out: DeviceBuffer,
    _inputs: [DeviceBuffer; 5],
}

impl EmbeddingRun {
    pub fn new(dev: &dyn Device, case: &EmbeddingCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let (t, cap, h, v) = (
            case.tokens as usize,
            case.capacity as usize,
            case.hidden as usize,
            case.vocab as usize,
        );
        let table = inputs.normal(v * h, 0.0, 1.0);
        let weight = inputs.normal(h, 1.0, 0.2);
        let bias = inputs.normal(h, 0.0, 0.2);
        let mut ids = inputs.below(cap, case.vocab);
        ids[t / 2] = case.vocab + 5; // out of range: reads row 0
        let d_ids = upload_u32(dev, &ids, "ids");
        let d_table = upload(dev, dt, &table, "table");
        let d_w = upload(dev, dt, &weight, "weight");
        let d_b = upload(dev, dt, &bias, "bias");
        let d_out = poisoned(dev, cap * h * E, "out");
        let d_batch = upload_batch(dev, case.tokens, 1, case.tokens);
        let params = EmbeddingLayerNormParams {
            ids: d_ids.addr(),
            table: d_table.addr(),
            weight: d_w.addr(),
            bias: if case.bias { d_b.addr() } else { 0 },
            out: d_out.addr(),
            batch: d_batch.addr(),
            max_tokens: case.capacity,
            hidden: case.hidden,
            vocab: case.vocab,
            eps: 1e-5,
        };
        EmbeddingRun {
            case: case.clone(),
            dt,
            ids,
            table,
            weight,
            bias,
            params,
            d_out,
            _inputs: [d_ids, d_table, d_w, d_b, d_batch],
        }
    }
    pub fn launch(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::embeddings(dev, self.dt, &self.params)
    }
    /// `out`, `[capacity, hidden]`.
    pub fn out(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_out)
    }
}

impl Prepared for EmbeddingRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        format!("t{}_h{}_v{}", c.tokens, c.hidden, c.vocab)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["embeddings"]
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        EmbeddingRun::launch(self, dev)
    }
    fn bytes(&self, _kernel: usize) -> f64 {
        // Per token: its id, its table row read, its output row written.
        let (t, h) = (self.case.tokens as usize, self.case.hidden as usize);
        (t * (4 + 2 * h * E)) as f64
    }
}
