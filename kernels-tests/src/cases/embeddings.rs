//! Cases for cuda/embeddings.cu (gather + LayerNorm).
#[derive(Clone, Debug)]
pub struct EmbeddingCase {
    pub tokens: u32,
    pub capacity: u32,
    pub hidden: u32,
    pub vocab: u32,
    pub bias: bool,
}

pub fn cases() -> Vec<EmbeddingCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let hidden = if t == 8192 { 128 } else { 768 };
        v.push(EmbeddingCase {
            tokens: t,
            capacity: t + (i as u32 % 2) * 3,
            hidden,
            vocab: 1000,
            bias: i % 2 == 1,
        });
    }
    v.push(EmbeddingCase {
        tokens: 130,
        capacity: 130,
        hidden: 100,
        vocab: 77,
        bias: true,
    }); // scalar path
    v
}
