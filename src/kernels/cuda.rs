//! The CUDA implementation of [`Device`]: a real GPU through cudarc, with every embedded fatbin
//! loaded, cuBLASLt for the GEMMs and CUDA graphs for [`Device::run_graph`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::device::{BufferInner, Device, DeviceBuffer};
use super::gemm::GemmDesc;
use super::KernelError;

/// A real GPU through cudarc, with every embedded fatbin loaded.
pub struct CudaDevice {
    ctx: Arc<cudarc::driver::CudaContext>,
    stream: Arc<cudarc::driver::CudaStream>,
    /// (source name, module) for every embedded fatbin this device can load.
    modules: Vec<(&'static str, Arc<cudarc::driver::CudaModule>)>,
    /// (major, minor), queried once when the device is opened.
    capability: (u32, u32),
    /// Streaming multiprocessors, queried once.
    multiprocessors: u32,
    functions: Mutex<HashMap<String, cudarc::driver::CudaFunction>>,
    /// `MODERNBERT_CUDA_SYNC=1`: synchronise after every launch (read once: no per-launch lookup).
    sync_each_launch: bool,
    // Dropped before the buffers they reference (fields drop in declaration order; the arena and
    // weights belong to the executor, which drops its device last).
    graphs: super::graph::GraphCache<[u32; 3]>,
    blas: super::cublaslt::CublasLtGemm,
    /// Allocated on the first timing with `flush_l2` (twice the L2 size), then reused.
    l2_flush: Mutex<Option<cudarc::driver::CudaSlice<u8>>>,
}

fn cuda_err(e: impl std::fmt::Debug) -> KernelError {
    KernelError::Cuda(format!("{e:?}"))
}

impl CudaDevice {
    /// Open GPU `ordinal` and load the kernels. Errors (never panics) when libcuda is absent, there
    /// is no such GPU, or the binary was built without kernels.
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        if super::fatbins::FATBINS.is_empty() {
            return Err(KernelError::NotBuilt);
        }
        // SAFETY: only probes whether libcuda can be loaded (CudaContext::new panics if it cannot).
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(KernelError::Cuda(
                "libcuda not found (no NVIDIA driver on this machine)".into(),
            ));
        }
        let count = cudarc::driver::CudaContext::device_count().map_err(cuda_err)?;
        check_ordinal(ordinal, count.max(0) as usize)?;
        let ctx = cudarc::driver::CudaContext::new(ordinal).map_err(cuda_err)?;
        // Before any allocation: buffers used inside graph captures must not carry cudarc events.
        super::graph::prepare_context_for_graphs(&ctx);
        let stream = ctx.new_stream().map_err(cuda_err)?;
        let mut modules = Vec::new();
        let capability = {
            use cudarc::driver::sys::CUdevice_attribute as A;
            let major = ctx
                .attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                .map_err(cuda_err)?;
            let minor = ctx
                .attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                .map_err(cuda_err)?;
            (major.max(0) as u32, minor.max(0) as u32)
        };
        let multiprocessors = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err)?
            .max(1) as u32;
        let sm = capability.0 * 10 + capability.1;
        // An sm_90a module cannot load elsewhere; its kernels are then unknown on this device.
        for (name, bytes, only_sm) in super::fatbins::FATBINS {
            if *only_sm != 0 && *only_sm != sm {
                continue;
            }
            let m = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()))
                .map_err(|e| KernelError::Cuda(format!("loading the fatbin of {name}.cu: {e:?}")))?;
            modules.push((*name, m));
        }
        let blas = super::cublaslt::CublasLtGemm::new(stream.clone())?;
        Ok(CudaDevice {
            ctx,
            stream,
            modules,
            capability,
            multiprocessors,
            functions: Mutex::new(HashMap::new()),
            sync_each_launch: std::env::var("MODERNBERT_CUDA_SYNC").is_ok_and(|v| v == "1"),
            graphs: super::graph::GraphCache::new(),
            blas,
            l2_flush: Mutex::new(None),
        })
    }

    pub fn context(&self) -> &Arc<cudarc::driver::CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<cudarc::driver::CudaStream> {
        &self.stream
    }

    /// The kernel `name`, looked up in the one module whose source defines it (build.rs lists every
    /// kernel with its source in `FATBIN_KERNELS`). Asking the driver only there keeps failed
    /// `cuModuleGetFunction` calls out of compute-sanitizer's API-error report.
    pub fn function(&self, name: &str) -> Result<cudarc::driver::CudaFunction, KernelError> {
        let mut f = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = f.get(name) {
            return Ok(k.clone());
        }
        let unknown = || KernelError::UnknownKernel(name.to_string());
        let source = super::fatbins::FATBIN_KERNELS
            .iter()
            .find(|(kernel, _)| *kernel == name)
            .map(|(_, source)| *source)
            .ok_or_else(unknown)?;
        let (_, module) = self.modules.iter().find(|(s, _)| *s == source).ok_or_else(unknown)?;
        let k = module.load_function(name).map_err(|_| unknown())?;
        f.insert(name.to_string(), k.clone());
        Ok(k)
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        format!("cuda:{} {}", self.ctx.ordinal(), self.ctx.name().unwrap_or_default())
    }
    fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }
    fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }
    fn memory_available(&self) -> u64 {
        // Free memory of this context's device; 0 (nothing fits) if the driver cannot say.
        self.ctx.mem_get_info().map_or(0, |(free, _total)| free as u64)
    }
    fn alloc(&self, bytes: usize, _label: &str) -> Result<DeviceBuffer, KernelError> {
        use cudarc::driver::DevicePtr;
        let s = self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(cuda_err)?;
        let addr = {
            let (p, _sync) = s.device_ptr(&self.stream);
            p
        };
        Ok(DeviceBuffer {
            addr,
            len: bytes,
            inner: BufferInner::Cuda(s),
        })
    }
    fn upload(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), KernelError> {
        if offset.checked_add(data.len()).is_none_or(|e| e > buf.len) {
            return Err(KernelError::OutOfRange(format!(
                "upload of {} bytes at {offset} into {}",
                data.len(),
                buf.len
            )));
        }
        match &mut buf.inner {
            BufferInner::Cuda(s) => {
                let mut view = s.slice_mut(offset..offset + data.len());
                self.stream.memcpy_htod(data, &mut view).map_err(cuda_err)
            }
            _ => Err(KernelError::OutOfRange(
                "a buffer of another device given to CUDA".into(),
            )),
        }
    }
    fn download(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), KernelError> {
        if offset.checked_add(out.len()).is_none_or(|e| e > buf.len) {
            return Err(KernelError::OutOfRange(format!(
                "download of {} bytes at {offset} from {}",
                out.len(),
                buf.len
            )));
        }
        match &buf.inner {
            BufferInner::Cuda(s) => {
                let view = s.slice(offset..offset + out.len());
                self.stream.memcpy_dtoh(&view, out).map_err(cuda_err)?;
                self.stream.synchronize().map_err(cuda_err)
            }
            _ => Err(KernelError::OutOfRange(
                "a buffer of another device given to CUDA".into(),
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
        self.launch_with(name, grid, block, smem, params, super::LaunchAttrs::default())
    }
    fn launch_ex_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: super::LaunchAttrs,
    ) -> Result<(), KernelError> {
        self.launch_with(name, grid, block, smem, params, attrs)
    }
    fn coscheduled_clusters(&self, name: &str, block: u32, smem: u32, cluster: u32) -> Result<u32, KernelError> {
        use cudarc::driver::sys;
        let cluster = cluster.max(1);
        if cluster == 1 {
            return Ok(self.multiprocessors);
        }
        let cu_f = self.function_for(name, smem)?;
        // SAFETY: a zeroed attribute is valid plain data; we set the cluster dimension.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attr.value.clusterDim.x = cluster;
        attr.value.clusterDim.y = 1;
        attr.value.clusterDim.z = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cluster,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        let mut n: std::ffi::c_int = 0;
        // SAFETY: a valid function handle and config (its one attribute outlives the call).
        let r = unsafe { sys::cuOccupancyMaxActiveClusters(&mut n, cu_f, &config) };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(KernelError::BadLaunch {
                kernel: name.into(),
                message: format!("clusters of {cluster}: {r:?}"),
            });
        }
        Ok(n.max(0) as u32)
    }
    fn encode_tensor_map(&self, d: &super::params::MbTensorMapDesc) -> Result<super::params::MbTensorMap, KernelError> {
        use cudarc::driver::sys;
        let dtype = match d.dtype {
            super::params::MB_TMAP_BF16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            super::params::MB_TMAP_F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            _ => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        };
        let swizzle = match d.swizzle {
            32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            _ => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
        };
        let oob = if d.oob_nan != 0 {
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA
        } else {
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE
        };
        let element_strides = [1u32; 5];
        let mut map = sys::CUtensorMap { opaque: [0; 16] };
        // SAFETY: every array holds at least `d.rank` (strides: rank - 1 from index 1) entries; the
        // map is written by the driver only.
        let r = unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                dtype,
                d.rank,
                d.global_address as *mut std::ffi::c_void,
                d.dims.as_ptr(),
                d.strides[1..].as_ptr(),
                d.box_.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                oob,
            )
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(KernelError::Cuda(format!("cuTensorMapEncodeTiled: {r:?}")));
        }
        Ok(super::params::MbTensorMap { opaque: map.opaque })
    }
    fn synchronize(&self) -> Result<(), KernelError> {
        self.stream.synchronize().map_err(cuda_err)
    }

    fn copy(&self, src: &DeviceBuffer, dst: &mut DeviceBuffer) -> Result<(), KernelError> {
        if src.len != dst.len {
            return Err(KernelError::OutOfRange(format!(
                "copy of {} bytes into {}",
                src.len, dst.len
            )));
        }
        match (&src.inner, &mut dst.inner) {
            (BufferInner::Cuda(s), BufferInner::Cuda(d)) => self.stream.memcpy_dtod(s, d).map_err(cuda_err),
            _ => Err(KernelError::OutOfRange(
                "a buffer of another device given to CUDA".into(),
            )),
        }
    }
    fn time_launches(
        &self,
        repeats: usize,
        flush_l2: bool,
        launch: &mut dyn FnMut() -> Result<(), KernelError>,
    ) -> Result<Vec<f64>, KernelError> {
        use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
        let mut flush = self.l2_flush.lock().unwrap_or_else(|e| e.into_inner());
        if flush_l2 && flush.is_none() {
            // Twice the L2, so that a memset of it leaves none of the timed launch's inputs cached.
            let l2 = self
                .ctx
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
                .map_err(cuda_err)?;
            let bytes = 2 * (l2.max(1) as usize);
            *flush = Some(self.stream.alloc_zeros::<u8>(bytes).map_err(cuda_err)?);
        }
        // Timing events (CU_EVENT_DEFAULT records a timestamp; cudarc's default disables timing).
        let start = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err)?;
        let end = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err)?;
        let mut seconds = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            if flush_l2 {
                // On the same stream, so it is ordered before the start event and not timed.
                let buf = flush.as_mut().expect("allocated above");
                self.stream.memset_zeros(buf).map_err(cuda_err)?;
            }
            start.record(&self.stream).map_err(cuda_err)?;
            launch()?;
            end.record(&self.stream).map_err(cuda_err)?;
            seconds.push(start.elapsed_ms(&end).map_err(cuda_err)? as f64 / 1e3);
        }
        Ok(seconds)
    }
    fn gemm(&self, dtype: super::Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        self.blas.gemm(dtype, g)
    }
    fn run_graph(&self, key: [u32; 3], record: &mut dyn FnMut() -> Result<(), KernelError>) -> Result<(), KernelError> {
        if !self.graphs.contains(&key) {
            // One eager run first: it prepares the cuBLASLt plans of this shape and lets lazily
            // loaded kernels load, neither of which may happen during capture.
            record()?;
        }
        self.graphs.replay_or_capture(key, &self.stream, record)
    }
}

