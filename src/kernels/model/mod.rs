//! A [`Device`] that computes nothing and predicts how long the real one would take: the cost
//! model of `modernbert bench --device model:<card>[:sm80|:sm90]`.
//!
//! It records every launch the executor issues (kernels, GEMMs, graph replays), computes each
//! one's FLOPs and minimum DRAM bytes from its parameters ([`costs`]), and advances two clocks —
//! the host's and the GPU's — by the time a [`Profile`] calibrated on committed H100 measurements
//! ([`calibration`]) predicts. Nothing here is a measurement.
//!
//! Memory: the executor needs real data in device memory only where kernels read counts — the
//! `BatchDesc` and the index arrays of each batch, a few KiB to 1 MiB uploaded per batch — while
//! base short-fixed asks for ~5 GB of weights and arena that this model must not allocate. So
//! every allocation is an address range with no backing; uploads of at most
//! [`KEPT_UPLOAD_BYTES`] are kept (in 4 KiB pages, wherever they land), larger ones (the weight
//! image) are range-checked and dropped, and downloads return what was kept, zeros elsewhere.

pub mod calibration;
mod cases;
pub mod costs;
mod memory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::device::{BufferInner, Device, DeviceBuffer};
use super::gemm::GemmDesc;
use super::{Dtype, KernelError, LaunchAttrs};
pub use costs::{KernelClass, LaunchCost, Profile};
pub(crate) use memory::ModelAlloc;
use memory::ModelMemory;

/// Uploads up to this size keep their bytes (the per-batch inputs: 4 B per token + 8 B per
/// sequence, ~1 MiB at 262,144 tokens); larger ones are dropped.
pub const KEPT_UPLOAD_BYTES: usize = 4 << 20;
/// Total kept bytes a model device holds at most (an error past it, never a silent drop).
pub const MAX_KEPT_BYTES: usize = 64 << 20;
/// First address handed out (non-zero: 0 is the null pointer of the param structs).
const BASE_ADDR: u64 = 1 << 40;

/// The cards the model knows. Vendor specifications (datasheets), not measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Card {
    H100,
    H200,
}

impl Card {
    pub const ALL: [Card; 2] = [Card::H100, Card::H200];

    /// The name on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Card::H100 => "h100",
            Card::H200 => "h200",
        }
    }
    /// The name `nvidia-smi` reports (the bench's peak table is keyed by it).
    pub fn product_name(self) -> &'static str {
        match self {
            Card::H100 => "NVIDIA H100 80GB HBM3",
            Card::H200 => "NVIDIA H200",
        }
    }
    /// HBM bandwidth: H100 SXM5 3.35 TB/s (HBM3), H200 4.8 TB/s (HBM3e).
    pub fn dram_bytes_per_s(self) -> f64 {
        match self {
            Card::H100 => 3.35e12,
            Card::H200 => 4.8e12,
        }
    }
    /// Device memory: 80 GiB / 141 GB.
    pub fn memory_bytes(self) -> u64 {
        match self {
            Card::H100 => 80 << 30,
            Card::H200 => 141_000_000_000,
        }
    }
    /// Dense bf16 tensor peak (FLOP/s): the bench's table of cards, its one owner. The H200 has
    /// the H100's GH100 compute.
    pub fn peak_flops(self) -> f64 {
        crate::bench::peak_tflops(self.product_name()).map_or(0.0, |(t, _)| t * 1e12)
    }
    /// Streaming multiprocessors: 132 on both (the SXM parts).
    pub fn multiprocessors(self) -> u32 {
        132
    }
    /// What the card itself reports: both are Hopper, sm_90.
    pub fn native_capability(self) -> (u32, u32) {
        (9, 0)
    }
    pub fn parse(s: &str) -> Result<Card, String> {
        Card::ALL.into_iter().find(|c| c.id() == s).ok_or_else(|| {
            format!(
                "unknown card `{s}` for the cost model (known: {})",
                Card::ALL.map(Card::id).join(", ")
            )
        })
    }
}

/// `sm80` → (8, 0), `sm90` → (9, 0): the two code paths a device can be asked for.
pub fn parse_capability(s: &str) -> Result<(u32, u32), String> {
    match s {
        "sm80" => Ok((8, 0)),
        "sm90" => Ok((9, 0)),
        _ => Err(format!("unknown suffix `:{s}` (expected :sm80 or :sm90)")),
    }
}

/// Totals of one class of launches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassTotals {
    pub launches: u64,
    pub flops: f64,
    pub param_bytes: f64,
    pub activation_bytes: f64,
    /// Predicted GPU seconds (fixed cost + roofline) of these launches.
    pub seconds: f64,
}

