//! Cases for cuda/unpad.cu (unpad and repad).
#[derive(Clone, Debug)]
pub struct PadCase {
    pub seqlens: Vec<u32>,
    /// Padded capacity: sequences and length (>= the batch's).
    pub max_sequences: u32,
    pub padded_len: u32,
    pub width: u32,
}

pub fn cases() -> Vec<PadCase> {
    let mut v = Vec::new();
    for &l in super::SEQ_LENS {
        let width = if l == 8192 { 64 } else { 768 };
        v.push(PadCase {
            seqlens: vec![l],
            max_sequences: 1,
            padded_len: l,
            width,
        });
    }
    for lens in super::varlen_batches() {
        let max = *lens.iter().max().unwrap();
        let width = if max > 1000 { 16 } else { 256 };
        v.push(PadCase {
            max_sequences: lens.len() as u32 + 2,
            padded_len: max + 3,
            seqlens: lens,
            width,
        });
    }
    v.push(PadCase {
        seqlens: vec![5, 1, 64],
        max_sequences: 4,
        padded_len: 70,
        width: 36,
    }); // scalar path
    v
}