/// A device index the driver does not have is refused by name, before a context is created.
fn check_ordinal(ordinal: usize, count: usize) -> Result<(), KernelError> {
    match count {
        _ if ordinal < count => Ok(()),
        0 => Err(KernelError::Cuda("the driver reports no CUDA device".into())),
        1 => Err(KernelError::Cuda(format!(
            "no device {ordinal}: this machine has 1 CUDA device (cuda:0)"
        ))),
        n => Err(KernelError::Cuda(format!(
            "no device {ordinal}: this machine has {n} CUDA devices (cuda:0 … cuda:{})",
            n - 1
        ))),
    }
}

/// Whether a CUDA device can be opened here (driver library present, a GPU, kernels built).
pub fn cuda_available() -> bool {
    CudaDevice::new(0).is_ok()
}

impl CudaDevice {
    /// Kernel `name`'s handle on this thread's context, its dynamic shared memory limit raised to
    /// `smem` where that is above the default 48 KiB.
    fn function_for(&self, name: &str, smem: u32) -> Result<cudarc::driver::sys::CUfunction, KernelError> {
        use cudarc::driver::sys;
        self.ctx.bind_to_thread().map_err(cuda_err)?;
        let f = self.function(name)?;
        let cu_f = f.cu_function();
        if smem > 48 * 1024 {
            // SAFETY: a valid function handle; the attribute only raises the dynamic smem limit.
            let r = unsafe {
                sys::cuFuncSetAttribute(
                    cu_f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            };
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(KernelError::BadLaunch {
                    kernel: name.into(),
                    message: format!("{smem} bytes of smem: {r:?}"),
                });
            }
        }
        Ok(cu_f)
    }