/// Everything recorded since the last [`ModelDevice::reset_ledger`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// Indexed by [`KernelClass::index`].
    pub classes: [ClassTotals; KernelClass::COUNT],
    pub graph_replays: u64,
    pub direct_launches: u64,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
}

impl Ledger {
    /// Kernel launches + GEMMs (graph nodes included).
    pub fn launches(&self) -> u64 {
        self.classes.iter().map(|c| c.launches).sum()
    }
    pub fn activation_bytes(&self) -> f64 {
        self.classes.iter().map(|c| c.activation_bytes).sum()
    }
    pub fn flops(&self) -> f64 {
        self.classes.iter().map(|c| c.flops).sum()
    }
    pub fn kernel_seconds(&self) -> f64 {
        self.classes.iter().map(|c| c.seconds).sum()
    }
    fn add(&mut self, cost: &LaunchCost, seconds: f64) {
        let c = &mut self.classes[cost.class.index()];
        c.launches += 1;
        c.flops += cost.flops;
        c.param_bytes += cost.param_bytes;
        c.activation_bytes += cost.activation_bytes;
        c.seconds += seconds;
    }
}

/// One step of a recorded graph.
enum Step {
    /// `dependent`: a programmatic dependent launch ([`Profile::dependent_fixed_s`]).
    Launch {
        name: String,
        params: Vec<u8>,
        dependent: bool,
    },
    Gemm(GemmDesc),
}

/// The host's and the GPU's clocks (seconds since the device was made).
#[derive(Clone, Copy, Debug, Default)]
struct Timeline {
    host_s: f64,
    gpu_s: f64,
}

