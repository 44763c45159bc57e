//! The GPU's GEMM: PyTorch `Linear` on row-major buffers through cuBLASLt,
//! `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])`, bf16/fp16 in and out, fp32 compute.
//!
//! Why not cudarc's safe `Matmul`: it creates descriptors and re-runs the algorithm heuristic on
//! every call (host cost per GEMM, and host work we do not want inside a CUDA-graph capture).
//! Here everything but the bias pointer is built once per shape ([`PlanKey`]) and cached; a call is
//! one mutex lock, at most one descriptor attribute write, and `cublasLtMatmul`.
//!
//! # Row-major operands on a column-major library
//!
//! A row-major `R×C` buffer (element `[r, c]` at `r·C + c`) read as column-major with `ld = C` is the
//! `C×R` matrix `Xᵀ`. So, with `A`/`B`/`C`/`D` the cuBLASLt operands of `D = op(A)·op(B)`:
//!
//! - `A` := `w` (row-major `[n, k]`) is stored as column-major `k×n`, `ld = k`, i.e. `Wᵀ`;
//!   `transa = T` makes `op(A) = W`, `n×k`.
//! - `B` := `a` (row-major `[m, k]`) is stored as column-major `k×m`, `ld = k`, i.e. `Aᵀ`;
//!   `transb = N` keeps `op(B) = Aᵀ`, `k×m`.
//! - `D = op(A)·op(B) = W·Aᵀ` is `n×m` column-major with `ld = n`, which as a row-major buffer is
//!   the `m×n` matrix `(W·Aᵀ)ᵀ = A·Wᵀ` = `out[m, n]`. (`C` = the same buffer; `beta = 0`, never read.)
//! - `CUBLASLT_EPILOGUE_BIAS` adds a vector of length rows(D) = `n` to every column of `D`:
//!   `D[j, i] += bias[j]`, i.e. `out[i, j] += bias[j]` — PyTorch's bias.
//!
//! [`column_major_plan`] is this mapping as a pure function; the unit tests check it against a CPU
//! product that reads the buffers with exactly those layouts.
//!
//! # Bias pointer
//!
//! The bias pointer is a matmul-descriptor attribute, i.e. host state read by `cublasLtMatmul` when it
//! enqueues the kernel (the kernel receives the value; a captured graph keeps the value it saw). We keep
//! ONE descriptor per shape and write the pointer before each call, under the cache mutex, which is
//! held for the whole call anyway (the mutex also serialises all use of the cuBLASLt handle). The
//! alternative, one descriptor per bias pointer, would multiply plans and heuristic queries by the
//! number of layers for no gain.
//!
//! # Graph capture
//!
//! The heuristic never runs inside a capture: call [`CublasLtGemm::prepare`] (or
//! [`CublasLtGemm::prepare_desc`]) for every shape before capturing. A cache miss while the stream is
//! capturing is an error, not a silent heuristic query. cuBLASLt may also load its kernels lazily on
//! first use, so run each shape once eagerly (a warm-up forward) before capturing it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

pub use super::gemm::GemmDesc;
use super::{Dtype, KernelError};

/// The largest workspace [`workspace_bytes`] asks for (planning device memory before the device's
/// generation matters).
pub const MAX_WORKSPACE_BYTES: usize = 32 << 20;

/// Workspace size recommended by NVIDIA: 32 MiB on Hopper (sm_90) and newer, 4 MiB before.
pub fn workspace_bytes(cc_major: i32) -> usize {
    if cc_major >= 9 {
        MAX_WORKSPACE_BYTES
    } else {
        4 << 20
    }
}

/// The alignment (bytes) plans are prepared for by [`CublasLtGemm::prepare`]: cudaMalloc's and the
/// arena's/weights' 256 bytes, which is also cuBLASLt's default assumption.
pub const PREPARED_ALIGNMENT: u32 = 256;

/// The largest power of two (capped at 256) dividing every non-zero address: the `MIN_ALIGNMENT_*`
/// the heuristic must respect for these buffers.
pub fn pointer_alignment(ptrs: &[u64]) -> u32 {
    ptrs.iter()
        .filter(|&&p| p != 0)
        .map(|&p| 1u64 << p.trailing_zeros().min(8))
        .min()
        .unwrap_or(PREPARED_ALIGNMENT as u64) as u32
}

/// A column-major matrix layout as cuBLASLt wants it: the stored matrix (before `op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColLayout {
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
}

