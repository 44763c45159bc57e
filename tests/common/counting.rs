//! A device that counts what the executor asks of it: allocations, and launches + GEMMs (the
//! executor's launch list, seen from outside). With `execute` off it records launches and GEMMs
//! without running them, so a host-allocation count is the executor's alone, not the emulated GPU's.
use std::sync::atomic::{AtomicUsize, Ordering};

use modernbert::kernels::device::{Device, DeviceBuffer, GemmDesc};
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::{Dtype, KernelError};

pub struct CountingDevice {
    pub inner: Emulator,
    pub execute: bool,
    pub allocs: AtomicUsize,
    pub launches: AtomicUsize,
}

impl CountingDevice {
    pub fn new(execute: bool) -> Self {
        Self::with_compute_capability(execute, (8, 0))
    }
    /// Reporting `capability` (an sm_90 one lets the executor take the Hopper path, asked for).
    pub fn with_compute_capability(execute: bool, capability: (u32, u32)) -> Self {
        CountingDevice {
            inner: Emulator::new().with_compute_capability(capability),
            execute,
            allocs: AtomicUsize::new(0),
            launches: AtomicUsize::new(0),
        }
    }
    pub fn launches(&self) -> usize {
        self.launches.load(Ordering::Relaxed)
    }
    pub fn allocs(&self) -> usize {
        self.allocs.load(Ordering::Relaxed)
    }
}

impl Device for CountingDevice {
    fn name(&self) -> String {
        "counting".into()
    }
    fn compute_capability(&self) -> (u32, u32) {
        Device::compute_capability(&self.inner)
    }
    fn multiprocessors(&self) -> u32 {
        Device::multiprocessors(&self.inner)
    }
    fn memory_available(&self) -> u64 {
        self.inner.memory_available()
    }
    fn alloc(&self, bytes: usize, label: &str) -> Result<DeviceBuffer, KernelError> {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        Device::alloc(&self.inner, bytes, label)
    }
    fn upload(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), KernelError> {
        Device::upload(&self.inner, buf, offset, data)
    }
    fn download(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), KernelError> {
        Device::download(&self.inner, buf, offset, out)
    }
    fn launch_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        if self.execute {
            Device::launch_raw(&self.inner, name, grid, block, smem, params)
        } else {
            Ok(())
        }
    }
    fn launch_ex_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: modernbert::kernels::LaunchAttrs,
    ) -> Result<(), KernelError> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        if self.execute {
            Device::launch_ex_raw(&self.inner, name, grid, block, smem, params, attrs)
        } else {
            Ok(())
        }
    }
    fn encode_tensor_map(
        &self,
        desc: &modernbert::kernels::params::MbTensorMapDesc,
    ) -> Result<modernbert::kernels::params::MbTensorMap, KernelError> {
        Device::encode_tensor_map(&self.inner, desc)
    }
    fn synchronize(&self) -> Result<(), KernelError> {
        Ok(())
    }
    fn gemm(&self, dtype: Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        if self.execute {
            Device::gemm(&self.inner, dtype, g)
        } else {
            g.check()
        }
    }
}