/// The cost model as a device.
pub struct ModelDevice {
    card: Card,
    capability: (u32, u32),
    profile: Profile,
    memory: Arc<ModelMemory>,
    clock: Mutex<Timeline>,
    ledger: Mutex<Ledger>,
    recording: Mutex<Option<Vec<Step>>>,
    graphs: Mutex<HashMap<[u32; 3], Arc<Vec<Step>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ModelDevice {
    /// `card` with `profile`'s costs; `capability` forces a code path (`None`: the card's own).
    pub fn new(card: Card, capability: Option<(u32, u32)>, profile: Profile) -> Self {
        ModelDevice {
            card,
            capability: capability.unwrap_or(card.native_capability()),
            profile,
            memory: Arc::default(),
            clock: Mutex::default(),
            ledger: Mutex::default(),
            recording: Mutex::new(None),
            graphs: Mutex::default(),
        }
    }

    pub fn card(&self) -> Card {
        self.card
    }
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// The host's predicted clock: what a wall clock around the calls would read.
    pub fn clock_s(&self) -> f64 {
        lock(&self.clock).host_s
    }

    pub fn ledger(&self) -> Ledger {
        lock(&self.ledger).clone()
    }
    pub fn reset_ledger(&self) {
        *lock(&self.ledger) = Ledger::default();
    }

    /// Run one launch on the GPU clock: it starts when both the GPU is free and the host has
    /// issued it (`issued_s`).
    fn execute(&self, (cost, seconds): (LaunchCost, f64), issued_s: f64) {
        let cost = &cost;
        let mut c = lock(&self.clock);
        c.gpu_s = c.gpu_s.max(issued_s) + seconds;
        lock(&self.ledger).add(cost, seconds);
    }

    /// A direct launch: the host spends `host_launch_s` issuing it.
    fn direct(&self, timed: (LaunchCost, f64)) {
        let issued = {
            let mut c = lock(&self.clock);
            c.host_s += self.profile.host_launch_s;
            c.host_s
        };
        lock(&self.ledger).direct_launches += 1;
        self.execute(timed, issued);
    }

    fn record(&self, step: Step) -> bool {
        match lock(&self.recording).as_mut() {
            Some(list) => {
                list.push(step);
                true
            }
            None => false,
        }
    }

    /// A step's cost and GPU time: a persistent launch its steps' ([`Profile::persistent_s`]), a
    /// programmatic dependent the hand-off + roofline, any other launch the fixed cost + roofline.
    fn step_cost(&self, step: &Step) -> Result<(LaunchCost, f64), KernelError> {
        let mem = self.memory.as_ref();
        match step {
            Step::Launch {
                name,
                params,
                dependent,
            } => {
                let cost = costs::kernel_cost(name, params, mem)?;
                let seconds = match cost.class {
                    KernelClass::ForwardSmall => self
                        .profile
                        .persistent_s(&costs::forward_small_steps(name, params, mem)?),
                    _ if *dependent => self.profile.dependent_kernel_s(&cost),
                    _ => self.profile.kernel_s(&cost),
                };
                Ok((cost, seconds))
            }
            Step::Gemm(g) => {
                let cost = costs::gemm_cost(g);
                Ok((cost, self.profile.kernel_s(&cost)))
            }
        }
    }
}

impl Device for ModelDevice {
    fn name(&self) -> String {
        format!(
            "model:{}:sm{}{} (cost model of an {}: predictions, not measurements)",
            self.card.id(),
            self.capability.0,
            self.capability.1,
            self.card.product_name()
        )
    }
    fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }
    fn multiprocessors(&self) -> u32 {
        self.card.multiprocessors()
    }
    fn memory_available(&self) -> u64 {
        self.card.memory_bytes().saturating_sub(*lock(&self.memory.allocated))
    }
    fn alloc(&self, bytes: usize, label: &str) -> Result<DeviceBuffer, KernelError> {
        if bytes as u64 > self.memory_available() {
            return Err(KernelError::OutOfMemory(format!(
                "{label}: {bytes} bytes on a modelled {}",
                self.card.product_name()
            )));
        }
        let addr = {
            let mut next = lock(&self.memory.next);
            let addr = (*next).max(BASE_ADDR);
            *next = addr + (bytes.max(1) as u64).next_multiple_of(256);
            addr
        };
        *lock(&self.memory.allocated) += bytes as u64;
        Ok(DeviceBuffer {
            addr,
            len: bytes,
            inner: BufferInner::Model(ModelAlloc {
                memory: self.memory.clone(),
                addr,
                len: bytes,
            }),
        })
    }
    fn upload(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), KernelError> {
        if !matches!(buf.inner, BufferInner::Model(_)) {
            return Err(KernelError::OutOfRange(
                "a buffer of another device given to the cost model".into(),
            ));
        }
        if offset.checked_add(data.len()).is_none_or(|e| e > buf.len) {
            return Err(KernelError::OutOfRange(format!(
                "upload of {} bytes at {offset} into {}",
                data.len(),
                buf.len
            )));
        }
        if data.len() <= KEPT_UPLOAD_BYTES {
            self.memory.lock_pages().write(buf.addr + offset as u64, data)?;
        }
        // A pageable copy: the host waits for it, the GPU sees it in stream order.
        let seconds = data.len() as f64 / self.profile.pcie_bytes_per_s;
        let mut c = lock(&self.clock);
        c.host_s = c.host_s.max(c.gpu_s) + seconds;
        c.gpu_s = c.host_s;
        lock(&self.ledger).uploaded_bytes += data.len() as u64;
        Ok(())
    }
    fn download(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), KernelError> {
        if !matches!(buf.inner, BufferInner::Model(_)) {
            return Err(KernelError::OutOfRange(
                "a buffer of another device given to the cost model".into(),
            ));
        }
        if offset.checked_add(out.len()).is_none_or(|e| e > buf.len) {
            return Err(KernelError::OutOfRange(format!(
                "download of {} bytes at {offset} from {}",
                out.len(),
                buf.len
            )));
        }
        self.memory.lock_pages().read(buf.addr + offset as u64, out);
        // Synchronising: the host waits for the GPU, then for the copy.
        let seconds = out.len() as f64 / self.profile.pcie_bytes_per_s;
        let mut c = lock(&self.clock);
        c.host_s = c.host_s.max(c.gpu_s) + seconds;
        c.gpu_s = c.host_s;
        lock(&self.ledger).downloaded_bytes += out.len() as u64;
        Ok(())
    }
    fn launch_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError> {
        self.launch_ex_raw(name, grid, block, smem, params, LaunchAttrs::default())
    }
    fn launch_ex_raw(
        &self,
        name: &str,
        _grid: [u32; 3],
        _block: [u32; 3],
        _smem: u32,
        params: &[u8],
        attrs: LaunchAttrs,
    ) -> Result<(), KernelError> {
        if attrs.coscheduled && !name.starts_with("forward_small_sm90") {
            return Err(KernelError::Unsupported {
                kernel: name.into(),
                message: format!("{} has no formula for a co-scheduled grid", self.name()),
            });
        }
        // The cost comes from the parameters; grid, block and smem only restate them. It is
        // computed while recording a graph too, so that a kernel without a formula fails at once.
        let step = Step::Launch {
            name: name.to_string(),
            params: params.to_vec(),
            dependent: attrs.dependent,
        };
        let timed = self.step_cost(&step)?;
        if !self.record(step) {
            self.direct(timed);
        }
        Ok(())
    }
    /// A map nothing reads: the model's `gemm_sm90` costs come from the parameter struct's
    /// shape fields, not from its tensor maps.
    fn encode_tensor_map(
        &self,
        _desc: &super::params::MbTensorMapDesc,
    ) -> Result<super::params::MbTensorMap, KernelError> {
        Ok(super::params::MbTensorMap { opaque: [0; 16] })
    }
    fn synchronize(&self) -> Result<(), KernelError> {
        let mut c = lock(&self.clock);
        c.host_s = c.host_s.max(c.gpu_s);
        Ok(())
    }
    fn gemm(&self, _dtype: Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        g.check()?;
        let timed = self.step_cost(&Step::Gemm(*g))?;
        if !self.record(Step::Gemm(*g)) {
            self.direct(timed);
        }
        Ok(())
    }
    /// Recorded on first use (nothing runs, as in a capture), replayed afterwards: one host
    /// launch for the whole graph, each node costed at replay time from the BatchDesc then in
    /// memory (which is what a CUDA graph's kernels read too).
    fn run_graph(&self, key: [u32; 3], record: &mut dyn FnMut() -> Result<(), KernelError>) -> Result<(), KernelError> {
        let existing = lock(&self.graphs).get(&key).cloned();
        let steps = match existing {
            Some(s) => s,
            None => {
                *lock(&self.recording) = Some(Vec::new());
                let result = record();
                let steps = lock(&self.recording).take().unwrap_or_default();
                result?;
                let steps = Arc::new(steps);
                lock(&self.graphs).insert(key, steps.clone());
                steps
            }
        };
        let issued = {
            let mut c = lock(&self.clock);
            c.host_s += self.profile.host_launch_s;
            c.host_s
        };
        lock(&self.ledger).graph_replays += 1;
        for step in steps.iter() {
            self.execute(self.step_cost(step)?, issued);
        }
        Ok(())
    }
    fn as_model(&self) -> Option<&ModelDevice> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::memory::PAGE;
    use super::*;

