//! Shared helpers of the kernel tests: the device switch, seeded random inputs (seed printed),
//! NaN poisoning, bf16/fp16 conversions, error metrics and the tolerance rule.
//!
//! Tolerance rule (flash-attention's): against the f32 reference, the kernel's max error must be at
//! most 2x the max error of a naive same-precision computation of the same op (inputs rounded to
//! the dtype, intermediates rounded to the dtype, output rounded), plus a tiny absolute floor for
//! the degenerate case where the naive computation is exact. Each op's test states its naive
//! computation and why the bound holds.

pub mod cases;
pub mod handoff;

pub use modernbert::kernels::device::{Device, DeviceBuffer};
pub use modernbert::kernels::{params, Dtype, KernelError};

/// Both element types.
pub const DTYPES: [Dtype; 2] = [Dtype::Bf16, Dtype::F16];

/// The device under test (`MODERNBERT_TEST_DEVICE`, default the emulator). Panics with the reason
/// when a GPU was asked for and cannot be had: a test run that asks for cuda must not pass silently.
pub fn device() -> Box<dyn Device> {
    match modernbert::kernels::from_env() {
        Ok(d) => d,
        Err(e) => panic!("MODERNBERT_TEST_DEVICE: {e}"),
    }
}

/// A benchmark binary's `--name value` argument.
pub fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A benchmark binary's device (`--device cuda`: GPU 0, else the emulator); exits with the reason
/// when the GPU cannot be opened.
pub fn bench_device(cuda: bool) -> Box<dyn Device> {
    if !cuda {
        return Box::new(modernbert::kernels::emu::Emulator::new());
    }
    match modernbert::kernels::cuda::CudaDevice::new(0) {
        Ok(c) => Box::new(c),
        Err(e) => {
            eprintln!("error: --device cuda: {e}");
            std::process::exit(1);
        }
    }
}

/// Whether the device under test is a real GPU (not the emulator).
pub fn is_gpu(dev: &dyn Device) -> bool {
    dev.as_emulator().is_none()
}

/// True (with a SKIPPED line) when `r` says the GPU has no such kernel because it is sm_90a code
/// and the GPU is not compute capability 9.0: the Hopper tests then check nothing there.
pub fn skipped_without_hopper<T>(dev: &dyn Device, r: &Result<T, KernelError>) -> bool {
    if let (true, Err(KernelError::UnknownKernel(k))) = (is_gpu(dev), r) {
        eprintln!(
            "SKIPPED on {}: `{k}` is sm_90a code and this GPU is not compute capability 9.0",
            dev.name()
        );
        return true;
    }
    false
}

/// The thread orders to run in: forward and reverse on the emulator, the hardware's on a GPU.
pub fn orders(dev: &dyn Device) -> Vec<bool> {
    if dev.as_emulator().is_some() {
        vec![false, true]
    } else {
        vec![false]
    }
}

/// Set the emulator's thread order (no-op on a GPU); returns a label for messages.
pub fn set_order(dev: &dyn Device, reverse: bool) -> &'static str {
    if let Some(e) = dev.as_emulator() {
        e.set_reverse(reverse);
    }
    if reverse {
        "reverse"
    } else {
        "forward"
    }
}

/// A small deterministic generator (SplitMix64), seeded per test.
pub struct Rng(u64);

impl Rng {
    /// Seed from `KERNEL_TEST_SEED` or the clock, printed so a failure can be replayed.
    pub fn for_test(test: &str) -> Self {
        let seed = std::env::var("KERNEL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("[{test}] seed {seed} (KERNEL_TEST_SEED={seed} replays it)");
        Rng(seed)
    }
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.unit() as f64).max(1e-12);
        let u2 = self.unit() as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n.max(1) as u64) as u32
    }
    /// `n` values N(mean, std²), rounded to `dt` (inputs are exactly representable).
    pub fn normal_vec(&mut self, dt: Dtype, n: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..n).map(|_| round(dt, mean + std * self.normal())).collect()
    }
}

/// Round an f32 to the dtype (round to nearest even), back as f32.
pub fn round(dt: Dtype, x: f32) -> f32 {
    match dt {
        Dtype::Bf16 => half::bf16::from_f32(x).to_f32(),
        Dtype::F16 => half::f16::from_f32(x).to_f32(),
    }
}

pub fn round_vec(dt: Dtype, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| round(dt, v)).collect()
}

/// f32 values → dtype bytes (little endian).
pub fn to_bytes(dt: Dtype, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() * 2);
    for &v in x {
        let bits = match dt {
            Dtype::Bf16 => half::bf16::from_f32(v).to_bits(),
            Dtype::F16 => half::f16::from_f32(v).to_bits(),
        };
        out.extend_from_slice(&bits.to_le_bytes());
    }
    out
}

/// dtype bytes → f32 values.
pub fn from_bytes(dt: Dtype, b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| {
            let bits = u16::from_le_bytes([c[0], c[1]]);
            match dt {
                Dtype::Bf16 => half::bf16::from_bits(bits).to_f32(),
                Dtype::F16 => half::f16::from_bits(bits).to_f32(),
            }
        })
        .collect()
}

pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
pub fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
pub fn u32_bytes(x: &[u32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
pub fn bytes_u32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Upload dtype data to a new buffer.
pub fn upload(dev: &dyn Device, dt: Dtype, x: &[f32], label: &str) -> DeviceBuffer {
    dev.upload_new(&to_bytes(dt, x), label).expect("upload")
}
pub fn upload_f32(dev: &dyn Device, x: &[f32], label: &str) -> DeviceBuffer {
    dev.upload_new(&f32_bytes(x), label).expect("upload")
}
pub fn upload_u32(dev: &dyn Device, x: &[u32], label: &str) -> DeviceBuffer {
    dev.upload_new(&u32_bytes(x), label).expect("upload")
}
/// A BatchDesc in device memory.
pub fn upload_batch(dev: &dyn Device, tokens: u32, sequences: u32, max_seqlen: u32) -> DeviceBuffer {
    let b = params::BatchDesc {
        tokens,
        sequences,
        max_seqlen,
        _pad0: 0,
    };
    dev.upload_new(modernbert::kernels::KernelParam::as_bytes(&b), "batch")
        .expect("upload")
}

/// An output buffer of `bytes` bytes poisoned with NaN (0xFF bytes: NaN in bf16, fp16, f32).
pub fn poisoned(dev: &dyn Device, bytes: usize, label: &str) -> DeviceBuffer {
    dev.upload_new(&vec![0xFFu8; bytes], label).expect("upload poison")
}
/// Re-poison an existing buffer.
pub fn poison(dev: &dyn Device, buf: &mut DeviceBuffer) {
    let n = buf.len();
    dev.upload(buf, 0, &vec![0xFFu8; n]).expect("poison");
}

pub fn download(dev: &dyn Device, dt: Dtype, b: &DeviceBuffer) -> Vec<f32> {
    from_bytes(dt, &dev.download_vec(b).expect("download"))
}
pub fn download_f32(dev: &dyn Device, b: &DeviceBuffer) -> Vec<f32> {
    bytes_f32(&dev.download_vec(b).expect("download"))
}

/// Max |a - b| (NaN anywhere → infinity).
pub fn max_abs_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// First NaN index in `x`, if any (an element the kernel did not write).
pub fn first_nan(x: &[f32]) -> Option<usize> {
    x.iter().position(|v| v.is_nan())
}

/// The tolerance rule. `Err` describes the failure.
pub fn check(what: &str, kernel: &[f32], naive: &[f32], reference: &[f32]) -> Result<(f32, f32), String> {
    if let Some(i) = first_nan(kernel) {
        return Err(format!("{what}: element {i} of {} is NaN (not written)", kernel.len()));
    }
    let ek = max_abs_err(kernel, reference);
    let en = max_abs_err(naive, reference);
    let floor = 1e-6 * reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    if ek <= 2.0 * en + floor {
        Ok((ek, en))
    } else {
        let i = kernel
            .iter()
            .zip(reference)
            .map(|(k, r)| (k - r).abs())
            .enumerate()
            .fold((0, 0f32), |m, (i, e)| if e > m.1 { (i, e) } else { m })
            .0;
        Err(format!(
            "{what}: max error {ek:.3e} > 2 x naive {en:.3e} (+{floor:.1e}); worst at {i}: kernel {} reference {}",
            kernel[i], reference[i]
        ))
    }
}

/// Elements that must be left alone (e.g. rows past BatchDesc.tokens) still hold the poison.
pub fn check_untouched(what: &str, x: &[f32]) -> Result<(), String> {
    match x.iter().position(|v| !v.is_nan()) {
        Some(i) => Err(format!("{what}: element {i} past the batch was written ({})", x[i])),
        None => Ok(()),
    }
}

/// Collects failures of many cases and panics once with all of them.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn push(&mut self, r: Result<impl Sized, String>) {
        if let Err(e) = r {
            eprintln!("FAIL {e}");
            self.0.push(e);
        }
    }
    pub fn fail(&mut self, e: String) {
        eprintln!("FAIL {e}");
        self.0.push(e);
    }
    pub fn finish(self) {
        assert!(self.0.is_empty(), "{} failure(s):\n{}", self.0.len(), self.0.join("\n"));
    }
}

/// The naive same-precision LayerNorm (PyTorch op by op on dtype tensors, f32 reductions):
/// `mean = round(Σx / H)`, `xc = round(x − mean)`, `var = round(Σxc² / H)`,
/// `rstd = round(1 / sqrt(var + eps))`, `y = round(round(xc · rstd) · w)` (`+ b`, rounded).
/// The activation an `MB_ACT_*` code stands for, through the product's own map
/// (`gpu::heads::activation_code`), so a test and the executor cannot disagree on a code.
pub fn activation(code: u32) -> modernbert::config::Activation {
    use modernbert::config::Activation::*;
    [GeluErf, GeluTanh, Relu, Silu]
        .into_iter()
        .find(|&a| modernbert::gpu::heads::activation_code(a) == code)
        .unwrap_or_else(|| panic!("no activation has the code {code}"))
}

pub fn naive_layer_norm(dt: Dtype, x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let h = w.len();
    let r = |v: f32| round(dt, v);
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks(h).zip(out.chunks_mut(h)) {
        let mean = r(row.iter().sum::<f32>() / h as f32);
        let xc: Vec<f32> = row.iter().map(|&v| r(v - mean)).collect();
        let var = r(xc.iter().map(|v| v * v).sum::<f32>() / h as f32);
        let rstd = r(1.0 / (var + eps).sqrt());
        for j in 0..h {
            let mut y = r(r(xc[j] * rstd) * w[j]);
            if let Some(b) = b {
                y = r(y + b[j]);
            }
            o[j] = y;
        }
    }
    out
}
