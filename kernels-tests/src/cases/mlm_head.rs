//! Cases for cuda/mlm_head.cu (head_act_norm, bias_add).
#[derive(Clone, Debug)]
pub struct HeadCase {
    pub tokens: u32,
    pub capacity: u32,
    pub hidden: u32,
    /// Decoder width (vocabulary) for bias_add.
    pub vocab: u32,
    pub dense_bias: bool,
    pub norm_bias: bool,
    pub activation: u32,
}

pub fn cases() -> Vec<HeadCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let (hidden, vocab) = if t >= 1000 { (64, 136) } else { (768, 1000) };
        v.push(HeadCase {
            tokens: t,
            capacity: t + (i as u32 % 2),
            hidden,
            vocab,
            dense_bias: i % 2 == 0,
            norm_bias: i % 3 == 0,
            activation: (i % 5 == 4) as u32,
        });
    }
    v.push(HeadCase {
        tokens: 65,
        capacity: 65,
        hidden: 100,
        vocab: 1003,
        dense_bias: true,
        norm_bias: true,
        activation: 0,
    });
    v
}
