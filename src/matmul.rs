//! The host's f32 matrix product for a `Linear`, on the `gemm` crate: the one implementation the
//! CPU reference (`reference::ops::linear`, below its packed-microkernel shortcut) and the emulated device's
//! GEMM (`kernels::gemm_host`) share. A leaf: it depends on nothing in the crate.

use rayon::prelude::*;

/// `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])`, `w` as `[out, in]` (PyTorch's layout); rayon-
/// parallel for large shapes.
pub fn linear_f32(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert_eq!(a.len(), m * k, "linear: input is not [m, k]");
    assert_eq!(w.len(), n * k, "linear: weight is not [n, k]");
    assert_eq!(out.len(), m * n, "linear: output is not [m, n]");
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
        // SAFETY: the strides below describe exactly the three row-major buffers whose lengths
        // were checked above; `dst` does not alias `lhs` or `rhs` (distinct borrows).
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
        out.par_chunks_mut(n)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(o, bi)| *o += bi));
    }
}

#[cfg(test)]
mod tests {
    use super::linear_f32;

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
                linear_f32(&a, &w, bias, m, k, n, &mut out);
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
