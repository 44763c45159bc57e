//! Compact embeddings with sentence-transformers' semantics (`quantize_embeddings`), bit for bit:
//! - `int8` / `uint8`: each dimension's range `[min, max]` comes from calibration ranges when given,
//!   else from the embeddings being quantized (all rows of the call); `step = (max - min) / 255`
//!   and `(e - min) / step` (minus 128 for int8), all in f32, converted as NumPy's `astype` does on
//!   x86-64 (truncation through a 32-bit integer, keeping the low byte: NaN, ±inf and values out
//!   of the i32 range give 0, values past the byte's range wrap). A dimension whose values are all
//!   equal has `step = 0` and gives 0, as NumPy's NaN → int8 does.
//! - `binary` / `ubinary`: one bit per dimension, set when `e > 0`, packed 8 per byte with the first
//!   dimension in the high bit (`np.packbits` of the flattened matrix, reshaped into rows); binary
//!   stores `byte - 128` as i8. With a width that is not a multiple of 8 a row's bits run into the
//!   next row's bytes, as in NumPy; where the bytes do not split evenly into rows NumPy's reshape
//!   fails and so does this.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Float32,
    Int8,
    Uint8,
    Binary,
    Ubinary,
}

impl Precision {
    pub const ALL: [Precision; 5] = [
        Precision::Float32,
        Precision::Int8,
        Precision::Uint8,
        Precision::Binary,
        Precision::Ubinary,
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Precision::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            Error::Input(format!(
                "precision {name:?} is not supported (float32, int8, uint8, binary or ubinary)"
            ))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Int8 => "int8",
            Precision::Uint8 => "uint8",
            Precision::Binary => "binary",
            Precision::Ubinary => "ubinary",
        }
    }

    /// Elements per row of the quantized output of `rows` vectors of `dim` dimensions (binary:
    /// the packed bytes split evenly into rows, see [`quantize`]).
    pub fn width(self, rows: usize, dim: usize) -> usize {
        match self {
            Precision::Binary | Precision::Ubinary if rows == 0 => dim.div_ceil(8),
            Precision::Binary | Precision::Ubinary => (rows * dim).div_ceil(8) / rows,
            _ => dim,
        }
    }
}

/// Quantized rows, row-major, `Precision::width(rows, dim)` elements each.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantized {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

/// NumPy's float32 → (u)int8 `astype` on x86-64: `cvttss2si` to i32 (NaN, ±inf and out-of-range
/// values give `i32::MIN`), then the low byte.
fn numpy_low_byte(x: f32) -> u8 {
    if x.is_finite() && x.abs() < 2_147_483_648.0 {
        (x as i32) as u8
    } else {
        0
    }
}

/// Per-dimension `[min…, max…]` (2 × dim) of row-major `rows`.
pub fn ranges(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut r = vec![f32::INFINITY; dim];
    r.extend(std::iter::repeat_n(f32::NEG_INFINITY, dim));
    for row in rows.chunks_exact(dim) {
        for (j, &x) in row.iter().enumerate() {
            // np.min / np.max propagate NaN; non-finite embeddings never reach here (the engine
            // refuses them), so plain comparisons suffice.
            r[j] = r[j].min(x);
            r[dim + j] = r[dim + j].max(x);
        }
    }
    r
}