    fn launch_with(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: super::LaunchAttrs,
    ) -> Result<(), KernelError> {
        use cudarc::driver::sys;
        let cu_f = self.function_for(name, smem)?;
        // The kernel's single argument is the struct; cuLaunchKernel copies it from this buffer.
        // A stack copy (no host allocation per launch); params.h structs are far below 4 KiB.
        let mut bytes = [0u8; 4096];
        if params.len() > bytes.len() {
            return Err(KernelError::ParamSize {
                kernel: name.into(),
                message: format!("{} bytes", params.len()),
            });
        }
        bytes[..params.len()].copy_from_slice(params);
        let mut args = [bytes.as_mut_ptr() as *mut std::ffi::c_void];
        if attrs.dependent || attrs.coscheduled || attrs.cluster > 1 {
            // Programmatic dependent launch: may start before the previous kernel on the stream
            // finishes; the kernel's griddepcontrol.wait orders its reads of that kernel's output.
            // Cooperative: every block resident at once, or the launch fails. Cluster: `cluster`
            // consecutive blocks along x gang-scheduled on one GPC.
            // SAFETY: a zeroed attribute value is valid plain data; we set the fields we use.
            let mut attr_list: [sys::CUlaunchAttribute; 3] = unsafe { std::mem::zeroed() };
            let mut n = 0;
            if attrs.dependent {
                attr_list[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
                attr_list[n].value.programmaticStreamSerializationAllowed = 1;
                n += 1;
            }
            if attrs.coscheduled {
                attr_list[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
                attr_list[n].value.cooperative = 1;
                n += 1;
            }
            if attrs.cluster > 1 {
                attr_list[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
                attr_list[n].value.clusterDim.x = attrs.cluster;
                attr_list[n].value.clusterDim.y = 1;
                attr_list[n].value.clusterDim.z = 1;
                n += 1;
            }
            let config = sys::CUlaunchConfig {
                gridDimX: grid[0],
                gridDimY: grid[1],
                gridDimZ: grid[2],
                blockDimX: block[0],
                blockDimY: block[1],
                blockDimZ: block[2],
                sharedMemBytes: smem,
                hStream: self.stream.cu_stream(),
                attrs: attr_list.as_mut_ptr(),
                numAttrs: n as u32,
            };
            // SAFETY: as for cuLaunchKernel below; `config` and `attr_list` outlive the call.
            let r = unsafe { sys::cuLaunchKernelEx(&config, cu_f, args.as_mut_ptr(), std::ptr::null_mut()) };
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(KernelError::KernelFailed {
                    kernel: name.into(),
                    message: format!("{r:?}"),
                });
            }
        } else {
            // SAFETY: `args` points at the parameter bytes, which match the kernel's struct (the
            // caller passes the bindgen struct of params.h); the stream and function are ours.
            unsafe {
                cudarc::driver::result::launch_kernel(
                    cu_f,
                    (grid[0], grid[1], grid[2]),
                    (block[0], block[1], block[2]),
                    smem,
                    self.stream.cu_stream(),
                    &mut args,
                )
            }
            .map_err(|e| KernelError::KernelFailed {
                kernel: name.into(),
                message: format!("{e:?}"),
            })?;
        }
        if self.sync_each_launch {
            self.stream.synchronize().map_err(|e| KernelError::KernelFailed {
                kernel: name.into(),
                message: format!("{e:?}"),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_ordinal;

    #[test]
    fn a_missing_device_index_is_refused_by_name() {
        assert!(check_ordinal(0, 1).is_ok() && check_ordinal(3, 4).is_ok());
        let e = check_ordinal(2, 2).unwrap_err().to_string();
        assert!(
            e.contains("no device 2") && e.contains("2 CUDA devices (cuda:0 … cuda:1)"),
            "{e}"
        );
        assert!(check_ordinal(1, 1)
            .unwrap_err()
            .to_string()
            .contains("1 CUDA device (cuda:0)"));
        assert!(check_ordinal(0, 0).unwrap_err().to_string().contains("no CUDA device"));
    }
}
