//! The GEMM of the emulated device: the same contract as the cuBLASLt wrapper —
//! `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])`, bf16/fp16 in and out, fp32 accumulation, one
//! rounding of the result — computed on the CPU with the `gemm` crate.

use half::{bf16, f16};

use super::gemm::GemmDesc;
use super::{Dtype, KernelError};

fn load(dtype: Dtype, ptr: u64, len: usize, out: &mut Vec<f32>) {
    out.clear();
    // SAFETY: on the emulator device addresses are host addresses of live buffers; the caller
    // (GemmDesc::check) verified the pointers are non-null, and sizes come from the same desc
    // the executor built from its arena/weights layout.
    unsafe {
        let src = std::slice::from_raw_parts(ptr as *const u16, len);
        match dtype {
            Dtype::Bf16 => out.extend(src.iter().map(|&b| bf16::from_bits(b).to_f32())),
            Dtype::F16 => out.extend(src.iter().map(|&b| f16::from_bits(b).to_f32())),
        }
    }
}

/// Scratch buffers, reused across calls (grown on first use of a shape, then stable).
#[derive(Default)]
pub struct HostGemmScratch {
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    out: Vec<f32>,
}

pub fn host_gemm(dtype: Dtype, g: &GemmDesc, s: &mut HostGemmScratch) -> Result<(), KernelError> {
    g.check()?;
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    load(dtype, g.a, m * k, &mut s.a);
    load(dtype, g.w, n * k, &mut s.w);
    let bias = if g.bias != 0 {
        load(dtype, g.bias, n, &mut s.bias);
        Some(s.bias.as_slice())
    } else {
        None
    };
    s.out.resize(m * n, 0.0);
    linear(&s.a, &s.w, bias, m, k, n, &mut s.out);
    // SAFETY: as in `load`; `out` does not overlap the inputs (distinct arena regions).
    let dst = unsafe { std::slice::from_raw_parts_mut(g.out as *mut u16, m * n) };
    match dtype {
        Dtype::Bf16 => dst
            .iter_mut()
            .zip(&s.out)
            .for_each(|(d, &v)| *d = bf16::from_f32(v).to_bits()),
        Dtype::F16 => dst
            .iter_mut()
            .zip(&s.out)
            .for_each(|(d, &v)| *d = f16::from_f32(v).to_bits()),
    }
    Ok(())
}

/// `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])` in f32 (the `gemm` crate, rayon-parallel for
/// large shapes). The emulated device's own copy, so that the kernels layer does not depend on the
/// CPU reference executor; only its sizes were checked by the caller.
fn linear(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert!(
        a.len() == m * k && w.len() == n * k && out.len() == m * n,
        "linear: shape mismatch"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
    } else {
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 && m * n * k >= 1 << 16 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the strides describe exactly the three row-major buffers whose lengths were
        // checked above; `out` does not alias `a` or `w` (distinct borrows).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,          // dst column stride
                n as isize, // dst row stride
                false,      // do not read dst
                a.as_ptr(),
                1,
                k as isize,
                w.as_ptr(), // rhs[kk, j] = w[j * k + kk]
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [n]");
        for row in out.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(o, bi)| *o += bi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::linear;

    /// The `gemm`-crate path against the textbook triple loop, with and without bias, on shapes
    /// below and above the parallel threshold (and k = 0).
    #[test]
    fn linear_matches_the_triple_loop() {
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, k, n) in [(3, 5, 7), (1, 1, 1), (40, 64, 48), (4, 0, 3)] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            for bias in [None, Some(&b[..])] {
                let mut out = vec![f32::NAN; m * n];
                linear(&a, &w, bias, m, k, n, &mut out);
                for i in 0..m {
                    for j in 0..n {
                        let mut want: f32 = (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum();
                        want += bias.map_or(0.0, |b| b[j]);
                        let got = out[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{m}x{k}x{n} bias {}: [{i}, {j}] = {got}, want {want}",
                            bias.is_some()
                        );
                    }
                }
            }
        }
    }
}
