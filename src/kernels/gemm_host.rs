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
    crate::matmul::linear_f32(&s.a, &s.w, bias, m, k, n, &mut s.out);
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
