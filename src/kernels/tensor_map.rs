//! Tensor maps for TMA (`cp.async.bulk.tensor`): the one place that checks a map's rules, for
//! every device, before the device encodes it ([`super::device::Device::encode_tensor_map`]: on
//! CUDA `cuTensorMapEncodeTiled`, in the emulator that emulator's own encoding). The rules are the
//! driver's documented requirements for tiled maps without interleave (and, for swizzled maps, an
//! inner box extent of exactly the swizzle span), so a map the emulator accepts is one the GPU accepts.

use super::device::Device;
use super::params::{MbTensorMap, MbTensorMapDesc, MB_SWIZZLE_NONE, MB_TMAP_BF16, MB_TMAP_F16, MB_TMAP_F32};
use super::{Dtype, KernelError};

/// Element type code of a 16-bit activation dtype.
pub fn dtype_code(dt: Dtype) -> u32 {
    match dt {
        Dtype::Bf16 => MB_TMAP_BF16,
        Dtype::F16 => MB_TMAP_F16,
    }
}

/// A row-major `[rows, cols]` matrix of 16-bit elements at `addr` (row pitch `cols` elements),
/// copied in boxes of `box_rows x box_cols`.
pub fn matrix_2d(
    dt: Dtype,
    addr: u64,
    rows: u64,
    cols: u64,
    box_rows: u32,
    box_cols: u32,
    swizzle: u32,
) -> MbTensorMapDesc {
    MbTensorMapDesc {
        global_address: addr,
        dims: [cols, rows, 1, 1, 1],
        strides: [2, cols * 2, 0, 0, 0],
        box_: [box_cols, box_rows, 1, 1, 1],
        rank: 2,
        dtype: dtype_code(dt),
        swizzle,
        oob_nan: 0,
        pad: 0,
    }
}

fn bad(message: String) -> KernelError {
    KernelError::Unsupported {
        kernel: "tensor map".into(),
        message,
    }
}

/// Checks `d` against the rules of a tiled tensor map (CUDA driver API, cuTensorMapEncodeTiled).
pub fn check(d: &MbTensorMapDesc) -> Result<(), KernelError> {
    let rank = d.rank as usize;
    if !(1..=5).contains(&rank) {
        return Err(bad(format!("rank {rank} (1..=5)")));
    }
    let elem: u64 = match d.dtype {
        MB_TMAP_BF16 | MB_TMAP_F16 => 2,
        MB_TMAP_F32 => 4,
        other => return Err(bad(format!("element type code {other}"))),
    };
    // The CUDA guide asks 128-byte alignment of a swizzled map's address and row pitches (the
    // driver's reference says 16): the stricter rule, so that what the emulator accepts a GPU does.
    let align: u64 = if d.swizzle == MB_SWIZZLE_NONE { 16 } else { 128 };
    if d.global_address == 0 || !d.global_address.is_multiple_of(align) {
        return Err(bad(format!(
            "global address {:#x} (non-null, {align}-byte aligned)",
            d.global_address
        )));
    }
    if d.strides[0] != elem {
        return Err(bad(format!(
            "strides[0] = {} must be the element size {elem}",
            d.strides[0]
        )));
    }
    for i in 0..rank {
        if d.dims[i] == 0 || d.dims[i] > 1 << 32 {
            return Err(bad(format!("dims[{i}] = {} (1..=2^32)", d.dims[i])));
        }
        if d.box_[i] == 0 || d.box_[i] > 256 {
            return Err(bad(format!("box[{i}] = {} (1..=256)", d.box_[i])));
        }
        if i == 0 {
            continue;
        }
        if !d.strides[i].is_multiple_of(align) || d.strides[i] >= 1 << 40 || d.strides[i] == 0 {
            return Err(bad(format!(
                "strides[{i}] = {} (a non-zero multiple of {align} below 2^40)",
                d.strides[i]
            )));
        }
        // Dimensions do not overlap: each stride spans the whole dimension below it.
        let below = d.strides[i - 1] * d.dims[i - 1];
        if d.strides[i] < below {
            return Err(bad(format!(
                "strides[{i}] = {} is below strides[{}] x dims[{}] = {below}",
                d.strides[i],
                i - 1,
                i - 1
            )));
        }
    }
    let inner_bytes = d.box_[0] as u64 * elem;
    if !inner_bytes.is_multiple_of(16) {
        return Err(bad(format!(
            "the box's inner extent is {inner_bytes} bytes (a multiple of 16)"
        )));
    }
    match d.swizzle {
        MB_SWIZZLE_NONE => {}
        32 | 64 | 128 => {
            // The driver allows an inner extent up to the span; a narrower one is left out on
            // purpose: its shared-memory layout is not what the emulator models, nor what any of
            // our kernels needs.
            if inner_bytes != d.swizzle as u64 {
                return Err(bad(format!(
                    "the box's inner extent of {inner_bytes} bytes must equal the {}-byte swizzle span",
                    d.swizzle
                )));
            }
        }
        other => return Err(bad(format!("swizzle {other} (0, 32, 64 or 128 bytes)"))),
    }
    Ok(())
}

/// Checks `desc` and has `dev` encode it.
pub fn encode(dev: &dyn Device, desc: &MbTensorMapDesc) -> Result<MbTensorMap, KernelError> {
    check(desc)?;
    dev.encode_tensor_map(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_refuse_what_the_driver_refuses() {
        let ok = matrix_2d(Dtype::Bf16, 0x1000, 300, 768, 128, 64, 128);
        check(&ok).unwrap();
        let refused = |f: &dyn Fn(&mut MbTensorMapDesc), why: &str| {
            let mut d = ok;
            f(&mut d);
            assert!(check(&d).is_err(), "{why}: {d:?}");
        };
        refused(&|d| d.global_address = 0x1008, "address not 16-byte aligned");
        refused(
            &|d| d.global_address = 0x1010,
            "a swizzled map's address not 128-byte aligned",
        );
        refused(&|d| d.box_[0] = 128, "256-byte inner extent over a 128-byte swizzle");
        refused(&|d| d.box_[0] = 32, "64-byte inner extent under a 128-byte swizzle");
        refused(&|d| d.strides[1] = 770 * 2 + 2, "row pitch not a multiple of 16");
        refused(
            &|d| d.strides[1] = 776 * 2,
            "a swizzled map's row pitch not a multiple of 128",
        );
        refused(&|d| d.box_[1] = 257, "box over 256");
        refused(&|d| d.swizzle = 16, "no such swizzle");
        refused(&|d| d.rank = 6, "rank 6");
        let plain = matrix_2d(Dtype::Bf16, 0x1010, 300, 768, 64, 64, 0);
        check(&plain).unwrap();
        let mut d = plain;
        d.strides[1] = 776 * 2;
        check(&d).unwrap();
        d.strides[1] = 760 * 2;
        assert!(check(&d).is_err(), "rows that overlap");
    }
}
