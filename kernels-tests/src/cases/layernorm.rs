//! Cases for cuda/layernorm.cu (residual add + LayerNorm).

#[derive(Clone, Debug)]
pub struct LayerNormCase {
    /// Rows in use (BatchDesc.tokens).
    pub tokens: u32,
    /// Rows of capacity (grid size; rows past `tokens` must stay untouched).
    pub capacity: u32,
    pub hidden: u32,
    /// Fused residual add.
    pub residual: bool,
    pub bias: bool,
}

pub fn cases() -> Vec<LayerNormCase> {
    let mut v = Vec::new();
    let c = |tokens, capacity, hidden, residual, bias| LayerNormCase {
        tokens,
        capacity,
        hidden,
        residual,
        bias,
    };
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        // hidden 768 (ModernBERT-base, 16-byte vectors); alternate the fused add and the bias.
        let hidden = if t == 8192 { 256 } else { 768 };
        v.push(c(t, t, hidden, i % 2 == 0, i % 3 == 0));
    }
    for lens in super::varlen_batches() {
        let t: u32 = lens.iter().sum();
        if t < 4000 {
            v.push(c(t, t + 37, 1024, true, false)); // capacity > tokens: the extra rows are left alone
        }
    }
    // Rows that do not allow 16-byte vectors (scalar path), odd sizes, the maximum width.
    v.push(c(130, 130, 100, true, true));
    v.push(c(65, 70, 1, false, false));
    v.push(c(33, 33, 8192, true, true));
    v.push(c(7, 7, 4088, false, true));
    v.push(c(9, 9, 8190, true, false));
    v
}