/// Quantize `rows` (row-major, `dim` wide) to `precision`; `calibration` (2 × dim: mins then
/// maxima) fixes the int8 / uint8 ranges, else they come from `rows`.
pub fn quantize(rows: Vec<f32>, dim: usize, precision: Precision, calibration: Option<&[f32]>) -> Result<Quantized> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(Error::Input(format!(
            "{} values are not rows of {dim} dimensions",
            rows.len()
        )));
    }
    let int8 = |offset: f32| -> Result<Vec<u8>> {
        let own;
        let r = match calibration {
            Some(c) if c.len() == 2 * dim => c,
            Some(c) => {
                return Err(Error::Input(format!(
                    "calibration ranges hold {} values, expected 2 × {dim}",
                    c.len()
                )))
            }
            None => {
                own = ranges(&rows, dim);
                &own
            }
        };
        let (starts, ends) = r.split_at(dim);
        let steps: Vec<f32> = starts.iter().zip(ends).map(|(&s, &e)| (e - s) / 255.0).collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.chunks_exact(dim) {
            for j in 0..dim {
                out.push(numpy_low_byte((row[j] - starts[j]) / steps[j] - offset));
            }
        }
        Ok(out)
    };
    Ok(match precision {
        Precision::Float32 => Quantized::F32(rows),
        Precision::Uint8 => Quantized::U8(int8(0.0)?),
        Precision::Int8 => Quantized::I8(int8(128.0)?.into_iter().map(|b| b as i8).collect()),
        Precision::Binary | Precision::Ubinary => {
            // np.packbits of the flattened matrix (first dimension in the high bit, the last byte
            // zero-padded), then reshape(rows, -1), which NumPy refuses when the bytes do not
            // split evenly into rows.
            let n = rows.len() / dim;
            let packed: Vec<u8> = rows
                .chunks(8)
                .map(|bits| {
                    let byte = bits.iter().fold(0u8, |byte, &x| (byte << 1) | (x > 0.0) as u8);
                    byte << (8 - bits.len())
                })
                .collect();
            if n > 0 && !packed.len().is_multiple_of(n) {
                return Err(Error::Input(format!(
                    "{} precision: {n} rows of {dim} dimensions pack into {} bytes, which do not split \
                     into rows (sentence-transformers' np.packbits(...).reshape(rows, -1) fails too)",
                    precision.name(),
                    packed.len()
                )));
            }
            if precision == Precision::Ubinary {
                Quantized::U8(packed)
            } else {
                Quantized::I8(packed.into_iter().map(|b| b.wrapping_sub(128) as i8).collect())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_follows_numpy_including_rounding_and_constant_dimensions() {
        // Column 0 is constant (step 0 → 0); column 1's step is 1/255 in f32, so 1 / step is
        // 254.99998 and truncates to 254 (NumPy gives 126 for int8 here too).
        let rows = vec![1.0, 2.0, 1.0, 3.0];
        assert_eq!(
            quantize(rows.clone(), 2, Precision::Int8, None).unwrap(),
            Quantized::I8(vec![0, -128, 0, 126])
        );
        assert_eq!(
            quantize(rows, 2, Precision::Uint8, None).unwrap(),
            Quantized::U8(vec![0, 0, 0, 254])
        );
        // Calibration ranges narrower than the data: NumPy's astype wraps, it does not saturate.
        // Range [0, 255]: step 1, so 300 → 300 - 128 = 172 → the byte 0xAC = -84.
        let q = quantize(vec![0.0, 300.0], 1, Precision::Int8, Some(&[0.0, 255.0])).unwrap();
        assert_eq!(q, Quantized::I8(vec![-128, -84]));
    }

    #[test]
    fn binary_packs_high_bit_first() {
        let mut row = vec![-1.0f32; 16];
        row[0] = 0.5; // bit 7 of byte 0
        row[15] = 2.0; // bit 0 of byte 1
        row[3] = 0.0; // not > 0
        assert_eq!(
            quantize(row.clone(), 16, Precision::Ubinary, None).unwrap(),
            Quantized::U8(vec![0x80, 0x01])
        );
        assert_eq!(
            quantize(row, 16, Precision::Binary, None).unwrap(),
            Quantized::I8(vec![0, -127])
        );
        // 12 dimensions: one row packs into 2 bytes (the last zero-padded); 3 rows into 5 bytes,
        // which NumPy cannot reshape into 3 rows.
        let mut one = vec![1.0f32; 12];
        one[11] = -1.0;
        assert_eq!(
            quantize(one, 12, Precision::Ubinary, None).unwrap(),
            Quantized::U8(vec![0xff, 0xe0])
        );
        assert_eq!(Precision::Ubinary.width(1, 12), 2);
        let e = quantize(vec![1.0; 36], 12, Precision::Binary, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 bytes"), "{e}");
        assert!(Precision::parse("int4")
            .unwrap_err()
            .to_string()
            .contains("float32, int8"));
    }
}