    fn device() -> ModelDevice {
        ModelDevice::new(Card::H100, None, Profile::at_peaks(1e15, 3e12, 50e9))
    }

    #[test]
    fn small_uploads_are_kept_across_pages_and_large_ones_dropped() {
        let dev = device();
        let dyn_dev: &dyn Device = &dev;
        let mut small = dyn_dev.alloc(3 * PAGE as usize, "small").unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        dyn_dev.upload(&mut small, 4000, &data).unwrap();
        let mut back = vec![0xAA; 5000];
        dyn_dev.download(&small, 4000, &mut back).unwrap();
        assert_eq!(back, data, "a kept upload spans three pages");
        let mut head = [0xAAu8; 8];
        dyn_dev.download(&small, 0, &mut head).unwrap();
        assert_eq!(head, [0; 8], "never written: zeros");
        assert!(
            dyn_dev.upload(&mut small, 3 * PAGE as usize - 1, &[1, 2]).is_err(),
            "range-checked"
        );

        let mut big = dyn_dev.alloc(KEPT_UPLOAD_BYTES + 1, "big").unwrap();
        dyn_dev.upload(&mut big, 0, &vec![7u8; KEPT_UPLOAD_BYTES + 1]).unwrap();
        let mut one = [0xAAu8; 1];
        dyn_dev.download(&big, 0, &mut one).unwrap();
        assert_eq!(one, [0], "a large upload is dropped");
        // An address range only: 100 GB "fit" on no host memory, up to the card's 80 GiB.
        assert!(dyn_dev.alloc(100_000_000_000, "too big").is_err());
        let before = dyn_dev.memory_available();
        drop(dyn_dev.alloc(40 << 30, "arena").unwrap());
        assert_eq!(dyn_dev.memory_available(), before, "freed on drop");
    }

    #[test]
    fn unknown_kernels_are_errors_and_the_clock_only_moves_forward() {
        let dev = device();
        let d: &dyn Device = &dev;
        assert!(matches!(
            d.launch_raw("no_such_kernel_bf16", [1; 3], [1; 3], 0, &[]),
            Err(KernelError::UnknownKernel(_))
        ));
        assert!(
            d.launch_raw("layernorm_bf16", [1; 3], [1; 3], 0, &[0u8; 3]).is_err(),
            "bad param size"
        );
        let t0 = dev.clock_s();
        let g = GemmDesc {
            a: 1,
            w: 1,
            bias: 0,
            out: 1,
            m: 1024,
            n: 1024,
            k: 1024,
        };
        d.gemm(Dtype::Bf16, &g).unwrap();
        d.synchronize().unwrap();
        let expected = 2.0 * 1024f64.powi(3) / 1e15;
        assert!((dev.clock_s() - t0 - expected).abs() < 1e-12, "{}", dev.clock_s() - t0);
        assert_eq!(dev.ledger().launches(), 1);
    }
}
