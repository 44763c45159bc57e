//! The host emulator: runs the `cuda/*.cu` kernels, compiled by the C++ compiler against
//! `cuda/emu/emu.h`, on the CPU (see that header for the execution model).
//!
//! Device memory is host memory: an [`EmuBuffer`]'s [`EmuBuffer::addr`] is a host address, usable in
//! the parameter structs. Every buffer has guard bytes before and after it; after each launch the
//! emulator checks the guards of all its live buffers and reports an overwrite with the kernel's name.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{KernelError, KernelParam, LaunchAttrs};

/// One launch for `emu_launch_desc` (the `EmuLaunchDesc` of cuda/emu/emu.h, field for field).
#[repr(C)]
struct EmuLaunchDesc {
    name: *const c_char,
    grid: [u32; 3],
    block: [u32; 3],
    smem_bytes: u32,
    flags: u32,
    params: *const c_void,
    params_size: usize,
    /// With programmatic dependent launch: the launch before this one, which it may overlap.
    primary: *const EmuLaunchDesc,
}

extern "C" {
    fn emu_launch_desc(desc: *const EmuLaunchDesc, err: *mut c_char, errlen: usize) -> c_int;
    fn emu_kernel_count() -> usize;
    fn emu_kernel_name(i: usize) -> *const c_char;
    fn emu_kernel_triggers_dependents(i: usize) -> c_int;
    fn emu_tensor_map_encode(map: *mut c_void, desc: *const super::params::MbTensorMapDesc) -> c_int;
}

/// Guard bytes on each side of a buffer (also keeps the data 256-byte aligned, like cudaMalloc).
const GUARD: usize = 256;
const GUARD_BYTE: u8 = 0xA7;
/// New buffers are filled with this (0xFFFF is a NaN in bf16, fp16 and f32).
const FILL_BYTE: u8 = 0xFF;

struct Alloc {
    base: *mut u8,
    len: usize,
    label: String,
}

// SAFETY: the allocation is plain memory owned by this struct; concurrent kernel access is the
// caller's business exactly as on a GPU.
unsafe impl Send for Alloc {}
unsafe impl Sync for Alloc {}

impl Alloc {
    fn layout(len: usize) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(len.checked_add(2 * GUARD)?, GUARD).ok()
    }
    fn data(&self) -> *mut u8 {
        // SAFETY: within the allocation of len + 2 * GUARD bytes.
        unsafe { self.base.add(GUARD) }
    }
    /// First guard byte that differs: (before?, offset from the data start).
    fn check(&self) -> Option<String> {
        // SAFETY: both guard ranges lie inside the allocation.
        let (pre, post) = unsafe {
            (
                std::slice::from_raw_parts(self.base, GUARD),
                std::slice::from_raw_parts(self.base.add(GUARD + self.len), GUARD),
            )
        };
        if let Some(i) = pre.iter().rposition(|&b| b != GUARD_BYTE) {
            return Some(format!("{} bytes before its start", GUARD - i));
        }
        if let Some(i) = post.iter().position(|&b| b != GUARD_BYTE) {
            return Some(format!("byte {} past its end of {} bytes", i, self.len));
        }
        None
    }
    fn reset_guards(&self) {
        // SAFETY: as in `check`.
        unsafe {
            std::ptr::write_bytes(self.base, GUARD_BYTE, GUARD);
            std::ptr::write_bytes(self.base.add(GUARD + self.len), GUARD_BYTE, GUARD);
        }
    }
}

impl Drop for Alloc {
    fn drop(&mut self) {
        // SAFETY: allocated in `Emulator::alloc` with this layout.
        unsafe {
            std::alloc::dealloc(
                self.base,
                Self::layout(self.len).expect("the layout it was allocated with"),
            )
        }
    }
}

/// A guarded buffer of emulated device memory. Cloning shares the buffer.
#[derive(Clone)]
pub struct EmuBuffer(Arc<Alloc>);