/// How `out[m, n] = a[m, k] · w[n, k]ᵀ` on row-major buffers is posed to cuBLASLt (see the module
/// doc): `A` is the weight buffer, `B` the activation buffer, `C`/`D` the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnMajorPlan {
    /// `op(A) = Aᵀ`.
    pub transa: bool,
    /// `op(B) = Bᵀ`.
    pub transb: bool,
    pub a: ColLayout,
    pub b: ColLayout,
    pub c: ColLayout,
}

/// The row-major → column-major mapping of the module doc, as data.
pub fn column_major_plan(m: u32, n: u32, k: u32) -> ColumnMajorPlan {
    let (m, n, k) = (m as u64, n as u64, k as u64);
    ColumnMajorPlan {
        transa: true,
        transb: false,
        // w[n, k] row-major = column-major k×n, ld k.
        a: ColLayout {
            rows: k,
            cols: n,
            ld: k as i64,
        },
        // a[m, k] row-major = column-major k×m, ld k.
        b: ColLayout {
            rows: k,
            cols: m,
            ld: k as i64,
        },
        // out[m, n] row-major = column-major n×m, ld n.
        c: ColLayout {
            rows: n,
            cols: m,
            ld: n as i64,
        },
    }
}

/// What a cached plan depends on. The addresses are not part of it, except through `align`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanKey {
    pub dtype: Dtype,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: bool,
    /// Alignment of `a`, `w`, `out` (see [`pointer_alignment`]); [`PREPARED_ALIGNMENT`] normally.
    pub align: u32,
}

impl PlanKey {
    /// The key [`CublasLtGemm::gemm`] looks up for this call. The bias pointer's alignment is not
    /// included (no preference attribute exists for it; the buffers we pass are 256-byte aligned).
    pub fn for_call(dtype: Dtype, g: &GemmDesc) -> Self {
        PlanKey {
            dtype,
            m: g.m,
            n: g.n,
            k: g.k,
            has_bias: g.bias != 0,
            align: pointer_alignment(&[g.a, g.w, g.out]),
        }
    }
}

fn cuda_type(dtype: Dtype) -> sys::cudaDataType {
    match dtype {
        Dtype::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        Dtype::F16 => sys::cudaDataType_t::CUDA_R_16F,
    }
}

fn blas_err(what: &'static str) -> impl Fn(CublasError) -> KernelError {
    move |e| KernelError::Cuda(format!("cuBLASLt {what}: {e:?}"))
}

fn drv_err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda(format!("{what}: {e:?}"))
}

/// Descriptors and chosen algorithm of one [`PlanKey`]. Null handles are "not created yet", so a
/// half-built plan (an error midway) is cleaned up by `Drop`.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: every non-null handle was created by cuBLASLt for this plan and is destroyed once.
        // Errors cannot be reported from Drop; they are ignored.
        unsafe {
            for l in [self.a, self.b, self.c] {
                if !l.is_null() {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
            if !self.desc.is_null() {
                let _ = lt::destroy_matmul_desc(self.desc);
            }
        }
    }
}

/// Releases a preference descriptor on every path out of [`CublasLtGemm::build_plan`].
struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate, destroyed once.
        unsafe {
            let _ = lt::destroy_matmul_pref(self.0);
        }
    }
}

/// A cuBLASLt handle, its workspace, and the per-shape plans, bound to one stream.
///
/// Drop it only after every CUDA graph that captured one of its GEMMs (they reference the workspace).
pub struct CublasLtGemm {
    handle: sys::cublasLtHandle_t,
    stream: Arc<CudaStream>,
    /// Owns the workspace memory (freed stream-ordered on drop, after the handle is destroyed).
    _workspace: CudaSlice<u8>,
    workspace_ptr: u64,
    workspace_size: usize,
    plans: Mutex<HashMap<PlanKey, Plan>>,
}

// SAFETY: the raw cuBLASLt handle and descriptors are not tied to a thread. Every use of them after
// construction (heuristic queries, attribute writes, cublasLtMatmul) happens with `plans` locked,
// and Drop has exclusive access, so they are never used concurrently.
unsafe impl Send for CublasLtGemm {}
unsafe impl Sync for CublasLtGemm {}

