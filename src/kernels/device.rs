//! One small device abstraction over the host emulator and a real GPU (cudarc), so that the kernel
//! tests, the self-test and the GPU executor run unchanged on either:
//! `MODERNBERT_TEST_DEVICE=emulator` (default) or `cuda` selects it in [`super::from_env`].
//!
//! Here: the [`Device`] trait, [`DeviceBuffer`] and the emulator's implementation; the CUDA
//! implementation is `kernels::cuda`, which depends on this module and not the other way round.

use super::emu::{EmuBuffer, Emulator};
use super::{KernelError, KernelParam, LaunchAttrs};

pub use super::gemm::GemmDesc;

/// A buffer of device memory; [`DeviceBuffer::addr`] goes into the parameter structs.
pub struct DeviceBuffer {
    pub(super) addr: u64,
    pub(super) len: usize,
    pub(super) inner: BufferInner,
}

pub(super) enum BufferInner {
    Emu(EmuBuffer),
    Cuda(cudarc::driver::CudaSlice<u8>),
    /// The cost model's: an address range without backing (see `kernels::model`).
    Model(#[allow(dead_code)] super::model::ModelAlloc), // held for its Drop: frees the range
}

impl DeviceBuffer {
    pub fn addr(&self) -> u64 {
        self.addr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The emulator buffer behind this one, if it is one.
    pub fn as_emu(&self) -> Option<&EmuBuffer> {
        match &self.inner {
            BufferInner::Emu(b) => Some(b),
            BufferInner::Cuda(_) | BufferInner::Model(_) => None,
        }
    }
}

/// What the kernel tests and the executor need from a device.
pub trait Device: Send + Sync {
    /// "emulator", "cuda:<ordinal> <name>" or "model:<card>:sm<NN> (...)".
    fn name(&self) -> String;
    /// `(major, minor)` of the code path this device runs, so the executor can pick kernels by
    /// it: a CUDA device's own; the emulator's and the cost model's, the one they were made with.
    fn compute_capability(&self) -> (u32, u32);
    /// Streaming multiprocessors: how many blocks of one block per SM run at once, the grid of a
    /// persistent kernel (gemm_sm90). The emulator's is its own setting
    /// ([`Emulator::with_multiprocessors`]), small so that a block runs several tiles.
    fn multiprocessors(&self) -> u32;
    /// `bytes` bytes of device memory (contents unspecified: the emulator fills them with 0xFF).
    fn alloc(&self, bytes: usize, label: &str) -> Result<DeviceBuffer, KernelError>;
    /// Bytes that allocations may still take: a CUDA device's free memory; for the emulator, whose
    /// device memory is the host's, `limits::host_memory_limit()`.
    fn memory_available(&self) -> u64;
    /// Host → device at byte `offset`.
    fn upload(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), KernelError>;
    /// Device → host from byte `offset` (synchronises).
    fn download(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), KernelError>;
    /// Launch kernel `name` with a parameter struct given as bytes.
    fn launch_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError>;
    /// As [`launch_raw`](Device::launch_raw), with [`LaunchAttrs`]. Default: a dependent launch
    /// runs as an ordinary one (always correct); a co-scheduled one, or one in clusters, is refused.
    fn launch_ex_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: LaunchAttrs,
    ) -> Result<(), KernelError> {
        if attrs.coscheduled || attrs.cluster > 1 {
            return Err(KernelError::Unsupported {
                kernel: name.into(),
                message: format!("{} cannot co-schedule a grid or launch clusters", self.name()),
            });
        }
        self.launch_raw(name, grid, block, smem, params)
    }
    /// How many clusters of `cluster` blocks of kernel `name` (`block` threads, `smem` bytes of
    /// dynamic shared memory) can be resident at once: the most a co-scheduled launch in such
    /// clusters may have. Default: one block per multiprocessor, every multiprocessor in a
    /// cluster (a device that launches no clusters refuses the launch itself). On CUDA the
    /// driver's answer (`cuOccupancyMaxActiveClusters`), which knows how the SMs group.
    fn coscheduled_clusters(&self, name: &str, block: u32, smem: u32, cluster: u32) -> Result<u32, KernelError> {
        let _ = (name, block, smem);
        Ok(self.multiprocessors() / cluster.max(1))
    }
    /// The device's encoding of a tensor map (on CUDA, `cuTensorMapEncodeTiled`); `desc` has been
    /// checked by [`super::tensor_map::encode`], which is what callers use.
    fn encode_tensor_map(
        &self,
        desc: &super::params::MbTensorMapDesc,
    ) -> Result<super::params::MbTensorMap, KernelError> {
        let _ = desc;
        Err(KernelError::Unsupported {
            kernel: "tensor map".into(),
            message: format!("{} has no tensor memory accelerator", self.name()),
        })
    }
    /// Wait for all launched work.
    fn synchronize(&self) -> Result<(), KernelError>;
    /// Copy all of `src` into `dst` (the same length) on the device, in order with the launches.
    /// Default: through the host.
    fn copy(&self, src: &DeviceBuffer, dst: &mut DeviceBuffer) -> Result<(), KernelError> {
        if src.len() != dst.len() {
            return Err(KernelError::OutOfRange(format!(
                "copy of {} bytes into {}",
                src.len(),
                dst.len()
            )));
        }
        let mut staged = vec![0u8; src.len()];
        self.download(src, 0, &mut staged)?;
        self.upload(dst, 0, &staged)
    }
    /// Seconds each of `repeats` runs of `launch` took, on the device's own clock: on a GPU, CUDA
    /// events recorded around each run on the launch stream; with `flush_l2` the L2 is evicted
    /// before each run, outside the timed span, so the run reads its inputs from DRAM. Default
    /// (the emulator): the wall clock around each run, synchronised on both sides; `flush_l2`
    /// has no meaning there.
    fn time_launches(
        &self,
        repeats: usize,
        flush_l2: bool,
        launch: &mut dyn FnMut() -> Result<(), KernelError>,
    ) -> Result<Vec<f64>, KernelError> {
        let _ = flush_l2;
        let mut seconds = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            self.synchronize()?;
            let start = std::time::Instant::now();
            launch()?;
            self.synchronize()?;
            seconds.push(start.elapsed().as_secs_f64());
        }
        Ok(seconds)
    }
    /// A GEMM in the activation dtype (see [`GemmDesc`]).
    fn gemm(&self, dtype: super::Dtype, g: &GemmDesc) -> Result<(), KernelError>;
    /// Run the launch sequence `record` makes as a replayable graph keyed by `key`: recorded on
    /// first use (a CUDA graph; a launch list on the emulator), replayed afterwards. Everything
    /// `record` launches must read its per-batch values from device memory. Default: run it.
    fn run_graph(&self, key: [u32; 3], record: &mut dyn FnMut() -> Result<(), KernelError>) -> Result<(), KernelError> {
        let _ = key;
        record()
    }
    /// The emulator, if this device is one (to switch the thread order).
    fn as_emulator(&self) -> Option<&Emulator> {
        None
    }
    /// The cost model, if this device is one (to read its predicted clock and launch ledger).
    fn as_model(&self) -> Option<&super::model::ModelDevice> {
        None
    }
}

