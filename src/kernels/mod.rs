//! The CUDA kernels (`cuda/*.cu`) as seen from Rust: their parameter structs, the embedded fatbins,
//! a host emulator that runs the same sources on the CPU, and a small device abstraction over the
//! emulator and a real GPU (cudarc) so that the same kernel tests and the GPU executor run on either.
//!
//! - [`params`]: the `#[repr(C)]` structs of `cuda/include/params.h` (bindgen, with layout tests).
//! - [`emu`]: [`emu::Emulator`], guarded buffers, launch by kernel name.
//! - [`device`]: the [`device::Device`] trait, [`device::DeviceBuffer`]; [`from_env`] opens the
//!   device the tests name.
//! - [`cuda`]: [`cuda::CudaDevice`], the CUDA implementation (cudarc, cuBLASLt, CUDA graphs).
//! - [`gemm`]: [`gemm::GemmDesc`], the GEMM every device runs (a leaf module);
//!   [`gemm_host`]: its CPU implementation for the emulator.
//! - [`ops`]: one typed launcher per op (validation + launch geometry), for the executor and tests.
//! - [`gemm_stream`]: the small-batch GEMM's launcher (weight streaming, `MB_STREAM_MAX_M` rows).
//! - [`attention_sm90`]: the Hopper attention's launcher (its qkv tensor map, key tiles by window).
//! - [`model`]: [`model::ModelDevice`], a device that computes nothing and predicts the time of
//!   every launch on a named card (the cost model).
//! - [`build_info`]: what build.rs produced (paths of the ptxas reports, PTX, fatbins).

pub mod attention_sm90;
pub mod build_info;
pub mod cublaslt;
pub mod cuda;
pub mod device;
pub mod emu;
pub mod forward_small;
pub mod gemm;
pub mod gemm_host;
pub mod gemm_stream;
pub mod graph;
pub mod model;
pub mod nvtx;
pub mod ops;
pub mod params;
pub mod tensor_map;

/// `(source name, fatbin bytes)` of every `cuda/*.cu` that nvcc compiled (empty without nvcc).
pub mod fatbins {
    include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));
}

/// Whether this build has CUDA kernels (nvcc was found at build time).
pub const KERNELS_BUILT: bool = cfg!(not(modernbert_no_kernels));

/// Element type of the activations a kernel works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bf16,
    F16,
}

impl Dtype {
    /// The kernel-name suffix: `_bf16` or `_f16`.
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::Bf16 => "_bf16",
            Dtype::F16 => "_f16",
        }
    }
    /// One of two static kernel names (no allocation in the launch path).
    pub fn pick(self, bf16: &'static str, f16: &'static str) -> &'static str {
        match self {
            Dtype::Bf16 => bf16,
            Dtype::F16 => f16,
        }
    }
    /// Bytes per element (2).
    pub fn size(self) -> usize {
        2
    }
}

/// Everything that can go wrong around a kernel launch. Nothing here panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("unknown kernel `{0}`")]
    UnknownKernel(String),
    #[error("kernel `{kernel}`: parameter struct size mismatch: {message}")]
    ParamSize { kernel: String, message: String },
    #[error("kernel `{kernel}`: invalid launch: {message}")]
    BadLaunch { kernel: String, message: String },
    #[error("kernel `{kernel}` failed: {message}")]
    KernelFailed { kernel: String, message: String },
    #[error("kernel `{kernel}` wrote outside buffer `{buffer}` ({where_})")]
    GuardOverwrite {
        kernel: String,
        buffer: String,
        where_: String,
    },
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    #[error("buffer access out of range: {0}")]
    OutOfRange(String),
    #[error("unsupported arguments for `{kernel}`: {message}")]
    Unsupported { kernel: String, message: String },
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("CUDA kernels were not built into this binary (no nvcc at build time)")]
    NotBuilt,
}

/// How a launch relates to the others on its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchAttrs {
    /// Programmatic dependent launch: may start before the previous launch finishes; the kernel
    /// orders its reads of that launch's output with `pdl_wait()` (griddepcontrol.wait).
    pub dependent: bool,
    /// Co-scheduled: every block resident at once (a cooperative launch), so that blocks may wait
    /// on each other through global memory (`grid_wait_geq` / `grid_signal`, device.cuh).
    pub coscheduled: bool,
    /// Blocks per thread block cluster along x (0 or 1: none): consecutive blocks co-scheduled on
    /// one GPC, each reaching the others' shared memory (sm_90; the grid's x a multiple of it).
    pub cluster: u32,
}

/// Marker for the parameter structs a kernel takes by value.
///
/// # Safety
/// Implementors must be `#[repr(C)]` plain data without implicit padding (every byte initialised),
/// matching a struct of `cuda/include/params.h` byte for byte.
pub unsafe trait KernelParam: Copy + 'static {
    /// The struct's bytes, as the kernel receives them.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: KernelParam` promises plain, fully initialised `#[repr(C)]` data.
        unsafe { std::slice::from_raw_parts(self as *const Self as *const u8, std::mem::size_of::<Self>()) }
    }
}

/// The device named by `MODERNBERT_TEST_DEVICE`: `emulator` (default) or `cuda` / `cuda:N`.
pub fn from_env() -> Result<Box<dyn device::Device>, KernelError> {
    let v = std::env::var("MODERNBERT_TEST_DEVICE").unwrap_or_else(|_| "emulator".into());
    match v.as_str() {
        "" | "emulator" | "emu" => Ok(Box::new(emu::Emulator::new())),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse().map_err(|_| {
                    KernelError::Cuda(format!("MODERNBERT_TEST_DEVICE={s}: the device index must be a number"))
                })?,
            };
            Ok(Box::new(cuda::CudaDevice::new(ordinal)?))
        }
        other => Err(KernelError::Cuda(format!(
            "MODERNBERT_TEST_DEVICE={other}: expected `emulator` or `cuda`"
        ))),
    }
}
