//! Cases for cuda/geglu.cu.
#[derive(Clone, Debug)]
pub struct GegluCase {
    pub tokens: u32,
    pub capacity: u32,
    pub inter: u32,
    /// MB_ACT_* code.
    pub activation: u32,
}

pub fn cases() -> Vec<GegluCase> {
    let mut v = Vec::new();
    for (i, &t) in super::SEQ_LENS.iter().enumerate() {
        let inter = if t >= 1000 { 64 } else { 1152 }; // 1152: ModernBERT-base's intermediate size
        v.push(GegluCase {
            tokens: t,
            capacity: t + (i as u32 % 3),
            inter,
            activation: (i % 4 == 3) as u32,
        });
    }
    v.push(GegluCase {
        tokens: 129,
        capacity: 130,
        inter: 100,
        activation: 0,
    }); // scalar path
    v.push(GegluCase {
        tokens: 3,
        capacity: 3,
        inter: 1,
        activation: 0,
    });
    v
}