impl CublasLtGemm {
    /// Create the handle and allocate the workspace on `stream`. Errors (never panics) when
    /// libcublasLt cannot be loaded.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self, KernelError> {
        // SAFETY: only probes whether the library can be dlopen'ed (every cudarc cuBLASLt entry point
        // panics if it cannot). libcuda is present: `stream` exists.
        if !unsafe { sys::is_culib_present() } {
            return Err(KernelError::Cuda(
                "libcublasLt not found (put the directory of libcublasLt.so.13 on LD_LIBRARY_PATH)".into(),
            ));
        }
        let ctx = stream.context().clone();
        ctx.bind_to_thread().map_err(drv_err("binding the CUDA context"))?;
        let major = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(drv_err("querying the compute capability"))?;
        let workspace_size = workspace_bytes(major);
        // SAFETY: the workspace is scratch memory for cuBLASLt; its contents never matter.
        let workspace =
            unsafe { stream.alloc::<u8>(workspace_size) }.map_err(drv_err("allocating the cuBLASLt workspace"))?;
        let workspace_ptr = {
            let (p, _record) = workspace.device_ptr(&stream);
            p
        };
        let handle = lt::create_handle().map_err(blas_err("cublasLtCreate"))?;
        Ok(CublasLtGemm {
            handle,
            stream,
            _workspace: workspace,
            workspace_ptr,
            workspace_size,
            plans: Mutex::new(HashMap::new()),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn workspace_size(&self) -> usize {
        self.workspace_size
    }
    /// Number of cached plans (shapes seen or prepared).
    pub fn cached_plans(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlanKey, Plan>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Build and cache the plan for this shape with 256-byte-aligned buffers (what the arena and the
    /// weights provide). Call at engine creation and before graph capture, never during capture.
    pub fn prepare(&self, dtype: Dtype, m: u32, n: u32, k: u32, has_bias: bool) -> Result<(), KernelError> {
        self.prepare_key(PlanKey {
            dtype,
            m,
            n,
            k,
            has_bias,
            align: PREPARED_ALIGNMENT,
        })
    }

    /// Build and cache exactly the plan that `gemm(dtype, g)` will use (covers unusual alignments).
    pub fn prepare_desc(&self, dtype: Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        self.prepare_key(PlanKey::for_call(dtype, g))
    }

    fn prepare_key(&self, key: PlanKey) -> Result<(), KernelError> {
        check_dims(key.m, key.n, key.k)?;
        if key.m == 0 {
            return Ok(());
        }
        let mut plans = self.lock();
        if let Entry::Vacant(v) = plans.entry(key) {
            self.stream
                .context()
                .bind_to_thread()
                .map_err(drv_err("binding the CUDA context"))?;
            v.insert(self.build_plan(key)?);
        }
        Ok(())
    }

    fn is_capturing(&self) -> Result<bool, KernelError> {
        let s = self.stream.capture_status().map_err(drv_err("cuStreamIsCapturing"))?;
        Ok(s != cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// Descriptors, layouts, and the heuristic's first algorithm for `key`. Caller holds the lock
    /// (the handle is used) and has bound the context.
    fn build_plan(&self, key: PlanKey) -> Result<Plan, KernelError> {
        let cm = column_major_plan(key.m, key.n, key.k);
        let ty = cuda_type(key.dtype);
        let mut plan = Plan {
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        plan.desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(blas_err("cublasLtMatmulDescCreate"))?;
        plan.a = lt::create_matrix_layout(ty, cm.a.rows, cm.a.cols, cm.a.ld).map_err(blas_err("layout A"))?;
        plan.b = lt::create_matrix_layout(ty, cm.b.rows, cm.b.cols, cm.b.ld).map_err(blas_err("layout B"))?;
        plan.c = lt::create_matrix_layout(ty, cm.c.rows, cm.c.cols, cm.c.ld).map_err(blas_err("layout C"))?;

        use sys::cublasLtMatmulDescAttributes_t as D;
        // cublasOperation_t is a 32-bit C enum: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
        let transa: i32 = cm.transa as i32;
        let transb: i32 = cm.transb as i32;
        let epilogue = if key.has_bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        // SAFETY: `plan.desc` is live; each buffer is a local of the attribute's documented type and
        // size (int32 transposes, uint32 epilogue, int32 cudaDataType, void* bias pointer).
        unsafe {
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &transa)?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &transb)?;
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            if key.has_bias {
                // Bias in the activation dtype (also cuBLASLt's default, -1 = D's type; explicit here).
                let bias_type: i32 = ty as i32;
                set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type)?;
                // A placeholder for the heuristic: a real, 256-byte-aligned device address (never read
                // by the heuristic). Every gemm() call overwrites it with the call's bias.
                let placeholder: u64 = self.workspace_ptr;
                set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &placeholder)?;
            }
        }

        let pref = Pref(lt::create_matmul_pref().map_err(blas_err("cublasLtMatmulPreferenceCreate"))?);
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let max_ws: u64 = self.workspace_size as u64;
        let align: u32 = key.align;
        // SAFETY: `pref.0` is live; uint64 workspace limit, uint32 alignments.
        unsafe {
            set_pref(pref.0, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws)?;
            for attr in [
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ] {
                set_pref(pref.0, attr, &align)?;
            }
        }
        // SAFETY: handle, descriptor, layouts and preference are live. cudarc asks for one result,
        // returns NOT_SUPPORTED when there is none, and checks the result's own status.
        let heuristic =
            unsafe { lt::get_matmul_algo_heuristic(self.handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref.0) }
                .map_err(|e| {
                    KernelError::Cuda(format!(
                        "cuBLASLt found no algorithm for {:?} m={} n={} k={} bias={} align={}: {e:?}",
                        key.dtype, key.m, key.n, key.k, key.has_bias, key.align
                    ))
                })?;
        if heuristic.workspaceSize > self.workspace_size {
            return Err(KernelError::Cuda(format!(
                "cuBLASLt algorithm wants {} bytes of workspace, limit {}",
                heuristic.workspaceSize, self.workspace_size
            )));
        }
        plan.algo = heuristic.algo;
        Ok(plan)
    }

    /// `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])` on the stream (asynchronous). Uses the cached plan;
    /// on a miss builds it, unless the stream is capturing a graph (then: error, prepare first).
    pub fn gemm(&self, dtype: Dtype, g: &GemmDesc) -> Result<(), KernelError> {
        g.check()?;
        if g.m == 0 {
            return Ok(()); // an empty batch: nothing to compute
        }
        let key = PlanKey::for_call(dtype, g);
        let mut plans = self.lock();
        // cuBLASLt runs on the runtime API, which uses the thread's current context.
        self.stream
            .context()
            .bind_to_thread()
            .map_err(drv_err("binding the CUDA context"))?;
        let plan = match plans.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                if self.is_capturing()? {
                    return Err(KernelError::Unsupported {
                        kernel: "cublasLt gemm".into(),
                        message: format!(
                            "no prepared plan for {key:?} while capturing a CUDA graph (call prepare first)"
                        ),
                    });
                }
                v.insert(self.build_plan(key)?)
            }
        };
        if key.has_bias {
            let bias: u64 = g.bias;
            // SAFETY: live descriptor (we hold the lock until the matmul is enqueued); a void*.
            unsafe {
                set_desc(
                    plan.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &bias,
                )?;
            }
        }
        let alpha: f32 = 1.0;
        let beta: f32 = 0.0;
        // SAFETY: handle/descriptors/layouts/algo are live and were built for exactly this shape and
        // dtype; alpha/beta are host fp32 (scale type 32F, default host pointer mode); the caller's
        // GemmDesc names device buffers of at least m·k (a), n·k (w), m·n (out), n (bias) elements;
        // C = D = out with beta = 0, so C is not read; the workspace is ours and `workspace_size` long.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.w as *const c_void,
                plan.a,
                g.a as *const c_void,
                plan.b,
                g.out as *const c_void,
                plan.c,
                g.out as *mut c_void,
                plan.c,
                &plan.algo,
                self.workspace_ptr as *mut c_void,
                self.workspace_size,
                self.stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| KernelError::KernelFailed {
            kernel: format!(
                "cublasLtMatmul {dtype:?} m={} n={} k={} bias={}",
                g.m,
                g.n,
                g.k,
                g.bias != 0
            ),
            message: format!("{e:?}"),
        })
    }
}