impl dyn Device + '_ {
    /// Launch kernel `name` with a typed parameter struct.
    pub fn launch<P: KernelParam>(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &P,
    ) -> Result<(), KernelError> {
        self.launch_raw(name, grid, block, smem, params.as_bytes())
    }

    /// With programmatic dependent launch (see [`LaunchAttrs::dependent`]).
    pub fn launch_dependent_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError> {
        let attrs = LaunchAttrs {
            dependent: true,
            ..LaunchAttrs::default()
        };
        self.launch_ex_raw(name, grid, block, smem, params, attrs)
    }

    /// Every block resident at once (see [`LaunchAttrs::coscheduled`]).
    pub fn launch_coscheduled<P: KernelParam>(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &P,
    ) -> Result<(), KernelError> {
        let attrs = LaunchAttrs {
            coscheduled: true,
            ..LaunchAttrs::default()
        };
        self.launch_ex_raw(name, grid, block, smem, params.as_bytes(), attrs)
    }

    /// Allocate and upload in one go.
    pub fn upload_new(&self, data: &[u8], label: &str) -> Result<DeviceBuffer, KernelError> {
        let mut b = self.alloc(data.len(), label)?;
        self.upload(&mut b, 0, data)?;
        Ok(b)
    }

    /// Download a whole buffer.
    pub fn download_vec(&self, buf: &DeviceBuffer) -> Result<Vec<u8>, KernelError> {
        let mut v = vec![0u8; buf.len()];
        self.download(buf, 0, &mut v)?;
        Ok(v)
    }
}

impl Device for Emulator {
    fn name(&self) -> String {
        "emulator".into()
    }
    fn compute_capability(&self) -> (u32, u32) {
        Emulator::compute_capability(self)
    }
    fn multiprocessors(&self) -> u32 {
        Emulator::multiprocessors(self)
    }
    fn memory_available(&self) -> u64 {
        crate::limits::host_memory_limit()
    }
    fn alloc(&self, bytes: usize, label: &str) -> Result<DeviceBuffer, KernelError> {
        let b = self.try_alloc_labeled(bytes, label)?;
        Ok(DeviceBuffer {
            addr: b.addr(),
            len: bytes,
            inner: BufferInner::Emu(b),
        })
    }
    fn upload(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), KernelError> {
        self.flush()?;
        match &buf.inner {
            BufferInner::Emu(b) => b.upload(offset, data),
            _ => Err(KernelError::OutOfRange(
                "a buffer of another device given to the emulator".into(),
            )),
        }
    }
    fn download(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), KernelError> {
        self.flush()?;
        match &buf.inner {
            BufferInner::Emu(b) => {
                b.download(offset, out)?;
                self.count_download(out.len());
                Ok(())
            }
            _ => Err(KernelError::OutOfRange(
                "a buffer of another device given to the emulator".into(),
            )),
        }
    }
    fn launch_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError> {
        Emulator::launch_raw(self, name, grid, block, smem, params)
    }
    fn launch_ex_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: LaunchAttrs,
    ) -> Result<(), KernelError> {
        Emulator::launch_ex_raw(self, name, grid, block, smem, params, attrs)
    }
    fn encode_tensor_map(
        &self,
        desc: &super::params::MbTensorMapDesc,
    ) -> Result<super::params::MbTensorMap, KernelError> {
        Emulator::encode_tensor_map(self, desc)
    }
    fn gemm(&self, dtype: super::Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        Emulator::gemm(self, dtype, g)
    }
    fn run_graph(&self, key: [u32; 3], record: &mut dyn FnMut() -> Result<(), KernelError>) -> Result<(), KernelError> {
        self.flush()?;
        Emulator::run_graph(self, key, record)
    }
    fn synchronize(&self) -> Result<(), KernelError> {
        self.flush()
    }
    fn as_emulator(&self) -> Option<&Emulator> {
        Some(self)
    }
}
