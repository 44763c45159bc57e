//! cuda/unpad.cu (unpad and repad): the case table and one case prepared on a device.
use super::{Inputs, Prepared, E};
use crate::{download, poisoned, upload, upload_batch, upload_u32, DeviceBuffer, Dtype};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::PadParams;
use modernbert::kernels::{ops, KernelError};

#[derive(Clone, Debug)]
pub struct PadCase {
    pub seqlens: Vec<u32>,
    /// Padded capacity: sequences and length (>= the batch's).
    pub max_sequences: u32,
    pub padded_len: u32,
    pub width: u32,
}

pub fn cases() -> Vec<PadCase> {
    let mut v = Vec::new();
    for &l in super::SEQ_LENS {
        let width = if l == 8192 { 64 } else { 768 };
        v.push(PadCase {
            seqlens: vec![l],
            max_sequences: 1,
            padded_len: l,
            width,
        });
    }
    for lens in super::varlen_batches() {
        let max = *lens.iter().max().unwrap();
        let width = if max > 1000 { 16 } else { 256 };
        v.push(PadCase {
            max_sequences: lens.len() as u32 + 2,
            padded_len: max + 3,
            seqlens: lens,
            width,
        });
    }
    v.push(PadCase {
        seqlens: vec![5, 1, 64],
        max_sequences: 4,
        padded_len: 70,
        width: 36,
    }); // scalar path
    v
}

impl PadCase {
    pub fn tokens(&self) -> usize {
        self.seqlens.iter().map(|&l| l as usize).sum()
    }
}

/// Packed rows past the batch, poisoned: unpad must leave them alone.
pub const EXTRA_PACKED_ROWS: usize = 3;

/// A case on a device: `padded` `[max_sequences, padded_len, width]` in; unpad writes `packed`
/// `[tokens + EXTRA_PACKED_ROWS, width]`, then repad reads `packed` and writes `repadded`
/// (the padded shape). Both outputs start poisoned.
pub struct PadRun {
    pub case: PadCase,
    pub dt: Dtype,
    pub padded: Vec<f32>,
    pub unpad: PadParams,
    pub repad: PadParams,
    d_packed: DeviceBuffer,
    d_repadded: DeviceBuffer,
    _inputs: [DeviceBuffer; 3],
}

impl PadRun {
    pub fn new(dev: &dyn Device, case: &PadCase, inputs: &mut Inputs) -> Self {
        let dt = inputs.dtype();
        let cu = super::cu_seqlens(&case.seqlens);
        let t = case.tokens();
        let (s, l, w) = (
            case.max_sequences as usize,
            case.padded_len as usize,
            case.width as usize,
        );
        let padded = inputs.normal(s * l * w, 0.0, 1.0);
        let d_padded = upload(dev, dt, &padded, "padded");
        let d_packed = poisoned(dev, (t + EXTRA_PACKED_ROWS) * w * E, "packed");
        let d_repadded = poisoned(dev, s * l * w * E, "repadded");
        let d_cu = upload_u32(dev, &cu, "cu_seqlens");
        let max_len = *case.seqlens.iter().max().unwrap_or(&1);
        let d_batch = upload_batch(dev, t as u32, case.seqlens.len() as u32, max_len);
        let unpad = PadParams {
            padded: d_padded.addr(),
            packed: d_packed.addr(),
            cu_seqlens: d_cu.addr(),
            batch: d_batch.addr(),
            max_sequences: case.max_sequences,
            padded_len: case.padded_len,
            width: case.width,
            _pad0: 0,
        };
        let repad = PadParams {
            padded: d_repadded.addr(),
            ..unpad
        };
        PadRun {
            case: case.clone(),
            dt,
            padded,
            unpad,
            repad,
            d_packed,
            d_repadded,
            _inputs: [d_padded, d_cu, d_batch],
        }
    }
    pub fn launch_unpad(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::unpad(dev, self.dt, &self.unpad)
    }
    pub fn launch_repad(&self, dev: &dyn Device) -> Result<(), KernelError> {
        ops::repad(dev, self.dt, &self.repad)
    }
    /// `packed`, `[tokens + EXTRA_PACKED_ROWS, width]`.
    pub fn packed(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_packed)
    }
    /// `repadded`, `[max_sequences, padded_len, width]`.
    pub fn repadded(&self, dev: &dyn Device) -> Vec<f32> {
        download(dev, self.dt, &self.d_repadded)
    }
}

impl Prepared for PadRun {
    fn name(&self, _kernel: usize) -> String {
        let c = &self.case;
        format!("t{}_s{}x{}_w{}", c.tokens(), c.max_sequences, c.padded_len, c.width)
    }
    fn kernels(&self) -> &'static [&'static str] {
        &["unpad", "repad"]
    }
    fn launch(&self, dev: &dyn Device, kernel: usize) -> Result<(), KernelError> {
        match kernel {
            0 => self.launch_unpad(dev),
            _ => self.launch_repad(dev),
        }
    }
    fn bytes(&self, kernel: usize) -> f64 {
        let c = &self.case;
        let (t, w) = (c.tokens(), c.width as usize);
        let padded = c.max_sequences as usize * c.padded_len as usize * w;
        match kernel {
            // The tokens' rows read and written.
            0 => (t * w * E * 2) as f64,
            // The tokens' rows read, every padded element written.
            _ => (t * w * E + padded * E) as f64,
        }
    }
}