impl Drop for CublasLtGemm {
    fn drop(&mut self) {
        let _ = self.stream.context().bind_to_thread();
        // Plans first (their descriptors), then the handle; the workspace field is freed afterwards,
        // stream-ordered after every matmul already enqueued.
        self.plans.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        if !self.handle.is_null() {
            // SAFETY: created in `new`, destroyed once.
            let _ = unsafe { lt::destroy_handle(self.handle) };
            self.handle = std::ptr::null_mut();
        }
    }
}

fn check_dims(m: u32, n: u32, k: u32) -> Result<(), KernelError> {
    if n == 0 || k == 0 {
        return Err(KernelError::BadLaunch {
            kernel: "cublasLt gemm".into(),
            message: format!("empty weight: n={n} k={k} (m={m})"),
        });
    }
    Ok(())
}

/// # Safety
/// `desc` must be live and `T` the attribute's documented C type.
unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    v: &T,
) -> Result<(), KernelError> {
    lt::set_matmul_desc_attribute(desc, attr, v as *const T as *const c_void, std::mem::size_of::<T>())
        .map_err(|e| KernelError::Cuda(format!("cuBLASLt setting {attr:?}: {e:?}")))
}

/// # Safety
/// `pref` must be live and `T` the attribute's documented C type.
unsafe fn set_pref<T>(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    v: &T,
) -> Result<(), KernelError> {
    lt::set_matmul_pref_attribute(pref, attr, v as *const T as *const c_void, std::mem::size_of::<T>())
        .map_err(|e| KernelError::Cuda(format!("cuBLASLt setting {attr:?}: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Element `[r, c]` of a column-major matrix stored in `buf` with leading dimension `ld`.
    fn at(buf: &[f64], l: ColLayout, r: u64, c: u64) -> f64 {
        assert!(r < l.rows && c < l.cols && l.ld as u64 >= l.rows);
        buf[(c * l.ld as u64 + r) as usize]
    }

    /// `op(X)[r, c]`: the stored matrix, transposed when `trans`.
    fn op_at(buf: &[f64], l: ColLayout, trans: bool, r: u64, c: u64) -> f64 {
        if trans {
            at(buf, l, c, r)
        } else {
            at(buf, l, r, c)
        }
    }

    fn op_shape(l: ColLayout, trans: bool) -> (u64, u64) {
        if trans {
            (l.cols, l.rows)
        } else {
            (l.rows, l.cols)
        }
    }

    /// What cuBLASLt computes: `D = op(A)·op(B) + bias (per row of D)`, D stored with layout `c`.
    fn cublas_semantics(p: &ColumnMajorPlan, a: &[f64], b: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let (ar, ac) = op_shape(p.a, p.transa);
        let (br, bc) = op_shape(p.b, p.transb);
        assert_eq!(ac, br, "inner dimensions");
        assert_eq!((ar, bc), (p.c.rows, p.c.cols), "D shape");
        let mut d = vec![f64::NAN; (p.c.ld as u64 * p.c.cols) as usize];
        for i in 0..ar {
            for j in 0..bc {
                let mut s = bias.map_or(0.0, |b| b[i as usize]);
                for l in 0..ac {
                    s += op_at(a, p.a, p.transa, i, l) * op_at(b, p.b, p.transb, l, j);
                }
                d[(j * p.c.ld as u64 + i) as usize] = s;
            }
        }
        d
    }

    #[test]
    fn row_major_linear_maps_to_column_major_cublas() {
        for &(m, n, k) in &[(1u32, 1u32, 1u32), (3, 5, 4), (7, 2, 9), (4, 4, 4), (2, 6, 1)] {
            let (mu, nu, ku) = (m as usize, n as usize, k as usize);
            // Row-major activations a[m, k], weights w[n, k], bias[n]: distinct values.
            let a: Vec<f64> = (0..mu * ku)
                .map(|i| (i as f64 * 0.37).sin() + i as f64 * 0.01)
                .collect();
            let w: Vec<f64> = (0..nu * ku)
                .map(|i| (i as f64 * 0.71).cos() - i as f64 * 0.02)
                .collect();
            let bias: Vec<f64> = (0..nu).map(|i| 10.0 + i as f64).collect();
            let p = column_major_plan(m, n, k);
            assert!(p.transa && !p.transb);
            for with_bias in [false, true] {
                // cuBLASLt's A is the weight buffer, B the activation buffer.
                let d = cublas_semantics(&p, &w, &a, with_bias.then_some(&bias[..]));
                assert_eq!(d.len(), mu * nu, "D buffer is exactly out[m, n]");
                for i in 0..mu {
                    for j in 0..nu {
                        let mut want = if with_bias { bias[j] } else { 0.0 };
                        for l in 0..ku {
                            want += a[i * ku + l] * w[j * ku + l];
                        }
                        let got = d[i * nu + j]; // row-major out[i, j]
                        assert!(
                            (got - want).abs() < 1e-12,
                            "m={m} n={n} k={k} bias={with_bias} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn plan_layouts_are_the_documented_ones() {
        let p = column_major_plan(3, 5, 4);
        assert_eq!(
            p.a,
            ColLayout {
                rows: 4,
                cols: 5,
                ld: 4
            }
        );
        assert_eq!(
            p.b,
            ColLayout {
                rows: 4,
                cols: 3,
                ld: 4
            }
        );
        assert_eq!(
            p.c,
            ColLayout {
                rows: 5,
                cols: 3,
                ld: 5
            }
        );
    }

    fn desc(a: u64, w: u64, bias: u64, out: u64, m: u32) -> GemmDesc {
        GemmDesc {
            a,
            w,
            bias,
            out,
            m,
            n: 768,
            k: 1152,
        }
    }

    #[test]
    fn cache_key_ignores_addresses_but_not_shape_bias_or_alignment() {
        let base = 0x7f00_0000_0000u64;
        let k1 = PlanKey::for_call(
            Dtype::Bf16,
            &desc(base, base + 0x1000, base + 0x2000, base + 0x3000, 64),
        );
        let k2 = PlanKey::for_call(
            Dtype::Bf16,
            &desc(base + 0x10000, base + 0x20000, base + 0x30000, base + 0x40000, 64),
        );
        assert_eq!(k1, k2, "other (aligned) buffers reuse the plan");
        assert_eq!(k1.align, PREPARED_ALIGNMENT);
        assert!(k1.has_bias);
        // Same key as prepare() builds.
        assert_eq!(
            k1,
            PlanKey {
                dtype: Dtype::Bf16,
                m: 64,
                n: 768,
                k: 1152,
                has_bias: true,
                align: 256
            }
        );

        let no_bias = PlanKey::for_call(Dtype::Bf16, &desc(base, base + 0x1000, 0, base + 0x3000, 64));
        let f16 = PlanKey::for_call(Dtype::F16, &desc(base, base + 0x1000, base + 0x2000, base + 0x3000, 64));
        let other_m = PlanKey::for_call(
            Dtype::Bf16,
            &desc(base, base + 0x1000, base + 0x2000, base + 0x3000, 128),
        );
        let misaligned = PlanKey::for_call(
            Dtype::Bf16,
            &desc(base + 16, base + 0x1000, base + 0x2000, base + 0x3000, 64),
        );
        assert!(!no_bias.has_bias);
        assert_eq!(misaligned.align, 16);
        let set: HashSet<PlanKey> = [k1, k2, no_bias, f16, other_m, misaligned].into_iter().collect();
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn alignment_is_the_weakest_pointer_capped_at_256() {
        assert_eq!(pointer_alignment(&[0x1000, 0x2000]), 256);
        assert_eq!(pointer_alignment(&[0x1000, 0x2080]), 128);
        assert_eq!(pointer_alignment(&[0x1002, 0x2000]), 2);
        assert_eq!(
            pointer_alignment(&[0x1000, 0]),
            256,
            "null (absent) pointers do not count"
        );
        assert_eq!(pointer_alignment(&[]), 256);
    }

    #[test]
    fn workspace_sizes() {
        assert_eq!(workspace_bytes(9), 33_554_432);
        assert_eq!(workspace_bytes(10), 33_554_432);
        assert_eq!(workspace_bytes(8), 4_194_304);
    }

    #[test]
    fn data_types() {
        assert_eq!(cuda_type(Dtype::Bf16), sys::cudaDataType_t::CUDA_R_16BF);
        assert_eq!(cuda_type(Dtype::F16), sys::cudaDataType_t::CUDA_R_16F);
        // Sizes of the attribute values we pass (all 32-bit C enums / ints, pointer 64-bit).
        assert_eq!(std::mem::size_of::<sys::cublasLtEpilogue_t>(), 4);
        assert_eq!(std::mem::size_of::<sys::cudaDataType>(), 4);
    }

    #[test]
    fn bad_dims_are_errors() {
        assert!(check_dims(4, 0, 8).is_err());
        assert!(check_dims(4, 8, 0).is_err());
        assert!(check_dims(0, 8, 8).is_ok());
    }
}