impl EmuBuffer {
    /// The "device address" to put in a parameter struct.
    pub fn addr(&self) -> u64 {
        self.0.data() as u64
    }
    pub fn len(&self) -> usize {
        self.0.len
    }
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
    pub fn label(&self) -> &str {
        &self.0.label
    }
    /// Copy `data` to byte `offset` of the buffer.
    pub fn upload(&self, offset: usize, data: &[u8]) -> Result<(), KernelError> {
        if offset.checked_add(data.len()).is_none_or(|e| e > self.0.len) {
            return Err(KernelError::OutOfRange(format!(
                "upload of {} bytes at {offset} into `{}` of {} bytes",
                data.len(),
                self.0.label,
                self.0.len
            )));
        }
        // SAFETY: range checked above; `data` cannot alias our allocation through safe code.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.data().add(offset), data.len()) };
        Ok(())
    }
    /// Copy bytes `offset ..` of the buffer into `out`.
    pub fn download(&self, offset: usize, out: &mut [u8]) -> Result<(), KernelError> {
        if offset.checked_add(out.len()).is_none_or(|e| e > self.0.len) {
            return Err(KernelError::OutOfRange(format!(
                "download of {} bytes at {offset} from `{}` of {} bytes",
                out.len(),
                self.0.label,
                self.0.len
            )));
        }
        // SAFETY: range checked above.
        unsafe { std::ptr::copy_nonoverlapping(self.0.data().add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }
    /// Fill the whole buffer with one byte (0xFF: NaN poison for every float format).
    pub fn fill(&self, byte: u8) {
        // SAFETY: the data range of the allocation.
        unsafe { std::ptr::write_bytes(self.0.data(), byte, self.0.len) }
    }
}

/// The emulated device. Cheap to create; buffers are checked by the emulator that made them.
pub struct Emulator {
    buffers: Mutex<Vec<Weak<Alloc>>>,
    reverse: AtomicBool,
    gemm_scratch: Mutex<super::gemm_host::HostGemmScratch>,
    /// While a graph is being recorded: its launches, in order (nothing executes meanwhile).
    recording: Mutex<Option<Vec<Recorded>>>,
    graphs: Mutex<std::collections::HashMap<[u32; 3], Arc<Vec<Recorded>>>>,
    /// Bytes copied device → host so far: what a GPU would send over PCIe (the tests count it).
    downloaded: std::sync::atomic::AtomicU64,
    /// Kernels declared `MB_PDL_PRIMARY` (hopper.cuh): their launches are held (with the
    /// primaries they themselves overlap) until the next operation, so that a dependent launched
    /// next can run before them; every other operation runs them first.
    triggering: std::collections::HashSet<String>,
    held: Mutex<Vec<HeldLaunch>>,
    /// The compute capability it reports (`--device emulated:sm80|sm90`): the code path the
    /// executor is asked to take; the emulated kernels are the same either way.
    capability: (u32, u32),
    /// The multiprocessors it reports ([`Emulator::with_multiprocessors`]).
    multiprocessors: u32,
}

/// `EmuLaunchDesc::flags`: bit 0 reverse order, bit 1 co-scheduled, bits 8-15 blocks per cluster
/// (the emulator refuses more than 16).
fn launch_flags(reverse: bool, attrs: LaunchAttrs) -> u32 {
    reverse as u32 | (attrs.coscheduled as u32) << 1 | attrs.cluster.min(0xff) << 8
}

/// A launch kept for later: a graph step, or a primary waiting to see whether its successor
/// overlaps it (programmatic dependent launch).
#[derive(Clone)]
struct HeldLaunch {
    name: String,
    grid: [u32; 3],
    block: [u32; 3],
    smem: u32,
    params: Vec<u8>,
    attrs: LaunchAttrs,
}

/// One step of an emulated graph.
enum Recorded {
    Launch(HeldLaunch),
    Gemm {
        dtype: super::Dtype,
        desc: super::gemm::GemmDesc,
    },
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Emulator {
    /// A new emulator; threads run in reverse order when `MODERNBERT_EMU_REVERSE=1`.
    pub fn new() -> Self {
        let reverse = std::env::var("MODERNBERT_EMU_REVERSE").is_ok_and(|v| v == "1");
        Emulator {
            buffers: Mutex::new(Vec::new()),
            reverse: AtomicBool::new(reverse),
            gemm_scratch: Mutex::default(),
            recording: Mutex::new(None),
            graphs: Mutex::default(),
            downloaded: Default::default(),
            // SAFETY: indices below the table's length.
            triggering: (0..unsafe { emu_kernel_count() })
                .filter(|&i| unsafe { emu_kernel_triggers_dependents(i) } != 0)
                .filter_map(|i| {
                    let p = unsafe { emu_kernel_name(i) };
                    // SAFETY: names are NUL-terminated literals of the static table.
                    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                })
                .collect(),
            held: Mutex::default(),
            capability: (8, 0),
            multiprocessors: 3,
        }
    }

    /// An emulator that reports `n` streaming multiprocessors (default 3: a persistent kernel's
    /// blocks each run several tiles, unevenly, on every test shape with more than 3 tiles).
    pub fn with_multiprocessors(mut self, n: u32) -> Self {
        self.multiprocessors = n.max(1);
        self
    }

    pub fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// An emulator that reports compute capability `capability` (default: (8, 0)).
    pub fn with_compute_capability(mut self, capability: (u32, u32)) -> Self {
        self.capability = capability;
        self
    }

    pub fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }

    /// Bytes downloaded (device → host) since this emulator was made.
    pub fn bytes_downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    pub(crate) fn count_download(&self, bytes: usize) {
        self.downloaded.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Run the threads of a block in reverse order (highest thread index first) from now on.
    pub fn set_reverse(&self, reverse: bool) {
        self.reverse.store(reverse, Ordering::Relaxed);
    }
    pub fn reverse(&self) -> bool {
        self.reverse.load(Ordering::Relaxed)
    }

    /// A guarded buffer of `bytes` bytes, filled with 0xFF (NaN).
    pub fn alloc(&self, bytes: usize) -> EmuBuffer {
        self.alloc_labeled(bytes, "")
    }

    /// As [`alloc`](Self::alloc), with a name used in guard-overwrite errors. Panics when the host
    /// cannot allocate it (kernel tests); the executor uses [`try_alloc_labeled`](Self::try_alloc_labeled).
    pub fn alloc_labeled(&self, bytes: usize, label: &str) -> EmuBuffer {
        self.try_alloc_labeled(bytes, label).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`alloc_labeled`](Self::alloc_labeled), but a size the host cannot allocate is an error
    /// (never an abort: the "device memory" of the emulator is the host's).
    pub fn try_alloc_labeled(&self, bytes: usize, label: &str) -> Result<EmuBuffer, KernelError> {
        let too_large = || KernelError::OutOfMemory(format!("emulator: cannot allocate {bytes} bytes for {label:?}"));
        let layout = Alloc::layout(bytes).ok_or_else(too_large)?;
        // SAFETY: non-zero size (2 * GUARD at least).
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return Err(too_large());
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let label = if label.is_empty() {
            format!("buffer#{}", buffers.len())
        } else {
            label.to_string()
        };
        let a = Arc::new(Alloc {
            base,
            len: bytes,
            label,
        });
        a.reset_guards();
        EmuBuffer(a.clone()).fill(FILL_BYTE);
        buffers.retain(|w| w.strong_count() > 0);
        buffers.push(Arc::downgrade(&a));
        Ok(EmuBuffer(a))
    }

    /// The emulated device's GEMM (CPU, same contract as cuBLASLt's; see `gemm_host`).
    pub fn gemm(&self, dtype: super::Dtype, g: &super::gemm::GemmDesc) -> Result<(), KernelError> {
        if let Some(list) = self.recording.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            g.check()?;
            list.push(Recorded::Gemm { dtype, desc: *g });
            return Ok(());
        }
        self.flush()?;
        let mut scratch = self.gemm_scratch.lock().unwrap_or_else(|e| e.into_inner());
        super::gemm_host::host_gemm(dtype, g, &mut scratch)
    }

    /// How many launch lists `run_graph` has recorded (one per bucket key).
    pub fn graphs_recorded(&self) -> usize {
        self.graphs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The emulator's CUDA graphs: the first call for a key records `record`'s launches without
    /// running them (as a capture does), then every call replays the recording. Replaying a
    /// recording made for another batch of the same bucket is exactly what a CUDA graph does, so
    /// kernels that depend on anything but device memory give wrong results here too.
    pub fn run_graph(
        &self,
        key: [u32; 3],
        record: &mut dyn FnMut() -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let existing = self.graphs.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let steps = match existing {
            Some(steps) => steps,
            None => {
                *self.recording.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
                let result = record();
                let steps = self
                    .recording
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                result?;
                let steps = Arc::new(steps);
                self.graphs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, steps.clone());
                steps
            }
        };
        for step in steps.iter() {
            match step {
                Recorded::Launch(l) => self.launch_with(&l.name, l.grid, l.block, l.smem, &l.params, l.attrs)?,
                Recorded::Gemm { dtype, desc } => self.gemm(*dtype, desc)?,
            }
        }
        Ok(())
    }

    /// Names of every kernel the emulator has.
    pub fn kernels() -> Vec<String> {
        // SAFETY: the table is static; names are NUL-terminated literals.
        unsafe {
            (0..emu_kernel_count())
                .filter_map(|i| {
                    let p = emu_kernel_name(i);
                    (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
                })
                .collect()
        }
    }

    /// Launch kernel `name` with `params` and wait for it.
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

    /// Launch with the parameter struct given as bytes.
    pub fn launch_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
    ) -> Result<(), KernelError> {
        self.launch_with(name, grid, block, smem, params, LaunchAttrs::default())
    }

    /// As [`launch_raw`](Self::launch_raw), with [`LaunchAttrs`]. A dependent launch whose
    /// predecessor is a primary (a kernel declared `MB_PDL_PRIMARY`) runs first, and the primary
    /// runs when its first thread reaches `griddepcontrol.wait`: code before that wait sees none
    /// of the primary's writes, the most skewed order a GPU allows. A co-scheduled launch runs
    /// every block on its own host thread, taking turns (cuda/emu/emu.h).
    pub fn launch_ex_raw(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: LaunchAttrs,
    ) -> Result<(), KernelError> {
        self.launch_with(name, grid, block, smem, params, attrs)
    }

    /// Runs the held primaries (see [`launch_ex_raw`](Self::launch_ex_raw)); every
    /// operation but a dependent launch does this first. Their errors surface here.
    pub fn flush(&self) -> Result<(), KernelError> {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        self.run_held(&held, None)
    }

    fn launch_with(
        &self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        smem: u32,
        params: &[u8],
        attrs: LaunchAttrs,
    ) -> Result<(), KernelError> {
        let dependent = attrs.dependent;
        // Only the paths that keep a launch for later copy it (the ordinary path allocates nothing).
        let keep = || HeldLaunch {
            name: name.to_string(),
            grid,
            block,
            smem,
            params: params.to_vec(),
            attrs,
        };
        if let Some(list) = self.recording.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            list.push(Recorded::Launch(keep()));
            return Ok(());
        }
        let mut held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        if !dependent && !held.is_empty() {
            self.run_held(&held, None)?;
            held.clear();
        }
        if self.triggering.contains(name) {
            // Held: the next launch may be its dependent. The chain's later members each depend on
            // the one before.
            held.push(keep());
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
            return Ok(());
        }
        if !held.is_empty() {
            return self.run_held(&held, Some(&keep()));
        }
        // The name, NUL-terminated, and the error text live on the stack: a launch allocates
        // nothing on the host (the executor's zero-allocation test runs through here).
        let mut cname = [0u8; 128];
        if name.len() >= cname.len() || name.as_bytes().contains(&0) {
            return Err(KernelError::UnknownKernel(name.to_string()));
        }
        cname[..name.len()].copy_from_slice(name.as_bytes());
        let desc = EmuLaunchDesc {
            name: cname.as_ptr() as *const c_char,
            grid,
            block,
            smem_bytes: smem,
            flags: launch_flags(self.reverse(), attrs),
            params: params.as_ptr() as *const c_void,
            params_size: params.len(),
            primary: std::ptr::null(),
        };
        self.run_desc(name, &desc)
    }

    /// Runs the chain `held` (each member after the first a dependent of the one before), topped
    /// by `top` if given: the last one starts, its primaries run at its griddepcontrol.wait.
    fn run_held(&self, held: &[HeldLaunch], top: Option<&HeldLaunch>) -> Result<(), KernelError> {
        let chain: Vec<&HeldLaunch> = held.iter().chain(top).collect();
        let Some(last) = chain.last() else {
            return Ok(());
        };
        let names: Vec<std::ffi::CString> = chain
            .iter()
            .map(|l| std::ffi::CString::new(l.name.as_str()).map_err(|_| KernelError::UnknownKernel(l.name.clone())))
            .collect::<Result<_, _>>()?;
        let mut descs: Vec<EmuLaunchDesc> = chain
            .iter()
            .zip(&names)
            .map(|(l, n)| EmuLaunchDesc {
                name: n.as_ptr(),
                grid: l.grid,
                block: l.block,
                smem_bytes: l.smem,
                flags: launch_flags(self.reverse(), l.attrs),
                params: l.params.as_ptr() as *const c_void,
                params_size: l.params.len(),
                primary: std::ptr::null(),
            })
            .collect();
        // Link each to its predecessor; the Vec is not resized after this, so the pointers hold.
        for i in 1..descs.len() {
            let prev: *const EmuLaunchDesc = &descs[i - 1];
            descs[i].primary = prev;
        }
        self.run_desc(&last.name, descs.last().expect("non-empty chain"))
    }

    fn run_desc(&self, name: &str, desc: &EmuLaunchDesc) -> Result<(), KernelError> {
        let mut err = [0 as c_char; 2048];
        // SAFETY: all pointers in `desc` (and its primaries) are valid for the given lengths; the
        // kernels get addresses of our buffers through the params, which the caller built.
        let rc = unsafe { emu_launch_desc(desc, err.as_mut_ptr(), err.len()) };
        let failure = |rc: c_int| {
            // SAFETY: emu_launch_desc NUL-terminates within `err`.
            let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            let kernel = name.to_string();
            match rc {
                1 => KernelError::UnknownKernel(kernel),
                2 => KernelError::ParamSize { kernel, message },
                3 => KernelError::BadLaunch { kernel, message },
                _ => KernelError::KernelFailed { kernel, message },
            }
        };
        let result = if rc == 0 { Ok(()) } else { Err(failure(rc)) };
        // Guards are checked even after a failed launch (an overwrite is the more useful error).
        let buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        for a in buffers.iter().filter_map(Weak::upgrade) {
            if let Some(where_) = a.check() {
                a.reset_guards();
                return Err(KernelError::GuardOverwrite {
                    kernel: name.to_string(),
                    buffer: a.label.clone(),
                    where_,
                });
            }
        }
        result
    }

    /// The emulator's tensor map for `desc` (checked already by `tensor_map::encode`).
    pub fn encode_tensor_map(
        &self,
        desc: &super::params::MbTensorMapDesc,
    ) -> Result<super::params::MbTensorMap, KernelError> {
        let mut map = super::params::MbTensorMap { opaque: [0; 16] };
        // SAFETY: `map` is 128 writable bytes; `desc` a valid struct.
        let rc = unsafe { emu_tensor_map_encode(&mut map as *mut _ as *mut c_void, desc) };
        if rc != 0 {
            return Err(KernelError::Unsupported {
                kernel: "tensor map".into(),
                message: format!("the emulator cannot encode rank {} dtype {}", desc.rank, desc.dtype),
            });
        }
        Ok(map)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Held primaries still run (their writes may be awaited by nobody, but they happen).
        let _ = self.flush();
    }
}
