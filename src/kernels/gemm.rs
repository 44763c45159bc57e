//! The GEMM descriptor every device takes ([`GemmDesc`]): a leaf module (it needs nothing from the
//! devices), so the emulator, its host GEMM and the cuBLASLt wrapper can all name it without
//! depending on one another.

use super::KernelError;

/// `out[m, n] = a[m, k] · w[n, k]ᵀ (+ bias[n])`: a PyTorch Linear on row-major device buffers in
/// the activation dtype, fp32 accumulation, one rounding of the result (cuBLASLt on a GPU, the
/// CPU on the emulator). `bias` 0 = none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmDesc {
    pub a: u64,
    pub w: u64,
    pub bias: u64,
    pub out: u64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

impl GemmDesc {
    /// What a GEMM cannot check by itself: required pointers and non-empty shapes.
    pub fn check(&self) -> Result<(), KernelError> {
        for (what, p) in [("a", self.a), ("w", self.w), ("out", self.out)] {
            if p == 0 {
                return Err(KernelError::Unsupported {
                    kernel: "gemm".into(),
                    message: format!("`{what}` is null"),
                });
            }
        }
        if self.n == 0 || self.k == 0 {
            return Err(KernelError::Unsupported {
                kernel: "gemm".into(),
                message: format!("shape {}x{}x{}", self.m, self.n, self.k),
            });
        }
        Ok(())
    }
}
