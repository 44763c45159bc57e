//! Cases for cuda/pooling.cu.
#[derive(Clone, Debug)]
pub struct PoolCase {
    pub seqlens: Vec<u32>,
    /// Leading tokens that count for the mean (None: all).
    pub key_lens: Option<Vec<u32>>,
    pub max_sequences: u32,
    pub hidden: u32,
    pub out_dim: u32,
    /// MB_POOL_* code.
    pub pooling: u32,
    pub normalize: bool,
}

pub fn cases() -> Vec<PoolCase> {
    let mut v = Vec::new();
    let mut i = 0u32;
    let mut batches: Vec<Vec<u32>> = super::SEQ_LENS.chunks(4).map(|c| c.to_vec()).collect();
    batches.extend(super::varlen_batches());
    for lens in batches {
        for pooling in [0u32, 1] {
            i += 1;
            let key_lens = (i.rem_euclid(3) == 0).then(|| lens.iter().map(|&l| (l * 3).div_ceil(4)).collect());
            let (hidden, out_dim) = match i % 4 {
                0 => (768, 768),
                1 => (768, 256), // Matryoshka truncation
                2 => (100, 60),  // scalar path
                _ => (1024, 1024),
            };
            v.push(PoolCase {
                max_sequences: lens.len() as u32 + i % 2,
                seqlens: lens.clone(),
                key_lens,
                hidden,
                out_dim,
                pooling,
                normalize: i % 2 == 1,
            });
        }
    }
    v
}
